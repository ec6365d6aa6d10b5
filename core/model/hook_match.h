// Selecting hook points by name: exact names, globs and ranges.
//
//   "blocks.3.mlp.hook_post"              exact
//   "blocks.*.mlp.hook_post", "*"         glob (`*` any run of characters, `?` one character)
//   "blocks.{0..5}.hook_resid_post"       inclusive integer range; "{a,b}" alternatives
#pragma once

#include <string>
#include <vector>

#include "nscope/model_adapter.h"

namespace nscope {

/// Hook names matching any pattern, in forward order, without duplicates. A pattern that matches nothing
/// throws InputError with the nearest hook names ("did you mean").
std::vector<std::string> match_hooks(const std::vector<HookPoint>& hooks, const std::vector<std::string>& patterns);

/// Indices (hook ids) of the hooks matching one pattern; empty when none does (no throw).
std::vector<int> match_hook_ids(const std::vector<HookPoint>& hooks, const std::string& pattern);

/// Expand `{a..b}` ranges and `{x,y}` alternatives into plain glob patterns; throws InputError when malformed.
std::vector<std::string> expand_braces(const std::string& pattern);

/// "[batch, pos, 256]": symbolic names for batch/position sizes, numbers otherwise.
std::string hook_shape_string(const HookPoint& h);

}  // namespace nscope

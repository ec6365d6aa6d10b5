// Small string helpers used across the host: "did you mean" suggestions, joining, glob matching.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "nscope/utf8.h"  // valid_utf8: text from input files before it reaches a message, a log or a manifest

namespace nscope {

/// Levenshtein edit distance.
size_t edit_distance(std::string_view a, std::string_view b);

/// The candidates closest to `word` (at most `max` of them, only those within a sensible distance).
std::vector<std::string> nearest(std::string_view word, const std::vector<std::string>& candidates, size_t max = 3);

/// " (did you mean 'x'?)", " (did you mean 'x' or 'y'?)", or "" when nothing is close.
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);

std::string join(const std::vector<std::string>& items, std::string_view sep);

/// Glob match with `*` (any run of characters) and `?` (one character).
bool glob_match(std::string_view pattern, std::string_view text);

}  // namespace nscope

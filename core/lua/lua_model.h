// The model side of the `nscope` module: nscope.load -> model userdata ("nscope.Model") with run, tokenize,
// hooks and info; Lua hook functions that edit activations during the forward; nscope.analyze / export
// (analyzer and exporter plugins fed from a cache) and nscope.recipe (a recipe written as a Lua table).
#pragma once

#include <lua.hpp>

namespace nscope::lua {

inline constexpr const char* kModelMeta = "nscope.Model";
inline constexpr const char* kCacheMeta = "nscope.Cache";

/// Add load / analyze / export / recipe to the `nscope` table at `nscope_idx`, and the model method table
/// as `model_methods` to the prelude's `internal` table (the prelude adds Lua-written methods to it).
void register_model_api(lua_State* L, int nscope_idx, int internal_idx);

}  // namespace nscope::lua

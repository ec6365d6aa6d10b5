// `nscope.Tensor`: at::Tensor as Lua userdata (metatable "nscope.Tensor", freed by __gc).
//
// Index convention (documented in docs/lua.md): Lua indices are 1-based and inclusive, like Lua itself.
//   t[i]                 select along dim 1 (i = 1..n; -1 is the last element)
//   t[{i, {a, b}, {}}]   per-dimension: an integer selects (the dimension disappears), {a, b} is the inclusive
//                        range a..b, {a} is a..end, {a, b, step} steps, {} keeps the whole dimension;
//                        missing trailing entries keep their dimensions
// Dimension arguments (`t:mean(d)`, `t:size(d)`) are 1-based as well; negative ones count from the end.
// Indices returned (`t:topk`, `t:max(d)`, `t:argmax`) are 1-based. A result with no dimensions is returned
// as a Lua number. Token ids are values, not indices: they keep the model's 0-based numbering.
#pragma once

#include <string>

#include <ATen/ATen.h>
#include <lua.hpp>
#include <nlohmann/json.hpp>

namespace nscope::lua {

inline constexpr const char* kTensorMeta = "nscope.Tensor";
/// Registry key of ScriptOptions::max_memory (an integer, absent when there is no limit): the tensor
/// constructors refuse a tensor larger than it.
inline constexpr const char* kMaxMemoryKey = "nscope.max_memory";

/// Create the metatable and the tensor functions of the `nscope` table at `module_idx`
/// (tensor, zeros, ones, full, arange, randn, manual_seed, cat, stack).
void register_tensor(lua_State* L, int module_idx);

/// Push a tensor (shares storage with `t`).
void push_tensor(lua_State* L, at::Tensor t);
/// The tensor at `idx`, or nullptr.
at::Tensor* test_tensor(lua_State* L, int idx);
/// The tensor at `idx`; throws "bad argument" naming `fn` otherwise.
at::Tensor& arg_tensor(lua_State* L, int idx, const char* fn);
/// A tensor from a tensor, a number or a nested table of numbers at `idx` (float32 unless `dtype`).
at::Tensor to_tensor(lua_State* L, int idx, const char* fn, at::ScalarType dtype = at::kFloat);

std::string tensor_to_string(const at::Tensor& t);
/// Nested arrays of numbers.
nlohmann::json tensor_to_json(const at::Tensor& t);

/// Write `t` as .npy (float32, or int64 for integer tensors) to `path`, atomically.
void save_npy(const at::Tensor& t, const std::string& path);

}  // namespace nscope::lua

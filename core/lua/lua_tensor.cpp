#include "core/lua/lua_tensor.h"

#include <cmath>
#include <sstream>
#include <vector>

#include "core/lua/lua_host.h"
#include "core/lua/lua_util.h"
#include "core/util/files.h"
#include "nscope/io.h"

namespace nscope::lua {
namespace {

using at::indexing::Slice;
using at::indexing::TensorIndex;

// ---- small helpers -----------------------------------------------------------------------------------------

std::string shape_string(at::IntArrayRef sizes) {
    std::string s = "[";
    for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
    return s + "]";
}

const char* dtype_name(at::ScalarType t) {
    switch (t) {
        case at::kFloat: return "float32";
        case at::kDouble: return "float64";
        case at::kBFloat16: return "bfloat16";
        case at::kHalf: return "float16";
        case at::kLong: return "int64";
        case at::kInt: return "int32";
        case at::kBool: return "bool";
        default: return "other";
    }
}

at::ScalarType parse_dtype(const std::string& s, const char* fn) {
    if (s == "float32" || s == "float") return at::kFloat;
    if (s == "float64" || s == "double") return at::kDouble;
    if (s == "bfloat16") return at::kBFloat16;
    if (s == "int64" || s == "long") return at::kLong;
    if (s == "bool") return at::kBool;
    throw std::invalid_argument(std::string(fn) + ": unknown dtype '" + s + "' (float32, float64, bfloat16, int64, bool)");
}

/// 1-based (negative from the end) dimension argument -> 0-based.
int64_t dim_arg(lua_State* L, int idx, const at::Tensor& t, const char* fn) {
    const int64_t d = arg_integer(L, idx, fn);
    const int64_t n = t.dim();
    if (d == 0) arg_fail(idx, fn, "dimension 0 is invalid: dimensions are 1-based");
    const int64_t z = d > 0 ? d - 1 : n + d;
    if (z < 0 || z >= std::max<int64_t>(n, 1))
        arg_fail(idx, fn, "dimension " + std::to_string(d) + " is out of range for a tensor of shape " + shape_string(t.sizes()));
    return z;
}

/// Push a tensor, or a Lua number when it has no dimensions.
void push_result(lua_State* L, const at::Tensor& t) {
    if (t.dim() == 0) {
        if (t.scalar_type() == at::kBool) lua_pushboolean(L, t.item<bool>());
        else if (at::isIntegralType(t.scalar_type(), false)) lua_pushinteger(L, t.item<int64_t>());
        else lua_pushnumber(L, t.item<double>());
    } else {
        push_tensor(L, t);
    }
}

/// 1-based (negative from the end) element index into a dimension of size n -> 0-based.
int64_t element_index(int64_t i, int64_t n, int64_t dim) {
    if (i == 0) throw std::out_of_range("index 0 in dimension " + std::to_string(dim + 1) + ": Lua indices start at 1");
    const int64_t z = i > 0 ? i - 1 : n + i;
    if (z < 0 || z >= n)
        throw std::out_of_range("index " + std::to_string(i) + " is out of range for dimension " + std::to_string(dim + 1) +
                                " of size " + std::to_string(n));
    return z;
}

/// Range bound (1-based, inclusive, negative from the end) -> 0-based position.
int64_t range_bound(int64_t i, int64_t n) { return i > 0 ? i - 1 : n + i; }

/// Build the torch index for the key at `key_idx` (an integer or a table of integers and ranges).
std::vector<TensorIndex> make_index(lua_State* L, int key_idx, const at::Tensor& t) {
    std::vector<TensorIndex> idx;
    // Never relocated: LibTorch's integer TensorIndex leaves its bool member uninitialized, and moving one
    // copies that byte (UBSan: "load of value 190, which is not a valid value for type 'bool'"). At most one
    // index per dimension, checked below.
    idx.reserve(static_cast<size_t>(std::max<int64_t>(t.dim(), 1)));
    auto item = [&](int vidx, int64_t d) {
        if (d >= t.dim())
            throw std::out_of_range("too many indices for a tensor of shape " + shape_string(t.sizes()));
        const int64_t n = t.size(d);
        if (lua_isinteger(L, vidx)) {
            idx.emplace_back(element_index(lua_tointeger(L, vidx), n, d));
        } else if (lua_type(L, vidx) == LUA_TTABLE) {
            const int64_t len = raw_len(L, vidx);
            if (len > 3) throw std::invalid_argument("a range is {first, last} or {first, last, step}");
            int64_t b[3] = {1, n, 1};
            for (int64_t k = 1; k <= len; ++k) {
                lua_rawgeti(L, vidx, k);
                if (!lua_isinteger(L, -1)) {
                    lua_pop(L, 1);
                    throw std::invalid_argument("range bounds must be integers");
                }
                b[k - 1] = lua_tointeger(L, -1);
                lua_pop(L, 1);
            }
            if (b[0] == 0 || (len >= 2 && b[1] == 0))
                throw std::out_of_range("range bound 0 in dimension " + std::to_string(d + 1) + ": Lua indices start at 1");
            if (b[2] <= 0) throw std::invalid_argument("range step must be positive");
            const int64_t lo = range_bound(b[0], n), hi = range_bound(b[1], n);
            if (lo < 0 || lo > n || hi < -1 || hi >= n)
                throw std::out_of_range("range {" + std::to_string(b[0]) + ", " + std::to_string(b[1]) +
                                        "} is out of range for dimension " + std::to_string(d + 1) + " of size " +
                                        std::to_string(n));
            idx.emplace_back(Slice(lo, std::max(lo, hi + 1), b[2]));
        } else {
            throw std::invalid_argument("tensor index must be an integer or a range table, got " + type_name_at(L, vidx));
        }
    };
    if (lua_type(L, key_idx) == LUA_TTABLE) {
        const int64_t n = raw_len(L, key_idx);
        for (int64_t k = 1; k <= n; ++k) {
            lua_rawgeti(L, key_idx, k);
            item(lua_gettop(L), k - 1);
            lua_pop(L, 1);
        }
    } else {
        item(key_idx, 0);
    }
    return idx;
}

// ---- tensors from Lua tables -------------------------------------------------------------------------------

void table_shape(lua_State* L, int idx, std::vector<int64_t>& shape, int depth) {
    const int64_t n = raw_len(L, idx);
    shape.push_back(n);
    if (n == 0) return;
    lua_rawgeti(L, idx, 1);
    if (lua_type(L, -1) == LUA_TTABLE) table_shape(L, lua_gettop(L), shape, depth + 1);
    lua_pop(L, 1);
}

void table_fill(lua_State* L, int idx, const std::vector<int64_t>& shape, size_t depth, std::vector<double>& out) {
    const int64_t n = raw_len(L, idx);
    if (n != shape[depth]) throw std::invalid_argument("nested tables are not rectangular (rows of different lengths)");
    for (int64_t i = 1; i <= n; ++i) {
        lua_rawgeti(L, idx, i);
        if (depth + 1 < shape.size()) {
            if (lua_type(L, -1) != LUA_TTABLE) {
                lua_pop(L, 1);
                throw std::invalid_argument("nested tables are not rectangular (a number where a row was expected)");
            }
            table_fill(L, lua_gettop(L), shape, depth + 1, out);
        } else if (lua_type(L, -1) == LUA_TNUMBER) {
            out.push_back(lua_tonumber(L, -1));
        } else if (lua_type(L, -1) == LUA_TBOOLEAN) {
            out.push_back(lua_toboolean(L, -1) ? 1.0 : 0.0);
        } else {
            const std::string tn = type_name_at(L, -1);
            lua_pop(L, 1);
            throw std::invalid_argument("tensor tables must hold numbers, found a " + tn);
        }
        lua_pop(L, 1);
    }
}

at::Tensor table_to_tensor(lua_State* L, int idx, at::ScalarType dtype) {
    std::vector<int64_t> shape;
    table_shape(L, idx, shape, 0);
    std::vector<double> values;
    table_fill(L, idx, shape, 0, values);
    return at::tensor(values, at::kDouble).reshape(shape).to(dtype);
}

/// Shape from `f{2, 3}` or `f(2, 3)`.
std::vector<int64_t> shape_args(lua_State* L, const char* fn) {
    std::vector<int64_t> shape;
    if (lua_type(L, 1) == LUA_TTABLE) {
        const int64_t n = raw_len(L, 1);
        for (int64_t i = 1; i <= n; ++i) {
            lua_rawgeti(L, 1, i);
            const bool ok = lua_isinteger(L, -1);
            const int64_t v = ok ? lua_tointeger(L, -1) : 0;
            lua_pop(L, 1);
            if (!ok || v < 0) arg_fail(1, fn, "the shape must be a list of non-negative integers");
            shape.push_back(v);
        }
    } else {
        const int top = lua_gettop(L);
        for (int i = 1; i <= top && lua_type(L, i) == LUA_TNUMBER; ++i) {
            const int64_t v = arg_integer(L, i, fn);
            if (v < 0) arg_fail(i, fn, "sizes must be non-negative");
            shape.push_back(v);
        }
    }
    return shape;
}

/// A tensor that `fn` is about to create from sizes a script chose: refused when its byte size overflows or
/// exceeds the script's memory limit (ScriptOptions::max_memory bounds the Lua state and each tensor a
/// constructor makes; 0 = no limit, and then LibTorch's allocator reports what the machine cannot hold).
/// Without it `nscope.zeros{1e18}` went straight to the allocator (found by tests/fuzz/fuzz_lua_script).
void check_new_tensor(lua_State* L, const char* fn, const std::vector<int64_t>& shape, at::ScalarType dtype) {
    int64_t bytes = static_cast<int64_t>(c10::elementSize(dtype));
    bool overflow = false;
    for (int64_t d : shape) overflow = overflow || __builtin_mul_overflow(bytes, d, &bytes);
    const std::string what = std::string(fn) + ": a tensor of shape " + shape_string(shape);
    if (overflow) throw std::invalid_argument(what + " is too large");
    lua_getfield(L, LUA_REGISTRYINDEX, kMaxMemoryKey);  // set by run_script; absent in a bare state
    const lua_Integer limit = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    if (limit > 0 && bytes > limit)
        throw std::invalid_argument(what + " (" + std::to_string(bytes) + " bytes) exceeds the script's memory limit of " +
                                    std::to_string(limit) + " bytes");
}

/// Options table (`{dtype="int64"}`) at `idx`, if any.
at::ScalarType opt_dtype(lua_State* L, int idx, const char* fn, at::ScalarType def) {
    if (lua_type(L, idx) != LUA_TTABLE) return def;
    if (raw_field(L, idx, "dtype") == LUA_TSTRING) {
        const std::string s = lua_tostring(L, -1);
        lua_pop(L, 1);
        return parse_dtype(s, fn);
    }
    lua_pop(L, 1);
    return def;
}

// ---- metamethods -----------------------------------------------------------------------------------------

int t_gc(lua_State* L) {
    auto* p = static_cast<at::Tensor*>(luaL_testudata(L, 1, kTensorMeta));
    if (p != nullptr) p->~Tensor();
    return 0;
}

int t_tostring(lua_State* L) {
    const std::string s = tensor_to_string(arg_tensor(L, 1, "tostring"));
    lua_pushlstring(L, s.data(), s.size());
    return 1;
}

int t_len(lua_State* L) {
    const at::Tensor& t = arg_tensor(L, 1, "#");
    lua_pushinteger(L, t.dim() == 0 ? 0 : t.size(0));
    return 1;
}

int t_index(lua_State* L) {
    // stack: tensor, key
    const at::Tensor& t = arg_tensor(L, 1, "index");
    if (lua_type(L, 2) == LUA_TSTRING) {
        lua_getmetatable(L, 1);      // stack: tensor, key, mt
        lua_pushliteral(L, "methods");
        lua_rawget(L, -2);           // stack: tensor, key, mt, methods
        lua_pushvalue(L, 2);
        lua_rawget(L, -2);           // stack: tensor, key, mt, methods, value
        if (lua_isnil(L, -1))
            throw std::invalid_argument(std::string("tensors have no method or field '") + lua_tostring(L, 2) + "'");
        return 1;
    }
    if (t.dim() == 0) throw std::invalid_argument("cannot index a tensor with no dimensions (use t:item())");
    push_result(L, t.index(make_index(L, 2, t)));
    return 1;
}

int t_newindex(lua_State* L) {
    // stack: tensor, key, value
    at::Tensor& t = arg_tensor(L, 1, "index assignment");
    if (lua_type(L, 2) == LUA_TSTRING)
        throw std::invalid_argument(std::string("cannot set field '") + lua_tostring(L, 2) + "' of a tensor");
    if (t.dim() == 0) throw std::invalid_argument("cannot index a tensor with no dimensions");
    std::vector<TensorIndex> idx = make_index(L, 2, t);
    if (lua_type(L, 3) == LUA_TNUMBER) {
        t.index_put_(idx, lua_tonumber(L, 3));
    } else if (lua_type(L, 3) == LUA_TBOOLEAN) {
        t.index_put_(idx, lua_toboolean(L, 3) ? 1.0 : 0.0);
    } else {
        at::Tensor v = to_tensor(L, 3, "index assignment", t.scalar_type());
        at::Tensor dst = t.index(idx);
        if (!at::is_expandable_to(v.sizes(), dst.sizes()))
            throw std::invalid_argument("cannot assign a tensor of shape " + shape_string(v.sizes()) +
                                        " to a selection of shape " + shape_string(dst.sizes()));
        t.index_put_(idx, v.to(t.scalar_type()));
    }
    return 0;
}

at::Tensor operand(lua_State* L, int idx, const char* op) {
    if (at::Tensor* t = test_tensor(L, idx)) return *t;
    if (lua_type(L, idx) == LUA_TNUMBER) return at::scalar_tensor(lua_tonumber(L, idx), at::kFloat);
    throw std::invalid_argument(std::string("attempt to perform arithmetic (") + op + ") on a tensor and a " +
                                type_name_at(L, idx));
}

void check_broadcast(const at::Tensor& a, const at::Tensor& b, const char* op) {
    const auto na = a.dim(), nb = b.dim();
    for (int64_t i = 1; i <= std::min(na, nb); ++i) {
        const int64_t x = a.size(na - i), y = b.size(nb - i);
        if (x != y && x != 1 && y != 1)
            throw std::invalid_argument(std::string("shapes ") + shape_string(a.sizes()) + " and " + shape_string(b.sizes()) +
                                        " do not broadcast for '" + op + "'");
    }
}

template <char Op>
int t_arith(lua_State* L) {
    const char op[2] = {Op, 0};
    at::Tensor a = operand(L, 1, op), b = operand(L, 2, op);
    check_broadcast(a, b, op);
    at::Tensor r;
    if constexpr (Op == '+') r = a + b;
    else if constexpr (Op == '-') r = a - b;
    else if constexpr (Op == '*') r = a * b;
    else if constexpr (Op == '/') r = a / b;
    else if constexpr (Op == '^') r = at::pow(a, b);
    push_tensor(L, r);
    return 1;
}

int t_unm(lua_State* L) {
    push_tensor(L, -arg_tensor(L, 1, "unary minus"));
    return 1;
}

// ---- methods ---------------------------------------------------------------------------------------------

int m_shape(lua_State* L) {
    const at::Tensor& t = arg_tensor(L, 1, "shape");
    lua_createtable(L, static_cast<int>(t.dim()), 0);
    for (int64_t i = 0; i < t.dim(); ++i) {
        lua_pushinteger(L, t.size(i));
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

int m_size(lua_State* L) {
    const at::Tensor& t = arg_tensor(L, 1, "size");
    if (lua_isnoneornil(L, 2)) return m_shape(L);
    lua_pushinteger(L, t.size(dim_arg(L, 2, t, "size")));
    return 1;
}

int m_dim(lua_State* L) {
    lua_pushinteger(L, arg_tensor(L, 1, "dim").dim());
    return 1;
}

int m_numel(lua_State* L) {
    lua_pushinteger(L, arg_tensor(L, 1, "numel").numel());
    return 1;
}

int m_dtype(lua_State* L) {
    lua_pushstring(L, dtype_name(arg_tensor(L, 1, "dtype").scalar_type()));
    return 1;
}

int m_item(lua_State* L) {
    const at::Tensor& t = arg_tensor(L, 1, "item");
    if (t.numel() != 1)
        throw std::invalid_argument("item() needs a tensor with exactly one element, this one has shape " + shape_string(t.sizes()));
    push_result(L, t.reshape({}));
    return 1;
}

int m_clone(lua_State* L) {
    push_tensor(L, arg_tensor(L, 1, "clone").clone());
    return 1;
}

int m_to(lua_State* L) {
    const at::Tensor& t = arg_tensor(L, 1, "to");
    push_tensor(L, t.to(parse_dtype(arg_string(L, 2, "to"), "to")));
    return 1;
}

int m_float(lua_State* L) {
    push_tensor(L, arg_tensor(L, 1, "float").to(at::kFloat));
    return 1;
}

void push_table_rec(lua_State* L, const at::Tensor& t) {
    if (t.dim() == 0) {
        push_result(L, t);
        return;
    }
    const int64_t n = t.size(0);
    lua_createtable(L, static_cast<int>(n), 0);
    for (int64_t i = 0; i < n; ++i) {
        push_table_rec(L, t[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

int m_totable(lua_State* L) {
    const at::Tensor& t = arg_tensor(L, 1, "totable");
    at::Tensor c = t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf ? t.to(at::kFloat) : t;
    if (c.dim() == 0) {
        push_result(L, c);
        return 1;
    }
    // Fast path for 1-D / 2-D float and integer tensors through a contiguous double / int64 copy.
    const bool integral = at::isIntegralType(c.scalar_type(), false);
    at::Tensor flat = (integral ? c.to(at::kLong) : c.scalar_type() == at::kBool ? c : c.to(at::kDouble)).contiguous();
    push_table_rec(L, flat);
    return 1;
}

std::vector<int64_t> int_list_arg(lua_State* L, int first, const char* fn) {
    std::vector<int64_t> v;
    if (lua_type(L, first) == LUA_TTABLE) {
        const int64_t n = raw_len(L, first);
        for (int64_t i = 1; i <= n; ++i) {
            lua_rawgeti(L, first, i);
            const bool ok = lua_isinteger(L, -1);
            const int64_t x = lua_tointeger(L, -1);
            lua_pop(L, 1);
            if (!ok) arg_fail(first, fn, "a list of integers expected");
            v.push_back(x);
        }
    } else {
        for (int i = first; i <= lua_gettop(L); ++i) v.push_back(arg_integer(L, i, fn));
    }
    return v;
}

int m_reshape(lua_State* L) {
    const at::Tensor& t = arg_tensor(L, 1, "reshape");
    std::vector<int64_t> shape = int_list_arg(L, 2, "reshape");
    int64_t n = 1, unknown = 0;
    for (int64_t s : shape) s == -1 ? ++unknown : n *= s;
    if (unknown > 1 || (unknown == 0 && n != t.numel()) || (unknown == 1 && (n == 0 || t.numel() % n != 0)))
        throw std::invalid_argument("cannot reshape a tensor of shape " + shape_string(t.sizes()) + " (" +
                                    std::to_string(t.numel()) + " elements) to " + shape_string(shape));
    push_tensor(L, t.reshape(shape));
    return 1;
}

int m_flatten(lua_State* L) {
    push_tensor(L, arg_tensor(L, 1, "flatten").flatten());
    return 1;
}

int m_transpose(lua_State* L) {
    const at::Tensor& t = arg_tensor(L, 1, "transpose");
    if (lua_isnoneornil(L, 2)) {
        if (t.dim() != 2) throw std::invalid_argument("transpose() without dimensions needs a 2-D tensor");
        push_tensor(L, t.t());
        return 1;
    }
    push_tensor(L, t.transpose(dim_arg(L, 2, t, "transpose"), dim_arg(L, 3, t, "transpose")));
    return 1;
}

int m_squeeze(lua_State* L) {
    const at::Tensor& t = arg_tensor(L, 1, "squeeze");
    push_tensor(L, lua_isnoneornil(L, 2) ? t.squeeze() : t.squeeze(dim_arg(L, 2, t, "squeeze")));
    return 1;
}

int m_unsqueeze(lua_State* L) {
    const at::Tensor& t = arg_tensor(L, 1, "unsqueeze");
    const int64_t d = arg_integer(L, 2, "unsqueeze");
    if (d == 0) arg_fail(2, "unsqueeze", "dimensions are 1-based");
    const int64_t z = d > 0 ? d - 1 : t.dim() + 1 + d;
    if (z < 0 || z > t.dim()) arg_fail(2, "unsqueeze", "dimension out of range");
    push_tensor(L, t.unsqueeze(z));
    return 1;
}

at::Tensor floating(const at::Tensor& t) {
    return at::isFloatingType(t.scalar_type()) ? t : t.to(at::kFloat);
}

enum class Reduce { Mean, Sum, Std, Var, Norm };

template <Reduce R>
int m_reduce(lua_State* L) {
    static constexpr const char* names[] = {"mean", "sum", "std", "var", "norm"};
    const char* fn = names[static_cast<int>(R)];
    // Sums of integer tensors stay integers; the other reductions compute in floating point.
    const at::Tensor& arg = arg_tensor(L, 1, fn);
    const at::Tensor t = R == Reduce::Sum ? arg : floating(arg);
    if (t.numel() == 0) throw std::invalid_argument(std::string(fn) + "() of an empty tensor");
    const bool has_dim = !lua_isnoneornil(L, 2);
    const bool keep = opt_bool(L, 3, false);
    at::Tensor r;
    if (!has_dim) {
        if constexpr (R == Reduce::Mean) r = t.mean();
        else if constexpr (R == Reduce::Sum) r = t.sum();
        else if constexpr (R == Reduce::Std) r = t.std();
        else if constexpr (R == Reduce::Var) r = t.var();
        else r = t.norm();
    } else {
        const int64_t d = dim_arg(L, 2, t, fn);
        if constexpr (R == Reduce::Mean) r = t.mean(d, keep);
        else if constexpr (R == Reduce::Sum) r = t.sum(d, keep);
        else if constexpr (R == Reduce::Std) r = t.std(d, /*unbiased=*/true, keep);
        else if constexpr (R == Reduce::Var) r = t.var(d, /*unbiased=*/true, keep);
        else r = at::norm(t, 2, {d}, keep);
    }
    push_result(L, r);
    return 1;
}

template <bool Max>
int m_extreme(lua_State* L) {
    const char* fn = Max ? "max" : "min";
    const at::Tensor& t = arg_tensor(L, 1, fn);
    if (t.numel() == 0) throw std::invalid_argument(std::string(fn) + "() of an empty tensor");
    if (lua_isnoneornil(L, 2)) {
        push_result(L, Max ? t.max() : t.min());
        return 1;
    }
    const int64_t d = dim_arg(L, 2, t, fn);
    auto [v, i] = Max ? t.max(d, opt_bool(L, 3, false)) : t.min(d, opt_bool(L, 3, false));
    push_tensor(L, v);
    push_tensor(L, i + 1);
    return 2;
}

template <bool Max>
int m_argextreme(lua_State* L) {
    const char* fn = Max ? "argmax" : "argmin";
    const at::Tensor& t = arg_tensor(L, 1, fn);
    if (t.numel() == 0) throw std::invalid_argument(std::string(fn) + "() of an empty tensor");
    if (lua_isnoneornil(L, 2)) {
        lua_pushinteger(L, (Max ? t.argmax() : t.argmin()).item<int64_t>() + 1);
        return 1;
    }
    const int64_t d = dim_arg(L, 2, t, fn);
    push_result(L, (Max ? t.argmax(d, opt_bool(L, 3, false)) : t.argmin(d, opt_bool(L, 3, false))) + 1);
    return 1;
}

template <at::Tensor (*F)(const at::Tensor&)>
int m_unary(lua_State* L) {
    push_tensor(L, F(floating(arg_tensor(L, 1, "tensor method"))));
    return 1;
}
at::Tensor op_abs(const at::Tensor& t) { return t.abs(); }
at::Tensor op_exp(const at::Tensor& t) { return t.exp(); }
at::Tensor op_log(const at::Tensor& t) { return t.log(); }
at::Tensor op_sqrt(const at::Tensor& t) { return t.sqrt(); }
at::Tensor op_relu(const at::Tensor& t) { return t.relu(); }
at::Tensor op_tanh(const at::Tensor& t) { return t.tanh(); }

int64_t opt_dim(lua_State* L, int idx, const at::Tensor& t, const char* fn) {
    return lua_isnoneornil(L, idx) ? std::max<int64_t>(t.dim() - 1, 0) : dim_arg(L, idx, t, fn);
}

int m_softmax(lua_State* L) {
    const at::Tensor t = floating(arg_tensor(L, 1, "softmax"));
    push_tensor(L, t.softmax(opt_dim(L, 2, t, "softmax")));
    return 1;
}

int m_log_softmax(lua_State* L) {
    const at::Tensor t = floating(arg_tensor(L, 1, "log_softmax"));
    push_tensor(L, t.log_softmax(opt_dim(L, 2, t, "log_softmax")));
    return 1;
}

int m_topk(lua_State* L) {
    const at::Tensor& t = arg_tensor(L, 1, "topk");
    const int64_t k = arg_integer(L, 2, "topk");
    if (t.dim() == 0) throw std::invalid_argument("topk() needs a tensor with at least one dimension");
    const int64_t d = opt_dim(L, 3, t, "topk");
    if (k < 1 || k > t.size(d))
        arg_fail(2, "topk", "k must be between 1 and " + std::to_string(t.size(d)) + " (the size of dimension " +
                                std::to_string(d + 1) + ")");
    const bool largest = opt_bool(L, 4, true);
    auto [v, i] = t.topk(k, d, largest, /*sorted=*/true);
    push_tensor(L, v);
    push_tensor(L, i + 1);
    return 2;
}

int m_sort(lua_State* L) {
    const at::Tensor& t = arg_tensor(L, 1, "sort");
    const int64_t d = opt_dim(L, 2, t, "sort");
    auto [v, i] = t.sort(d, /*descending=*/opt_bool(L, 3, false));
    push_tensor(L, v);
    push_tensor(L, i + 1);
    return 2;
}

int m_cosine(lua_State* L) {
    const at::Tensor a = floating(arg_tensor(L, 1, "cosine"));
    const at::Tensor b = floating(arg_tensor(L, 2, "cosine"));
    if (a.dim() == 0 || b.dim() == 0) throw std::invalid_argument("cosine() needs tensors with at least one dimension");
    check_broadcast(a, b, "cosine");
    const int64_t d = opt_dim(L, 3, a, "cosine");
    if (a.size(d) != b.size(std::min<int64_t>(d, b.dim() - 1)) && a.dim() == b.dim())
        throw std::invalid_argument("cosine(): sizes differ along dimension " + std::to_string(d + 1));
    push_result(L, at::cosine_similarity(a, b, d, 1e-8));
    return 1;
}

int m_dot(lua_State* L) {
    const at::Tensor a = floating(arg_tensor(L, 1, "dot")).flatten();
    const at::Tensor b = floating(arg_tensor(L, 2, "dot")).flatten();
    if (a.numel() != b.numel()) throw std::invalid_argument("dot(): tensors have different numbers of elements");
    lua_pushnumber(L, a.dot(b.to(a.scalar_type())).item<double>());
    return 1;
}

int m_matmul(lua_State* L) {
    const at::Tensor a = floating(arg_tensor(L, 1, "matmul"));
    const at::Tensor b = floating(arg_tensor(L, 2, "matmul"));
    if (a.dim() == 0 || b.dim() == 0 || a.size(-1) != b.size(b.dim() >= 2 ? -2 : -1))
        throw std::invalid_argument("matmul(): shapes " + shape_string(a.sizes()) + " and " + shape_string(b.sizes()) +
                                    " do not match");
    push_result(L, at::matmul(a, b.to(a.scalar_type())));
    return 1;
}

int m_save(lua_State* L) {
    const at::Tensor& t = arg_tensor(L, 1, "save");
    const std::string path = arg_string(L, 2, "save");
    const std::filesystem::path dest = host(L).writable_path(path, "t:save");
    save_npy(t, dest.string());
    lua_pushstring(L, dest.string().c_str());
    return 1;
}

// ---- nscope.* constructors ---------------------------------------------------------------------------------

int f_tensor(lua_State* L) {
    const at::ScalarType dt = opt_dtype(L, 2, "nscope.tensor", at::kFloat);
    if (at::Tensor* t = test_tensor(L, 1)) {
        push_tensor(L, t->to(dt).clone());
        return 1;
    }
    if (lua_type(L, 1) != LUA_TTABLE && lua_type(L, 1) != LUA_TNUMBER)
        arg_fail(1, "nscope.tensor", "a table of numbers expected, got " + type_name_at(L, 1));
    push_tensor(L, to_tensor(L, 1, "nscope.tensor", dt));
    return 1;
}

template <int Fill>
int f_filled(lua_State* L) {
    const char* fn = Fill == 0 ? "nscope.zeros" : "nscope.ones";
    const std::vector<int64_t> shape = shape_args(L, fn);
    const int opts = lua_type(L, 1) == LUA_TTABLE ? 2 : static_cast<int>(shape.size()) + 1;
    const at::ScalarType dtype = opt_dtype(L, opts, fn, at::kFloat);
    check_new_tensor(L, fn, shape, dtype);
    push_tensor(L, at::full(shape, static_cast<double>(Fill), at::TensorOptions().dtype(dtype)));
    return 1;
}

int f_full(lua_State* L) {
    if (lua_type(L, 1) != LUA_TTABLE) arg_fail(1, "nscope.full", "shape table expected");
    const std::vector<int64_t> shape = shape_args(L, "nscope.full");
    check_new_tensor(L, "nscope.full", shape, at::kFloat);
    push_tensor(L, at::full(shape, arg_number(L, 2, "nscope.full"), at::kFloat));
    return 1;
}

int f_arange(lua_State* L) {
    // nscope.arange(n) -> 1..n ; nscope.arange(a, b[, step]) -> a..b inclusive, like a numeric for loop
    double a = 1, b = 0, step = 1;
    if (lua_isnoneornil(L, 2)) {
        b = arg_number(L, 1, "nscope.arange");
    } else {
        a = arg_number(L, 1, "nscope.arange");
        b = arg_number(L, 2, "nscope.arange");
        if (!lua_isnoneornil(L, 3)) step = arg_number(L, 3, "nscope.arange");
    }
    if (step == 0) arg_fail(3, "nscope.arange", "step must not be 0");
    const double count = std::floor((b - a) / step) + 1;
    if (!std::isfinite(count)) arg_fail(1, "nscope.arange", "bounds and step must be finite numbers");
    if (count > 0) check_new_tensor(L, "nscope.arange", {static_cast<int64_t>(std::min(count, 0x1p62))}, at::kFloat);
    push_tensor(L, at::arange(a, b + step * 0.5, step, at::kFloat));
    return 1;
}

int f_randn(lua_State* L) {
    const std::vector<int64_t> shape = shape_args(L, "nscope.randn");
    check_new_tensor(L, "nscope.randn", shape, at::kFloat);
    push_tensor(L, at::randn(shape, at::kFloat));
    return 1;
}

int f_manual_seed(lua_State* L) {
    at::manual_seed(static_cast<uint64_t>(arg_integer(L, 1, "nscope.manual_seed")));
    return 0;
}

template <bool Stack>
int f_join(lua_State* L) {
    const char* fn = Stack ? "nscope.stack" : "nscope.cat";
    if (lua_type(L, 1) != LUA_TTABLE) arg_fail(1, fn, "a list of tensors expected");
    std::vector<at::Tensor> parts;
    const int64_t n = raw_len(L, 1);
    for (int64_t i = 1; i <= n; ++i) {
        lua_rawgeti(L, 1, i);
        at::Tensor* t = test_tensor(L, -1);
        lua_pop(L, 1);
        if (t == nullptr) arg_fail(1, fn, "element " + std::to_string(i) + " is not a tensor");
        parts.push_back(*t);
    }
    if (parts.empty()) arg_fail(1, fn, "the list is empty");
    int64_t d = 0;
    if (!lua_isnoneornil(L, 2)) {
        const int64_t rank = parts[0].dim() + (Stack ? 1 : 0);
        const int64_t x = arg_integer(L, 2, fn);
        if (x == 0) arg_fail(2, fn, "dimensions are 1-based");
        d = x > 0 ? x - 1 : rank + x;
        if (d < 0 || d >= rank) arg_fail(2, fn, "dimension out of range");
    }
    for (size_t i = 1; i < parts.size(); ++i) {
        bool ok = parts[i].dim() == parts[0].dim();
        for (int64_t k = 0; ok && k < parts[0].dim(); ++k)
            ok = parts[i].size(k) == parts[0].size(k) || (!Stack && k == d);
        if (!ok)
            throw std::invalid_argument(std::string(fn) + ": tensor " + std::to_string(i + 1) + " has shape " +
                                        shape_string(parts[i].sizes()) + ", tensor 1 has " + shape_string(parts[0].sizes()));
    }
    push_tensor(L, Stack ? at::stack(parts, d) : at::cat(parts, d));
    return 1;
}

const luaL_Reg kMethods[] = {
    {"shape", guarded<m_shape>},         {"size", guarded<m_size>},
    {"dim", guarded<m_dim>},             {"numel", guarded<m_numel>},
    {"dtype", guarded<m_dtype>},         {"item", guarded<m_item>},
    {"clone", guarded<m_clone>},         {"to", guarded<m_to>},
    {"float", guarded<m_float>},         {"totable", guarded<m_totable>},
    {"reshape", guarded<m_reshape>},     {"flatten", guarded<m_flatten>},
    {"transpose", guarded<m_transpose>}, {"squeeze", guarded<m_squeeze>},
    {"unsqueeze", guarded<m_unsqueeze>}, {"mean", guarded<m_reduce<Reduce::Mean>>},
    {"sum", guarded<m_reduce<Reduce::Sum>>}, {"std", guarded<m_reduce<Reduce::Std>>},
    {"var", guarded<m_reduce<Reduce::Var>>}, {"norm", guarded<m_reduce<Reduce::Norm>>},
    {"max", guarded<m_extreme<true>>},   {"min", guarded<m_extreme<false>>},
    {"argmax", guarded<m_argextreme<true>>}, {"argmin", guarded<m_argextreme<false>>},
    {"abs", guarded<m_unary<op_abs>>},   {"exp", guarded<m_unary<op_exp>>},
    {"log", guarded<m_unary<op_log>>},   {"sqrt", guarded<m_unary<op_sqrt>>},
    {"relu", guarded<m_unary<op_relu>>}, {"tanh", guarded<m_unary<op_tanh>>},
    {"softmax", guarded<m_softmax>},     {"log_softmax", guarded<m_log_softmax>},
    {"topk", guarded<m_topk>},           {"sort", guarded<m_sort>},
    {"cosine", guarded<m_cosine>},       {"dot", guarded<m_dot>},
    {"matmul", guarded<m_matmul>},       {"save", guarded<m_save>},
    {nullptr, nullptr}};

const luaL_Reg kMeta[] = {
    {"__gc", t_gc},
    {"__tostring", guarded<t_tostring>},
    {"__len", guarded<t_len>},
    {"__index", guarded<t_index>},
    {"__newindex", guarded<t_newindex>},
    {"__add", guarded<t_arith<'+'>>},
    {"__sub", guarded<t_arith<'-'>>},
    {"__mul", guarded<t_arith<'*'>>},
    {"__div", guarded<t_arith<'/'>>},
    {"__pow", guarded<t_arith<'^'>>},
    {"__unm", guarded<t_unm>},
    {nullptr, nullptr}};

const luaL_Reg kFunctions[] = {
    {"tensor", guarded<f_tensor>},       {"zeros", guarded<f_filled<0>>},
    {"ones", guarded<f_filled<1>>},      {"full", guarded<f_full>},
    {"arange", guarded<f_arange>},       {"randn", guarded<f_randn>},
    {"manual_seed", guarded<f_manual_seed>}, {"cat", guarded<f_join<false>>},
    {"stack", guarded<f_join<true>>},    {nullptr, nullptr}};

}  // namespace

void register_tensor(lua_State* L, int module_idx) {
    module_idx = lua_absindex(L, module_idx);
    luaL_newmetatable(L, kTensorMeta);  // stack: mt
    luaL_setfuncs(L, kMeta, 0);
    lua_newtable(L);                    // stack: mt, methods
    luaL_setfuncs(L, kMethods, 0);
    lua_setfield(L, -2, "methods");     // stack: mt
    lua_pop(L, 1);
    lua_pushvalue(L, module_idx);       // stack: nscope
    luaL_setfuncs(L, kFunctions, 0);
    lua_pop(L, 1);
}

void push_tensor(lua_State* L, at::Tensor t) {
    void* p = lua_newuserdatauv(L, sizeof(at::Tensor), 0);
    new (p) at::Tensor(std::move(t));
    luaL_setmetatable(L, kTensorMeta);
}

at::Tensor* test_tensor(lua_State* L, int idx) { return static_cast<at::Tensor*>(luaL_testudata(L, idx, kTensorMeta)); }

at::Tensor& arg_tensor(lua_State* L, int idx, const char* fn) {
    at::Tensor* t = test_tensor(L, idx);
    if (t == nullptr) arg_fail(idx, fn, "tensor expected, got " + type_name_at(L, idx));
    return *t;
}

at::Tensor to_tensor(lua_State* L, int idx, const char* fn, at::ScalarType dtype) {
    if (at::Tensor* t = test_tensor(L, idx)) return *t;
    if (lua_type(L, idx) == LUA_TNUMBER) return at::scalar_tensor(lua_tonumber(L, idx), at::TensorOptions().dtype(dtype));
    if (lua_type(L, idx) == LUA_TTABLE) return table_to_tensor(L, lua_absindex(L, idx), dtype);
    throw std::invalid_argument(std::string(fn) + ": a tensor, number or table of numbers expected, got " + type_name_at(L, idx));
}

std::string tensor_to_string(const at::Tensor& t) {
    std::ostringstream os;
    os << "Tensor" << shape_string(t.sizes()) << " " << dtype_name(t.scalar_type());
    if (t.numel() == 0) return os.str();
    at::Tensor d = t.to(at::isIntegralType(t.scalar_type(), true) ? at::kLong : at::kDouble).contiguous();
    if (t.numel() <= 64) {
        os << "\n";
        std::function<void(const at::Tensor&, int)> rec = [&](const at::Tensor& x, int indent) {
            if (x.dim() == 0) {
                if (x.scalar_type() == at::kLong) os << x.item<int64_t>();
                else os << x.item<double>();
                return;
            }
            os << "{";
            for (int64_t i = 0; i < x.size(0); ++i) {
                if (i) os << (x.dim() > 1 ? ",\n" + std::string(static_cast<size_t>(indent + 1), ' ') : ", ");
                rec(x[i], indent + 1);
            }
            os << "}";
        };
        rec(d, 0);
    } else if (!at::isIntegralType(t.scalar_type(), true)) {
        os << " (mean " << d.mean().item<double>() << ", std " << d.std().item<double>() << ", min "
           << d.min().item<double>() << ", max " << d.max().item<double>() << ")";
    }
    return os.str();
}

nlohmann::json tensor_to_json(const at::Tensor& t) {
    if (t.dim() == 0) {
        if (at::isIntegralType(t.scalar_type(), true)) return t.item<int64_t>();
        return t.item<double>();
    }
    nlohmann::json a = nlohmann::json::array();
    for (int64_t i = 0; i < t.size(0); ++i) a.push_back(tensor_to_json(t[i]));
    return a;
}

void save_npy(const at::Tensor& t, const std::string& path) {
    const bool integral = at::isIntegralType(t.scalar_type(), true);
    const at::Tensor c = t.to(integral ? at::kLong : at::kFloat).contiguous();
    write_file_atomic(path, npy_encode(c.data_ptr(), integral, c.sizes().vec()));
}

}  // namespace nscope::lua

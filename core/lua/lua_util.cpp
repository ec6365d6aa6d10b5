#include "core/lua/lua_util.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/lua/lua_tensor.h"

namespace nscope::lua {

int raise_located(lua_State* L) {
    // stack: msg
    luaL_where(L, 1);   // stack: msg, where
    lua_insert(L, -2);  // stack: where, msg
    lua_concat(L, 2);   // stack: "file:line: msg"
    return lua_error(L);
}

int traceback_handler(lua_State* L) {
    // stack: error object
    const char* msg = lua_tostring(L, 1);
    if (msg == nullptr) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
            msg = lua_tostring(L, -1);
        } else {
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
        }
    }
    if (std::string(msg).find("\nstack traceback:") != std::string::npos) {
        lua_pushstring(L, msg);  // already carries the traceback of where it was raised
        return 1;
    }
    luaL_traceback(L, L, msg, 1);  // stack: ..., "msg\nstack traceback:\n..."
    return 1;
}

int protected_call(lua_State* L, int nargs, int nresults) {
    // stack: fn, args...
    const int base = lua_gettop(L) - nargs;  // index of fn
    lua_pushcfunction(L, traceback_handler);
    lua_insert(L, base);  // stack: handler, fn, args...
    const int rc = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);  // stack: results... | message
    return rc;
}

std::string type_name_at(lua_State* L, int idx) {
    if (luaL_testudata(L, idx, kTensorMeta) != nullptr) return "tensor";
    return luaL_typename(L, idx);
}

void arg_fail(int arg, const char* fn, const std::string& msg) {
    throw std::invalid_argument("bad argument #" + std::to_string(arg) + " to '" + fn + "' (" + msg + ")");
}

double arg_number(lua_State* L, int idx, const char* fn) {
    int ok = 0;
    const double v = lua_tonumberx(L, idx, &ok);
    if (!ok || lua_type(L, idx) != LUA_TNUMBER) arg_fail(idx, fn, "number expected, got " + type_name_at(L, idx));
    return v;
}

int64_t arg_integer(lua_State* L, int idx, const char* fn) {
    if (lua_type(L, idx) != LUA_TNUMBER) arg_fail(idx, fn, "integer expected, got " + type_name_at(L, idx));
    int ok = 0;
    const lua_Integer v = lua_tointegerx(L, idx, &ok);
    if (!ok) arg_fail(idx, fn, "number has no integer representation");
    return v;
}

std::string arg_string(lua_State* L, int idx, const char* fn) {
    if (lua_type(L, idx) != LUA_TSTRING) arg_fail(idx, fn, "string expected, got " + type_name_at(L, idx));
    size_t n = 0;
    const char* s = lua_tolstring(L, idx, &n);
    return std::string(s, n);
}

bool opt_bool(lua_State* L, int idx, bool def) {
    if (lua_isnoneornil(L, idx)) return def;
    return lua_toboolean(L, idx) != 0;
}

int raw_field(lua_State* L, int idx, const char* key) {
    idx = lua_absindex(L, idx);
    lua_pushstring(L, key);
    return lua_rawget(L, idx);
}

int64_t raw_len(lua_State* L, int idx) { return static_cast<int64_t>(lua_rawlen(L, idx)); }

void push_json(lua_State* L, const nlohmann::json& j) {
    switch (j.type()) {
        case nlohmann::json::value_t::null: lua_pushnil(L); break;
        case nlohmann::json::value_t::boolean: lua_pushboolean(L, j.get<bool>()); break;
        case nlohmann::json::value_t::number_integer: lua_pushinteger(L, j.get<int64_t>()); break;
        case nlohmann::json::value_t::number_unsigned:
            lua_pushinteger(L, static_cast<lua_Integer>(j.get<uint64_t>()));
            break;
        case nlohmann::json::value_t::number_float: lua_pushnumber(L, j.get<double>()); break;
        case nlohmann::json::value_t::string: {
            const auto& s = j.get_ref<const std::string&>();
            lua_pushlstring(L, s.data(), s.size());
            break;
        }
        case nlohmann::json::value_t::array: {
            lua_createtable(L, static_cast<int>(j.size()), 0);
            lua_Integer i = 1;
            for (const auto& v : j) {
                push_json(L, v);
                lua_rawseti(L, -2, i++);
            }
            break;
        }
        case nlohmann::json::value_t::object: {
            lua_createtable(L, 0, static_cast<int>(j.size()));
            for (const auto& [k, v] : j.items()) {
                lua_pushlstring(L, k.data(), k.size());
                push_json(L, v);
                lua_rawset(L, -3);
            }
            break;
        }
        default: lua_pushnil(L); break;
    }
}

namespace {

nlohmann::json to_json_rec(lua_State* L, int idx, const std::string& where, std::set<const void*>& seen, int depth,
                           const std::vector<std::string>* skip = nullptr) {
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
        case LUA_TNIL: return nullptr;
        case LUA_TBOOLEAN: return lua_toboolean(L, idx) != 0;
        case LUA_TNUMBER:
            if (lua_isinteger(L, idx)) return static_cast<int64_t>(lua_tointeger(L, idx));
            return lua_tonumber(L, idx);
        case LUA_TSTRING: {
            size_t n = 0;
            const char* s = lua_tolstring(L, idx, &n);
            return std::string(s, n);
        }
        case LUA_TUSERDATA:
            if (const at::Tensor* t = test_tensor(L, idx)) return tensor_to_json(*t);
            break;
        case LUA_TTABLE: {
            if (depth > 64) throw std::invalid_argument(where + ": table nested too deeply");
            const void* p = lua_topointer(L, idx);
            if (!seen.insert(p).second) throw std::invalid_argument(where + ": a table contains itself");
            const int64_t n = raw_len(L, idx);
            size_t count = 0;
            bool all_int = true;
            lua_pushnil(L);
            while (lua_next(L, idx) != 0) {
                if (skip && lua_type(L, -2) == LUA_TSTRING &&
                    std::find(skip->begin(), skip->end(), lua_tostring(L, -2)) != skip->end()) {
                    lua_pop(L, 1);
                    continue;
                }
                ++count;
                if (!lua_isinteger(L, -2)) all_int = false;
                lua_pop(L, 1);
            }
            nlohmann::json out;
            if (all_int && static_cast<int64_t>(count) == n) {
                out = nlohmann::json::array();
                for (int64_t i = 1; i <= n; ++i) {
                    lua_rawgeti(L, idx, i);
                    nlohmann::json v = to_json_rec(L, -1, where + "[" + std::to_string(i) + "]", seen, depth + 1);
                    lua_pop(L, 1);
                    out.push_back(std::move(v));
                }
            } else {
                out = nlohmann::json::object();
                lua_pushnil(L);
                while (lua_next(L, idx) != 0) {
                    std::string key;
                    if (lua_type(L, -2) == LUA_TSTRING) {
                        key = lua_tostring(L, -2);
                    } else if (lua_isinteger(L, -2)) {
                        key = std::to_string(lua_tointeger(L, -2));
                    } else {
                        lua_pop(L, 2);
                        throw std::invalid_argument(where + ": table keys must be strings or integers");
                    }
                    if (skip && std::find(skip->begin(), skip->end(), key) != skip->end()) {
                        lua_pop(L, 1);
                        continue;
                    }
                    nlohmann::json v = to_json_rec(L, -1, where + "." + key, seen, depth + 1);
                    lua_pop(L, 1);
                    out[key] = std::move(v);
                }
            }
            seen.erase(p);
            return out;
        }
        default: break;
    }
    throw std::invalid_argument(where + ": cannot convert a " + type_name_at(L, idx) + " value to data");
}

}  // namespace

nlohmann::json to_json(lua_State* L, int idx, const std::string& where, const std::vector<std::string>& skip) {
    std::set<const void*> seen;
    return to_json_rec(L, idx, where, seen, 0, skip.empty() ? nullptr : &skip);
}

std::string to_display(lua_State* L, int idx) {
    switch (lua_type(L, idx)) {
        case LUA_TSTRING:
        case LUA_TNUMBER: {
            lua_pushvalue(L, idx);
            std::string s = lua_tostring(L, -1);
            lua_pop(L, 1);
            return s;
        }
        case LUA_TBOOLEAN: return lua_toboolean(L, idx) ? "true" : "false";
        case LUA_TNIL: return "nil";
        case LUA_TUSERDATA:
            if (const at::Tensor* t = test_tensor(L, idx)) return tensor_to_string(*t);
            [[fallthrough]];
        default: {
            char buf[64];
            std::snprintf(buf, sizeof buf, "%s: %p", luaL_typename(L, idx), lua_topointer(L, idx));
            return buf;
        }
    }
}

}  // namespace nscope::lua

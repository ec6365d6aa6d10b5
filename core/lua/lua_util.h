// Small helpers shared by the Lua bindings: the guarded C-function wrapper, argument checks that throw C++
// exceptions (never longjmp), the protected-call helper, and JSON <-> Lua conversion.
//
// The rule every binding follows: Lua errors are raised with lua_error, which longjmps. A C function therefore
// never raises a Lua error while a C++ object with a destructor is alive in its frame. Bindings are written as
// plain C++ functions that report problems by throwing; `guarded<F>` catches, pushes the message, leaves the
// catch block (destroying the exception) and only then calls lua_error from a frame that owns nothing.
// Inside F, only non-raising Lua API calls are used (raw table access, pushes, lua_to*); the only raise left
// is an allocation failure of the Lua allocator.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <lua.hpp>
#include <nlohmann/json.hpp>

namespace nscope::lua {

/// A Lua-side error whose message is already complete (location and traceback included): `guarded`
/// raises it as is instead of prefixing the caller's file:line.
class ScriptError : public std::runtime_error {
public:
    explicit ScriptError(const std::string& what) : std::runtime_error(what) {}
};

using CFn = int (*)(lua_State*);

/// Raise the message on top of the stack as a Lua error, prefixed with the calling Lua line.
int raise_located(lua_State* L);

template <CFn F>
int guarded(lua_State* L) {
    bool located = true;
    try {
        return F(L);
    } catch (const ScriptError& e) {
        lua_pushstring(L, e.what());
        located = false;
    } catch (const std::exception& e) {
        lua_pushstring(L, e.what());
    } catch (...) {
        lua_pushliteral(L, "unknown C++ exception");
    }
    // No C++ object with a destructor is alive past this point.
    if (located) return raise_located(L);
    return lua_error(L);
}

/// Call the function below `nargs` arguments on the stack in protected mode with a traceback message
/// handler. On success leaves `nresults` results; on failure leaves one string: "msg\nstack traceback:...".
/// Returns the lua_pcall status. Never raises.
int protected_call(lua_State* L, int nargs, int nresults);

/// Message handler used by protected_call: converts the error object to a string and appends a traceback
/// (unless the message already carries one, e.g. an error re-raised from a hook).
int traceback_handler(lua_State* L);

// ---- argument checks (throw std::invalid_argument with "bad argument #n to 'fn' (...)") -------------------
std::string type_name_at(lua_State* L, int idx);
[[noreturn]] void arg_fail(int arg, const char* fn, const std::string& msg);
double arg_number(lua_State* L, int idx, const char* fn);
int64_t arg_integer(lua_State* L, int idx, const char* fn);
std::string arg_string(lua_State* L, int idx, const char* fn);
bool opt_bool(lua_State* L, int idx, bool def);
/// Raw field of the table at `idx` (no metamethods); pushes it and returns its type.
int raw_field(lua_State* L, int idx, const char* key);
/// The array part 1..n of a table (raw length).
int64_t raw_len(lua_State* L, int idx);

// ---- JSON ------------------------------------------------------------------------------------------------
/// Push JSON as Lua values: objects/arrays -> tables (arrays 1-based), null -> nil.
void push_json(lua_State* L, const nlohmann::json& j);
/// Convert the Lua value at `idx` to JSON: tables with keys 1..n become arrays (the empty table too),
/// other tables objects (string keys; integer keys are written as strings). Functions, userdata other than
/// tensors and cycles are refused with an error naming `where`.
/// `skip`: keys of the top-level table to leave out.
nlohmann::json to_json(lua_State* L, int idx, const std::string& where, const std::vector<std::string>& skip = {});

/// tostring() semantics for any value (uses __tostring / __name), without raising.
std::string to_display(lua_State* L, int idx);

}  // namespace nscope::lua

// The script engine: a fresh Lua state per script, the standard libraries the sandbox allows, the `nscope`
// module, the prelude (prelude.lua, embedded at build time), then the script itself. Load errors and run
// errors are reported differently; both are InputErrors (exit 2).
#include "core/lua/script.h"

#include <algorithm>
#include <cstdlib>
#include <memory>

#include <spdlog/spdlog.h>

#include "core/lua/lua_host.h"
#include "core/lua/lua_model.h"
#include "core/lua/lua_tensor.h"
#include "core/lua/lua_util.h"
#include "core/lua/prelude_lua.h"  // generated: kPreludeLua
#include "core/run/run_dir.h"
#include "nscope/error.h"
#include "nscope/version.h"

namespace nscope {
namespace fs = std::filesystem;

namespace lua {
namespace {

// ---- internal host functions for the prelude (return nil, message instead of raising) -------------------

template <bool Write>
int i_check_path(lua_State* L) {
    // stack: path, what
    const std::string path = arg_string(L, 1, "check_path");
    const std::string what = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "open";
    std::string resolved, why;
    try {
        resolved = (Write ? host(L).writable_path(path, what.c_str()) : host(L).readable_path(path, what.c_str())).string();
    } catch (const std::exception& e) {
        why = e.what();
    }
    if (!why.empty()) {
        lua_pushnil(L);
        lua_pushlstring(L, why.data(), why.size());
        return 2;
    }
    lua_pushlstring(L, resolved.data(), resolved.size());
    return 1;
}

int i_run_dir(lua_State* L) {
    const std::string dir = host(L).run_dir().string();
    lua_pushlstring(L, dir.data(), dir.size());
    return 1;
}

int i_log(lua_State* L) {
    // stack: level, message
    const std::string level = arg_string(L, 1, "log");
    const std::string msg = arg_string(L, 2, "log");
    if (level == "debug") spdlog::debug("{}", msg);
    else if (level == "warn") spdlog::warn("{}", msg);
    else if (level == "error") spdlog::error("{}", msg);
    else spdlog::info("{}", msg);
    if (RunDirectory* d = host(L).run_directory()) d->log("script_log", {{"level", level}, {"message", msg}});
    return 0;
}

const luaL_Reg kInternal[] = {
    {"check_read", guarded<i_check_path<false>>},
    {"check_write", guarded<i_check_path<true>>},
    {"run_dir", guarded<i_run_dir>},
    {"log", guarded<i_log>},
    {nullptr, nullptr}};

struct StateCloser {
    void operator()(lua_State* L) const { lua_close(L); }
};

void open_libraries(lua_State* L, bool unsafe) {
    if (unsafe) {
        luaL_openlibs(L);
        return;
    }
    // Allow-list: no debug library at all (tracebacks use the C API).
    const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},          {LUA_LOADLIBNAME, luaopen_package},
                             {LUA_COLIBNAME, luaopen_coroutine}, {LUA_TABLIBNAME, luaopen_table},
                             {LUA_IOLIBNAME, luaopen_io},        {LUA_OSLIBNAME, luaopen_os},
                             {LUA_STRLIBNAME, luaopen_string},   {LUA_MATHLIBNAME, luaopen_math},
                             {LUA_UTF8LIBNAME, luaopen_utf8}};
    for (const auto& lib : libs) {
        luaL_requiref(L, lib.name, lib.func, 1);
        lua_pop(L, 1);
    }
}

// ---- limits (ScriptOptions::max_instructions / max_memory) ----------------------------------------------

struct MemoryLimit {
    int64_t used = 0;  // since the limit was installed: blocks allocated before may drive it below 0
    int64_t limit = 0;
};

// lua_Alloc with a ceiling (the same realloc / free as luaL_newstate's, so blocks allocated before it was
// installed are freed correctly): refusing a (re)allocation makes Lua raise "not enough memory".
void* limited_alloc(void* ud, void* ptr, size_t osize, size_t nsize) {
    auto* m = static_cast<MemoryLimit*>(ud);
    const int64_t old = ptr != nullptr ? static_cast<int64_t>(osize) : 0;  // without a block, osize is a type tag
    if (nsize == 0) {
        std::free(ptr);
        m->used -= old;
        return nullptr;
    }
    const int64_t grown = m->used - old + static_cast<int64_t>(nsize);
    if (static_cast<int64_t>(nsize) > old && grown > m->limit) return nullptr;
    void* p = std::realloc(ptr, nsize);
    if (p != nullptr) m->used = grown;
    return p;
}

// Past the limit every further instruction fails too, so a script cannot pcall its way around it.
void instruction_limit_hook(lua_State* L, lua_Debug*) {
    lua_sethook(L, instruction_limit_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "instruction limit reached");
}

/// The message of a failed load or call (top of the stack), popped.
std::string pop_message(lua_State* L) {
    std::string msg = to_display(L, -1);
    lua_pop(L, 1);
    return msg;
}

}  // namespace
}  // namespace lua

int run_script(const PluginRegistry& plugins, const ScriptOptions& options) {
    using namespace lua;
    if (!fs::exists(options.script)) throw InputError("script '" + options.script.string() + "' does not exist");
    if (fs::is_directory(options.script))
        throw InputError("script '" + options.script.string() + "' is a directory, not a .lua file");

    ScriptHost script_host(plugins, options);
    MemoryLimit memory{0, static_cast<int64_t>(options.max_memory)};  // outlives the state, which frees through it
    std::unique_ptr<lua_State, StateCloser> state(luaL_newstate());
    if (!state) throw RuntimeError("cannot create a Lua state (out of memory)");
    lua_State* L = state.get();
    if (options.max_memory > 0) {
        lua_setallocf(L, limited_alloc, &memory);
        lua_pushinteger(L, static_cast<lua_Integer>(options.max_memory));  // also bounds each new tensor
        lua_setfield(L, LUA_REGISTRYINDEX, kMaxMemoryKey);
    }
    if (options.max_instructions > 0)  // coroutines created later inherit the hook
        lua_sethook(L, instruction_limit_hook, LUA_MASKCOUNT,
                    static_cast<int>(std::min<uint64_t>(options.max_instructions, INT32_MAX)));
    set_host(L, &script_host);
    open_libraries(L, options.unsafe);

    // stack: (empty)
    lua_newtable(L);  // stack: nscope
    const int nscope_idx = lua_gettop(L);
    lua_pushstring(L, NSCOPE_VERSION_STRING);
    lua_setfield(L, nscope_idx, "version");
    lua_pushboolean(L, options.unsafe);
    lua_setfield(L, nscope_idx, "unsafe");
    register_tensor(L, nscope_idx);
    lua_newtable(L);  // stack: nscope, internal
    const int internal_idx = lua_gettop(L);
    luaL_setfuncs(L, kInternal, 0);
    lua_pushstring(L, script_host.script_dir().c_str());
    lua_setfield(L, internal_idx, "script_dir");
    register_model_api(L, nscope_idx, internal_idx);
    lua_pushvalue(L, nscope_idx);
    lua_setglobal(L, "nscope");

    // The prelude: nscope, internal, unsafe, script, args.
    if (luaL_loadbufferx(L, kPreludeLua, sizeof(kPreludeLua) - 1, "=[nscope prelude]", "t") != LUA_OK)
        throw RuntimeError("nscope prelude does not compile: " + pop_message(L));
    lua_pushvalue(L, nscope_idx);
    lua_pushvalue(L, internal_idx);
    lua_pushboolean(L, options.unsafe);
    lua_pushstring(L, options.script.c_str());
    lua_createtable(L, static_cast<int>(options.args.size()), 0);
    for (size_t i = 0; i < options.args.size(); ++i) {
        lua_pushstring(L, options.args[i].c_str());
        lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
    }
    if (protected_call(L, 5, 0) != LUA_OK) throw RuntimeError("nscope prelude failed: " + pop_message(L));
    lua_settop(L, 0);

    // The script: text only in the sandbox.
    const int loaded = luaL_loadfilex(L, options.script.c_str(), options.unsafe ? nullptr : "t");
    if (loaded != LUA_OK) {
        const std::string msg = pop_message(L);
        if (msg.find("binary chunk") != std::string::npos)
            throw InputError("cannot run " + options.script.string() +
                             ": it is a precompiled binary chunk; the sandbox runs Lua source only (use --unsafe)");
        if (loaded == LUA_ERRSYNTAX) throw InputError("syntax error in " + msg);
        throw InputError("cannot load script: " + msg);
    }
    for (const auto& a : options.args) lua_pushstring(L, a.c_str());
    spdlog::debug("running {} ({})", options.script.string(), options.unsafe ? "unsafe" : "sandboxed");
    if (protected_call(L, static_cast<int>(options.args.size()), 0) != LUA_OK) {
        const std::string msg = pop_message(L);
        script_host.finish("failed", msg);
        throw InputError("script error: " + msg);
    }
    script_host.finish("complete", "");
    return 0;
}

}  // namespace nscope

// The per-script host state reachable from every Lua C function: options, plugins, the file policy and the
// lazily created run directory. Stored in the lua_State's extra space (copied to coroutines).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <lua.hpp>

#include "core/lua/script.h"

namespace nscope {
class RunDirectory;
}

namespace nscope::lua {

class ScriptHost {
public:
    ScriptHost(const PluginRegistry& plugins, ScriptOptions options);
    ~ScriptHost();

    const PluginRegistry& plugins() const { return plugins_; }
    const ScriptOptions& options() const { return options_; }
    bool unsafe() const { return options_.unsafe; }
    const std::filesystem::path& script_dir() const { return script_dir_; }
    std::string script_name() const;

    /// Absolute path for reading `p` (relative to the current directory). Sandbox: only below the current
    /// directory, the script's folder or the run directory; throws a clear error otherwise.
    std::filesystem::path readable_path(const std::string& p, const char* what) const;
    /// Absolute path for writing `p` (relative to the run directory, which is created on first use).
    /// Sandbox: only inside the run directory. --unsafe: anywhere.
    std::filesystem::path writable_path(const std::string& p, const char* what);

    /// runs/<script-name>/<run-id>/, created (with a manifest) on first call.
    const std::filesystem::path& run_dir();
    bool has_run_dir() const { return dir_ != nullptr; }
    RunDirectory* run_directory() { return dir_.get(); }

    /// Record the outcome in the manifest (if the run directory exists).
    void finish(const std::string& status, const std::string& error);

private:
    [[noreturn]] void refuse_write(const std::string& p, const char* what, const std::string& dir) const;

    const PluginRegistry& plugins_;
    ScriptOptions options_;
    std::filesystem::path cwd_, script_dir_;
    std::unique_ptr<RunDirectory> dir_;
};

void set_host(lua_State* L, ScriptHost* host);
ScriptHost& host(lua_State* L);

/// True if `p` is `root` or below it (both absolute and normalised).
bool path_within(const std::filesystem::path& p, const std::filesystem::path& root);

}  // namespace nscope::lua

// `nscope script FILE.lua [-- args...]`: run a Lua 5.4 experiment script with the `nscope` module
// (docs/lua.md). Scripts run in an allow-list sandbox unless `unsafe` is set: no process spawning, no
// native code, no debug library, binary chunks refused; files are read below the current directory and the
// script's folder and written only inside the script's run directory, runs/<script-name>/<run-id>/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace nscope {

class PluginRegistry;

struct ScriptOptions {
    std::filesystem::path script;         ///< the .lua file
    std::vector<std::string> args;        ///< after `--`: the global `arg` table (arg[0] = script path)
    bool unsafe = false;                  ///< --unsafe: standard Lua libraries, no file policy
    std::filesystem::path out_root = "runs";  ///< root of run directories (--out)
    int threads = 0;                      ///< recorded in the script's manifest
    std::string command_line;             ///< recorded in the script's manifest
    /// Bounds for scripts nobody has read (the fuzz harness in tests/fuzz): 0 = unlimited. Past a limit the
    /// script fails with a Lua error ("instruction limit" / "not enough memory"), like any other error.
    uint64_t max_instructions = 0;
    size_t max_memory = 0;                ///< bytes held by the Lua state
};

/// Run the script to completion. Returns 0. A syntax error throws InputError
/// "syntax error in FILE:LINE: ..."; a runtime error (also inside a hook function called during a forward
/// pass) throws InputError "script error: FILE:LINE: message" followed by the Lua traceback. Both exit 2.
int run_script(const PluginRegistry& plugins, const ScriptOptions& options);

}  // namespace nscope

// Lua script loading in the sandbox (core/lua/script.cpp): arbitrary bytes as a script run by
// `nscope script` without --unsafe (allow-listed libraries, the prelude, the file policy, text chunks
// only). Instruction and memory limits keep runaway loops and allocations from reading as hangs / OOMs;
// scripts that write get a run directory in a scratch folder, emptied after each input. No model files are
// reachable, so no forward pass runs.
#include "core/lua/script.h"
#include "core/plugin/registry.h"
#include "nscope/error.h"
#include "tests/fuzz/fuzz_support.h"

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const nscope::PluginRegistry plugins;
    const fs::path script = nscope::fuzz::scratch_dir() / "fuzz.lua";
    const fs::path out = nscope::fuzz::scratch_dir() / "runs";
    nscope::fuzz::write_bytes(script, nscope::fuzz::as_view(data, size));
    nscope::ScriptOptions o;
    o.script = script;
    o.out_root = out;
    o.max_instructions = 1'000'000;
    o.max_memory = 64u << 20;
    try {
        nscope::run_script(plugins, o);
    } catch (const nscope::InputError&) {
    }
    std::error_code ec;
    fs::remove_all(out, ec);
    return 0;
}

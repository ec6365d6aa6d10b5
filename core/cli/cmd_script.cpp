// nscope script FILE.lua [--unsafe] [--out DIR] [-- args...]
#include "core/cli/cli.h"
#include "core/lua/script.h"

namespace nscope {

namespace {
struct ScriptArgs {
    std::string file;
    std::vector<std::string> args;
    std::string out = "runs";
    bool unsafe = false;
};
}  // namespace

void add_script_command(CLI::App& app, CliContext& ctx) {
    auto args = std::make_shared<ScriptArgs>();
    auto* cmd = app.add_subcommand("script", "Run a Lua experiment script (see docs/lua.md)");
    cmd->add_option("file", args->file, "The Lua script")->required()->type_name("FILE.lua");
    cmd->add_option("args", args->args, "Arguments for the script after `--` (the global `arg` table)")
        ->type_name("ARGS...");
    cmd->add_option("--out", args->out, "Root folder for the script's run directory (default: runs)")->type_name("DIR");
    cmd->add_flag("--unsafe", args->unsafe,
                  "Lift the sandbox: os.execute, io.popen, debug, binary chunks, C modules, writes anywhere");
    cmd->callback([&ctx, args] {
        ctx.action = [&ctx, args]() -> int {
            ScriptOptions opts;
            opts.script = args->file;
            opts.args = args->args;
            opts.unsafe = args->unsafe;
            opts.out_root = args->out;
            opts.threads = ctx.options.threads;
            opts.command_line = "nscope script " + args->file;
            return run_script(ctx.plugins(), opts);
        };
    });
}

}  // namespace nscope

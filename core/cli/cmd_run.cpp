// nscope run RECIPE.yaml [--out DIR] [--set key=value ...] [--dry-run]   and   nscope rerun RUN_DIR
#include <iostream>

#include <spdlog/spdlog.h>

#include "core/cli/cli.h"
#include "core/run/recipe.h"
#include "core/run/rerun.h"
#include "core/run/runner.h"
#include "core/util/memory.h"

namespace nscope {

namespace {
struct RunArgs {
    std::string recipe;
    std::string out = "runs";
    std::vector<std::string> sets;
    bool dry_run = false;
    std::string max_memory;
    std::string run_dir;
};
}  // namespace

void add_run_command(CLI::App& app, CliContext& ctx, const std::string& command_line) {
    auto args = std::make_shared<RunArgs>();
    auto* run = app.add_subcommand("run", "Run a YAML recipe");
    run->add_option("recipe", args->recipe, "Recipe file")->required()->type_name("RECIPE.yaml");
    run->add_option("--out", args->out, "Root folder for run directories (default: runs)")->type_name("DIR");
    run->add_option("--set", args->sets, "Override a recipe key, e.g. --set batch_size=4 --set analyses.0.k=5")
        ->type_name("KEY=VALUE");
    run->add_flag("--dry-run", args->dry_run, "Validate and print the plan; load no weights, write nothing");
    run->add_option("--max-memory", args->max_memory,
                    "Refuse a recipe whose estimated peak memory exceeds this (e.g. 8G, 512MB; default: the "
                    "machine's available memory)")
        ->type_name("SIZE");
    run->callback([&ctx, args, command_line] {
        ctx.action = [&ctx, args, command_line]() -> int {
            Recipe recipe = load_recipe(args->recipe, args->sets);
            RunOptions opts;
            opts.out_root = args->out;
            opts.threads = ctx.options.threads;
            opts.dry_run = args->dry_run;
            if (!args->max_memory.empty()) opts.max_memory = parse_byte_size(args->max_memory, "--max-memory");
            opts.command_line = command_line;
            const RunOutcome out = run_recipe(ctx.plugins(), std::move(recipe), opts);
            if (!out.run_dir.empty()) std::cout << out.run_dir.string() << "\n";
            return out.exit_code;
        };
    });

    auto* rr = app.add_subcommand("rerun", "Re-execute a run from its manifest and check results are bit-identical");
    rr->add_option("run_dir", args->run_dir, "A run directory (runs/<name>/<run-id>)")->required()->type_name("RUN_DIR");
    rr->callback([&ctx, args] {
        ctx.action = [&ctx, args]() -> int {
            const RerunReport rep = rerun(ctx.plugins(), args->run_dir, ctx.options.threads);
            std::cout << "rerun: " << rep.rerun.string() << "\n";
            for (const auto& f : rep.different) std::cout << "DIFFERENT " << f << "\n";
            for (const auto& f : rep.missing) std::cout << "MISSING   " << f << "\n";
            for (const auto& f : rep.extra) std::cout << "EXTRA     " << f << "\n";
            std::cout << rep.identical.size() << " identical, " << rep.different.size() << " different, "
                      << rep.missing.size() << " missing, " << rep.extra.size() << " extra\n";
            if (rep.ok()) {
                std::cout << "bit-identical: yes\n";
                return 0;
            }
            std::cout << "bit-identical: no\n";
            return 3;
        };
    });
}

}  // namespace nscope

// nscope run RECIPE.yaml [--out DIR] [--set key=value ...] [--dry-run] [--shard I/N] [--checkpoint-every N]
// nscope run [RECIPE.yaml] --resume RUN_DIR;   nscope merge SHARD_DIR... --out DIR;   nscope rerun RUN_DIR
#include <iostream>

#include <spdlog/spdlog.h>

#include "core/cli/cli.h"
#include "core/run/recipe.h"
#include "core/run/rerun.h"
#include "core/run/runner.h"
#include "core/run/study.h"
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
    std::string shard;
    size_t checkpoint_every = 0;
    std::string resume;
    std::vector<std::string> merge_dirs;
    std::string merge_out;
};
}  // namespace

void add_run_command(CLI::App& app, CliContext& ctx, const std::string& command_line) {
    auto args = std::make_shared<RunArgs>();
    auto* run = app.add_subcommand("run", "Run a YAML recipe");
    run->add_option("recipe", args->recipe, "Recipe file (optional with --resume: the run's recorded recipe)")
        ->type_name("RECIPE.yaml");
    run->add_option("--out", args->out, "Root folder for run directories (default: runs)")->type_name("DIR");
    run->add_option("--set", args->sets, "Override a recipe key, e.g. --set batch_size=4 --set analyses.0.k=5")
        ->type_name("KEY=VALUE");
    run->add_flag("--dry-run", args->dry_run, "Validate and print the plan; load no weights, write nothing");
    run->add_option("--max-memory", args->max_memory,
                    "Refuse a recipe whose estimated peak memory exceeds this (e.g. 8G, 512MB; default: the "
                    "machine's available memory)")
        ->type_name("SIZE");
    run->add_option("--shard", args->shard,
                    "Run shard i of n (0-based) of the prompts and save the analyzers' states for nscope merge")
        ->type_name("I/N");
    run->add_option("--checkpoint-every", args->checkpoint_every,
                    "Save every analyzer's state every N batches, so that --resume can continue after a crash")
        ->type_name("N")
        ->check(CLI::PositiveNumber);
    run->add_option("--resume", args->resume, "Continue an unfinished run directory from its last checkpoint")
        ->type_name("RUN_DIR");
    run->callback([&ctx, args, command_line] {
        ctx.action = [&ctx, args, command_line]() -> int {
            RunOptions opts;
            Recipe recipe;
            if (!args->resume.empty()) {
                // The run's own record decides the recipe, its shard and its checkpoint interval; a recipe
                // given on the command line must be the same one (run_recipe compares their digests).
                const nlohmann::json m = read_manifest(args->resume);
                if (!args->shard.empty()) throw InputError("--resume continues the run's own shard; drop --shard");
                recipe = args->recipe.empty() ? recipe_from_manifest(m, args->resume) : load_recipe(args->recipe, args->sets);
                if (m.contains("shard")) opts.shard = ShardSpec{m["shard"]["index"], m["shard"]["count"]};
                opts.checkpoint_every = args->checkpoint_every ? args->checkpoint_every : m.value("checkpoint_every", size_t{0});
                opts.resume = args->resume;
            } else {
                if (args->recipe.empty()) throw InputError("nscope run: give a recipe (RECIPE.yaml) or --resume RUN_DIR");
                recipe = load_recipe(args->recipe, args->sets);
                if (!args->shard.empty()) opts.shard = parse_shard(args->shard);
                opts.checkpoint_every = args->checkpoint_every;
            }
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

    auto* merge = app.add_subcommand("merge", "Merge the shards of a sharded study into one run directory");
    merge->add_option("shards", args->merge_dirs, "Every shard's run directory (nscope run --shard i/n)")
        ->required()
        ->type_name("SHARD_DIR...");
    merge->add_option("--out", args->merge_out, "The merged run directory to create")->required()->type_name("DIR");
    merge->callback([&ctx, args, command_line] {
        ctx.action = [&ctx, args, command_line]() -> int {
            std::vector<std::filesystem::path> dirs(args->merge_dirs.begin(), args->merge_dirs.end());
            RunOptions opts;
            opts.merge_from = check_shard_set(dirs);
            opts.merge_out = args->merge_out;
            opts.threads = ctx.options.threads;
            opts.command_line = command_line;
            Recipe recipe = recipe_from_manifest(opts.merge_from.front(), dirs.front());
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

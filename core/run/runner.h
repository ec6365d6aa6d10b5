// Executes a validated recipe: tokenize, batch, forward with captures and interventions, stream batches to
// analyzers (one pass per DAG wave) and to activation-consuming exporters, then write every export and the
// manifest into the run directory.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "core/run/recipe.h"
#include "core/run/study.h"

namespace nscope {

class PluginRegistry;

struct RunOptions {
    std::filesystem::path out_root = "runs";  ///< --out
    int threads = 0;                          ///< --threads (0: recipe's, else all cores)
    bool dry_run = false;
    uint64_t max_memory = 0;                  ///< --max-memory in bytes (0: the machine's MemAvailable)
    std::string command_line;                 ///< recorded in the manifest
    /// --shard i/n: forward only this shard's batches (study.h shard_batches), save every analysis's
    /// state to state/<id>.bin and stop there (no finish, no exports: `nscope merge` does those).
    std::optional<ShardSpec> shard;
    size_t checkpoint_every = 0;              ///< --checkpoint-every N batches (0: never)
    /// --resume: continue this run directory from its last checkpoint (its recipe and model must match).
    std::filesystem::path resume;
    /// nscope merge: fold these shards' saved states (check_shard_set's manifests) instead of forwarding
    /// anything, then finish and export into `merge_out`, a new run directory.
    std::vector<nlohmann::json> merge_from;
    std::filesystem::path merge_out;
};

struct RunOutcome {
    std::filesystem::path run_dir;  ///< empty for a dry run
    int exit_code = 0;
};

/// Validate (no weights), then run. InputErrors found before the run directory exists propagate (exit 2);
/// failures during the run are recorded in the manifest ("failed" / "interrupted") and rethrown.
RunOutcome run_recipe(const PluginRegistry& plugins, Recipe recipe, const RunOptions& options);

}  // namespace nscope

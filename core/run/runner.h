// Executes a validated recipe: tokenize, batch, forward with captures and interventions, stream batches to
// analyzers (one pass per DAG wave) and to activation-consuming exporters, then write every export and the
// manifest into the run directory.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "core/run/recipe.h"

namespace nscope {

class PluginRegistry;

struct RunOptions {
    std::filesystem::path out_root = "runs";  ///< --out
    int threads = 0;                          ///< --threads (0: recipe's, else all cores)
    bool dry_run = false;
    uint64_t max_memory = 0;                  ///< --max-memory in bytes (0: the machine's MemAvailable)
    std::string command_line;                 ///< recorded in the manifest
};

struct RunOutcome {
    std::filesystem::path run_dir;  ///< empty for a dry run
    int exit_code = 0;
};

/// Validate (no weights), then run. InputErrors found before the run directory exists propagate (exit 2);
/// failures during the run are recorded in the manifest ("failed" / "interrupted") and rethrown.
RunOutcome run_recipe(const PluginRegistry& plugins, Recipe recipe, const RunOptions& options);

}  // namespace nscope

// Studies past one process (docs/scale.md): analyzer state files, shards of a recipe's prompts, checkpoints
// for --resume, and the checks that keep a merge or a resume from mixing runs that do not belong together.
//
// Run directory additions:
//   state/<analysis-id>.bin         a shard's final analyzer states (nscope/state.h envelope)
//   checkpoint.json                 the last complete checkpoint: {"next_batch", "dir", "states": {id: sha256}}
//   checkpoints/<next-batch>/*.bin  the states it names (older ones are removed once a newer one is written)
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/run/recipe.h"
#include "nscope/analyzer.h"

namespace nscope {

class PluginRegistry;
struct RunPlan;

/// `--shard i/n`: shard i (0-based) of n.
struct ShardSpec {
    size_t index = 0, count = 1;
};

/// Parse "i/n" (0 <= i < n); InputError otherwise.
ShardSpec parse_shard(const std::string& text);

/// Batches [first, last) of a run.
struct BatchRange {
    size_t first = 0, last = 0;
};

/// The batches of shard `s` among `batches`: contiguous blocks of whole batches (shard i gets batches
/// [i·B/n, (i+1)·B/n)), so every batch holds the same prompts, padded alike, as in the single-process run
/// and prompt indices (top-k tie-breaking) stay global.
BatchRange shard_batches(size_t batches, const ShardSpec& s);

/// sha256 of the resolved recipe (after --set overrides): equal for every shard of one study.
std::string recipe_digest(const Recipe& recipe);

/// One digest for a model's files, from its manifest "files" records (path basename + sha256 each).
std::string model_digest(const nlohmann::json& files);

/// What needs analyzer states: "--shard", "--checkpoint-every", "--resume" (for error messages).
/// Refuses (InputError, exit 2) a plan that cannot run that way: several models, analyses that read other
/// analyses' results (a second pass), exporters that consume activations, and any analysis whose analyzer
/// cannot save its state (or, when `needs_merge`, cannot merge) — each reason names the analysis.
void check_stateful_plan(const PluginRegistry& plugins, const RunPlan& plan, const std::string& feature, bool needs_merge);

/// Digest of an analysis entry's configuration (use, params, inputs): a state only loads into the same.
std::string analysis_fingerprint(const AnalysisSpec& spec);

/// `analyzer`'s state in its envelope; `plugin` is its "id@version".
std::string save_analysis_state(const Analyzer& analyzer, const AnalysisSpec& spec, const std::string& plugin);

/// Load a blob save_analysis_state wrote (read from `source`, named in errors) into a fresh instance of the
/// same entry, after `begin`. InputError for another analyzer, version, configuration, or a damaged blob.
void load_analysis_state(Analyzer& analyzer, const AnalysisSpec& spec, const std::string& plugin,
                         const std::string& blob, const std::string& source);

/// The manifest.json of a run directory (InputError when missing or not JSON).
nlohmann::json read_manifest(const std::filesystem::path& run_dir);

/// The resolved recipe a manifest recorded, parsed again (paths resolve as in the original run).
Recipe recipe_from_manifest(const nlohmann::json& manifest, const std::filesystem::path& run_dir);

/// The last complete checkpoint of a run directory.
struct Checkpoint {
    size_t next_batch = 0;                        ///< the first batch still to run
    std::filesystem::path dir;                    ///< absolute folder of the state files
    std::map<std::string, std::string> sha256;    ///< analysis id -> digest of its state file
};

/// Write every analysis's state to checkpoints/<next_batch>/, then checkpoint.json (atomically, last, so
/// it only ever names a whole checkpoint), then remove older checkpoint folders.
void write_checkpoint(const std::filesystem::path& run_dir, size_t next_batch,
                      const std::map<std::string, std::string>& states);

/// The checkpoint checkpoint.json names (none: nullopt); InputError when its files are missing or differ.
std::optional<Checkpoint> read_checkpoint(const std::filesystem::path& run_dir);

/// The state file of `analysis` in a checkpoint, read and checked against its digest.
std::string read_checkpoint_state(const Checkpoint& cp, const std::string& analysis);

/// Remove checkpoint.json and checkpoints/ (a run that completed needs them no more).
void remove_checkpoints(const std::filesystem::path& run_dir);

/// Read a whole file (InputError naming it when it cannot be read).
std::string read_bytes(const std::filesystem::path& path);

/// Check that `dirs` are the complete, consistent shard set of one study (same recipe, model, nscope and
/// plugin versions; indices 0..n-1 each exactly once; every shard complete). InputError naming the
/// mismatch. Returns the manifests in shard order.
std::vector<nlohmann::json> check_shard_set(const std::vector<std::filesystem::path>& dirs);

}  // namespace nscope

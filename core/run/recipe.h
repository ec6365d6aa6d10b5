// YAML recipes (docs/architecture.md "Recipes"): parsing, overrides and validation.
//
// Parsing turns the YAML into a Recipe and rejects unknown keys ("did you mean"), wrong types and missing
// files with file:line:column. Everything that needs the model's hook list or the plugins (hook patterns,
// plugin ids, analysis parameters, the analysis DAG) is checked by `plan_run` (run_plan.h) from config.json
// alone, before any weights are loaded.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <istream>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "core/model/interventions.h"
#include "core/sae/sae_config.h"

namespace nscope {

/// Where something was written: "recipe.yaml:12:5" (or "script.lua: analyses[1].k" for tables from Lua).
struct SourceLoc {
    std::string text;
};

/// `random: {count, length, repeat, seed, range}`: a sequence of `length` token ids drawn uniformly from
/// [lo, hi) (default: the model's vocabulary, special tokens skipped), written `repeat` times in a row. The ids
/// are drawn when the model's vocabulary is known (tokenize time), from (seed, index): reruns give the same.
struct RandomTokens {
    int64_t length = 0, repeat = 2;
    uint64_t seed = 0;
    int64_t lo = 0, hi = -1;  ///< hi -1: the vocabulary size
    uint64_t index = 0;       ///< which of the `count` prompts this is
};

struct PromptSpec {
    std::string text;                      ///< empty when `ids` is given
    nlohmann::json labels;                 ///< object or null
    std::vector<int64_t> ids;              ///< exact token ids (no tokenizer, no special tokens added)
    std::vector<int64_t> type_ids;         ///< BERT token types for `ids` prompts (optional)
    bool has_ids = false;
    SourceLoc loc;
    std::optional<RandomTokens> random;    ///< ids drawn at tokenize time (has_ids is false)
};

/// The ids of a `random` prompt for a vocabulary of `vocab_size` ids; `skip(id)` rejects an id (special
/// tokens). Deterministic in (spec.seed, spec.index) on every platform (splitmix64, no std distributions).
std::vector<int64_t> random_prompt_ids(const RandomTokens& spec, int64_t vocab_size, const std::function<bool(int64_t)>& skip);

struct ModelSpec {
    std::string ref;       ///< local folder or hub id, as written
    std::string label;     ///< short name used in output (default: folder / id name)
    std::string dtype = "float32";
    SourceLoc loc;
};

struct AnalysisSpec {
    std::string id;
    std::string use;
    std::vector<std::string> inputs;
    nlohmann::json params = nlohmann::json::object();
    SourceLoc loc;
};

struct ExportSpec {
    std::string use;
    nlohmann::json params = nlohmann::json::object();
    SourceLoc loc;
};

/// `saes: [{hook, path}]`: sparse autoencoders attached to the recipe's models (docs/sae.md).
struct SaeEntry {
    SaeAttachment sae;
    SourceLoc loc;
};

struct InterventionEntry {
    InterventionSpec spec;
    SourceLoc loc;
};

/// A token named in a recipe: its text (one token under the model's tokenizer), its id, or the name of a
/// prompt label whose value is that text (per prompt).
struct TokenRef {
    std::string text;
    std::optional<int64_t> id;
    std::string label;
    SourceLoc loc;
};

/// `gradient: {metric, target | tokens, position}`: every captured hook also delivers the gradient of the
/// metric (summed over a batch's rows) w.r.t. its activation.
struct GradientSpec {
    std::string metric;             ///< logprob, logit_diff, loss, kl (nscope/model_access.h)
    std::vector<TokenRef> tokens;   ///< logprob: the target; logit_diff: the two tokens (first − second)
    std::optional<int64_t> position;
    SourceLoc loc;
};

struct Recipe {
    std::filesystem::path file;      ///< the recipe file ("" for recipes built in Lua)
    std::filesystem::path base_dir;  ///< relative paths (models, prompt files) resolve against this
    std::string name;
    uint64_t seed = 0;
    std::vector<ModelSpec> models;   ///< one for `model:`, several for `models:`
    std::vector<PromptSpec> prompts;
    size_t batch_size = 8;
    size_t max_tokens = 128;
    int threads = 0;                 ///< 0 = command line / all cores
    bool add_special_tokens = true;
    std::vector<std::string> hooks;
    std::vector<SourceLoc> hook_locs;  ///< where each pattern of `hooks` was written
    std::vector<InterventionEntry> interventions;
    std::vector<SaeEntry> saes;      ///< each adds the hook point `<hook>.sae`
    std::optional<GradientSpec> gradient;
    std::vector<AnalysisSpec> analyses;
    std::vector<ExportSpec> exports;
    nlohmann::json resolved;         ///< the recipe after overrides, as JSON (for the manifest and rerun)
};

/// Read and validate a recipe file. `overrides` are `key.path=value` strings from --set (value parsed as YAML).
/// Throws InputError "file:line:col: message".
Recipe load_recipe(const std::filesystem::path& file, const std::vector<std::string>& overrides = {});

/// Read and validate a recipe given as YAML text (what load_recipe does after reading the file). `source`
/// names it in errors; relative paths resolve against `base_dir`. Throws InputError "source:line:col: message".
Recipe parse_recipe_text(const std::string& yaml, const std::string& source, const std::filesystem::path& base_dir,
                         const std::vector<std::string>& overrides = {});

/// The prompts of a prompt file's text (a recipe's `prompts: [{file: F}]`): one per non-blank line, or with
/// `jsonl` one JSON object {"text": .., "labels": {..}} per line. `file` names the source in errors and
/// locations; `labels` (object or null) are merged under each line's own. Throws InputError "file:line: ...".
std::vector<PromptSpec> parse_prompt_lines(std::istream& in, const std::string& file, bool jsonl,
                                           const nlohmann::json& labels);

/// Validate a recipe given as a YAML node (e.g. converted from a Lua table). `source` names it in errors.
Recipe parse_recipe(const YAML::Node& root, const std::string& source, const std::filesystem::path& base_dir,
                    const std::vector<std::string>& overrides = {});

/// Validate a list of interventions written as in a recipe's `interventions:` (e.g. from a Lua table).
/// `source` names the list in errors; files (vector_file, ...) resolve against `base_dir`. Entries are
/// numbered from `index_base` in messages (1 for Lua tables, whose users count from 1).
std::vector<InterventionEntry> parse_interventions(const YAML::Node& list, const std::string& source,
                                                  const std::filesystem::path& base_dir, int index_base = 0);

/// Convert JSON (e.g. a manifest's resolved recipe) to a YAML node.
YAML::Node json_to_yaml(const nlohmann::json& j);

}  // namespace nscope

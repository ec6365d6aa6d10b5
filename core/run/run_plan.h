// Validation that needs the model's config.json and the plugins, and the execution order of analyses.
// Nothing here reads weights: a bad recipe fails in milliseconds.
#pragma once

#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "core/model/memory_estimate.h"
#include "core/model/model_loader.h"
#include "core/run/recipe.h"
#include "nscope/analyzer.h"
#include "nscope/exporter.h"

namespace nscope {

class PluginRegistry;

class Tokenizer;

/// The prompts of a recipe tokenized for one model.
struct PromptSet {
    std::vector<PromptInfo> infos;
    std::vector<std::vector<int64_t>> ids;
    std::vector<std::vector<int64_t>> type_ids;  ///< empty unless some prompt gives token types
    uint64_t tokens = 0;
};

/// Tokenize (or take as ids, or draw at random) every prompt of `r`, truncated at max_tokens (with a warning).
PromptSet tokenize_prompts(const Recipe& r, const Tokenizer* tok, int64_t vocab_size);

struct ModelPlan {
    ModelSpec spec;
    ModelHandle handle;                  ///< config.json + adapter, no weights
    std::vector<std::string> captured;   ///< exact hook names to capture (recipe hooks + per-model analyzers' needs)
    /// What the lockstep pass of the analyses that span models captures of this model (their hooks, in
    /// forward order); empty without such analyses.
    std::vector<std::string> lockstep_captured;
    std::string tokenizer_sha256;        ///< of tokenizer.json, "" without one
    std::shared_ptr<const Tokenizer> tokenizer;  ///< null without tokenizer.json
    /// The prompts, tokenized at plan time: the analyzers' plan-time checks see them (pairs of equal length,
    /// say) before any run directory exists, and the run reuses them.
    std::shared_ptr<const PromptSet> prompts;
    double tokenize_s = 0;
    /// What each analysis sees (by index in recipe.analyses): the recipe's hooks plus the hooks its own
    /// analyzer requires (`required_hooks`), never those another analyzer requires.
    std::vector<std::vector<std::string>> analysis_hooks;
    std::vector<std::string> export_hooks;  ///< what exporters see: the recipe's `hooks:` only
    std::vector<InterventionSpec> interventions;  ///< with hook patterns as written
    MemoryEstimate memory;  ///< peak estimate at batch_size × the longest tokenized prompt
};

struct RunPlan {
    Recipe recipe;
    std::vector<ModelPlan> models;
    /// Per-model analyses grouped in waves: every analysis in wave k reads only results of waves < k. Each
    /// wave is one pass over the prompts of each model.
    std::vector<std::vector<size_t>> waves;
    /// Analyses that span the models (Analyzer::spans_models), by index in recipe.analyses: one instance
    /// each for the whole run, fed in one lockstep pass over every model after the per-model runs.
    std::vector<size_t> spanning;
    std::vector<std::string> analyzer_versions;  ///< plugin id@version per analysis
    std::vector<std::string> exporter_versions;
};

/// Check everything that can be checked without weights: the models resolve and have a known
/// architecture, hook patterns and intervention hooks match, plugins exist and accept their parameters,
/// `input:` names exist and form no cycle. Throws InputError with file:line:col.
RunPlan plan_run(const PluginRegistry& plugins, Recipe recipe);

/// Human-readable plan for --dry-run (with each model's memory estimate).
void print_plan(const RunPlan& plan, std::ostream& os);

/// Refuse (InputError, exit 2) a plan whose estimated peak memory exceeds `max_memory` bytes (0: the
/// machine's MemAvailable), with the estimate broken down and the knobs that lower it.
void check_memory_budget(const RunPlan& plan, uint64_t max_memory);

/// How an analysis that spans models sees one model of the plan (no token_text or model access yet).
ModelContext model_context(const ModelPlan& mp, const std::vector<std::string>& hooks);

/// Configure a fresh analyzer / exporter for a recipe entry, naming the entry in any error.
std::unique_ptr<Analyzer> make_analyzer(const PluginRegistry& plugins, const AnalysisSpec& spec);
std::unique_ptr<Exporter> make_exporter(const PluginRegistry& plugins, const ExportSpec& spec);

}  // namespace nscope

// NeuronScope SDK — streaming analyzers.
//
// Contract: the host calls `configure` once with the recipe entry's parameters, then `begin` once,
// `consume` once per batch (in prompt order), and `finish` once. State must be bounded by what the
// analysis needs (neurons x k, not corpus length): batches are not kept by the host. When the math allows,
// an analyzer is `mergeable()` and `merge(other)` folds another instance's state (same configuration,
// consumed on a different shard of prompts) into this one, so that `finish()` gives the whole-corpus result.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nscope/activation.h"
#include "nscope/error.h"
#include "nscope/hook.h"
#include "nscope/host.h"
#include "nscope/model_access.h"
#include "nscope/result.h"
#include "nscope/state.h"

namespace nscope {

/// Parameters of a recipe entry (`{ id: top, use: topk, k: 20 }` -> {"k": 20}); `id`, `use`, `input` removed.
using Params = nlohmann::json;

/// See RunContext::parallel_for.
using ParallelFor = std::function<void(size_t n, const std::function<void(size_t)>& task)>;

/// One model of a `models:` run as an analyzer that spans the models sees it (RunContext::models).
struct ModelContext {
    std::string label;              ///< the model's label (its subfolder of the run directory)
    std::string ref;                ///< model id or path as the recipe named it
    nlohmann::json model_info;      ///< architecture, dims (nscope info)
    std::vector<HookPoint> hooks;   ///< the hooks this analyzer receives from this model
    /// sha256 of the model's tokenizer.json ("" without one). Equal digests tokenize every prompt alike;
    /// different ones may not (compare Batch::input_ids to be sure).
    std::string tokenizer_sha256;
    /// Token id -> readable text under this model's tokenizer; valid for the whole run (empty at plan time).
    std::function<std::string(int64_t)> token_text;
    /// Further forwards through this model (nscope/model_access.h); null at plan time and in unit tests.
    const ModelAccess* model = nullptr;
};

/// What an analyzer knows about the run it belongs to.
struct RunContext {
    std::string run_dir;                          ///< absolute path of the run directory
    std::string model_name;                       ///< model id or path as the recipe named it
    nlohmann::json model_info;                    ///< architecture, dims (nscope info)
    std::vector<HookPoint> hooks;                 ///< the hooks this analyzer receives, shapes from the config
    std::vector<const PromptInfo*> prompts;       ///< every prompt of the run, when known up front
    uint64_t seed = 0;
    /// Token id -> its readable text (decoded piece); valid for the whole run.
    std::function<std::string(int64_t)> token_text;
    /// Results of the analyses this one names as `input:` (by id).
    std::map<std::string, const Result*> inputs;
    /// Runs task(i) for every i in [0, n) on the run's threads (`--threads`, shared with the other
    /// consumers of the batch) and returns when all are done, rethrowing the first exception. Tasks must
    /// not touch each other's data (one hook each, say). Valid for the whole run; may be empty (then use
    /// run_tasks, which falls back to a loop).
    ParallelFor parallel_for;
    /// File services of the host (nscope/host.h); set by the host for the whole run.
    const HostServices* host = nullptr;
    /// The run's model for further forwards, metrics, gradients and the unembedding (nscope/model_access.h);
    /// null when there is none (unit tests, merged shards). Analyzers that need it say so in `begin`.
    const ModelAccess* model = nullptr;
    /// For an analyzer that spans models (Analyzer::spans_models): every model of the run in recipe order
    /// (the first is the reference, e.g. the base of a fine-tuning series); `model_name`, `model_info`,
    /// `hooks` and `token_text` above then describe models[0], and `model` is null (use models[i].model).
    /// Empty for every other analyzer.
    std::vector<ModelContext> models;
};

/// `parallel_for(n, task)` if the host provided one, else task(0), ..., task(n - 1) on this thread.
inline void run_tasks(const ParallelFor& parallel_for, size_t n, const std::function<void(size_t)>& task) {
    if (parallel_for) {
        parallel_for(n, task);
    } else {
        for (size_t i = 0; i < n; ++i) task(i);
    }
}

class Analyzer {
public:
    virtual ~Analyzer() = default;

    /// Validate and store parameters. Throw InputError naming the bad key and the accepted values.
    virtual void configure(const Params& params) { (void)params; }

    /// Hook patterns this analyzer needs in addition to the recipe's `hooks:` (empty: use those).
    virtual std::vector<std::string> required_hooks() const { return {}; }

    /// True if this analyzer compares the models of a `models:` run: the host then makes one instance for
    /// the whole run (results at the run's top level, not per model), lists the models in
    /// RunContext::models, and feeds the models' batches in lockstep: for every batch of prompts, model 0's
    /// batch, then model 1's, ... (Batch::model says which), the same prompts in the same rows. At most one
    /// batch is alive at a time: keep what a comparison needs of the earlier models' batches. Only valid
    /// after `configure`. A recipe with one model and such an analyzer is refused at plan time.
    virtual bool spans_models() const { return false; }

    /// Optional check at plan time, before any weight is read, on a throwaway instance: `ctx` has the
    /// hooks, the tokenized prompts (and, for an analyzer that spans models, `models`) but no run directory
    /// and no model access. Throw InputError for a run this configuration cannot handle (hooks missing in one model,
    /// a state that would not fit in memory). Default: nothing.
    virtual void check(const RunContext& ctx) { (void)ctx; }

    /// Called once before the first batch.
    virtual void begin(const RunContext& ctx) = 0;

    /// Called once per batch; the views are valid only during the call.
    virtual void consume(const Batch& batch) = 0;

    /// Produce the result. Called once, after the last batch (and after any merges).
    virtual Result finish() = 0;

    /// True if `merge` is implemented.
    virtual bool mergeable() const { return false; }

    /// Fold `other`'s state into this one. `other` has the same type and configuration.
    virtual void merge(const Analyzer& other) {
        (void)other;
        throw RuntimeError("this analyzer cannot merge sharded state");
    }

    /// Layout version of what `save_state` writes; 0 (the default) means the analyzer cannot save its
    /// state, so it cannot take part in sharded runs (`--shard`, also needs `mergeable()`) or checkpoints.
    /// Bump it whenever the layout changes: the host refuses a state file of another version.
    virtual uint32_t state_version() const { return 0; }

    /// Write everything `consume` accumulated (not the configuration: the host re-creates the instance
    /// with the same parameters and calls `begin` before `load_state`). Called between batches.
    virtual void save_state(StateWriter& out) const {
        (void)out;
        throw RuntimeError("this analyzer cannot save its state");
    }

    /// Replace the state with one `save_state` wrote (same configuration, after `begin`). Read with the
    /// reader's checked accessors and check sizes against the configuration (StateReader::fail): a
    /// damaged file must end in an InputError, never a crash.
    virtual void load_state(StateReader& in) {
        (void)in;
        throw RuntimeError("this analyzer cannot load a saved state");
    }
};

}  // namespace nscope

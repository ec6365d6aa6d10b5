// Forwarding batches through a loaded model with captures and interventions.
//
//   ModelSession s(model);
//   ForwardRequest req;
//   req.capture = {"blocks.0.mlp.hook_post"};
//   req.interventions.push_back(spec);                      // validated against the hooks
//   ForwardOutput out = s.forward(rows, nullptr, {0, 1}, req);
//   out.captures["blocks.0.mlp.hook_post"];                 // float32 [b, p, d_mlp], zero at padding
//
// With `req.metric` the output carries the metric per row; with `req.gradients` too, the gradient of the
// metric (summed over rows) w.r.t. those hooks' activations, by one backward pass (float32 models only).
//
// Rows are right-padded here (pad id 0, attention_mask 0). Position ids are 0..p-1 in every row.
// `patch` interventions take values from the source prompt's clean run: the session runs that prompt alone
// (from this batch, or from prompts given to `register_prompt`), caches the hook, then patches.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/model/model_loader.h"
#include "core/model/interventions.h"
#include "nscope/model_access.h"

namespace nscope {

/// Host code run at a hook during the forward (e.g. a Lua hook function): may edit `t` in place or replace it.
/// Runs after the interventions and before the captures; exceptions propagate out of `forward`.
using HookCallback = std::function<void(const std::string& hook, at::Tensor& t)>;

struct ForwardRequest {
    std::vector<std::string> capture;             ///< exact hook names to deliver
    std::vector<InterventionSpec> interventions;  ///< hook may be a pattern
    /// (hook name or pattern, callback); a pattern that matches no hook is an InputError.
    std::vector<std::pair<std::string, HookCallback>> callbacks;
    bool keep_logits = true;
    /// Computed per row (ForwardOutput::metric) when set; validated against the vocabulary.
    std::optional<Metric> metric;
    std::vector<Metric> more_metrics;  ///< computed from the same logits (ForwardOutput::more_metrics)
    /// Exact hook names: d(metric summed over rows)/d(activation), after the edits. Needs `metric` and a
    /// float32 model; the forward then runs with autograd (without, it stays under no-grad).
    std::vector<std::string> gradients;
};

struct ForwardOutput {
    at::Tensor input_ids, attention_mask;          ///< int64 [b, p]
    std::vector<int64_t> lengths;                  ///< real tokens per row
    std::map<std::string, at::Tensor> captures;    ///< float32, CPU, contiguous, zero at padded positions
    std::map<std::string, at::Tensor> gradients;   ///< the same layout as captures
    at::Tensor logits;                             ///< float32 [b, p, vocab] (undefined if !keep_logits)
    at::Tensor metric;                             ///< float32 [b] when a metric was asked
    std::vector<at::Tensor> more_metrics;          ///< float32 [b] each
};

class ModelSession {
public:
    explicit ModelSession(LoadedModel& model);

    /// Run one batch. `rows`: token ids per prompt; `token_type_ids`: per row, or null (BERT: zeros);
    /// `prompt_indices`: global prompt index of each row. Throws InputError for unknown hooks, bad
    /// interventions, positions outside a prompt, an unknown patch source prompt.
    ForwardOutput forward(const std::vector<std::vector<int64_t>>& rows,
                          const std::vector<std::vector<int64_t>>* token_type_ids,
                          const std::vector<size_t>& prompt_indices, const ForwardRequest& request);

    /// Make a prompt's tokens known for `patch` sources that are not in the batch being run.
    void register_prompt(size_t index, std::vector<int64_t> ids, std::vector<int64_t> token_type_ids = {});
    /// Forget cached clean runs (call when prompts change).
    void clear_cache();

    LoadedModel& model() { return model_; }
    /// Index of a hook by exact name; InputError with "did you mean" otherwise.
    int hook_id(const std::string& name) const;

private:
    struct Prompt {
        std::vector<int64_t> ids, types;
    };
    at::Tensor clean_capture(size_t prompt, int hook, const Prompt& p);

    /// Unedited logits of the last rows a `kl` metric ran on (ablation sweeps reuse them call after call).
    at::Tensor reference_logits(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& types);

    LoadedModel& model_;
    std::map<size_t, Prompt> prompts_;
    at::Tensor reference_ids_, reference_mask_, reference_;
    /// (prompt, hook id) -> (the prompt's ids, its clean activation [1, p, ...] in the compute dtype)
    std::map<std::pair<size_t, int>, std::pair<std::vector<int64_t>, at::Tensor>> clean_;
};

}  // namespace nscope

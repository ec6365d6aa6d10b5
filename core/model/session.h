// Forwarding batches through a loaded model with captures and interventions.
//
//   ModelSession s(model);
//   ForwardRequest req;
//   req.capture = {"blocks.0.mlp.hook_post"};
//   req.interventions.push_back(spec);                      // validated against the hooks
//   ForwardOutput out = s.forward(rows, nullptr, {0, 1}, req);
//   out.captures["blocks.0.mlp.hook_post"];                 // float32 [b, p, d_mlp], zero at padding
//
// Rows are right-padded here (pad id 0, attention_mask 0). Position ids are 0..p-1 in every row.
// `patch` interventions take values from the source prompt's clean run: the session runs that prompt alone
// (from this batch, or from prompts given to `register_prompt`), caches the hook, then patches.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/model/model_loader.h"
#include "core/model/interventions.h"

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
};

struct ForwardOutput {
    at::Tensor input_ids, attention_mask;          ///< int64 [b, p]
    std::map<std::string, at::Tensor> captures;    ///< float32, CPU, contiguous, zero at padded positions
    at::Tensor logits;                             ///< float32 [b, p, vocab] (undefined if !keep_logits)
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

    LoadedModel& model_;
    std::map<size_t, Prompt> prompts_;
    std::map<std::pair<size_t, int>, at::Tensor> clean_;  // (prompt, hook id) -> [1, p, ...] compute dtype
};

}  // namespace nscope

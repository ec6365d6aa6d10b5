// NeuronScope SDK — what an analyzer may ask of the run's model.
//
// Causal analyses need more than the activations of the run's own forward: ablating a head, patching an
// activation from another prompt, the gradient of a metric, the residual stream read through the
// unembedding. The host offers them through `RunContext::model` (null when the analyzer runs without a
// model, e.g. in unit tests or on merged shard states). Torch-free: tensors cross as owned float32 buffers.
//
//   ModelCall call;
//   call.rows = {ids};                                          // token ids, one row per prompt
//   call.interventions = {{{"hook", "blocks.0.attn.hook_z"}, {"op", "zero"}, {"heads", {3}}}};
//   call.metric = Metric{"logprob", {target}};
//   ModelOutput out = ctx.model->run(call);                     // out.metric[row]
//
// Calls are serialised by the host (one forward at a time) and run on the run's threads.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nscope/activation.h"

namespace nscope {

/// A float32 tensor owned by the caller, row-major.
struct OwnedTensor {
    std::vector<int64_t> shape;
    std::vector<float> data;
    bool empty() const { return data.empty(); }
    ActivationView view() const { return {data.data(), DType::Float32, shape}; }
};

/// A scalar per row of the model's output, for gradients and causal effects.
///
///   logprob     log p(tokens[0]) at `position`
///   logit_diff  logit(tokens[0]) − logit(tokens[1]) at `position`
///   loss        mean next-token cross-entropy over the row (or the prediction made at `position`)
///   kl          KL(reference ‖ this run) of the next-token distributions, where the reference is the same
///               rows without the call's interventions; mean over the row's positions (or at `position`)
struct Metric {
    std::string kind;                              ///< "logprob", "logit_diff", "loss" or "kl"
    std::vector<int64_t> tokens;                   ///< the token ids the kind needs, for every row
    std::vector<std::vector<int64_t>> row_tokens;  ///< per-row tokens instead of `tokens` (one entry per row)
    /// Position in each row (negative counts from the row's last real token: -1 = last). Unset: the last
    /// token for logprob / logit_diff, every position for loss / kl.
    std::optional<int64_t> position;
};

/// The metric kinds, for messages and validation.
inline const std::vector<std::string>& metric_kinds() {
    static const std::vector<std::string> k{"logprob", "logit_diff", "loss", "kl"};
    return k;
}

/// One forward through the run's model.
struct ModelCall {
    std::vector<std::vector<int64_t>> rows;  ///< token ids per row (the host right-pads them)
    /// The run's prompt index of each row, for interventions that select `prompts` or `patch` from a
    /// `source` prompt. Empty: rows are numbered 0..n-1 and `patch` sources must be run prompts.
    std::vector<size_t> prompt_indices;
    /// Interventions in recipe syntax (docs/recipes.md): [{hook, op, neurons, heads, positions, ...}].
    nlohmann::json interventions = nlohmann::json::array();
    std::vector<std::string> capture;    ///< exact hook names whose values to return
    std::optional<Metric> metric;        ///< computed per row when set
    std::vector<Metric> more_metrics;    ///< further metrics of the same forward (no gradients)
    std::vector<std::string> gradients;  ///< hooks whose d(sum of the metric)/d(activation) to return
    bool logits = false;                 ///< return the logits [rows, positions, vocab]
};

struct ModelOutput {
    std::vector<int64_t> lengths;                  ///< real tokens per row
    std::map<std::string, OwnedTensor> captures;   ///< zero at padded positions
    std::map<std::string, OwnedTensor> gradients;  ///< same shapes as the captures, zero at padding
    OwnedTensor logits;                            ///< when asked
    std::vector<double> metric;                    ///< one per row when a metric was asked
    std::vector<std::vector<double>> more_metrics;  ///< per entry of ModelCall::more_metrics: one per row
};

/// Function table the host fills (RunContext::model). Every function throws InputError for bad requests
/// (unknown hook, a metric token outside the vocabulary, gradients on a model that cannot give them).
struct ModelAccess {
    std::function<ModelOutput(const ModelCall&)> run;
    /// The model's final norm and unembedding applied to residual-stream vectors [..., d_model]: logits
    /// [..., vocab]. The norm's statistics are computed on the given vectors (the logit lens).
    std::function<OwnedTensor(const ActivationView& resid)> unembed;
    /// Text -> token ids under the model's tokenizer, without special tokens.
    std::function<std::vector<int64_t>(const std::string& text)> tokenize;
};

}  // namespace nscope

// Training sparse autoencoders (`nscope train-sae`, docs/sae.md) with LibTorch autograd.
//
// TopK (Gao et al. 2024): loss = ||x - x̂||² / ||x - mean(x)||² (the batch's fraction of variance
// unexplained, so settings do not depend on the hook's scale) + aux_coef · AuxK, where AuxK reconstructs the
// residual x - x̂ from the top `k_aux` pre-activations of the dead latents (not fired for `dead_after_tokens`
// tokens), which pulls them back into use. ReLU: the same reconstruction term + l1 · Σ|z| / ||x - mean(x)||.
// The decoder's rows stay unit-norm: their gradient's radial part is removed before each Adam step and the
// rows are renormalised after it. b_dec starts at the first batch's mean.
//
// Batches come from a function of the step alone (windows of the corpus drawn from (seed, step)), so a run
// is deterministic for a seed and thread count, and `resume` continues to the same weights as a run that was
// never interrupted (the checkpoint holds the SAE, the Adam moments, the dead-latent counters and the step).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "core/sae/sae_config.h"

namespace nscope {

class PluginRegistry;
class Sae;

struct SaeTrainOptions {
    std::string variant = "topk";     ///< topk | relu
    int64_t latents = 0;              ///< 0: 8 x the hook's width
    int64_t k = 32;                   ///< topk: active latents per token
    double l1 = 1e-2;                 ///< relu: sparsity coefficient
    int64_t k_aux = 0;                ///< AuxK latents (0: d_in / 2)
    double aux_coef = 1.0 / 32;
    int64_t dead_after_tokens = 0;    ///< a latent is dead after this many tokens without firing (0: 20 batches)
    int64_t steps = 2000, batch_tokens = 4096;
    double lr = 1e-3;
    uint64_t seed = 0;
    int64_t checkpoint_every = 0;     ///< save checkpoint-<step>/ every N steps (0: only the final folder)
    int64_t log_every = 0;            ///< log a progress line every N steps (0: 20 lines per run)
    std::filesystem::path out;        ///< the SAE folder (also a resumable checkpoint)
    std::filesystem::path resume;     ///< a folder written by a previous run (out or checkpoint-<step>)
    int64_t context = 64;             ///< tokens per window when reading a model's activations
    int64_t eval_tokens = 4096;       ///< held-out tokens for the final statistics
    double max_seconds = 0;           ///< stop (and save) after this long; 0 = no limit
};

/// Activations for step `step`: float32 [n, d_in]; must depend on the step alone (resume replays it).
using ActivationBatches = std::function<at::Tensor(int64_t step)>;

struct SaeTrainReport {
    int64_t steps_done = 0;
    double tokens_per_s = 0;
    nlohmann::json stats;  ///< what sae.json's "stats" holds (sae_statistics, + loss recovered on a model)
    std::filesystem::path out;
};

/// Train an SAE described by `config` (sizes, architecture, hook and model) on `batches`; write o.out.
/// Held-out batches for the statistics are `batches(o.steps + 1'000'000 + i)`.
SaeTrainReport train_sae(SaeConfig config, const ActivationBatches& batches, const SaeTrainOptions& o);

/// Reconstruction statistics on held-out activations x [n, d_in]: mse, explained_variance, l0,
/// dead_fraction / dense_fraction (never / > 10% of tokens), density_histogram (log10 firing frequency).
nlohmann::json sae_statistics(const Sae& sae, const at::Tensor& x);

/// `nscope train-sae MODEL --hook H --data FILE...`: activations streamed from the model's forward on
/// windows of the tokenized data (text, or JSONL prompts with "text"); adds the fraction of the model's
/// loss recovered when the reconstruction is patched in (vs zero-ablating the hook) to the statistics.
SaeTrainReport train_sae_on_model(const PluginRegistry& plugins, const std::string& model, const std::string& hook,
                                  const std::vector<std::filesystem::path>& data, SaeTrainOptions o);

}  // namespace nscope

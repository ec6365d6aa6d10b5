// Sparse autoencoders (docs/sae.md) over one hook's activations x [..., d_in]:
//
//   pre = (x - b_dec) W_enc + b_enc                  [..., latents]
//   z   = TopK_k(pre) then ReLU      (topk: Gao et al. 2024)    or    ReLU(pre)   (relu: trained with L1)
//   x̂  = z W_dec + b_dec                            W_dec rows are unit-norm directions in the hook's space
//
// On disk an SAE is a folder: `sae.safetensors` (W_enc [d_in, latents], b_enc [latents], W_dec [latents,
// d_in], b_dec [d_in], float32) and `sae.json` (architecture, sizes, the hook and model it was trained on,
// training settings and summary statistics). Every defect is an InputError naming the file and the fix.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "core/sae/sae_config.h"

namespace nscope {

class Sae {
public:
    /// Fresh weights for `config` (seeded): W_dec rows random unit vectors, W_enc = W_decᵀ, biases zero.
    static Sae init(const SaeConfig& config, uint64_t seed);
    /// Read and validate the folder `dir` (or `dir` = its sae.json); InputError on any defect.
    static Sae load(const std::filesystem::path& dir);
    /// Write `dir`/sae.safetensors and `dir`/sae.json (each atomically; the folder is created).
    void save(const std::filesystem::path& dir) const;

    const SaeConfig& config() const { return config_; }
    SaeConfig& config() { return config_; }

    at::Tensor pre_activations(const at::Tensor& x) const;
    /// The sparse code from pre-activations: TopK (k largest, then ReLU) or ReLU.
    at::Tensor activate(const at::Tensor& pre) const;
    at::Tensor encode(const at::Tensor& x) const { return activate(pre_activations(x)); }
    at::Tensor decode(const at::Tensor& z) const;

    /// The trainable tensors by their file names (W_enc, b_enc, W_dec, b_dec); they alias the SAE's own.
    std::vector<std::pair<std::string, at::Tensor>> tensors() const;
    const at::Tensor& decoder() const { return W_dec_; }
    /// Make W_dec's rows unit-norm (in place, no grad).
    void normalize_decoder();

private:
    SaeConfig config_;
    at::Tensor W_enc_, b_enc_, W_dec_, b_dec_;
};

}  // namespace nscope

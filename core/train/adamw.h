// AdamW over a list of named LibTorch parameters, shared by `nscope train` / `finetune` (trainer.h) and
// `nscope train-sae` (sae_trainer.h): decoupled weight decay on the parameters marked for it, bias-corrected
// moments, global gradient-norm clipping, and the moments saved to / restored from a safetensors file
// (`m.<name>`, `v.<name>`) so that a resumed run continues exactly.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace nscope {

struct AdamW {
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
    std::vector<std::string> names;
    std::vector<at::Tensor> params, m, v;
    std::vector<bool> decay;

    /// Track `p` (which must require grad); `decay`: apply weight decay to it.
    void add(const std::string& name, const at::Tensor& p, bool decay);
    /// Zero every parameter's gradient.
    void zero_grad();
    /// Scale the gradients so that their global norm is at most `max_norm` (0 = off); returns the norm before.
    double clip_gradients(double max_norm);
    /// One update with learning rate `lr`; `t` is the 1-based step number (bias correction).
    void step(double lr, int64_t t);
    /// Write the moments to `file` (atomic), with `extra` tensors alongside (e.g. trainer counters).
    void save(const std::filesystem::path& file, std::vector<std::pair<std::string, at::Tensor>> extra = {}) const;
    /// Read the moments back; InputError when the file lacks one of the parameters.
    void load(const std::filesystem::path& file);
};

}  // namespace nscope

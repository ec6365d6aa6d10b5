// NeuronScope SDK — interventions: edits applied to an activation at a hook point during the forward.
//
// Built-in ops (DESIGN.md): zero, mean, scale, set, clamp_range, mask_range, add, patch. The host applies
// them to the tensor at the hook point before observers see it (observers capture what flows downstream).
// Selections address the last dimension (`neurons`), the head dimension of [b,p,h,dh] / [b,h,p,p] hooks
// (`heads`) and the position dimension (`positions`, negative counts from each row's last real token).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace nscope {

struct InterventionSpec {
    std::string hook;                 ///< hook name or pattern ("blocks.1.mlp.hook_post", "blocks.*.mlp.hook_post")
    std::string op;                   ///< zero | mean | scale | set | clamp_range | mask_range | add | patch
    std::vector<int64_t> neurons;     ///< empty = all
    std::vector<int64_t> heads;       ///< empty = all
    std::vector<int64_t> positions;   ///< empty = all
    std::vector<int64_t> prompts;     ///< prompt indices the edit applies to; empty = all
    double value = 0.0;               ///< set / mask_range replacement
    double factor = 1.0;              ///< scale
    double lo = 0.0, hi = 0.0;        ///< clamp_range / mask_range bounds
    std::vector<float> vector;        ///< add: steering vector over the selected neurons (or all of d)
    std::optional<int64_t> source_prompt;  ///< patch: take values from this prompt's clean run
    std::vector<float> mean_values;   ///< mean: per-neuron means (recorded from a reference run)
    nlohmann::json raw;               ///< the spec as written, for the manifest
};

}  // namespace nscope

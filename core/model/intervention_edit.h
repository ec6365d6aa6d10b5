// What an intervention op's `apply` receives (interventions.h): built by ModelSession::forward per hook.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "core/model/interventions.h"

namespace nscope {

struct EditTarget {
    int64_t row;                      ///< batch row the edit applies to
    std::vector<int64_t> positions;   ///< spec.positions resolved in this row (empty: all positions)
};

struct EditArgs {
    at::Tensor& t;                        ///< the hook's tensor; apply replaces it with the edited one
    const at::Tensor& selected;           ///< bool, broadcastable to t: selected rows x positions x heads x neurons
    const at::Tensor& heads_neurons;      ///< bool, broadcastable to t: the head / neuron part of the selection
    const InterventionSpec& spec;
    const HookPoint& hook;
    // Row geometry and, for `patch`, the source prompt's clean activation.
    const std::vector<EditTarget>& targets;
    const std::vector<int64_t>& lengths;        ///< real tokens per row
    const std::vector<size_t>& prompt_indices;  ///< global prompt index per row
    const at::Tensor& source;                   ///< patch: [1, ...] clean capture of the source prompt
    int64_t source_length;                      ///< patch: tokens of the source prompt
    int pos_axis;                               ///< the hook's position (query) axis
    bool has_key_axis;                          ///< attention maps ([b,h,p,p])
};

/// Resolve a position (negative: from the row's end) in a row of `len` tokens; InputError when outside.
int64_t resolve_position(int64_t p, int64_t len, size_t prompt, const std::string& hook);

}  // namespace nscope

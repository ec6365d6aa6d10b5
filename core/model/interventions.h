// Interventions (DESIGN.md ◆): edits applied to the activation at a hook point during the forward.
//
// Selection: `neurons` index the hook's last dimension, `heads` its head dimension ([b,p,h,dh] and
// [b,h,p,p] hooks), `positions` its position (query) dimension — negative positions count from each
// row's last real token (-1 = last) — and `prompts` the global prompt indices. Empty = all.
//
//   zero            selected values := 0
//   set             selected values := value
//   scale           selected values *= factor
//   clamp_range     selected values clamped into [lo, hi]
//   mask_range      selected values inside [lo, hi] := value (NeuronLens range masking; value defaults to 0)
//   add             selected values += vector (one entry per selected neuron, or per entry of the last dim)
//   mean            selected values := mean_values (same sizing as `add`)
//   patch           selected values := the same hook in source_prompt's clean (unedited) run; positions are
//                   resolved in each prompt separately (-1 = each one's last token), empty = all (equal lengths)
#pragma once

#include <string>
#include <vector>

#include "nscope/intervention.h"
#include "nscope/model_adapter.h"

namespace nscope {

/// The built-in op names.
const std::vector<std::string>& intervention_ops();

/// Check a spec against the model's hooks: known op, hook pattern matches, neuron / head indices in range,
/// vector sizes, bounds. Throws InputError saying what to fix. Positions are checked per prompt at run time.
void validate_intervention(const std::vector<HookPoint>& hooks, const InterventionSpec& spec);

/// Parse `{hook, op, neurons, heads, positions, prompts, value, factor, lo, hi, vector, source_prompt,
/// mean_values}` (`range: [lo, hi]` also accepted); unknown keys are an InputError.
InterventionSpec intervention_from_json(const nlohmann::json& j);

}  // namespace nscope

// SAEs as hook points (docs/sae.md): `attach_saes` wraps a loaded model's adapter so that every attached
// hook H gets a companion hook point `H.sae` [batch, pos, latents], right after H in the hook list.
//
// When H.sae is wanted in a forward, at H the wrapper runs H's editors (interventions), encodes the result,
// runs H.sae's editors then observers on the latents z, and, if an editor changed z, writes
//     x' = decode(z_edited) + (x - decode(z))        (the reconstruction plus the SAE's error term)
// back into the model before H's observers and the rest of the forward. Without an edit nothing is written:
// the model's output is bit-identical to the run without the SAE.
#pragma once

#include <vector>

#include "core/model/model_loader.h"
#include "core/sae/sae_config.h"

namespace nscope {

/// Load the SAEs and wrap `model.adapter`; `model.handle.hooks` gains the `.sae` points. InputError for an
/// unknown hook, a width mismatch, a corrupt SAE (nothing is changed then). Call once per loaded model.
void attach_saes(LoadedModel& model, const std::vector<SaeAttachment>& saes);

}  // namespace nscope

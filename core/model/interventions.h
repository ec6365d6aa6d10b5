// Interventions (docs/architecture.md, docs/recipes.md): edits applied to the activation at a hook point
// during the forward. One table describes every op — its name, its parameters (the recipe / Lua keys, their
// kinds and whether they are required), and the function that applies it — and recipes, Lua scripts, the
// plan-time validation and the model session all read that table.
//
// Selection, common to every op: `neurons` index the hook's last dimension, `heads` its head dimension
// ([b,p,h,dh] and [b,h,p,p] hooks), `positions` its position (query) dimension — negative positions count
// from each row's last real token (-1 = last) — and `prompts` the global prompt indices. Empty = all.
//
//   zero            selected values := 0
//   set             selected values := value
//   scale           selected values *= factor
//   clamp_range     selected values clamped into [lo, hi]
//   mask_range      selected values inside [lo, hi] := value (NeuronLens range masking; value defaults to 0)
//   mask_ranges     the same with one [lo, hi] per selected neuron (`lo`, `hi` lists; what `ranges` emits)
//   add             selected values += vector (one entry per selected neuron, or per entry of the last dim)
//   mean            selected values := means (same sizing as `add`)
//   patch           selected values := the same hook in source_prompt's clean (unedited) run; positions are
//                   resolved in each prompt separately (-1 = each one's last token), empty = all (equal lengths)
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nscope/hook.h"

namespace nscope {

/// One intervention as written in a recipe or a Lua table, parsed.
struct InterventionSpec {
    std::string hook;                 ///< hook name or pattern ("blocks.1.mlp.hook_post", "blocks.*.mlp.hook_post")
    std::string op;                   ///< a name from intervention_table()
    std::vector<int64_t> neurons;     ///< empty = all
    std::vector<int64_t> heads;       ///< empty = all
    std::vector<int64_t> positions;   ///< empty = all
    std::vector<int64_t> prompts;     ///< prompt indices the edit applies to; empty = all
    double value = 0.0;               ///< set / mask_range replacement
    double factor = 1.0;              ///< scale
    double lo = 0.0, hi = 0.0;        ///< clamp_range / mask_range bounds
    std::vector<float> vector;        ///< add: steering vector over the selected neurons (or all of the last dim)
    std::vector<float> means;         ///< mean: per-neuron means (recorded from a reference run)
    std::vector<float> lo_values, hi_values;  ///< mask_ranges: per-neuron bounds
    std::optional<int64_t> source_prompt;  ///< patch: take values from this prompt's clean run
    nlohmann::json raw;               ///< the spec as written, for the manifest
};

/// How an op-specific parameter is written.
enum class InterventionParamKind {
    Number,       ///< `key: 0.5`
    Range,        ///< `range: [lo, hi]` or `lo:` + `hi:`
    Vector,       ///< `key: [numbers]` or `key_file: x.npy`, one value per selected neuron
    PromptIndex,  ///< `key: 3`, a prompt of the run
};

struct InterventionParam {
    const char* key;
    InterventionParamKind kind;
    bool required;
    const char* meaning;                                     ///< for messages: "the multiplier"
    double InterventionSpec::*number = nullptr;              ///< Number: where it is stored
    std::vector<float> InterventionSpec::*values = nullptr;  ///< Vector: where it is stored
};

struct EditArgs;  // core/model/intervention_edit.h: the tensor, its selection, and patch sources

struct InterventionOp {
    const char* name;
    const char* summary;
    std::vector<InterventionParam> params;
    /// Edit args.t for the selection (replacing the tensor); may throw InputError for a bad position.
    void (*apply)(EditArgs& args);
    /// Checks beyond the parameters' own (which validate_intervention does from `params`); may be null.
    /// Throws InputError whose message follows `what`.
    void (*check)(const InterventionSpec& spec, const std::string& what) = nullptr;
};

/// Every op, in the order docs list them.
const std::vector<InterventionOp>& intervention_table();

/// The op called `name`; InputError listing the ops (with "did you mean") when there is none.
const InterventionOp& intervention_op(const std::string& name);

/// Keys every intervention may have: hook, op and the selection (neurons, heads, positions, prompts).
const std::vector<std::string>& intervention_common_keys();

/// The keys op `op` accepts besides the common ones (`vector_file` for `vector`, `lo` / `hi` for `range`).
std::vector<std::string> intervention_param_keys(const InterventionOp& op);

/// Check a spec against the model's hooks (from config.json, no weights): known op, the hook pattern
/// matches, neuron / head indices in range, vector lengths, bounds, and prompt indices below `n_prompts`.
/// Throws InputError saying what to fix. Positions are checked per prompt when the prompts are tokenized.
void validate_intervention(const std::vector<HookPoint>& hooks, const InterventionSpec& spec,
                           size_t n_prompts = std::numeric_limits<size_t>::max());

}  // namespace nscope

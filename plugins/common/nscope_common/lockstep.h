// Helpers for analyzers that span the models of a `models:` run (Analyzer::spans_models): plan-time checks
// of the models, and the check that the batches of a lockstep pass line up.
//
//   check_models("drift", ctx);                      // at least two models
//   require_same_tokenizer("drift", ctx, "...");     // token-by-token comparisons
//   LockstepBatches lock;
//   consume(batch): batch.model == 0 ? lock.reference(batch) : lock.check("drift", batch, ctx.models, true);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nscope/sdk.h>

#include "nscope_common/hooks.h"
#include "nscope_common/params.h"

namespace nscope::common {

/// "'label' (ref)" of model m, for messages.
inline std::string model_name(const std::vector<ModelContext>& models, size_t m) {
    if (m >= models.size()) return "model " + std::to_string(m);
    return "'" + models[m].label + "' (" + models[m].ref + ")";
}

/// Refuses (InputError) a context without at least two models: the host only runs such analyzers in a
/// `models:` run, but a context built by hand may lack them.
inline void check_models(const std::string& plugin, const RunContext& ctx) {
    if (ctx.models.size() < 2)
        throw InputError(plugin + ": compares the models of a run and got " + std::to_string(ctx.models.size()) +
                         "; list the reference model first and the others after it under `models:`");
}

/// Refuses models whose tokenizer.json differs from the first model's: a token-by-token comparison needs
/// the same token at the same position. `fix` says how to compare them anyway.
inline void require_same_tokenizer(const std::string& plugin, const RunContext& ctx, const std::string& fix) {
    for (size_t m = 1; m < ctx.models.size(); ++m)
        if (ctx.models[m].tokenizer_sha256 != ctx.models[0].tokenizer_sha256)
            throw InputError(plugin + ": compares token by token, and " + model_name(ctx.models, m) +
                             " has a different tokenizer (tokenizer.json) than " + model_name(ctx.models, 0) +
                             ", so the same prompt is not the same tokens; " + fix);
}

/// Refuses a model that lacks one of the first model's `hooks`, or has it with another width.
inline void require_same_hooks(const std::string& plugin, const RunContext& ctx, const std::vector<PlannedHook>& hooks) {
    for (size_t m = 1; m < ctx.models.size(); ++m)
        for (const auto& h : hooks) {
            const HookPoint* found = nullptr;
            for (const auto& hp : ctx.models[m].hooks)
                if (hp.name == h.name) found = &hp;
            std::vector<std::string> names;
            for (const auto& hp : ctx.models[m].hooks) names.push_back(hp.name);
            if (!found)
                throw InputError(plugin + ": hook '" + h.name + "' of " + model_name(ctx.models, 0) + " is not captured in " +
                                 model_name(ctx.models, m) + did_you_mean(h.name, names) +
                                 "; compare models of the same architecture, or restrict 'hooks' to hooks they share");
            int64_t width = 1;
            for (size_t i = 2; i < found->shape.size(); ++i) width = found->shape[i] > 0 ? width * found->shape[i] : 0;
            if (width != h.width)
                throw InputError(plugin + ": hook '" + h.name + "' has " + std::to_string(h.width) + " neurons in " +
                                 model_name(ctx.models, 0) + " and " + std::to_string(width) + " in " +
                                 model_name(ctx.models, m) + "; neuron-by-neuron comparisons need models of the same "
                                 "dimensions (a fine-tuning series of one base)");
        }
}

/// Model 0's prompts and tokens of the current batch, to check the other models' batches against.
class LockstepBatches {
public:
    void reference(const Batch& b) {
        rows_ = b.rows, positions_ = b.positions;
        prompts_.clear();
        for (const auto* p : b.prompts) prompts_.push_back(p ? p->index : 0);
        ids_.assign(b.input_ids, b.input_ids + b.rows * b.positions);
        mask_.assign(b.attention_mask, b.attention_mask + b.rows * b.positions);
        have_ = true;
    }

    /// Throws unless `b` carries the reference batch's prompts; with `tokens`, also the same token ids at
    /// the same real positions (the same tokenizer), InputError naming the prompt and `fix` otherwise.
    void check(const std::string& plugin, const Batch& b, const std::vector<ModelContext>& models, bool tokens,
               const std::string& fix) const {
        if (!have_ || b.rows != rows_)
            throw RuntimeError(plugin + ": batch of " + model_name(models, b.model) +
                               " arrived without the matching batch of the first model (lockstep broken)");
        for (size_t r = 0; r < b.rows; ++r) {
            const size_t prompt = b.prompts[r] ? b.prompts[r]->index : 0;
            if (prompt != prompts_[r])
                throw RuntimeError(plugin + ": row " + std::to_string(r) + " of " + model_name(models, b.model) +
                                   " is prompt " + std::to_string(prompt) + ", the first model's is " +
                                   std::to_string(prompts_[r]) + " (lockstep broken)");
            if (!tokens) continue;
            bool same = b.positions == positions_;
            for (size_t p = 0; same && p < b.positions; ++p) {
                const size_t i = r * b.positions + p;
                same = (b.attention_mask[i] != 0) == (mask_[i] != 0) && (!mask_[i] || b.input_ids[i] == ids_[i]);
            }
            if (!same)
                throw InputError(plugin + ": prompt " + std::to_string(prompt) + " has other tokens under " +
                                 model_name(models, b.model) + " than under " + model_name(models, 0) +
                                 "; a token-by-token comparison needs the same tokens; " + fix);
        }
    }

private:
    bool have_ = false;
    size_t rows_ = 0, positions_ = 0;
    std::vector<size_t> prompts_;
    std::vector<int64_t> ids_, mask_;
};

}  // namespace nscope::common

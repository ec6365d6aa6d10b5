// Plan-time memory estimate of a model run, from config.json alone (no weights read): the weights in a dtype,
// the forward's working tensors and the captured hooks of one batch. `nscope info` prints it per dtype; a
// recipe whose estimated peak exceeds --max-memory is refused before any weight loads (docs/models.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nscope/hook.h"
#include "nscope/model_adapter.h"

namespace nscope {

struct MemoryEstimate {
    int64_t batch = 0, tokens = 0;  ///< the batch shape it is for
    uint64_t weights = 0;   ///< resident weights in the dtype (int8: int8 linears + float32 rest + one
                            ///< linear's float32 temporary)
    uint64_t forward = 0;   ///< twice the forward's live tensors in one block at batch × tokens (+ logits)
    uint64_t captures = 0;  ///< the captured hooks of one batch, float32
    uint64_t runtime = 0;   ///< this process before loading (LibTorch, plugins, tokenizer): its current RSS
    std::string largest_hook;        ///< the capture that weighs most (for the advice)
    uint64_t largest_hook_bytes = 0;
    size_t n_captured = 0;

    uint64_t total() const { return weights + forward + captures + runtime; }
    nlohmann::json to_json() const;
    /// "weights 475.0 MiB + forward 60.1 MiB + captures 36.0 MiB (12 hooks) + runtime 180.0 MiB = 751.1 MiB"
    std::string breakdown() const;
};

/// Resident bytes of the model's weights under `options` (float32: 4 per parameter, bfloat16: 2, int8: 1 per
/// linear weight of the blocks plus 4 per other parameter).
uint64_t weight_bytes(const ModelInfo& info, const ModelOptions& options);

/// float32 bytes of one capture of `hook` at batch × tokens (positions, query and key positions = tokens).
uint64_t capture_bytes(const HookPoint& hook, int64_t batch, int64_t tokens);

/// The estimate for capturing `captured` (hook points of the model) at batch × tokens. `logits`: the forward
/// computes the unembedding. `runtime`: bytes already resident (pass current_rss_bytes()).
MemoryEstimate estimate_memory(const ModelInfo& info, const std::vector<HookPoint>& captured,
                               const ModelOptions& options, int64_t batch, int64_t tokens, bool logits,
                               uint64_t runtime);

}  // namespace nscope

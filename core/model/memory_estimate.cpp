#include "core/model/memory_estimate.h"

#include <algorithm>

#include "core/util/memory.h"

namespace nscope {

uint64_t weight_bytes(const ModelInfo& i, const ModelOptions& o) {
    const auto params = static_cast<uint64_t>(i.n_params);
    if (o.int8_weights) {
        const auto linear = static_cast<uint64_t>(std::min(i.n_linear_params, i.n_params));
        // + the float32 temporary of the largest block matrix while it is multiplied (int8_linear)
        const auto temp = static_cast<uint64_t>(std::max(i.d_model * i.d_mlp, 3 * i.d_model * i.d_model)) * 4;
        return linear + (params - linear) * 4 + temp;
    }
    return params * c10::elementSize(o.dtype);
}

uint64_t capture_bytes(const HookPoint& h, int64_t batch, int64_t tokens) {
    uint64_t n = 4;
    for (size_t k = 0; k < h.shape.size(); ++k) {
        int64_t s = h.shape[k];
        if (s < 0) s = k < h.dims.size() && h.dims[k] == "batch" ? batch : tokens;
        n *= static_cast<uint64_t>(s);
    }
    return n;
}

MemoryEstimate estimate_memory(const ModelInfo& i, const std::vector<HookPoint>& captured, const ModelOptions& o,
                               int64_t batch, int64_t tokens, bool logits, uint64_t runtime) {
    MemoryEstimate e;
    e.batch = batch, e.tokens = tokens, e.runtime = runtime;
    e.weights = weight_bytes(i, o);
    // One block's live set in the compute dtype: residual, normed input, sub-layer output and its sum (4 d),
    // q, k, v and z, the MLP's pre-activation, (gated: up projection) and output, scores + pattern per head,
    // plus the additive mask; float32 logits and their compute-dtype original when the unembedding runs.
    // Twice that: each op allocates its output while its inputs live, and the allocator keeps freed blocks
    // (measured on the GPT-2-small bench model, docs/performance.md).
    const auto el = static_cast<uint64_t>(o.int8_weights ? 4 : c10::elementSize(o.dtype));
    const auto bt = static_cast<uint64_t>(batch * tokens);
    const auto qkvz = static_cast<uint64_t>((2 * i.n_heads + 2 * i.n_kv_heads) * i.d_head);
    const auto mlp = static_cast<uint64_t>(i.d_mlp * (i.gated_mlp ? 3 : 2));
    const auto attn = static_cast<uint64_t>(2 * i.n_heads + 1) * static_cast<uint64_t>(tokens);
    e.forward = el * bt * (4 * static_cast<uint64_t>(i.d_model) + qkvz + mlp + attn);
    if (logits) e.forward += (el + 4) * bt * static_cast<uint64_t>(i.vocab_size);
    e.forward *= 2;
    for (const auto& h : captured) {
        const uint64_t b = capture_bytes(h, batch, tokens);
        e.captures += b;
        if (b > e.largest_hook_bytes) e.largest_hook_bytes = b, e.largest_hook = h.name;
    }
    e.n_captured = captured.size();
    return e;
}

nlohmann::json MemoryEstimate::to_json() const {
    return {{"batch", batch},       {"tokens", tokens},     {"weights_bytes", weights}, {"forward_bytes", forward},
            {"captures_bytes", captures}, {"hooks", n_captured}, {"runtime_bytes", runtime}, {"total_bytes", total()}};
}

std::string MemoryEstimate::breakdown() const {
    std::string s = "weights " + human_bytes(static_cast<double>(weights)) + " + forward " +
                    human_bytes(static_cast<double>(forward)) + " + captures " + human_bytes(static_cast<double>(captures)) +
                    " (" + std::to_string(n_captured) + " hook" + (n_captured == 1 ? "" : "s") + ")";
    if (runtime > 0) s += " + runtime " + human_bytes(static_cast<double>(runtime));
    return s + " = " + human_bytes(static_cast<double>(total()));
}

}  // namespace nscope

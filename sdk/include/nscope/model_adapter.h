// NeuronScope SDK — model adapters (the only plugin kind that links LibTorch).
//
// A model plugin exports a ModelFactory. The host reads HF `config.json`, picks the factory whose
// `architectures()` names the config's `architectures[0]` (or `model_type`), asks it for the model's
// dimensions and hook points from the config alone (recipes are validated before any weights load), then
// calls `load` with a WeightSource over the model's safetensors.
//
// Hook points (docs/architecture.md) use TransformerLens names. An adapter lists them once in `hook_points()`; the
// index in that list is the hook id it passes to `run_hook` during the forward, in forward order:
//
//   run_hook(hooks, ids.mlp_post[L], post);   // [b, p, d_mlp]
//
// Two-phase dispatch: `HookDispatcher::wanted(id)` is a bit test, so an unobserved point costs nothing;
// only wanted points are delivered (and may be edited in place or replaced by interventions).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/version.h>

#include "nscope/error.h"
#include "nscope/hook.h"
#include "nscope/plugin.h"

namespace nscope {

/// Implemented by the host. Adapters call `run_hook` at every hook point.
class HookDispatcher {
public:
    virtual ~HookDispatcher() = default;
    /// Phase 1: is hook `id` (index into hook_points()) observed or edited in this forward?
    virtual bool wanted(int id) const = 0;
    /// Phase 2: deliver the tensor. Observers copy it; interventions may edit it in place or replace it,
    /// so the adapter must continue with `t` afterwards.
    virtual void fire(int id, at::Tensor& t) = 0;
};

inline void run_hook(HookDispatcher* hooks, int id, at::Tensor& t) {
    if (hooks != nullptr && hooks->wanted(id)) hooks->fire(id, t);
}

/// Implemented by the host over one or more (sharded) safetensors files.
class WeightSource {
public:
    virtual ~WeightSource() = default;
    /// True if a tensor with exactly this (canonical: base prefix dropped, see WeightNaming) name exists.
    virtual bool contains(const std::string& name) const = 0;
    /// The tensor, on CPU, in its stored dtype; may alias a copy-on-write mmap. Throws InputError that names
    /// the tensor, the files searched and the nearest existing names when it is missing.
    virtual at::Tensor get(const std::string& name) const = 0;
    virtual std::vector<std::string> names() const = 0;
    /// The adapter keeps its own converted copy of this tensor (int8 weights) and will not read the stored one
    /// again: the host may drop its resident pages. Only called before any tensor aliasing it is edited.
    virtual void release(const std::string& name) const { (void)name; }
};

struct ModelOptions {
    at::ScalarType dtype = at::kFloat;  ///< compute dtype: float32 or bfloat16
    bool trainable = false;             ///< own (clone) every parameter and make it require grad
    /// Store the linear layers of the blocks as per-output-channel symmetric int8 (an at::kQInt8 per-channel
    /// quantized tensor: int8 values + one scale per output row); compute (dtype) stays float32. Embeddings,
    /// norms, biases and the unembedding keep `dtype`. Inference only: never with `trainable`.
    bool int8_weights = false;
};

struct ForwardInput {
    at::Tensor input_ids;       ///< int64 [b, p]
    at::Tensor attention_mask;  ///< int64 [b, p], 1 = real token; rows are right-padded
    at::Tensor token_type_ids;  ///< int64 [b, p] or undefined (BERT)
    /// False when the caller needs no logits: unless `hook_logits` is wanted, the adapter may skip the
    /// unembedding (a third of GPT-2-small's compute) and return an undefined tensor.
    bool logits = true;
};

/// Dimensions and facts derivable from config.json.
struct ModelInfo {
    std::string architecture;  ///< "GPT2LMHeadModel"
    std::string model_type;    ///< "gpt2"
    std::string adapter;       ///< plugin id that runs it
    int64_t n_layers = 0, d_model = 0, n_heads = 0, n_kv_heads = 0, d_head = 0, d_mlp = 0;
    int64_t vocab_size = 0, max_positions = 0;
    int64_t n_params = 0;      ///< parameter count (tied weights counted once)
    int64_t n_linear_params = 0;  ///< of which in the blocks' linear layers (what int8 weights quantize)
    bool causal = true;        ///< decoder (causal mask) vs encoder (BERT)
    bool gated_mlp = false;
    std::string activation;    ///< "gelu_new", "silu", "gelu"...
    std::string norm;          ///< "layernorm" / "rmsnorm"
    std::string positional;    ///< "learned" / "rotary"
    nlohmann::json extra = nlohmann::json::object();

    nlohmann::json to_json() const {
        return {{"architecture", architecture}, {"model_type", model_type}, {"adapter", adapter},
                {"n_layers", n_layers}, {"d_model", d_model}, {"n_heads", n_heads},
                {"n_kv_heads", n_kv_heads}, {"d_head", d_head}, {"d_mlp", d_mlp},
                {"vocab_size", vocab_size}, {"max_positions", max_positions}, {"n_params", n_params},
                {"n_linear_params", n_linear_params},
                {"causal", causal}, {"gated_mlp", gated_mlp}, {"activation", activation}, {"norm", norm},
                {"positional", positional}, {"extra", extra}};
    }
};

class ModelAdapter {
public:
    virtual ~ModelAdapter() = default;
    virtual const ModelInfo& info() const = 0;
    virtual const std::vector<HookPoint>& hook_points() const = 0;
    /// Run the model. Returns logits [b, p, vocab] (BERT: the masked-LM head), or an undefined tensor when
    /// `input.logits` is false and hook_logits is not wanted. Calls `run_hook` at every
    /// hook point in forward order. Must not keep references to the inputs.
    virtual at::Tensor forward(const ForwardInput& input, HookDispatcher* hooks) = 0;
    /// The output head on residual-stream vectors [..., d_model] -> logits [..., vocab]: the final norm (its
    /// statistics computed on `resid` itself) and the unembedding, exactly as `forward` applies them to the
    /// last block's output, without hooks (the logit lens). Throws InputError when the model has no head.
    virtual at::Tensor unembed(const at::Tensor& resid) const {
        (void)resid;
        throw InputError("model adapter '" + info().adapter + "' has no output head to unembed with");
    }
    /// Parameters by HF tensor name without the base prefix (ModelFactory::weight_naming); tied weights once.
    virtual std::vector<std::pair<std::string, at::Tensor>> named_parameters() = 0;
};

/// How an architecture's HuggingFace checkpoints name tensors, so that core needs no per-architecture table:
/// on load core drops one leading `base_prefixes` entry from every stored name and skips stored buffers that
/// end with an `ignored_buffers` entry; on save it puts `base_prefixes[0]` in front of every parameter name
/// except those that start with a `head_prefixes` entry (heads that live outside the base model).
struct WeightNaming {
    std::vector<std::string> base_prefixes;    ///< "transformer.", "model.": stripped when present
    std::vector<std::string> head_prefixes;    ///< "lm_head.", "cls.": saved without a base prefix
    std::vector<std::string> ignored_buffers;  ///< name suffixes of non-parameter buffers ("rotary_emb.inv_freq")
};

class ModelFactory {
public:
    virtual ~ModelFactory() = default;
    /// HF `architectures` and `model_type` values this adapter runs ("GPT2LMHeadModel", "gpt2").
    virtual std::vector<std::string> architectures() const = 0;
    /// Dimensions from config.json alone. Throws InputError naming a missing / invalid config field.
    virtual ModelInfo describe(const nlohmann::json& config) const = 0;
    /// Every hook point, from config.json alone (no weights).
    virtual std::vector<HookPoint> hook_points(const nlohmann::json& config) const = 0;
    /// Build the model from weights. Throws InputError for a missing tensor or a shape mismatch.
    virtual std::unique_ptr<ModelAdapter> load(const nlohmann::json& config, const WeightSource& weights,
                                               const ModelOptions& options) const = 0;
    /// The checkpoint naming of this architecture (names as stored, no prefix handling, by default).
    virtual WeightNaming weight_naming() const { return {}; }
    /// Build the model with freshly initialised weights (training from scratch). Optional.
    virtual std::unique_ptr<ModelAdapter> init_random(const nlohmann::json& config, uint64_t seed,
                                                      const ModelOptions& options) const {
        (void)config, (void)seed, (void)options;
        throw InputError("this model adapter cannot initialise random weights");
    }
};

}  // namespace nscope

#define NSCOPE_TORCH_TAG "torch=" TORCH_VERSION

/// Declare a model plugin: `Class` derives from nscope::ModelFactory and is default-constructible.
#define NSCOPE_MODEL_PLUGIN(Class, ID, VERSION, SUMMARY)                                                    \
    NSCOPE_PLUGIN_DESCRIPTOR_(::nscope::PluginKind::Model, NSCOPE_BASE_BUILD_TAG ";" NSCOPE_TORCH_TAG, ID,  \
                              VERSION, SUMMARY, nullptr, nullptr,                                          \
                              []() -> ::nscope::ModelFactory* { return new Class(); })

// Llama family (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM): RMSNorm, rotary (half-split,
// rope_theta), grouped-query attention with repeated kv heads, SiLU-gated MLP, q/k/v bias where the
// config says (Qwen2 always), tied or untied lm_head, Mistral / Qwen2 sliding window.
#include "plugins/models/common/transformer.h"

namespace nscope::models {
namespace {

struct Dims {
    std::string model_type, act;
    int64_t n_layers, d, heads, kv_heads, dh, m, vocab, n_pos, window = 0;
    double eps, theta, pos_scale = 1.0, init_std;
    bool tied, qkv_bias, o_bias;
};

Dims read_dims(const nlohmann::json& c) {
    refuse_options(c, {{"mlp_bias", "biases on gate_proj / up_proj / down_proj"}});
    Dims d{};
    d.model_type = cfg_str_or(c, "model_type", "llama");
    d.n_layers = cfg_int(c, "num_hidden_layers");
    d.d = cfg_int(c, "hidden_size");
    d.heads = cfg_int(c, "num_attention_heads");
    d.kv_heads = cfg_int_or(c, "num_key_value_heads", d.heads);
    if (d.heads % d.kv_heads != 0)
        throw InputError("config.json: num_attention_heads (" + std::to_string(d.heads) +
                         ") is not a multiple of num_key_value_heads (" + std::to_string(d.kv_heads) + ")");
    if (!c.contains("head_dim") && d.d % d.heads != 0)
        throw InputError("config.json: hidden_size is not divisible by num_attention_heads; set head_dim");
    d.dh = cfg_int_or(c, "head_dim", d.d / d.heads);
    if (d.dh % 2 != 0) throw InputError("config.json: head_dim must be even for rotary embeddings");
    d.m = cfg_int(c, "intermediate_size");
    d.vocab = cfg_int(c, "vocab_size");
    d.n_pos = cfg_int_or(c, "max_position_embeddings", 2048);
    d.eps = cfg_num_or(c, "rms_norm_eps", 1e-6);
    d.theta = cfg_num_or(c, "rope_theta", 10000.0);
    d.init_std = cfg_num_or(c, "initializer_range", 0.02);
    d.act = cfg_str_or(c, "hidden_act", "silu");
    check_activation(d.act);
    d.pos_scale = rope_position_scale(c);
    d.tied = cfg_bool_or(c, "tie_word_embeddings", false);
    const bool attn_bias = cfg_bool_or(c, "attention_bias", false);
    d.qkv_bias = d.model_type == "qwen2" || attn_bias;
    d.o_bias = attn_bias && d.model_type != "qwen2";
    if (d.model_type == "mistral") d.window = cfg_int_or(c, "sliding_window", 0);
    if (d.model_type == "qwen2" && cfg_bool_or(c, "use_sliding_window", false))
        d.window = cfg_int_or(c, "sliding_window", 0);
    return d;
}

struct Globals {
    at::Tensor embed, norm, lm_head;
};
struct Layer {
    at::Tensor ln1, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln2, gate, up, down;
};

using V = std::vector<int64_t>;
// The tensor table: HF name (without the `model.` prefix) -> field, shape, init, presence.
const std::vector<TensorRow<Dims, Globals>> kGlobals = {
    {"embed_tokens.weight", &Globals::embed, [](const Dims& d) { return V{d.vocab, d.d}; }, Init::Normal},
    {"norm.weight", &Globals::norm, [](const Dims& d) { return V{d.d}; }, Init::Ones},
    {"lm_head.weight", &Globals::lm_head, [](const Dims& d) { return V{d.vocab, d.d}; }, Init::Normal,
     [](const Dims& d) { return !d.tied; }},
};
const std::vector<TensorRow<Dims, Layer>> kLayer = {
    {"layers.%d.input_layernorm.weight", &Layer::ln1, [](const Dims& d) { return V{d.d}; }, Init::Ones},
    {"layers.%d.self_attn.q_proj.weight", &Layer::q_w, [](const Dims& d) { return V{d.heads * d.dh, d.d}; }, Init::Normal},
    {"layers.%d.self_attn.q_proj.bias", &Layer::q_b, [](const Dims& d) { return V{d.heads * d.dh}; }, Init::Zeros,
     [](const Dims& d) { return d.qkv_bias; }},
    {"layers.%d.self_attn.k_proj.weight", &Layer::k_w, [](const Dims& d) { return V{d.kv_heads * d.dh, d.d}; }, Init::Normal},
    {"layers.%d.self_attn.k_proj.bias", &Layer::k_b, [](const Dims& d) { return V{d.kv_heads * d.dh}; }, Init::Zeros,
     [](const Dims& d) { return d.qkv_bias; }},
    {"layers.%d.self_attn.v_proj.weight", &Layer::v_w, [](const Dims& d) { return V{d.kv_heads * d.dh, d.d}; }, Init::Normal},
    {"layers.%d.self_attn.v_proj.bias", &Layer::v_b, [](const Dims& d) { return V{d.kv_heads * d.dh}; }, Init::Zeros,
     [](const Dims& d) { return d.qkv_bias; }},
    {"layers.%d.self_attn.o_proj.weight", &Layer::o_w, [](const Dims& d) { return V{d.d, d.heads * d.dh}; }, Init::Normal},
    {"layers.%d.self_attn.o_proj.bias", &Layer::o_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros,
     [](const Dims& d) { return d.o_bias; }},
    {"layers.%d.post_attention_layernorm.weight", &Layer::ln2, [](const Dims& d) { return V{d.d}; }, Init::Ones},
    {"layers.%d.mlp.gate_proj.weight", &Layer::gate, [](const Dims& d) { return V{d.m, d.d}; }, Init::Normal},
    {"layers.%d.mlp.up_proj.weight", &Layer::up, [](const Dims& d) { return V{d.m, d.d}; }, Init::Normal},
    {"layers.%d.mlp.down_proj.weight", &Layer::down, [](const Dims& d) { return V{d.d, d.m}; }, Init::Normal},
};

HookShape hook_shape(const Dims& d) {
    HookShape s;
    s.n_layers = d.n_layers, s.d_model = d.d, s.n_heads = d.heads, s.n_kv_heads = d.kv_heads, s.d_head = d.dh;
    s.d_mlp = d.m, s.vocab = d.vocab, s.pos_embed = false, s.pre_ln = true, s.gated = true;
    return s;
}

ModelInfo make_info(const nlohmann::json& c, const Dims& d) {
    ModelInfo i = table_info(c, "LlamaForCausalLM", d, hook_shape(d), kGlobals, kLayer);
    i.model_type = d.model_type;
    i.adapter = "llama";
    i.max_positions = d.n_pos;
    i.causal = true, i.activation = d.act, i.norm = "rmsnorm", i.positional = "rotary";
    i.extra = {{"tied_embeddings", d.tied}, {"rope_theta", d.theta}, {"rms_norm_eps", d.eps},
               {"qkv_bias", d.qkv_bias}, {"sliding_window", d.window}};
    return i;
}

class LlamaModel : public TableModel<Dims, Globals, Layer> {
public:
    LlamaModel(const nlohmann::json& c, Dims d) : TableModel(d, make_info(c, d), hook_shape(d), kGlobals, kLayer) {}

    void check_weights(const WeightSource& w) const override { check_tied_head(w, d_.tied, "lm_head.weight"); }

    at::Tensor forward(const ForwardInput& in, HookDispatcher* hooks) override {
        const int64_t B = in.input_ids.size(0), P = in.input_ids.size(1);
        const auto& ids = layout_;
        const auto dtype = g_.embed.scalar_type();
        at::Tensor resid = at::embedding(g_.embed, in.input_ids);
        run_hook(hooks, ids.embed, resid);  // [b, p, d]
        const at::Tensor mask = additive_mask(in.attention_mask, true, d_.window, dtype);
        const auto [cos, sin] = rotary_tables(P, d_.dh, d_.theta, d_.pos_scale, dtype);
        const double scale = std::sqrt(static_cast<double>(d_.dh));
        for (int64_t L = 0; L < d_.n_layers; ++L) {
            const Layer& w = layers_[static_cast<size_t>(L)];
            const LayerHooks& h = ids.layers[static_cast<size_t>(L)];
            run_hook(hooks, h.resid_pre, resid);  // [b, p, d]
            at::Tensor x = rms_norm(resid, w.ln1, d_.eps);
            run_hook(hooks, h.ln1, x);  // [b, p, d]
            at::Tensor z = rotary_attention(hooks, h, dense(x, w.q_w, w.q_b).view({B, P, d_.heads, d_.dh}),
                                            dense(x, w.k_w, w.k_b).view({B, P, d_.kv_heads, d_.dh}),
                                            dense(x, w.v_w, w.v_b).view({B, P, d_.kv_heads, d_.dh}), cos, sin, mask,
                                            scale, /*softmax_fp32=*/true);
            at::Tensor attn_out = dense(z, w.o_w, w.o_b);
            run_hook(hooks, h.attn_out, attn_out);  // [b, p, d]
            resid = resid + attn_out;
            run_hook(hooks, h.resid_mid, resid);  // [b, p, d]
            x = rms_norm(resid, w.ln2, d_.eps);
            run_hook(hooks, h.ln2, x);  // [b, p, d]
            const at::Tensor mlp_out = gated_mlp(hooks, h, x, d_.act, w.gate, w.up, w.down);
            resid = resid + mlp_out;
            run_hook(hooks, h.resid_post, resid);  // [b, p, d]
        }
        return output(in, hooks, resid);
    }

protected:
    at::Tensor final_norm(const at::Tensor& resid) const override { return rms_norm(resid, g_.norm, d_.eps); }
    at::Tensor head(const at::Tensor& x) const override { return dense(x, d_.tied ? g_.embed : g_.lm_head); }

};

class LlamaFactory : public AdapterFactory<LlamaModel, Dims, read_dims, make_info, hook_shape> {
public:
    std::vector<std::string> architectures() const override {
        return {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "llama", "mistral", "qwen2"};
    }
    WeightNaming weight_naming() const override { return {{"model."}, {"lm_head."}, {"rotary_emb.inv_freq"}}; }
};

}  // namespace
}  // namespace nscope::models

NSCOPE_MODEL_PLUGIN(nscope::models::LlamaFactory, "llama", "0.1.0",
                    "Llama, Mistral, Qwen2 (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)")

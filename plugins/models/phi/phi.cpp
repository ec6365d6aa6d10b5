// Phi (PhiForCausalLM: phi-1.5, phi-2): one LayerNorm feeds attention and MLP in parallel
// (x + dense(attn(ln x)) + fc2(act(fc1(ln x)))), partial rotary (half-split, on the first
// int(head_dim * partial_rotary_factor) dims of each head), biases everywhere, dense out-projection,
// final_layernorm, lm_head with a bias.
#include "plugins/models/common/transformer.h"

namespace nscope::models {
namespace {

struct Dims {
    std::string act;
    int64_t n_layers, d, heads, kv_heads, dh, rot, m, vocab, n_pos;
    double eps, theta, pos_scale, init_std;
    bool tied;
};

Dims read_dims(const nlohmann::json& c) {
    refuse_options(c, {{"qk_layernorm", "LayerNorm on queries and keys"}});
    Dims d{};
    d.n_layers = cfg_int(c, "num_hidden_layers");
    d.d = cfg_int(c, "hidden_size");
    d.heads = cfg_int(c, "num_attention_heads");
    d.kv_heads = cfg_int_or(c, "num_key_value_heads", d.heads);
    if (d.d % d.heads != 0) throw InputError("config.json: hidden_size is not divisible by num_attention_heads");
    if (d.heads % d.kv_heads != 0)
        throw InputError("config.json: num_attention_heads is not a multiple of num_key_value_heads");
    d.dh = d.d / d.heads;
    d.rot = rotary_dims(d.dh, cfg_num_or(c, "partial_rotary_factor", 0.5), "partial_rotary_factor");
    d.m = cfg_int(c, "intermediate_size");
    d.vocab = cfg_int(c, "vocab_size");
    d.n_pos = cfg_int_or(c, "max_position_embeddings", 2048);
    d.eps = cfg_num_or(c, "layer_norm_eps", 1e-5);
    d.theta = cfg_num_or(c, "rope_theta", 10000.0);
    d.pos_scale = rope_position_scale(c);
    d.init_std = cfg_num_or(c, "initializer_range", 0.02);
    d.act = cfg_str_or(c, "hidden_act", "gelu_new");
    check_activation(d.act);
    d.tied = cfg_bool_or(c, "tie_word_embeddings", false);
    return d;
}

struct Globals {
    at::Tensor embed, lnf_w, lnf_b, head_w, head_b;
};
struct Layer {
    at::Tensor ln_w, ln_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, fc1_w, fc1_b, fc2_w, fc2_b;
};

using V = std::vector<int64_t>;
// The tensor table: HF name (without the `model.` prefix) -> field, shape, init, presence.
const std::vector<TensorRow<Dims, Globals>> kGlobals = {
    {"embed_tokens.weight", &Globals::embed, [](const Dims& d) { return V{d.vocab, d.d}; }, Init::Normal},
    {"final_layernorm.weight", &Globals::lnf_w, [](const Dims& d) { return V{d.d}; }, Init::Ones},
    {"final_layernorm.bias", &Globals::lnf_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"lm_head.weight", &Globals::head_w, [](const Dims& d) { return V{d.vocab, d.d}; }, Init::Normal,
     [](const Dims& d) { return !d.tied; }},
    {"lm_head.bias", &Globals::head_b, [](const Dims& d) { return V{d.vocab}; }, Init::Zeros},
};
const std::vector<TensorRow<Dims, Layer>> kLayer = {
    {"layers.%d.input_layernorm.weight", &Layer::ln_w, [](const Dims& d) { return V{d.d}; }, Init::Ones},
    {"layers.%d.input_layernorm.bias", &Layer::ln_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"layers.%d.self_attn.q_proj.weight", &Layer::q_w, [](const Dims& d) { return V{d.heads * d.dh, d.d}; }, Init::Normal},
    {"layers.%d.self_attn.q_proj.bias", &Layer::q_b, [](const Dims& d) { return V{d.heads * d.dh}; }, Init::Zeros},
    {"layers.%d.self_attn.k_proj.weight", &Layer::k_w, [](const Dims& d) { return V{d.kv_heads * d.dh, d.d}; }, Init::Normal},
    {"layers.%d.self_attn.k_proj.bias", &Layer::k_b, [](const Dims& d) { return V{d.kv_heads * d.dh}; }, Init::Zeros},
    {"layers.%d.self_attn.v_proj.weight", &Layer::v_w, [](const Dims& d) { return V{d.kv_heads * d.dh, d.d}; }, Init::Normal},
    {"layers.%d.self_attn.v_proj.bias", &Layer::v_b, [](const Dims& d) { return V{d.kv_heads * d.dh}; }, Init::Zeros},
    {"layers.%d.self_attn.dense.weight", &Layer::o_w, [](const Dims& d) { return V{d.d, d.heads * d.dh}; }, Init::Normal},
    {"layers.%d.self_attn.dense.bias", &Layer::o_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"layers.%d.mlp.fc1.weight", &Layer::fc1_w, [](const Dims& d) { return V{d.m, d.d}; }, Init::Normal},
    {"layers.%d.mlp.fc1.bias", &Layer::fc1_b, [](const Dims& d) { return V{d.m}; }, Init::Zeros},
    {"layers.%d.mlp.fc2.weight", &Layer::fc2_w, [](const Dims& d) { return V{d.d, d.m}; }, Init::Normal},
    {"layers.%d.mlp.fc2.bias", &Layer::fc2_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
};

HookShape hook_shape(const Dims& d) {
    HookShape s;
    s.n_layers = d.n_layers, s.d_model = d.d, s.n_heads = d.heads, s.n_kv_heads = d.kv_heads, s.d_head = d.dh;
    s.d_mlp = d.m, s.vocab = d.vocab, s.pos_embed = false, s.pre_ln = true, s.gated = false;
    return s;
}

ModelInfo make_info(const nlohmann::json& c, const Dims& d) {
    ModelInfo i = table_info(c, "PhiForCausalLM", d, hook_shape(d), kGlobals, kLayer);
    i.model_type = "phi";
    i.adapter = "phi";
    i.max_positions = d.n_pos;
    i.causal = true, i.activation = d.act, i.norm = "layernorm", i.positional = "rotary";
    i.extra = {{"tied_embeddings", d.tied}, {"rope_theta", d.theta}, {"rotary_dims", d.rot},
               {"parallel_residual", true}, {"layer_norm_eps", d.eps}};
    return i;
}

class PhiModel : public TableModel<Dims, Globals, Layer> {
public:
    PhiModel(const nlohmann::json& c, Dims d) : TableModel(d, make_info(c, d), hook_shape(d), kGlobals, kLayer) {}

    void check_weights(const WeightSource& w) const override { check_tied_head(w, d_.tied, "lm_head.weight"); }

    at::Tensor forward(const ForwardInput& in, HookDispatcher* hooks) override {
        const int64_t B = in.input_ids.size(0), P = in.input_ids.size(1);
        const auto& ids = layout_;
        const auto dtype = g_.embed.scalar_type();
        at::Tensor resid = at::embedding(g_.embed, in.input_ids);
        run_hook(hooks, ids.embed, resid);  // [b, p, d]
        const at::Tensor mask = additive_mask(in.attention_mask, true, 0, dtype);
        const auto [cos, sin] = rotary_tables(P, d_.rot, d_.theta, d_.pos_scale, dtype);
        const double scale = std::sqrt(static_cast<double>(d_.dh));
        for (int64_t L = 0; L < d_.n_layers; ++L) {
            const Layer& w = layers_[static_cast<size_t>(L)];
            const LayerHooks& h = ids.layers[static_cast<size_t>(L)];
            run_hook(hooks, h.resid_pre, resid);  // [b, p, d]
            const at::Tensor normed = at::layer_norm(resid, {d_.d}, w.ln_w, w.ln_b, d_.eps);
            // One LayerNorm feeds both sub-layers: ln1 is the attention's copy, ln2 the MLP's, so an edit at
            // one reaches only its own sub-layer.
            at::Tensor x = hooks && hooks->wanted(h.ln1) ? normed.clone() : normed;
            run_hook(hooks, h.ln1, x);  // [b, p, d]
            at::Tensor z = rotary_attention(hooks, h, dense(x, w.q_w, w.q_b).view({B, P, d_.heads, d_.dh}),
                                            dense(x, w.k_w, w.k_b).view({B, P, d_.kv_heads, d_.dh}),
                                            dense(x, w.v_w, w.v_b).view({B, P, d_.kv_heads, d_.dh}), cos, sin, mask,
                                            scale, /*softmax_fp32=*/true);
            at::Tensor attn_out = dense(z, w.o_w, w.o_b);
            run_hook(hooks, h.attn_out, attn_out);  // [b, p, d]
            resid = resid + attn_out;
            run_hook(hooks, h.resid_mid, resid);  // [b, p, d] (block input + attention; the MLP does not read it)
            x = normed;
            run_hook(hooks, h.ln2, x);  // [b, p, d] (the same normed block input)
            resid = resid + plain_mlp(hooks, h, x, d_.act, w.fc1_w, w.fc1_b, w.fc2_w, w.fc2_b);
            run_hook(hooks, h.resid_post, resid);  // [b, p, d]
        }
        return output(in, hooks, resid);
    }

protected:
    at::Tensor final_norm(const at::Tensor& resid) const override { return at::layer_norm(resid, {d_.d}, g_.lnf_w, g_.lnf_b, d_.eps); }
    at::Tensor head(const at::Tensor& x) const override { return dense(x, d_.tied ? g_.embed : g_.head_w, g_.head_b); }
};

class PhiFactory : public AdapterFactory<PhiModel, Dims, read_dims, make_info, hook_shape> {
public:
    std::vector<std::string> architectures() const override { return {"PhiForCausalLM", "phi"}; }
    WeightNaming weight_naming() const override { return {{"model."}, {"lm_head."}, {"rotary_emb.inv_freq"}}; }
};

}  // namespace
}  // namespace nscope::models

NSCOPE_MODEL_PLUGIN(nscope::models::PhiFactory, "phi", "0.1.0", "Phi-1.5 / Phi-2 (PhiForCausalLM)")

// GPT-NeoX / Pythia (GPTNeoXForCausalLM): fused query_key_value whose output is laid out per head as
// [heads, 3, head_dim] (q_h, k_h, v_h adjacent, not q|k|v blocks), partial rotary on the first
// int(head_dim * rotary_pct) dims (half-split, base rotary_emb_base), parallel residual
// x + attn(ln1 x) + mlp(ln2 x) or sequential (use_parallel_residual), erf GELU, untied embed_out.
#include "plugins/models/common/transformer.h"

namespace nscope::models {
namespace {

struct Dims {
    std::string act;
    int64_t n_layers, d, heads, dh, rot, m, vocab, n_pos;
    double eps, theta, pos_scale, init_std;
    bool parallel, tied, bias;
};

Dims read_dims(const nlohmann::json& c) {
    Dims d{};
    d.n_layers = cfg_int(c, "num_hidden_layers");
    d.d = cfg_int(c, "hidden_size");
    d.heads = cfg_int(c, "num_attention_heads");
    if (d.d % d.heads != 0) throw InputError("config.json: hidden_size is not divisible by num_attention_heads");
    d.dh = d.d / d.heads;
    d.rot = rotary_dims(d.dh, cfg_num_or(c, "rotary_pct", 0.25), "rotary_pct");
    d.m = cfg_int(c, "intermediate_size");
    d.vocab = cfg_int(c, "vocab_size");
    d.n_pos = cfg_int_or(c, "max_position_embeddings", 2048);
    d.eps = cfg_num_or(c, "layer_norm_eps", 1e-5);
    d.theta = cfg_num_or(c, "rotary_emb_base", 10000.0);
    d.pos_scale = rope_position_scale(c);
    d.init_std = cfg_num_or(c, "initializer_range", 0.02);
    d.act = cfg_str_or(c, "hidden_act", "gelu");
    check_activation(d.act);
    d.parallel = cfg_bool_or(c, "use_parallel_residual", true);
    d.tied = cfg_bool_or(c, "tie_word_embeddings", false);
    d.bias = cfg_bool_or(c, "attention_bias", true);
    return d;
}

struct Globals {
    at::Tensor embed, lnf_w, lnf_b, head;
};
struct Layer {
    at::Tensor ln1_w, ln1_b, ln2_w, ln2_b, qkv_w, qkv_b, o_w, o_b, up_w, up_b, down_w, down_b;
};

using V = std::vector<int64_t>;
bool has_bias(const Dims& d) { return d.bias; }
// The tensor table: HF name (without the `gpt_neox.` prefix; embed_out is outside the base model) -> field,
// shape, init, presence.
const std::vector<TensorRow<Dims, Globals>> kGlobals = {
    {"embed_in.weight", &Globals::embed, [](const Dims& d) { return V{d.vocab, d.d}; }, Init::Normal},
    {"final_layer_norm.weight", &Globals::lnf_w, [](const Dims& d) { return V{d.d}; }, Init::Ones},
    {"final_layer_norm.bias", &Globals::lnf_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"embed_out.weight", &Globals::head, [](const Dims& d) { return V{d.vocab, d.d}; }, Init::Normal,
     [](const Dims& d) { return !d.tied; }},
};
const std::vector<TensorRow<Dims, Layer>> kLayer = {
    {"layers.%d.input_layernorm.weight", &Layer::ln1_w, [](const Dims& d) { return V{d.d}; }, Init::Ones},
    {"layers.%d.input_layernorm.bias", &Layer::ln1_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"layers.%d.post_attention_layernorm.weight", &Layer::ln2_w, [](const Dims& d) { return V{d.d}; }, Init::Ones},
    {"layers.%d.post_attention_layernorm.bias", &Layer::ln2_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"layers.%d.attention.query_key_value.weight", &Layer::qkv_w, [](const Dims& d) { return V{3 * d.d, d.d}; }, Init::Normal},
    {"layers.%d.attention.query_key_value.bias", &Layer::qkv_b, [](const Dims& d) { return V{3 * d.d}; }, Init::Zeros, has_bias},
    {"layers.%d.attention.dense.weight", &Layer::o_w, [](const Dims& d) { return V{d.d, d.d}; }, Init::Normal},
    {"layers.%d.attention.dense.bias", &Layer::o_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros, has_bias},
    {"layers.%d.mlp.dense_h_to_4h.weight", &Layer::up_w, [](const Dims& d) { return V{d.m, d.d}; }, Init::Normal},
    {"layers.%d.mlp.dense_h_to_4h.bias", &Layer::up_b, [](const Dims& d) { return V{d.m}; }, Init::Zeros},
    {"layers.%d.mlp.dense_4h_to_h.weight", &Layer::down_w, [](const Dims& d) { return V{d.d, d.m}; }, Init::Normal},
    {"layers.%d.mlp.dense_4h_to_h.bias", &Layer::down_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
};

HookShape hook_shape(const Dims& d) {
    HookShape s;
    s.n_layers = d.n_layers, s.d_model = d.d, s.n_heads = d.heads, s.n_kv_heads = d.heads, s.d_head = d.dh;
    s.d_mlp = d.m, s.vocab = d.vocab, s.pos_embed = false, s.pre_ln = true, s.gated = false;
    return s;
}

ModelInfo make_info(const nlohmann::json& c, const Dims& d) {
    ModelInfo i = table_info(c, "GPTNeoXForCausalLM", d, hook_shape(d), kGlobals, kLayer);
    i.model_type = "gpt_neox";
    i.adapter = "gpt_neox";
    i.max_positions = d.n_pos;
    i.causal = true, i.activation = d.act, i.norm = "layernorm", i.positional = "rotary";
    i.extra = {{"tied_embeddings", d.tied}, {"rotary_emb_base", d.theta}, {"rotary_dims", d.rot},
               {"parallel_residual", d.parallel}, {"attention_bias", d.bias}, {"layer_norm_eps", d.eps}};
    return i;
}

class GptNeoxModel : public TableModel<Dims, Globals, Layer> {
public:
    GptNeoxModel(const nlohmann::json& c, Dims d) : TableModel(d, make_info(c, d), hook_shape(d), kGlobals, kLayer) {}

    void check_weights(const WeightSource& w) const override { check_tied_head(w, d_.tied, "embed_out.weight"); }

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
            const at::Tensor block_in = resid;
            at::Tensor x = at::layer_norm(resid, {d_.d}, w.ln1_w, w.ln1_b, d_.eps);
            run_hook(hooks, h.ln1, x);  // [b, p, d]
            // The fused projection's output is per head [q_h | k_h | v_h]: view as [b, p, h, 3, dh].
            const at::Tensor qkv = dense(x, w.qkv_w, w.qkv_b).view({B, P, d_.heads, 3, d_.dh});
            at::Tensor z = rotary_attention(hooks, h, qkv.select(3, 0), qkv.select(3, 1), qkv.select(3, 2), cos, sin,
                                            mask, scale, /*softmax_fp32=*/false);
            at::Tensor attn_out = dense(z, w.o_w, w.o_b);
            run_hook(hooks, h.attn_out, attn_out);  // [b, p, d]
            resid = resid + attn_out;
            run_hook(hooks, h.resid_mid, resid);  // [b, p, d] (parallel form: the MLP does not read it)
            // Parallel: the MLP's LayerNorm reads the block input; sequential: the residual after attention.
            x = at::layer_norm(d_.parallel ? block_in : resid, {d_.d}, w.ln2_w, w.ln2_b, d_.eps);
            run_hook(hooks, h.ln2, x);  // [b, p, d]
            resid = resid + plain_mlp(hooks, h, x, d_.act, w.up_w, w.up_b, w.down_w, w.down_b);
            run_hook(hooks, h.resid_post, resid);  // [b, p, d]
        }
        return output(in, hooks, resid);
    }

protected:
    at::Tensor final_norm(const at::Tensor& resid) const override { return at::layer_norm(resid, {d_.d}, g_.lnf_w, g_.lnf_b, d_.eps); }
    at::Tensor head(const at::Tensor& x) const override { return dense(x, d_.tied ? g_.embed : g_.head); }
};

class GptNeoxFactory : public AdapterFactory<GptNeoxModel, Dims, read_dims, make_info, hook_shape> {
public:
    std::vector<std::string> architectures() const override { return {"GPTNeoXForCausalLM", "gpt_neox"}; }
    // attention.bias / masked_bias are the causal-mask buffers older checkpoints store, not parameters.
    WeightNaming weight_naming() const override {
        return {{"gpt_neox."}, {"embed_out."}, {".attention.bias", ".attention.masked_bias", "rotary_emb.inv_freq"}};
    }
};

}  // namespace
}  // namespace nscope::models

NSCOPE_MODEL_PLUGIN(nscope::models::GptNeoxFactory, "gpt_neox", "0.1.0",
                    "GPT-NeoX / Pythia (GPTNeoXForCausalLM)")

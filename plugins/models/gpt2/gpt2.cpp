// GPT-2 (GPT2LMHeadModel / GPT2Model): learned positions, pre-LN, Conv1D weights stored [in, out]
// (used with addmm as stored, no transpose), fused qkv split with views, gelu_new, lm_head tied to wte.
#include "plugins/models/common/transformer.h"

namespace nscope::models {
namespace {

struct Dims {
    int64_t n_layers, d, heads, dh, m, vocab, n_pos;
    double eps, init_std;
    std::string act;
    bool scale_attn, scale_by_layer;
};

Dims read_dims(const nlohmann::json& c) {
    refuse_options(c, {{"add_cross_attention", "cross-attention layers"}});
    Dims d{};
    d.n_layers = cfg_int(c, "n_layer");
    d.d = cfg_int(c, "n_embd");
    d.heads = cfg_int(c, "n_head");
    if (d.d % d.heads != 0)
        throw InputError("config.json: n_embd (" + std::to_string(d.d) + ") is not divisible by n_head (" +
                         std::to_string(d.heads) + ")");
    d.dh = d.d / d.heads;
    d.m = cfg_int_or(c, "n_inner", 4 * d.d);
    d.vocab = cfg_int(c, "vocab_size");
    d.n_pos = cfg_int(c, "n_positions");
    d.eps = cfg_num_or(c, "layer_norm_epsilon", 1e-5);
    d.init_std = cfg_num_or(c, "initializer_range", 0.02);
    d.act = cfg_str_or(c, "activation_function", "gelu_new");
    check_activation(d.act);
    d.scale_attn = cfg_bool_or(c, "scale_attn_weights", true);
    d.scale_by_layer = cfg_bool_or(c, "scale_attn_by_inverse_layer_idx", false);
    return d;
}

struct Globals {
    at::Tensor wte, wpe, lnf_w, lnf_b;
};
struct Layer {
    at::Tensor ln1_w, ln1_b, attn_w, attn_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, out_w, out_b;
};

using V = std::vector<int64_t>;
// The tensor table: HF name (without the `transformer.` prefix) -> field, shape, init.
const std::vector<TensorRow<Dims, Globals>> kGlobals = {
    {"wte.weight", &Globals::wte, [](const Dims& d) { return V{d.vocab, d.d}; }, Init::Normal},
    {"wpe.weight", &Globals::wpe, [](const Dims& d) { return V{d.n_pos, d.d}; }, Init::Normal},
    {"ln_f.weight", &Globals::lnf_w, [](const Dims& d) { return V{d.d}; }, Init::Ones},
    {"ln_f.bias", &Globals::lnf_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
};
const std::vector<TensorRow<Dims, Layer>> kLayer = {
    {"h.%d.ln_1.weight", &Layer::ln1_w, [](const Dims& d) { return V{d.d}; }, Init::Ones},
    {"h.%d.ln_1.bias", &Layer::ln1_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"h.%d.attn.c_attn.weight", &Layer::attn_w, [](const Dims& d) { return V{d.d, 3 * d.d}; }, Init::Normal},
    {"h.%d.attn.c_attn.bias", &Layer::attn_b, [](const Dims& d) { return V{3 * d.d}; }, Init::Zeros},
    {"h.%d.attn.c_proj.weight", &Layer::proj_w, [](const Dims& d) { return V{d.d, d.d}; }, Init::NormalResid},
    {"h.%d.attn.c_proj.bias", &Layer::proj_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"h.%d.ln_2.weight", &Layer::ln2_w, [](const Dims& d) { return V{d.d}; }, Init::Ones},
    {"h.%d.ln_2.bias", &Layer::ln2_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"h.%d.mlp.c_fc.weight", &Layer::fc_w, [](const Dims& d) { return V{d.d, d.m}; }, Init::Normal},
    {"h.%d.mlp.c_fc.bias", &Layer::fc_b, [](const Dims& d) { return V{d.m}; }, Init::Zeros},
    {"h.%d.mlp.c_proj.weight", &Layer::out_w, [](const Dims& d) { return V{d.m, d.d}; }, Init::NormalResid},
    {"h.%d.mlp.c_proj.bias", &Layer::out_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
};

HookShape hook_shape(const Dims& d) {
    HookShape s;
    s.n_layers = d.n_layers, s.d_model = d.d, s.n_heads = d.heads, s.n_kv_heads = d.heads, s.d_head = d.dh;
    s.d_mlp = d.m, s.vocab = d.vocab, s.pos_embed = true, s.pre_ln = true, s.gated = false;
    return s;
}

ModelInfo make_info(const nlohmann::json& c, const Dims& d) {
    ModelInfo i = table_info(c, "GPT2LMHeadModel", d, hook_shape(d), kGlobals, kLayer);  // lm_head tied to wte
    i.model_type = "gpt2";
    i.adapter = "gpt2";
    i.max_positions = d.n_pos;
    i.causal = true, i.activation = d.act, i.norm = "layernorm", i.positional = "learned";
    i.extra = {{"tied_embeddings", true}, {"layer_norm_epsilon", d.eps}};
    return i;
}

/// x [..., in] @ w [in, out] + b, for Conv1D weights as stored (int8 weights are [out, in]: weights_in_out).
at::Tensor conv1d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
    if (w.is_quantized()) return int8_linear(x, w, b);
    auto sizes = x.sizes().vec();
    sizes.back() = w.size(1);
    return at::addmm(b, x.reshape({-1, x.size(-1)}), w).view(sizes);
}

class Gpt2Model : public TableModel<Dims, Globals, Layer> {
public:
    Gpt2Model(const nlohmann::json& c, Dims d) : TableModel(d, make_info(c, d), hook_shape(d), kGlobals, kLayer) {}

    // HF's GPT-2 init: residual projections scaled by 1/sqrt(2 * n_layer).
    double resid_init_std() const override { return d_.init_std / std::sqrt(2.0 * static_cast<double>(d_.n_layers)); }
    bool weights_in_out() const override { return true; }

    at::Tensor forward(const ForwardInput& in, HookDispatcher* hooks) override {
        const int64_t B = in.input_ids.size(0), P = in.input_ids.size(1);
        if (P > d_.n_pos)
            throw InputError("sequence of " + std::to_string(P) + " tokens exceeds n_positions = " +
                             std::to_string(d_.n_pos));
        const auto& ids = layout_;
        at::Tensor tok = at::embedding(g_.wte, in.input_ids);
        run_hook(hooks, ids.embed, tok);  // [b, p, d]
        at::Tensor pos = at::embedding(g_.wpe, at::arange(P, at::kLong)).unsqueeze(0).expand({B, P, d_.d});
        run_hook(hooks, ids.pos_embed, pos);  // [b, p, d]
        at::Tensor resid = tok + pos;
        const at::Tensor mask = additive_mask(in.attention_mask, true, 0, g_.wte.scalar_type());
        for (int64_t L = 0; L < d_.n_layers; ++L) {
            const Layer& w = layers_[static_cast<size_t>(L)];
            const LayerHooks& h = ids.layers[static_cast<size_t>(L)];
            run_hook(hooks, h.resid_pre, resid);  // [b, p, d]
            at::Tensor x = at::layer_norm(resid, {d_.d}, w.ln1_w, w.ln1_b, d_.eps);
            run_hook(hooks, h.ln1, x);  // [b, p, d]
            at::Tensor qkv = conv1d(x, w.attn_w, w.attn_b).view({B, P, 3, d_.heads, d_.dh});
            at::Tensor q = qkv.select(2, 0), k = qkv.select(2, 1), v = qkv.select(2, 2);  // views
            run_hook(hooks, h.q, q);  // [b, p, h, dh]
            run_hook(hooks, h.k, k);  // [b, p, h, dh]
            run_hook(hooks, h.v, v);  // [b, p, h, dh]
            double scale = d_.scale_attn ? std::sqrt(static_cast<double>(d_.dh)) : 1.0;
            if (d_.scale_by_layer) scale *= static_cast<double>(L + 1);
            at::Tensor z = attention(hooks, h, q, k, v, mask, scale, /*softmax_fp32=*/false);
            at::Tensor attn_out = conv1d(z, w.proj_w, w.proj_b);
            run_hook(hooks, h.attn_out, attn_out);  // [b, p, d]
            resid = resid + attn_out;
            run_hook(hooks, h.resid_mid, resid);  // [b, p, d]
            x = at::layer_norm(resid, {d_.d}, w.ln2_w, w.ln2_b, d_.eps);
            run_hook(hooks, h.ln2, x);  // [b, p, d]
            at::Tensor pre = conv1d(x, w.fc_w, w.fc_b);
            run_hook(hooks, h.mlp_pre, pre);  // [b, p, m]
            at::Tensor post = activation(d_.act, pre);
            run_hook(hooks, h.mlp_post, post);  // [b, p, m]
            at::Tensor mlp_out = conv1d(post, w.out_w, w.out_b);
            run_hook(hooks, h.mlp_out, mlp_out);  // [b, p, d]
            resid = resid + mlp_out;
            run_hook(hooks, h.resid_post, resid);  // [b, p, d]
        }
        return output(in, hooks, resid);
    }

protected:
    at::Tensor final_norm(const at::Tensor& resid) const override { return at::layer_norm(resid, {d_.d}, g_.lnf_w, g_.lnf_b, d_.eps); }
    at::Tensor head(const at::Tensor& x) const override { return at::matmul(x, g_.wte.t()); }

};

class Gpt2Factory : public AdapterFactory<Gpt2Model, Dims, read_dims, make_info, hook_shape> {
public:
    std::vector<std::string> architectures() const override { return {"GPT2LMHeadModel", "GPT2Model", "gpt2"}; }
    // attn.bias / attn.masked_bias are the causal-mask buffers of older checkpoints, not parameters.
    WeightNaming weight_naming() const override {
        return {{"transformer."}, {"lm_head."}, {".attn.bias", ".attn.masked_bias"}};
    }
};

}  // namespace
}  // namespace nscope::models

NSCOPE_MODEL_PLUGIN(nscope::models::Gpt2Factory, "gpt2", "0.1.0", "GPT-2 (GPT2LMHeadModel, GPT2Model)")

// BERT (BertModel / BertForMaskedLM): word + position + token-type embeddings with LayerNorm, post-LN
// encoder blocks, bidirectional attention with key padding, erf GELU, masked-LM head (transform + decoder
// tied to the word embeddings + bias).
#include "plugins/models/common/transformer.h"

namespace nscope::models {
namespace {

struct Dims {
    int64_t n_layers, d, heads, dh, m, vocab, n_pos, n_types;
    double eps, init_std;
    std::string act;
    bool mlm;
};

Dims read_dims(const nlohmann::json& c) {
    refuse_options(c, {{"is_decoder", "BERT as a causal decoder"}, {"add_cross_attention", "cross-attention layers"}});
    Dims d{};
    d.n_layers = cfg_int(c, "num_hidden_layers");
    d.d = cfg_int(c, "hidden_size");
    d.heads = cfg_int(c, "num_attention_heads");
    if (d.d % d.heads != 0) throw InputError("config.json: hidden_size is not divisible by num_attention_heads");
    d.dh = d.d / d.heads;
    d.m = cfg_int(c, "intermediate_size");
    d.vocab = cfg_int(c, "vocab_size");
    d.n_pos = cfg_int_or(c, "max_position_embeddings", 512);
    d.n_types = cfg_int_or(c, "type_vocab_size", 2);
    d.eps = cfg_num_or(c, "layer_norm_eps", 1e-12);
    d.init_std = cfg_num_or(c, "initializer_range", 0.02);
    d.act = cfg_str_or(c, "hidden_act", "gelu");
    check_activation(d.act);
    const std::string pe = cfg_str_or(c, "position_embedding_type", "absolute");
    if (pe != "absolute")
        throw InputError("config.json: position_embedding_type '" + pe + "' is not supported (supported: absolute)");
    std::string arch = "BertForMaskedLM";
    if (c.contains("architectures") && c["architectures"].is_array() && !c["architectures"].empty())
        arch = c["architectures"][0].get<std::string>();
    d.mlm = arch != "BertModel";
    return d;
}

struct Globals {
    at::Tensor word, pos, type, ln_w, ln_b, t_w, t_b, t_ln_w, t_ln_b, out_bias;
};
struct Layer {
    at::Tensor q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln1_w, ln1_b, i_w, i_b, out_w, out_b, ln2_w, ln2_b;
};

using V = std::vector<int64_t>;
bool has_mlm(const Dims& d) { return d.mlm; }
// The tensor table: HF name (without the `bert.` prefix) -> field, shape, init, presence.
const std::vector<TensorRow<Dims, Globals>> kGlobals = {
    {"embeddings.word_embeddings.weight", &Globals::word, [](const Dims& d) { return V{d.vocab, d.d}; }, Init::Normal},
    {"embeddings.position_embeddings.weight", &Globals::pos, [](const Dims& d) { return V{d.n_pos, d.d}; }, Init::Normal},
    {"embeddings.token_type_embeddings.weight", &Globals::type, [](const Dims& d) { return V{d.n_types, d.d}; }, Init::Normal},
    {"embeddings.LayerNorm.weight", &Globals::ln_w, [](const Dims& d) { return V{d.d}; }, Init::Ones},
    {"embeddings.LayerNorm.bias", &Globals::ln_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"cls.predictions.transform.dense.weight", &Globals::t_w, [](const Dims& d) { return V{d.d, d.d}; }, Init::Normal, has_mlm},
    {"cls.predictions.transform.dense.bias", &Globals::t_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros, has_mlm},
    {"cls.predictions.transform.LayerNorm.weight", &Globals::t_ln_w, [](const Dims& d) { return V{d.d}; }, Init::Ones, has_mlm},
    {"cls.predictions.transform.LayerNorm.bias", &Globals::t_ln_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros, has_mlm},
    {"cls.predictions.bias", &Globals::out_bias, [](const Dims& d) { return V{d.vocab}; }, Init::Zeros, has_mlm},
};
const std::vector<TensorRow<Dims, Layer>> kLayer = {
    {"encoder.layer.%d.attention.self.query.weight", &Layer::q_w, [](const Dims& d) { return V{d.d, d.d}; }, Init::Normal},
    {"encoder.layer.%d.attention.self.query.bias", &Layer::q_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"encoder.layer.%d.attention.self.key.weight", &Layer::k_w, [](const Dims& d) { return V{d.d, d.d}; }, Init::Normal},
    {"encoder.layer.%d.attention.self.key.bias", &Layer::k_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"encoder.layer.%d.attention.self.value.weight", &Layer::v_w, [](const Dims& d) { return V{d.d, d.d}; }, Init::Normal},
    {"encoder.layer.%d.attention.self.value.bias", &Layer::v_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"encoder.layer.%d.attention.output.dense.weight", &Layer::o_w, [](const Dims& d) { return V{d.d, d.d}; }, Init::Normal},
    {"encoder.layer.%d.attention.output.dense.bias", &Layer::o_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"encoder.layer.%d.attention.output.LayerNorm.weight", &Layer::ln1_w, [](const Dims& d) { return V{d.d}; }, Init::Ones},
    {"encoder.layer.%d.attention.output.LayerNorm.bias", &Layer::ln1_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"encoder.layer.%d.intermediate.dense.weight", &Layer::i_w, [](const Dims& d) { return V{d.m, d.d}; }, Init::Normal},
    {"encoder.layer.%d.intermediate.dense.bias", &Layer::i_b, [](const Dims& d) { return V{d.m}; }, Init::Zeros},
    {"encoder.layer.%d.output.dense.weight", &Layer::out_w, [](const Dims& d) { return V{d.d, d.m}; }, Init::Normal},
    {"encoder.layer.%d.output.dense.bias", &Layer::out_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
    {"encoder.layer.%d.output.LayerNorm.weight", &Layer::ln2_w, [](const Dims& d) { return V{d.d}; }, Init::Ones},
    {"encoder.layer.%d.output.LayerNorm.bias", &Layer::ln2_b, [](const Dims& d) { return V{d.d}; }, Init::Zeros},
};

HookShape hook_shape(const Dims& d) {
    HookShape s;
    s.n_layers = d.n_layers, s.d_model = d.d, s.n_heads = d.heads, s.n_kv_heads = d.heads, s.d_head = d.dh;
    s.d_mlp = d.m, s.vocab = d.vocab, s.pos_embed = true, s.pre_ln = false, s.gated = false, s.ln_final = false;
    s.logits = d.mlm;
    return s;
}

ModelInfo make_info(const nlohmann::json& c, const Dims& d) {
    // The decoder is tied to the word embeddings, so the tables count it once.
    ModelInfo i = table_info(c, d.mlm ? "BertForMaskedLM" : "BertModel", d, hook_shape(d), kGlobals, kLayer);
    i.model_type = "bert";
    i.adapter = "bert";
    i.max_positions = d.n_pos;
    i.causal = false, i.activation = d.act, i.norm = "layernorm", i.positional = "learned";
    i.extra = {{"mlm_head", d.mlm}, {"type_vocab_size", d.n_types}, {"layer_norm_eps", d.eps}};
    return i;
}

class BertEncoder : public TableModel<Dims, Globals, Layer> {
public:
    BertEncoder(const nlohmann::json& c, Dims d) : TableModel(d, make_info(c, d), hook_shape(d), kGlobals, kLayer) {}

    at::Tensor forward(const ForwardInput& in, HookDispatcher* hooks) override {
        const int64_t B = in.input_ids.size(0), P = in.input_ids.size(1);
        if (P > d_.n_pos)
            throw InputError("sequence of " + std::to_string(P) + " tokens exceeds max_position_embeddings = " +
                             std::to_string(d_.n_pos));
        const auto& ids = layout_;
        at::Tensor tok = at::embedding(g_.word, in.input_ids);
        run_hook(hooks, ids.embed, tok);  // [b, p, d]
        at::Tensor pos = at::embedding(g_.pos, at::arange(P, at::kLong)).unsqueeze(0).expand({B, P, d_.d});
        run_hook(hooks, ids.pos_embed, pos);  // [b, p, d]
        at::Tensor types = in.token_type_ids.defined() ? in.token_type_ids : at::zeros({B, P}, at::kLong);
        if (types.numel() > 0 && types.max().item<int64_t>() >= d_.n_types)
            throw InputError("token type id " + std::to_string(types.max().item<int64_t>()) +
                             " is out of range (type_vocab_size = " + std::to_string(d_.n_types) + ")");
        at::Tensor resid = at::layer_norm(tok + at::embedding(g_.type, types) + pos, {d_.d}, g_.ln_w, g_.ln_b, d_.eps);
        const at::Tensor mask = additive_mask(in.attention_mask, false, 0, g_.word.scalar_type());
        const double scale = std::sqrt(static_cast<double>(d_.dh));
        for (int64_t L = 0; L < d_.n_layers; ++L) {
            const Layer& w = layers_[static_cast<size_t>(L)];
            const LayerHooks& h = ids.layers[static_cast<size_t>(L)];
            run_hook(hooks, h.resid_pre, resid);  // [b, p, d] (block 0: after the embedding LayerNorm)
            at::Tensor q = dense(resid, w.q_w, w.q_b).view({B, P, d_.heads, d_.dh});
            at::Tensor k = dense(resid, w.k_w, w.k_b).view({B, P, d_.heads, d_.dh});
            at::Tensor v = dense(resid, w.v_w, w.v_b).view({B, P, d_.heads, d_.dh});
            run_hook(hooks, h.q, q);  // [b, p, h, dh]
            run_hook(hooks, h.k, k);  // [b, p, h, dh]
            run_hook(hooks, h.v, v);  // [b, p, h, dh]
            at::Tensor z = attention(hooks, h, q, k, v, mask, scale, /*softmax_fp32=*/false);
            at::Tensor attn_out = dense(z, w.o_w, w.o_b);
            run_hook(hooks, h.attn_out, attn_out);  // [b, p, d] (before the residual add and LayerNorm)
            resid = at::layer_norm(attn_out + resid, {d_.d}, w.ln1_w, w.ln1_b, d_.eps);
            run_hook(hooks, h.resid_mid, resid);  // [b, p, d] (post-LN)
            const at::Tensor mlp_out = plain_mlp(hooks, h, resid, d_.act, w.i_w, w.i_b, w.out_w, w.out_b);
            resid = at::layer_norm(mlp_out + resid, {d_.d}, w.ln2_w, w.ln2_b, d_.eps);
            run_hook(hooks, h.resid_post, resid);  // [b, p, d]
        }
        if (!d_.mlm) return resid;  // BertModel: no head, the last hidden state
        return output(in, hooks, resid);
    }

    at::Tensor unembed(const at::Tensor& resid) const override {
        if (!d_.mlm) throw InputError("this BERT checkpoint (BertModel) has no masked-LM head to unembed with");
        return head(final_norm(resid));
    }

protected:
    // Post-LN: the blocks' output is already normalised (no ln_final hook); the masked-LM head transforms it
    // (dense, activation, LayerNorm) before the decoder tied to the word embeddings.
    at::Tensor final_norm(const at::Tensor& resid) const override { return resid; }
    at::Tensor head(const at::Tensor& x) const override {
        const at::Tensor t = at::layer_norm(activation(d_.act, dense(x, g_.t_w, g_.t_b)), {d_.d}, g_.t_ln_w, g_.t_ln_b,
                                            d_.eps);
        return dense(t, g_.word, g_.out_bias);
    }

};

class BertFactory : public AdapterFactory<BertEncoder, Dims, read_dims, make_info, hook_shape> {
public:
    std::vector<std::string> architectures() const override { return {"BertForMaskedLM", "BertModel", "bert"}; }
    WeightNaming weight_naming() const override { return {{"bert."}, {"cls."}, {"embeddings.position_ids"}}; }
};

}  // namespace
}  // namespace nscope::models

NSCOPE_MODEL_PLUGIN(nscope::models::BertFactory, "bert", "0.1.0", "BERT (BertForMaskedLM, BertModel)")

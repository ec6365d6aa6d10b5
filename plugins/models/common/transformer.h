// Shared building blocks of the model adapters (header-only; each adapter is its own plugin).
//
// - HookLayout: the canonical hook list (docs/architecture.md) in forward order, with the id of every point.
// - Weight tables: one table per architecture maps HF tensor names to the adapter's fields (llama.cpp
//   style); `load_table` / `init_table` / `list_table` walk it to load, initialise or list parameters.
// - Ops: additive attention mask, multi-head attention with hooks, (partial) rotary, RMSNorm.
// - TableModel / AdapterFactory: the skeleton of an adapter, so an architecture is its folder: dims from
//   config.json, a weight table, a hook shape, the checkpoint naming and the forward.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include "nscope/error.h"
#include "nscope/model_adapter.h"
#include "plugins/models/common/int8.h"

namespace nscope::models {

// ---------------------------------------------------------------------------------------------------------
// Config access with clear errors.

inline const nlohmann::json& cfg_field(const nlohmann::json& c, const char* key) {
    if (!c.contains(key) || c[key].is_null())
        throw InputError(std::string("config.json: required field \"") + key + "\" is missing");
    return c[key];
}
inline int64_t cfg_int(const nlohmann::json& c, const char* key) {
    const auto& v = cfg_field(c, key);
    if (!v.is_number_integer() || v.get<int64_t>() <= 0)
        throw InputError(std::string("config.json: \"") + key + "\" must be a positive integer, got " + v.dump());
    return v.get<int64_t>();
}
inline int64_t cfg_int_or(const nlohmann::json& c, const char* key, int64_t dflt) {
    return (c.contains(key) && !c[key].is_null()) ? cfg_int(c, key) : dflt;
}
inline double cfg_num_or(const nlohmann::json& c, const char* key, double dflt) {
    if (!c.contains(key) || c[key].is_null()) return dflt;
    if (!c[key].is_number()) throw InputError(std::string("config.json: \"") + key + "\" must be a number");
    return c[key].get<double>();
}
inline bool cfg_bool_or(const nlohmann::json& c, const char* key, bool dflt) {
    if (!c.contains(key) || c[key].is_null()) return dflt;
    if (!c[key].is_boolean()) throw InputError(std::string("config.json: \"") + key + "\" must be true or false");
    return c[key].get<bool>();
}
inline std::string cfg_str_or(const nlohmann::json& c, const char* key, const std::string& dflt) {
    if (!c.contains(key) || c[key].is_null()) return dflt;
    if (!c[key].is_string()) throw InputError(std::string("config.json: \"") + key + "\" must be a string");
    return c[key].get<std::string>();
}

/// Position divisor of `rope_scaling` (1 when absent): `linear` is implemented; any other type is refused
/// rather than run with different numbers than HF's.
inline double rope_position_scale(const nlohmann::json& c) {
    if (!c.contains("rope_scaling") || c["rope_scaling"].is_null()) return 1.0;
    const auto& rs = c["rope_scaling"];
    if (!rs.is_object()) throw InputError("config.json: \"rope_scaling\" must be an object or null");
    const std::string type = rs.value("type", rs.value("rope_type", std::string("default")));
    if (type == "linear") return cfg_num_or(rs, "factor", 1.0);
    if (type == "default") return 1.0;
    throw InputError("config.json: rope_scaling type '" + type + "' is not supported (supported: linear)");
}

/// Refuse config options of a known architecture that this adapter does not implement: each listed key
/// must be absent, null or equal to its neutral value (false / 0), else InputError naming it and `why`.
inline void refuse_options(const nlohmann::json& c, const std::vector<std::pair<const char*, const char*>>& keys) {
    for (const auto& [key, why] : keys) {
        if (!c.contains(key)) continue;
        const auto& v = c[key];
        if (v.is_null() || (v.is_boolean() && !v.get<bool>()) || (v.is_number() && v.get<double>() == 0.0)) continue;
        throw InputError(std::string("config.json: \"") + key + "\" = " + v.dump() + " is not supported by this adapter (" +
                         why + "); refusing rather than computing different numbers");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Hook layout.

struct LayerHooks {
    int resid_pre = -1, ln1 = -1, q = -1, k = -1, v = -1, scores = -1, pattern = -1, z = -1, attn_out = -1,
        resid_mid = -1, ln2 = -1, mlp_pre = -1, mlp_pre_linear = -1, mlp_post = -1, mlp_out = -1, resid_post = -1;
};

struct HookShape {
    int64_t n_layers = 0, d_model = 0, n_heads = 0, n_kv_heads = 0, d_head = 0, d_mlp = 0, vocab = 0;
    bool pos_embed = false;  ///< learned position embedding (hook_pos_embed)
    bool pre_ln = true;      ///< ln1/ln2.hook_normalized exist
    bool gated = false;      ///< mlp.hook_pre_linear exists
    bool ln_final = true;    ///< ln_final.hook_normalized exists
    bool logits = true;      ///< hook_logits exists
};

struct HookLayout {
    int embed = -1, pos_embed = -1, ln_final = -1, logits = -1;
    std::vector<LayerHooks> layers;
    std::vector<HookPoint> points;

    explicit HookLayout(const HookShape& s) {
        auto add = [&](const std::string& name, std::vector<std::string> dims, std::vector<int64_t> sizes) {
            points.push_back({name, std::move(dims), std::move(sizes)});
            return static_cast<int>(points.size() - 1);
        };
        auto bpd = [&](const std::string& n) { return add(n, {"batch", "pos", "d_model"}, {-1, -1, s.d_model}); };
        embed = bpd("hook_embed");
        if (s.pos_embed) pos_embed = bpd("hook_pos_embed");
        for (int64_t L = 0; L < s.n_layers; ++L) {
            const std::string b = "blocks." + std::to_string(L) + ".";
            LayerHooks h;
            h.resid_pre = bpd(b + "hook_resid_pre");
            if (s.pre_ln) h.ln1 = bpd(b + "ln1.hook_normalized");
            h.q = add(b + "attn.hook_q", {"batch", "pos", "head", "d_head"}, {-1, -1, s.n_heads, s.d_head});
            h.k = add(b + "attn.hook_k", {"batch", "pos", "kv_head", "d_head"}, {-1, -1, s.n_kv_heads, s.d_head});
            h.v = add(b + "attn.hook_v", {"batch", "pos", "kv_head", "d_head"}, {-1, -1, s.n_kv_heads, s.d_head});
            h.scores = add(b + "attn.hook_attn_scores", {"batch", "head", "query_pos", "key_pos"}, {-1, s.n_heads, -1, -1});
            h.pattern = add(b + "attn.hook_pattern", {"batch", "head", "query_pos", "key_pos"}, {-1, s.n_heads, -1, -1});
            h.z = add(b + "attn.hook_z", {"batch", "pos", "head", "d_head"}, {-1, -1, s.n_heads, s.d_head});
            h.attn_out = bpd(b + "hook_attn_out");
            h.resid_mid = bpd(b + "hook_resid_mid");
            if (s.pre_ln) h.ln2 = bpd(b + "ln2.hook_normalized");
            h.mlp_pre = add(b + "mlp.hook_pre", {"batch", "pos", "d_mlp"}, {-1, -1, s.d_mlp});
            if (s.gated) h.mlp_pre_linear = add(b + "mlp.hook_pre_linear", {"batch", "pos", "d_mlp"}, {-1, -1, s.d_mlp});
            h.mlp_post = add(b + "mlp.hook_post", {"batch", "pos", "d_mlp"}, {-1, -1, s.d_mlp});
            h.mlp_out = bpd(b + "hook_mlp_out");
            h.resid_post = bpd(b + "hook_resid_post");
            layers.push_back(h);
        }
        if (s.ln_final) ln_final = bpd("ln_final.hook_normalized");
        if (s.logits) logits = add("hook_logits", {"batch", "pos", "d_vocab"}, {-1, -1, s.vocab});
    }
};

// ---------------------------------------------------------------------------------------------------------
// Weight tables.

enum class Init { Normal, NormalResid, Zeros, Ones };

/// One row of an architecture's tensor table: HF name (with %d for the layer), the field it fills,
/// its shape from the dimensions, and how init_random fills it. `present` = false skips the row
/// (e.g. biases a config turns off).
template <class Dims, class Owner>
struct TensorRow {
    const char* name;
    at::Tensor Owner::*field;
    std::vector<int64_t> (*shape)(const Dims&);
    Init init;
    bool (*present)(const Dims&) = nullptr;
};

inline std::string layer_name(const char* fmt, int64_t layer) {
    char buf[256];
    std::snprintf(buf, sizeof buf, fmt, static_cast<int>(layer));
    return buf;
}

inline std::string shape_str(at::IntArrayRef s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

/// Take a stored tensor into the compute dtype (zero-copy when it matches); own it when trainable.
inline at::Tensor adopt(at::Tensor t, const ModelOptions& o) {
    t = t.to(o.dtype);
    if (o.trainable) t = t.clone().set_requires_grad(true);
    return t;
}

template <class Dims, class Owner>
void load_rows(const std::vector<TensorRow<Dims, Owner>>& rows, Owner& owner, int64_t layer, const Dims& d,
               const WeightSource& w, const ModelOptions& o) {
    for (const auto& r : rows) {
        if (r.present && !r.present(d)) continue;
        const std::string name = layer >= 0 ? layer_name(r.name, layer) : std::string(r.name);
        at::Tensor t = w.get(name);
        const auto want = r.shape(d);
        if (t.sizes().vec() != want)
            throw InputError("weight '" + name + "' has shape " + shape_str(t.sizes()) + " but config.json implies " +
                             shape_str(want) + ". The checkpoint does not match its config.json.");
        if (!at::isFloatingType(t.scalar_type()))
            throw InputError("weight '" + name + "' is stored as " + std::string(c10::toString(t.scalar_type())) +
                             ", expected a floating-point type");
        owner.*(r.field) = adopt(t, o);
    }
}

template <class Dims, class Owner>
void init_rows(const std::vector<TensorRow<Dims, Owner>>& rows, Owner& owner, const Dims& d, double stdv,
               double resid_std, at::Generator& gen, const ModelOptions& o) {
    for (const auto& r : rows) {
        if (r.present && !r.present(d)) continue;
        const auto shape = r.shape(d);
        at::Tensor t;
        switch (r.init) {
            case Init::Normal: t = at::normal(0.0, stdv, shape, gen, at::kFloat); break;
            case Init::NormalResid: t = at::normal(0.0, resid_std, shape, gen, at::kFloat); break;
            case Init::Zeros: t = at::zeros(shape, at::kFloat); break;
            case Init::Ones: t = at::ones(shape, at::kFloat); break;
        }
        t = t.to(o.dtype);
        if (o.trainable) t.set_requires_grad(true);
        owner.*(r.field) = t;
    }
}

template <class Dims, class Owner>
void list_rows(const std::vector<TensorRow<Dims, Owner>>& rows, Owner& owner, int64_t layer, const Dims& d,
               std::vector<std::pair<std::string, at::Tensor>>& out) {
    for (const auto& r : rows) {
        if (r.present && !r.present(d)) continue;
        out.emplace_back(layer >= 0 ? layer_name(r.name, layer) : std::string(r.name), owner.*(r.field));
    }
}

/// Values of a table's tensors (`matrices_only`: of its 2-D tensors, which in a layer table are the linear
/// layers' weights).
template <class Dims, class Owner>
int64_t count_rows(const std::vector<TensorRow<Dims, Owner>>& rows, const Dims& d, bool matrices_only = false) {
    int64_t n = 0;
    for (const auto& r : rows) {
        if (r.present && !r.present(d)) continue;
        if (matrices_only && r.shape(d).size() != 2) continue;
        int64_t k = 1;
        for (int64_t s : r.shape(d)) k *= s;
        n += k;
    }
    return n;
}

// ---------------------------------------------------------------------------------------------------------
// Ops.

/// Additive mask [b, 1, p, p]: 0 where query i may attend key j, the dtype's lowest value elsewhere
/// (HF uses finfo.min): key padding, plus j > i when causal, plus i - j >= window when windowed.
inline at::Tensor additive_mask(const at::Tensor& attention_mask, bool causal, int64_t window, at::ScalarType dtype) {
    const int64_t B = attention_mask.size(0), P = attention_mask.size(1);
    at::Tensor allowed = attention_mask.to(at::kBool).view({B, 1, 1, P}).expand({B, 1, P, P});
    if (causal) {
        at::Tensor tri = at::ones({P, P}, at::kBool).tril();
        if (window > 0) tri = tri & at::ones({P, P}, at::kBool).triu(1 - window);
        allowed = allowed & tri.view({1, 1, P, P});
    }
    const double lowest = dtype == at::kBFloat16 ? static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest())
                                                 : static_cast<double>(std::numeric_limits<float>::lowest());
    return at::zeros({B, 1, P, P}, dtype).masked_fill(allowed.logical_not(), lowest);
}

/// x @ W^T + b for HF nn.Linear weights [out, in] (b may be undefined); W may be an int8 weight
/// (quantize_int8, int8.h), whose product is computed by int8_linear.
inline at::Tensor dense(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {}) {
    if (w.is_quantized()) return int8_linear(x, w, b);
    return at::linear(x, w, b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt);
}

/// RMSNorm as HF Llama computes it: in float32, then back to the input dtype, times the weight.
inline at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
    at::Tensor h = x.to(at::kFloat);
    h = h * at::rsqrt(h.pow(2).mean(-1, true) + eps);
    return w * h.to(x.scalar_type());
}

/// Rotary tables cos, sin [p, d_head] (half-split layout: freqs repeated twice), float32 then dtype.
inline std::pair<at::Tensor, at::Tensor> rotary_tables(int64_t P, int64_t dh, double theta, double pos_scale,
                                                       at::ScalarType dtype) {
    at::Tensor inv = 1.0 / at::pow(theta, at::arange(0, dh, 2, at::kLong).to(at::kFloat) / static_cast<double>(dh));
    at::Tensor t = at::arange(P, at::kLong).to(at::kFloat);
    if (pos_scale != 1.0) t = t / pos_scale;
    at::Tensor freqs = at::outer(t, inv);
    at::Tensor emb = at::cat({freqs, freqs}, -1);
    return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

/// Apply rotary to x [b, p, h, dh] with cos/sin [p, rot]: x*cos + rotate_half(x)*sin on the first `rot`
/// dims of each head; the other dh - rot dims pass through (partial rotary: Phi, GPT-NeoX).
inline at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    const int64_t P = x.size(1), dh = x.size(-1), rot = cos.size(-1);
    if (rot < dh)
        return at::cat({apply_rotary(x.narrow(-1, 0, rot), cos, sin), x.narrow(-1, rot, dh - rot)}, -1);
    const int64_t half = dh / 2;
    at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
    at::Tensor r = at::cat({-x2, x1}, -1);
    return x * cos.view({1, P, 1, dh}) + r * sin.view({1, P, 1, dh});
}

/// Rotary dims of a head from a fraction (HF: int(head_dim * fraction)); must be even and > 0.
inline int64_t rotary_dims(int64_t dh, double fraction, const char* key) {
    const auto rot = static_cast<int64_t>(static_cast<double>(dh) * fraction);
    if (fraction <= 0.0 || fraction > 1.0 || rot <= 0 || rot % 2 != 0)
        throw InputError(std::string("config.json: \"") + key + "\" = " + std::to_string(fraction) + " gives " +
                         std::to_string(rot) + " rotary dims of a " + std::to_string(dh) +
                         "-dim head; it must be in (0, 1] and give an even, positive number");
    return rot;
}

/// Attention from per-head q [b,p,h,dh], k/v [b,p,hkv,dh] (hooks q/k/v already fired): scores (+mask),
/// pattern, z with their hooks. Key/value heads are repeated (each kv head serves h/hkv consecutive query
/// heads). Returns z merged to [b, p, h*dh]. `softmax_fp32`: take the softmax in float32 whatever the model
/// dtype (HF does for LLaMA-family models; GPT-2 and BERT take it in the model dtype).
inline at::Tensor attention(HookDispatcher* hooks, const LayerHooks& ids, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const at::Tensor& mask, double scale_div, bool softmax_fp32) {
    const int64_t B = q.size(0), P = q.size(1), H = q.size(2), Hkv = k.size(2), dh = q.size(3);
    at::Tensor qh = q.transpose(1, 2);  // [b, h, p, dh]
    at::Tensor kh = k.transpose(1, 2), vh = v.transpose(1, 2);
    if (Hkv != H) {
        const int64_t rep = H / Hkv;
        kh = kh.unsqueeze(2).expand({B, Hkv, rep, P, dh}).reshape({B, H, P, dh});
        vh = vh.unsqueeze(2).expand({B, Hkv, rep, P, dh}).reshape({B, H, P, dh});
    }
    at::Tensor scores = at::matmul(qh, kh.transpose(-1, -2)) / scale_div + mask;
    run_hook(hooks, ids.scores, scores);  // [b, h, p, p]
    at::Tensor pattern = softmax_fp32 ? at::softmax(scores, -1, at::kFloat).to(q.scalar_type()) : at::softmax(scores, -1);
    run_hook(hooks, ids.pattern, pattern);  // [b, h, p, p]
    at::Tensor z = at::matmul(pattern, vh).transpose(1, 2);  // [b, p, h, dh]
    run_hook(hooks, ids.z, z);  // [b, p, h, dh]
    return z.reshape({B, P, H * dh});
}

/// The attention of a rotary model from q [b,p,h,dh], k/v [b,p,hkv,dh] (projected, not yet rotated): rotary
/// on q and k, their hooks (q, k after rotary), then `attention`. Returns z merged to [b, p, h*dh].
inline at::Tensor rotary_attention(HookDispatcher* hooks, const LayerHooks& h, const at::Tensor& q_in,
                                   const at::Tensor& k_in, at::Tensor v, const at::Tensor& cos, const at::Tensor& sin,
                                   const at::Tensor& mask, double scale_div, bool softmax_fp32) {
    at::Tensor q = apply_rotary(q_in, cos, sin), k = apply_rotary(k_in, cos, sin);
    run_hook(hooks, h.q, q);  // [b, p, h, dh] (after rotary)
    run_hook(hooks, h.k, k);  // [b, p, h_kv, dh] (after rotary)
    run_hook(hooks, h.v, v);  // [b, p, h_kv, dh]
    return attention(hooks, h, q, k, v, mask, scale_div, softmax_fp32);
}

/// The MLP nonlinearity named by an HF config; defined below.
inline at::Tensor activation(const std::string& name, const at::Tensor& x);

/// MLP sub-layer `out(act(in(x)))` (HF nn.Linear weights, biases may be undefined) with its hooks;
/// returns hook_mlp_out's value.
inline at::Tensor plain_mlp(HookDispatcher* hooks, const LayerHooks& h, const at::Tensor& x, const std::string& act,
                            const at::Tensor& w_in, const at::Tensor& b_in, const at::Tensor& w_out,
                            const at::Tensor& b_out) {
    at::Tensor pre = dense(x, w_in, b_in);
    run_hook(hooks, h.mlp_pre, pre);  // [b, p, m]
    at::Tensor post = activation(act, pre);
    run_hook(hooks, h.mlp_post, post);  // [b, p, m]
    at::Tensor out = dense(post, w_out, b_out);
    run_hook(hooks, h.mlp_out, out);  // [b, p, d]
    return out;
}

/// Gated MLP sub-layer `down(act(gate(x)) * up(x))` (LLaMA SwiGLU, Gemma GeGLU) with its hooks.
inline at::Tensor gated_mlp(HookDispatcher* hooks, const LayerHooks& h, const at::Tensor& x, const std::string& act,
                            const at::Tensor& gate_w, const at::Tensor& up_w, const at::Tensor& down_w) {
    at::Tensor gate = dense(x, gate_w);
    run_hook(hooks, h.mlp_pre, gate);  // [b, p, m]
    at::Tensor up = dense(x, up_w);
    run_hook(hooks, h.mlp_pre_linear, up);  // [b, p, m]
    at::Tensor post = activation(act, gate) * up;
    run_hook(hooks, h.mlp_post, post);  // [b, p, m]
    at::Tensor out = dense(post, down_w);
    run_hook(hooks, h.mlp_out, out);  // [b, p, d]
    return out;
}

/// Whether the forward must compute the unembedding (see ForwardInput::logits).
inline bool logits_needed(const ForwardInput& in, const HookDispatcher* hooks, int logits_hook) {
    return in.logits || (hooks && hooks->wanted(logits_hook));
}

/// The MLP nonlinearity named by an HF config ("gelu_new", "gelu", "silu", "relu", ...).
inline at::Tensor activation(const std::string& name, const at::Tensor& x) {
    if (name == "gelu_new") {
        // HF's NewGELUActivation op by op: in bfloat16 each step rounds, and so must ours (it is also
        // faster there than the fused kernel, which converts to float and back).
        return 0.5 * x * (1.0 + at::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * at::pow(x, 3.0))));
    }
    if (name == "gelu_pytorch_tanh") return at::gelu(x, "tanh");
    if (name == "gelu") return at::gelu(x);
    if (name == "silu" || name == "swish") return at::silu(x);
    if (name == "relu") return at::relu(x);
    throw InputError("config.json: unsupported activation '" + name +
                     "' (supported: gelu_new, gelu_pytorch_tanh, gelu, silu, relu)");
}
inline void check_activation(const std::string& name) {
    static const char* ok[] = {"gelu_new", "gelu_pytorch_tanh", "gelu", "silu", "swish", "relu"};
    for (const char* a : ok)
        if (name == a) return;
    throw InputError("config.json: unsupported activation '" + name +
                     "' (supported: gelu_new, gelu_pytorch_tanh, gelu, silu, relu)");
}

/// Parameter count of a named parameter list, counting each storage once (tied weights).
inline int64_t count_params(const std::vector<std::pair<std::string, at::Tensor>>& ps) {
    int64_t n = 0;
    std::vector<const void*> seen;
    for (const auto& [name, t] : ps) {
        const void* p = t.data_ptr();
        if (std::find(seen.begin(), seen.end(), p) != seen.end()) continue;
        seen.push_back(p);
        n += t.numel();
    }
    return n;
}

// ---------------------------------------------------------------------------------------------------------
// Adapter skeleton.

/// The config's `architectures[0]`, or `dflt`.
inline std::string config_architecture(const nlohmann::json& c, const char* dflt) {
    if (c.contains("architectures") && c["architectures"].is_array() && !c["architectures"].empty() &&
        c["architectures"][0].is_string())
        return c["architectures"][0].get<std::string>();
    return dflt;
}

/// The ModelInfo fields every table-driven adapter fills alike: architecture, dims from the hook shape,
/// parameter count from the weight tables (tied weights are not rows, so they count once). The adapter
/// adds model_type, max_positions, activation, norm, positional, causal and extra.
template <class Dims, class Globals, class Layer>
ModelInfo table_info(const nlohmann::json& c, const char* default_arch, const Dims& d, const HookShape& s,
                     const std::vector<TensorRow<Dims, Globals>>& globals,
                     const std::vector<TensorRow<Dims, Layer>>& layer) {
    ModelInfo i;
    i.architecture = config_architecture(c, default_arch);
    i.n_layers = s.n_layers, i.d_model = s.d_model, i.n_heads = s.n_heads, i.n_kv_heads = s.n_kv_heads;
    i.d_head = s.d_head, i.d_mlp = s.d_mlp, i.vocab_size = s.vocab;
    i.n_params = count_rows(globals, d) + s.n_layers * count_rows(layer, d);
    i.n_linear_params = s.n_layers * count_rows(layer, d, /*matrices_only=*/true);
    i.gated_mlp = s.gated;
    return i;
}

/// What every table-driven adapter shares: its dims, info, hook layout and weights (globals + one Layer per
/// block) filled from its tensor tables by `load` / `init`, listed by `named_parameters`. An architecture
/// derives from it and writes `forward` (and `check_weights` for checkpoint/config consistency checks, and
/// `resid_init_std` when residual projections initialise differently). `Dims` has `n_layers` and `init_std`.
template <class Dims, class Globals, class Layer>
class TableModel : public ModelAdapter {
public:
    using GlobalTable = std::vector<TensorRow<Dims, Globals>>;
    using LayerTable = std::vector<TensorRow<Dims, Layer>>;

    TableModel(Dims d, ModelInfo info, const HookShape& shape, const GlobalTable& globals, const LayerTable& layer)
        : d_(std::move(d)), info_(std::move(info)), layout_(shape), globals_(globals), layer_(layer) {}

    void load(const WeightSource& w, const ModelOptions& o) {
        check_int8_options(o);
        check_weights(w);
        load_rows(globals_, g_, -1, d_, w, o);
        layers_.resize(static_cast<size_t>(d_.n_layers));
        for (int64_t L = 0; L < d_.n_layers; ++L) {
            load_rows(layer_, layers_[static_cast<size_t>(L)], L, d_, w, o);
            if (o.int8_weights) quantize_layer(L, &w);  // layer by layer: one layer's float32 at a time
        }
    }
    void init(uint64_t seed, const ModelOptions& o) {
        check_int8_options(o);
        at::Generator gen = at::detail::createCPUGenerator(seed);
        init_rows(globals_, g_, d_, d_.init_std, resid_init_std(), gen, o);
        layers_.resize(static_cast<size_t>(d_.n_layers));
        for (int64_t L = 0; L < d_.n_layers; ++L) {
            init_rows(layer_, layers_[static_cast<size_t>(L)], d_, d_.init_std, resid_init_std(), gen, o);
            if (o.int8_weights) quantize_layer(L, nullptr);
        }
    }

    const ModelInfo& info() const override { return info_; }
    const std::vector<HookPoint>& hook_points() const override { return layout_.points; }
    at::Tensor unembed(const at::Tensor& resid) const override { return head(final_norm(resid)); }
    std::vector<std::pair<std::string, at::Tensor>> named_parameters() override {
        std::vector<std::pair<std::string, at::Tensor>> out;
        list_rows(globals_, g_, -1, d_, out);
        for (int64_t L = 0; L < d_.n_layers; ++L) list_rows(layer_, layers_[static_cast<size_t>(L)], L, d_, out);
        return out;
    }

protected:
    /// The norm after the last block (ln_final), and the unembedding of its output.
    virtual at::Tensor final_norm(const at::Tensor& resid) const = 0;
    virtual at::Tensor head(const at::Tensor& x) const = 0;

    /// The end of every forward: ln_final and its hook, then (when needed) the head and hook_logits.
    at::Tensor output(const ForwardInput& in, HookDispatcher* hooks, const at::Tensor& resid) const {
        at::Tensor x = final_norm(resid);
        run_hook(hooks, layout_.ln_final, x);  // [b, p, d]
        if (!logits_needed(in, hooks, layout_.logits)) return {};
        at::Tensor logits = head(x);
        run_hook(hooks, layout_.logits, logits);  // [b, p, vocab]
        return logits;
    }

    /// Called before loading: refuse a checkpoint that contradicts its config (e.g. tied vs stored head).
    virtual void check_weights(const WeightSource& w) const { (void)w; }
    /// True when the layer table's matrices are stored [in, out] (GPT-2 Conv1D) rather than [out, in].
    virtual bool weights_in_out() const { return false; }

    /// int8 weights: every matrix of layer L's table (the blocks' linear layers) becomes a per-channel int8
    /// weight [out, in] (quantize_int8; Conv1D weights transposed first), and the stored tensor is released.
    void quantize_layer(int64_t L, const WeightSource* w) {
        Layer& l = layers_[static_cast<size_t>(L)];
        for (const auto& r : layer_) {
            if ((r.present && !r.present(d_)) || r.shape(d_).size() != 2) continue;
            at::Tensor& t = l.*(r.field);
            t = quantize_int8(weights_in_out() ? t.t() : t);
            if (w != nullptr) w->release(layer_name(r.name, L));
        }
    }
    static void check_int8_options(const ModelOptions& o) {
        if (!o.int8_weights) return;
        if (o.trainable)
            throw InputError("int8 weights are for inference only: train or fine-tune in float32 or bfloat16");
        if (o.dtype != at::kFloat)
            throw InputError("int8 weights compute in float32; do not combine them with a bfloat16 compute dtype");
    }
    /// Init std of the projections into the residual stream (Init::NormalResid rows).
    virtual double resid_init_std() const { return d_.init_std; }

    const Dims d_;
    const ModelInfo info_;
    const HookLayout layout_;
    const GlobalTable& globals_;
    const LayerTable& layer_;
    Globals g_;
    std::vector<Layer> layers_;
};

/// Refuse a checkpoint whose stored head contradicts `tie_word_embeddings` (HF would silently use one or
/// the other; we make the user fix the config).
inline void check_tied_head(const WeightSource& w, bool tied, const std::string& head) {
    if (tied && w.contains(head))
        throw InputError("config.json says tie_word_embeddings = true but the checkpoint stores its own " + head +
                         "; fix the config");
    if (!tied && !w.contains(head))
        throw InputError("weight '" + head + "' is missing and config.json has tie_word_embeddings = false; "
                         "set \"tie_word_embeddings\": true if the output layer shares the embedding");
}

/// The ModelFactory of a standard adapter: everything derives from the adapter's three config functions
/// (`read_dims`, `make_info`, `hook_shape`) and its model class, constructed from (config, dims) with
/// `load(weights, options)` / `init(seed, options)`. An adapter adds `architectures()` and `weight_naming()`.
template <typename Model, typename Dims, Dims (*ReadDims)(const nlohmann::json&),
          ModelInfo (*MakeInfo)(const nlohmann::json&, const Dims&), HookShape (*Shape)(const Dims&)>
class AdapterFactory : public ModelFactory {
public:
    ModelInfo describe(const nlohmann::json& c) const override { return MakeInfo(c, ReadDims(c)); }
    std::vector<HookPoint> hook_points(const nlohmann::json& c) const override {
        return HookLayout(Shape(ReadDims(c))).points;
    }
    std::unique_ptr<ModelAdapter> load(const nlohmann::json& c, const WeightSource& w,
                                       const ModelOptions& o) const override {
        auto m = std::make_unique<Model>(c, ReadDims(c));
        m->load(w, o);
        return m;
    }
    std::unique_ptr<ModelAdapter> init_random(const nlohmann::json& c, uint64_t seed,
                                              const ModelOptions& o) const override {
        auto m = std::make_unique<Model>(c, ReadDims(c));
        m->init(seed, o);
        return m;
    }
};

}  // namespace nscope::models

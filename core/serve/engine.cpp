#include "core/serve/engine.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <regex>

#include <spdlog/spdlog.h>

#include "core/model/hook_match.h"
#include "core/model/model_loader.h"
#include "core/model/session.h"
#include "core/plugin/call_plugin.h"
#include "core/plugin/registry.h"
#include "core/run/model_access.h"
#include "core/run/recipe.h"
#include "core/run/run_plan.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/text.h"

namespace nscope::serve {

using json = nlohmann::json;

struct Engine::Slot {
    std::string name, ref, error;
    bool ready = false;
    LoadedModel loaded;
    std::optional<Tokenizer> tokenizer;
    std::unique_ptr<ModelSession> session;
    std::unique_ptr<SessionModelAccess> access;  // for analyzers that run further forwards / the unembedding
    json info;
    std::mutex mutex;  // one forward (or analysis) at a time on this model

    const std::vector<HookPoint>& hooks() const { return loaded.handle.hooks; }
    const HookPoint* hook(const std::string& name) const { return loaded.handle.hook(name); }
    std::string token_text(int64_t id) const { return token_text_or_id(tokenizer ? &*tokenizer : nullptr, id); }
};

namespace {

// ---- request fields --------------------------------------------------------------------------------------------

std::string str_field(const json& req, const char* key, const std::string& fallback) {
    if (!req.contains(key) || req[key].is_null()) return fallback;
    if (!req[key].is_string()) throw InputError(std::string("'") + key + "' must be a string");
    return req[key].get<std::string>();
}

int64_t int_field(const json& req, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
    if (!req.contains(key) || req[key].is_null()) return fallback;
    if (!req[key].is_number_integer())
        throw InputError(std::string("'") + key + "' must be an integer, got " + req[key].dump());
    const int64_t v = req[key].get<int64_t>();
    if (v < lo || v > hi)
        throw InputError(std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                         "], got " + std::to_string(v));
    return v;
}

/// Block index of "blocks.7.mlp.hook_post" (-1 for hooks outside the blocks).
int layer_of(const std::string& hook) {
    static const std::regex re(R"(^blocks\.(\d+)\.)");
    std::smatch m;
    return std::regex_search(hook, m, re) ? std::stoi(m[1].str()) : -1;
}

/// "mlp.hook_post" for "blocks.7.mlp.hook_post"; the name itself outside the blocks.
std::string suffix_of(const std::string& hook) {
    static const std::regex re(R"(^blocks\.\d+\.)");
    return std::regex_replace(hook, re, "");
}

/// Hooks with a token axis ([batch, pos, ...]): what a token x neuron heatmap can show.
bool has_token_axis(const HookPoint& h) { return h.dims.size() >= 2 && h.dims[0] == "batch" && h.dims[1] == "pos"; }

/// Values per token of a hook with a token axis: the product of the dims after [batch, pos].
int64_t width_of(const HookPoint& h) {
    int64_t w = 1;
    for (size_t i = 2; i < h.shape.size(); ++i) w *= h.shape[i];
    return w;
}

/// A float for JSON (NaN / inf become null, as everywhere in the project's JSON).
json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

struct Prompt {
    std::vector<int64_t> ids;
    std::vector<std::string> texts;  // readable text per token
    std::string text;                // as given (empty for ids)
};

json tokens_json(const Prompt& p) {
    json t = json::array();
    for (size_t i = 0; i < p.ids.size(); ++i) t.push_back({{"id", p.ids[i]}, {"text", valid_utf8(p.texts[i])}});
    return t;
}

/// The [p, width] float32 matrix of one prompt's capture of a hook with a token axis.
at::Tensor token_matrix(const at::Tensor& capture) {
    return capture.reshape({capture.size(1), -1}).to(at::kFloat).contiguous();
}

}  // namespace

// ---- models -------------------------------------------------------------------------------------------------------

Engine::Engine(const PluginRegistry& plugins, const std::vector<std::string>& refs, const std::string& dtype,
               EngineLimits limits)
    : plugins_(plugins), limits_(limits) {
    std::map<std::string, int> seen;
    for (const auto& ref : refs) {
        auto s = std::make_unique<Slot>();
        s->ref = ref;
        std::string base = std::filesystem::path(ref).filename().string();
        if (base.empty()) base = std::filesystem::path(ref).parent_path().filename().string();
        if (base.empty()) base = ref;
        const int n = seen[base]++;
        s->name = n == 0 ? base : base + "#" + std::to_string(n + 1);
        try {
            s->loaded = load_model(plugins, ref, parse_model_dtype(dtype));
            if (!s->loaded.handle.files.tokenizer_json.empty())
                s->tokenizer = Tokenizer::from_file(s->loaded.handle.files.tokenizer_json);
            s->session = std::make_unique<ModelSession>(s->loaded);
            const Tokenizer* tok = s->tokenizer ? &*s->tokenizer : nullptr;
            s->access = std::make_unique<SessionModelAccess>(
                *s->session, tok ? std::function<std::vector<int64_t>(const std::string&)>(
                                       [tok](const std::string& t) { return tok->encode(t, false).ids; })
                                 : nullptr);
            s->info = s->loaded.handle.info.to_json();
            s->ready = true;
            spdlog::info("serve: loaded {} as '{}' ({}, {} layers)", ref, s->name, s->loaded.handle.info.architecture,
                         s->loaded.handle.info.n_layers);
        } catch (const std::exception& e) {
            s->error = valid_utf8(e.what());
            s->session.reset();
            s->access.reset();
            spdlog::error("serve: model {} failed to load: {}", ref, s->error);
        }
        slots_.push_back(std::move(s));
    }
}

Engine::~Engine() = default;

json Engine::models() const {
    json out = json::array();
    for (const auto& s : slots_) {
        json m = {{"name", s->name}, {"ref", s->ref}, {"status", s->ready ? "ready" : "error"}};
        if (!s->ready) {
            m["error"] = s->error;
            out.push_back(m);
            continue;
        }
        m["info"] = s->info;
        m["has_tokenizer"] = s->tokenizer.has_value();
        std::vector<std::string> suffixes;  // per-token hooks, in forward order, once each
        json hooks = json::array();
        for (const auto& h : s->hooks()) {
            hooks.push_back({{"name", h.name}, {"dims", h.dims}, {"shape", h.shape}});
            const std::string suf = suffix_of(h.name);
            if (has_token_axis(h) && std::find(suffixes.begin(), suffixes.end(), suf) == suffixes.end())
                suffixes.push_back(suf);
        }
        m["heatmap_hooks"] = suffixes;
        m["hooks"] = hooks;
        out.push_back(m);
    }
    return out;
}

json Engine::model_info(const std::string& name) const {
    for (const auto& s : slots_)
        if (s->name == name && s->ready) return s->info;
    return nullptr;
}

Engine::Slot& Engine::slot(const json& req) {
    if (!req.is_object()) throw InputError("the request body must be a JSON object");
    if (slots_.empty()) throw NotFound("no model is loaded: start nscope serve with MODEL arguments");
    const std::string name = str_field(req, "model", "");
    Slot* found = nullptr;
    if (name.empty()) {
        for (auto& s : slots_)
            if (s->ready) {
                found = s.get();
                break;
            }
        if (found == nullptr) throw Unavailable("no model loaded successfully (see /api/models)");
    } else {
        for (auto& s : slots_)
            if (s->name == name || s->ref == name) found = s.get();
        if (found == nullptr) {
            std::vector<std::string> names;
            for (auto& s : slots_) names.push_back(s->name);
            throw NotFound("unknown model '" + name + "'; models: " + join(names, ", "));
        }
    }
    if (!found->ready) throw Unavailable("model '" + found->name + "' failed to load: " + found->error);
    return *found;
}

namespace {

Prompt read_prompt(const Engine::Slot& s, const json& req, const EngineLimits& limits) {
    Prompt p;
    const int64_t max_tokens = std::min<int64_t>(static_cast<int64_t>(limits.max_tokens),
                                                 s.loaded.handle.info.max_positions > 0 ? s.loaded.handle.info.max_positions
                                                                                        : INT64_MAX);
    if (req.contains("ids") && !req["ids"].is_null()) {
        if (!req["ids"].is_array()) throw InputError("'ids' must be an array of token ids");
        const int64_t vocab = s.loaded.handle.info.vocab_size;
        for (const auto& v : req["ids"]) {
            if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= vocab)
                throw InputError("'ids' must hold token ids in [0, " + std::to_string(vocab) + "), got " + v.dump());
            p.ids.push_back(v.get<int64_t>());
        }
    } else {
        p.text = str_field(req, "prompt", "");
        if (p.text.size() > limits.max_prompt_chars)
            throw InputError("the prompt is " + std::to_string(p.text.size()) + " bytes; the limit is " +
                             std::to_string(limits.max_prompt_chars));
        if (!s.tokenizer)
            throw InputError("model '" + s.name + "' has no tokenizer.json: give the prompt as token ids ('ids')");
        p.ids = s.tokenizer->encode(p.text, true).ids;
    }
    if (p.ids.empty()) throw InputError("the prompt is empty: give 'prompt' (text) or 'ids' (token ids)");
    if (static_cast<int64_t>(p.ids.size()) > max_tokens)
        throw InputError("the prompt has " + std::to_string(p.ids.size()) + " tokens; the limit is " +
                         std::to_string(max_tokens));
    for (int64_t id : p.ids) p.texts.push_back(s.token_text(id));
    return p;
}

ForwardOutput run_forward(Engine::Slot& s, const Prompt& p, std::vector<std::string> capture, bool logits,
                          std::vector<InterventionSpec> edits = {}) {
    ForwardRequest req;
    req.capture = std::move(capture);
    req.keep_logits = logits;
    req.interventions = std::move(edits);
    return s.session->forward({p.ids}, nullptr, {0}, req);
}

/// A hook given by full name that must exist and have a token axis.
const HookPoint& token_hook(const Engine::Slot& s, const std::string& name) {
    s.session->hook_id(name);  // InputError with "did you mean" for an unknown hook
    const HookPoint& h = *s.hook(name);
    if (!has_token_axis(h))
        throw InputError("hook '" + name + "' has no [batch, pos, ...] layout (dims " + join(h.dims, ", ") +
                         "): pick a hook with one value vector per token");
    return h;
}

/// Run an analyzer plugin on one prompt's forward, as `nscope run` would on a one-prompt recipe.
Result run_analyzer(const PluginRegistry& plugins, Engine::Slot& s, const Prompt& p, const std::string& plugin,
                    const json& params, std::vector<std::string> patterns) {
    AnalysisSpec spec;
    spec.id = plugin;
    spec.use = plugin;
    spec.params = params;
    spec.loc = {"nscope serve"};
    std::unique_ptr<Analyzer> analyzer = make_analyzer(plugins, spec);
    const std::string role = analysis_role(spec.id, plugin);
    for (const auto& r : call_plugin(role, "required_hooks", [&] { return analyzer->required_hooks(); }))
        patterns.push_back(r);
    const std::vector<std::string> names = match_hooks(s.hooks(), patterns);
    if (names.empty()) throw InputError(plugin + ": the model has no hooks matching " + join(patterns, ", "));
    ForwardOutput out = run_forward(s, p, names, false);

    PromptInfo info;
    info.index = 0;
    info.text = p.text;
    info.tokens = p.texts;
    RunContext ctx;
    ctx.model_name = s.ref;
    ctx.model_info = s.info;
    for (const auto& n : names) ctx.hooks.push_back(*s.hook(n));
    ctx.prompts = {&info};
    ctx.token_text = [&s](int64_t id) { return s.token_text(id); };
    ctx.model = s.access->access();

    Batch batch;
    batch.rows = 1;
    batch.positions = p.ids.size();
    batch.input_ids = out.input_ids.data_ptr<int64_t>();
    batch.attention_mask = out.attention_mask.data_ptr<int64_t>();
    batch.prompts = {&info};
    for (const auto& n : names) {
        const at::Tensor& t = out.captures.at(n);
        batch.activations.push_back({n, ActivationView{t.data_ptr<float>(), DType::Float32, t.sizes().vec()}});
    }
    call_plugin(role, "begin", [&] { analyzer->begin(ctx); });
    call_plugin(role, "consume", [&] { analyzer->consume(batch); });
    return call_plugin(role, "finish", [&] { return analyzer->finish(); });
}

/// Top-k tokens of a log-probability vector [vocab]: [{id, text, p}].
json top_tokens(const Engine::Slot& s, const at::Tensor& logp, int64_t k, const at::Tensor* other = nullptr) {
    const auto top = logp.topk(std::min<int64_t>(k, logp.size(0)));
    const at::Tensor vals = std::get<0>(top).exp().contiguous(), ids = std::get<1>(top).contiguous();
    json out = json::array();
    for (int64_t i = 0; i < ids.size(0); ++i) {
        const int64_t id = ids[i].item<int64_t>();
        json e = {{"id", id}, {"text", valid_utf8(s.token_text(id))}, {"p", num(vals[i].item<float>())}};
        if (other != nullptr) e["p_other"] = num(std::exp((*other)[id].item<float>()));
        out.push_back(std::move(e));
    }
    return out;
}

/// Output weights of an MLP neuron: the row of the block's down projection that hook_post neuron `n` writes
/// into the residual stream. Found among the adapter's parameters by the names the adapters use and by shape.
std::optional<at::Tensor> mlp_out_row(ModelAdapter& adapter, const ModelInfo& info, int layer, int64_t n) {
    static const char* kDown[] = {"mlp.c_proj.weight", "mlp.down_proj.weight", "mlp.dense_4h_to_h.weight",
                                  "mlp.fc2.weight", "output.dense.weight"};
    std::string in_layer = ".";  // (built by appending: GCC 12 warns falsely about "." + std::to_string(n))
    in_layer += std::to_string(layer);
    in_layer += '.';
    for (const auto& [name, w] : adapter.named_parameters()) {
        if (name.find(in_layer) == std::string::npos || w.dim() != 2) continue;
        if (name.find("attention.output") != std::string::npos) continue;  // BERT's attention output
        bool down = false;
        for (const char* k : kDown) down = down || name.ends_with(k);
        if (!down) continue;
        const at::Tensor f = w.is_quantized() ? w.dequantize() : w;
        if (f.size(0) == info.d_mlp && f.size(1) == info.d_model) return f[n].to(at::kFloat);     // [d_mlp, d] (Conv1D)
        if (f.size(1) == info.d_mlp && f.size(0) == info.d_model) return f.select(1, n).to(at::kFloat);  // [d, d_mlp]
    }
    return std::nullopt;
}

/// The unembedding [vocab, d_model]: the output head, else the (tied) token embedding.
std::optional<at::Tensor> unembedding(ModelAdapter& adapter, const ModelInfo& info) {
    std::optional<at::Tensor> tied;
    for (const auto& [name, w] : adapter.named_parameters()) {
        if (w.dim() != 2 || w.size(0) != info.vocab_size || w.size(1) != info.d_model) continue;
        if (name.find("lm_head") != std::string::npos || name.find("embed_out") != std::string::npos)
            return w.to(at::kFloat);
        if (name.find("wte") != std::string::npos || name.find("embed_tokens") != std::string::npos ||
            name.find("word_embeddings") != std::string::npos)
            tied = w.to(at::kFloat);
    }
    return tied;
}

}  // namespace

// ---- endpoints ---------------------------------------------------------------------------------------------------

json Engine::tokenize(const json& req) {
    Slot& s = slot(req);
    const Prompt p = read_prompt(s, req, limits_);
    return {{"model", s.name}, {"tokens", tokens_json(p)}};
}

json Engine::activations(const json& req) {
    Slot& s = slot(req);
    const Prompt p = read_prompt(s, req, limits_);
    const std::string hook = str_field(req, "hook", "mlp.hook_post");
    const int64_t top = int_field(req, "top", 32, 1, limits_.max_top);
    const std::string rank = str_field(req, "rank", "max");
    if (rank != "max" && rank != "var")
        throw InputError("'rank' must be 'max' (most active) or 'var' (most variable across tokens), got '" + rank + "'");

    // Every block's hook with this suffix, or the one hook of that exact name.
    std::vector<const HookPoint*> hooks;
    for (const auto& h : s.hooks())
        if (h.name == hook || suffix_of(h.name) == hook) hooks.push_back(&h);
    if (hooks.empty()) {
        std::vector<std::string> suffixes;
        for (const auto& h : s.hooks())
            if (has_token_axis(h) && std::find(suffixes.begin(), suffixes.end(), suffix_of(h.name)) == suffixes.end())
                suffixes.push_back(suffix_of(h.name));
        throw InputError("unknown hook '" + hook + "'; hooks with a token axis: " + join(suffixes, ", "));
    }
    std::vector<std::string> names;
    for (const HookPoint* h : hooks) names.push_back(token_hook(s, h->name).name);

    json layers = json::array();
    {
        std::lock_guard lock(s.mutex);
        const ForwardOutput out = run_forward(s, p, names, false);
        at::NoGradGuard no_grad;
        for (const auto& name : names) {
            const at::Tensor m = token_matrix(out.captures.at(name));  // [p, width]
            const at::Tensor score = rank == "max" ? std::get<0>(m.max(0))
                                                   : (m.size(0) > 1 ? m.std(0) : at::zeros({m.size(1)}));
            const int64_t k = std::min<int64_t>(top, m.size(1));
            const at::Tensor idx = std::get<1>(score.topk(k)).contiguous();
            const at::Tensor sel = m.index_select(1, idx).contiguous();  // [p, k]
            json neurons = json::array(), values = json::array();
            for (int64_t j = 0; j < k; ++j) neurons.push_back(idx[j].item<int64_t>());
            const float* v = sel.data_ptr<float>();
            for (int64_t t = 0; t < sel.size(0); ++t) {
                json row = json::array();
                for (int64_t j = 0; j < k; ++j) row.push_back(num(v[t * k + j]));
                values.push_back(std::move(row));
            }
            layers.push_back({{"hook", name}, {"layer", layer_of(name)}, {"width", m.size(1)},
                              {"neurons", std::move(neurons)}, {"values", std::move(values)}});
        }
    }
    return {{"model", s.name}, {"hook", hook}, {"rank", rank}, {"top", top}, {"tokens", tokens_json(p)},
            {"layers", std::move(layers)}};
}

json Engine::neuron(const json& req) {
    Slot& s = slot(req);
    const Prompt p = read_prompt(s, req, limits_);
    const std::string hook = str_field(req, "hook", "");
    if (hook.empty()) throw InputError("'hook' (a full hook name, e.g. blocks.0.mlp.hook_post) is required");
    const HookPoint& h = token_hook(s, hook);
    const int64_t width = width_of(h);
    if (!req.contains("neuron")) throw InputError("'neuron' (an index) is required");
    const int64_t n = int_field(req, "neuron", 0, 0, width - 1);
    const int64_t k = int_field(req, "k", 10, 1, 100);

    std::lock_guard lock(s.mutex);
    at::NoGradGuard no_grad;
    const ForwardOutput out = run_forward(s, p, {hook}, false);
    const at::Tensor col = token_matrix(out.captures.at(hook)).select(1, n).contiguous();  // [p]
    const float* v = col.data_ptr<float>();
    const int64_t len = col.size(0);
    std::vector<float> vals(v, v + len);

    double sum = 0, sq = 0, mx = -INFINITY, mn = INFINITY;
    int64_t active = 0;
    for (float x : vals) {
        sum += x;
        sq += double(x) * x;
        mx = std::max<double>(mx, x);
        mn = std::min<double>(mn, x);
        active += x > 0;
    }
    const double mean = sum / len, var = std::max(0.0, sq / len - mean * mean);
    json stats = {{"count", len}, {"mean", num(mean)}, {"std", num(std::sqrt(var))}, {"min", num(mn)},
                  {"max", num(mx)}, {"frac_active", num(double(active) / len)}};

    // Top tokens of the prompt, with a little context, and the top n-grams (mean over the window ending there).
    std::vector<int64_t> order(len);
    for (int64_t i = 0; i < len; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return vals[a] > vals[b]; });
    json examples = json::array();
    for (int64_t r = 0; r < std::min<int64_t>(k, len); ++r) {
        const int64_t i = order[r];
        std::string before, after;
        for (int64_t j = std::max<int64_t>(0, i - 4); j < i; ++j) before += p.texts[j];
        for (int64_t j = i + 1; j < std::min<int64_t>(len, i + 3); ++j) after += p.texts[j];
        examples.push_back({{"rank", r}, {"position", i}, {"token", valid_utf8(p.texts[i])}, {"value", num(vals[i])},
                            {"before", valid_utf8(before)}, {"after", valid_utf8(after)}});
    }
    json ngrams = json::array();
    for (int64_t size : {2, 3}) {
        std::vector<std::pair<double, int64_t>> windows;  // (mean, end position)
        for (int64_t end = size - 1; end < len; ++end) {
            double m = 0;
            for (int64_t j = end - size + 1; j <= end; ++j) m += vals[j];
            windows.push_back({m / size, end});
        }
        std::stable_sort(windows.begin(), windows.end(), [](auto& a, auto& b) { return a.first > b.first; });
        for (size_t r = 0; r < std::min<size_t>(k, windows.size()); ++r) {
            std::string text;
            for (int64_t j = windows[r].second - size + 1; j <= windows[r].second; ++j) text += p.texts[j];
            ngrams.push_back({{"n", size}, {"ngram", valid_utf8(text)}, {"value", num(windows[r].first)},
                              {"position", windows[r].second}});
        }
    }
    json labels = json::array();
    for (int64_t i = 0; i < len; ++i) labels.push_back(std::to_string(i) + ": " + valid_utf8(p.texts[i]));

    // Direct logit effect of an MLP neuron: W_out[n] · W_U (the final norm is ignored).
    json effect = {{"available", false}};
    const int layer = layer_of(hook);
    if (suffix_of(hook) != "mlp.hook_post" || layer < 0) {
        effect["reason"] = "only for MLP neurons (blocks.L.mlp.hook_post), whose output weights write to the residual stream";
    } else {
        const ModelInfo& info = s.loaded.handle.info;
        const auto row = mlp_out_row(*s.loaded.adapter, info, layer, n);
        const auto wu = unembedding(*s.loaded.adapter, info);
        if (!row || !wu) {
            effect["reason"] = std::string("the adapter's parameters have no recognisable ") +
                               (!row ? "MLP output projection" : "unembedding") + " for this model";
        } else {
            const at::Tensor logits = at::matmul(*wu, *row);  // [vocab]
            auto list = [&](bool largest) {
                const auto t = logits.topk(std::min<int64_t>(k, logits.size(0)), 0, largest);
                json l = json::array();
                for (int64_t i = 0; i < std::get<1>(t).size(0); ++i) {
                    const int64_t id = std::get<1>(t)[i].item<int64_t>();
                    l.push_back({{"id", id}, {"text", valid_utf8(s.token_text(id))},
                                 {"value", num(std::get<0>(t)[i].item<float>())}});
                }
                return l;
            };
            effect = {{"available", true}, {"promoted", list(true)}, {"suppressed", list(false)},
                      {"note", "W_out[neuron] · W_U: the neuron's output weights read through the unembedding, "
                               "ignoring the final norm (direct path only)"}};
        }
    }
    json values = json::array();
    for (float x : vals) values.push_back(num(x));
    return {{"model", s.name},
            {"hook", hook},
            {"layer", layer},
            {"neuron", n},
            {"tokens", tokens_json(p)},
            {"values", values},
            {"stats", stats},
            {"examples", examples},
            {"ngrams", ngrams},
            {"logit_effect", effect},
            {"figures",
             {{"histogram", {{"kind", "histogram"}, {"title", "activation over the prompt's tokens"},
                             {"values", values}, {"x_label", "activation"}, {"y_label", "tokens"}}},
              {"per_token", {{"kind", "bar"}, {"title", "activation per token"}, {"x", labels}, {"y", values},
                             {"x_label", "token"}, {"y_label", "activation"}}}}}};
}

json Engine::attention(const json& req) {
    Slot& s = slot(req);
    const Prompt p = read_prompt(s, req, limits_);
    const int64_t n_layers = s.loaded.handle.info.n_layers;
    const int64_t only = int_field(req, "layer", -1, -1, n_layers - 1);
    std::vector<std::string> names;
    for (const auto& h : s.hooks())
        if (suffix_of(h.name) == "attn.hook_pattern" && (only < 0 || layer_of(h.name) == only)) names.push_back(h.name);
    if (names.empty()) throw InputError("model '" + s.name + "' has no attn.hook_pattern hooks");

    std::lock_guard lock(s.mutex);
    json layers = json::array();
    {
        at::NoGradGuard no_grad;
        const ForwardOutput out = run_forward(s, p, names, false);
        for (const auto& name : names) {
            const at::Tensor t = out.captures.at(name)[0].contiguous();  // [h, q, k]
            const float* v = t.data_ptr<float>();
            const int64_t H = t.size(0), Q = t.size(1), K = t.size(2);
            json heads = json::array();
            for (int64_t h = 0; h < H; ++h) {
                json rows = json::array();
                for (int64_t q = 0; q < Q; ++q) {
                    json row = json::array();
                    for (int64_t kk = 0; kk < K; ++kk) row.push_back(num(v[(h * Q + q) * K + kk]));
                    rows.push_back(std::move(row));
                }
                heads.push_back(std::move(rows));
            }
            layers.push_back({{"hook", name}, {"layer", layer_of(name)}, {"heads", std::move(heads)}});
        }
    }
    // Head scores over the whole model (prev-token, induction, ...): the `heads` analyzer on this prompt.
    const Result scores = run_analyzer(plugins_, s, p, "heads", json::object(), {"blocks.*.attn.hook_pattern"});
    return {{"model", s.name}, {"tokens", tokens_json(p)}, {"layers", std::move(layers)}, {"scores", scores.data}};
}

json Engine::logit_lens(const json& req) {
    Slot& s = slot(req);
    const Prompt p = read_prompt(s, req, limits_);
    const int64_t k = int_field(req, "k", 5, 1, 50);
    std::lock_guard lock(s.mutex);
    const Result r = run_analyzer(plugins_, s, p, "logit_lens", {{"k", k}, {"grid_prompts", 1}}, {});
    return {{"model", s.name}, {"tokens", tokens_json(p)}, {"result", r.data}};
}

json Engine::edit(const json& req) {
    Slot& s = slot(req);
    const Prompt p = read_prompt(s, req, limits_);
    const int64_t k = int_field(req, "k", 10, 1, 100);
    const int64_t len = static_cast<int64_t>(p.ids.size());
    const int64_t position = int_field(req, "position", -1, -len, len - 1);
    if (!req.contains("edits") || !req["edits"].is_array() || req["edits"].empty())
        throw InputError("'edits' must be a non-empty array of interventions, e.g. "
                         "[{\"hook\": \"blocks.0.mlp.hook_post\", \"op\": \"zero\", \"neurons\": [3]}]");
    // Interventions as recipes write them, validated by the same code; files are not read on behalf of a client.
    for (const auto& e : req["edits"])
        if (e.is_object())
            for (const auto& [key, _] : e.items())
                if (key.ends_with("_file"))
                    throw InputError("edits: '" + key + "' is not accepted over HTTP; give the values inline");
    std::vector<InterventionSpec> specs;
    for (auto& entry : parse_interventions(json_to_yaml(req["edits"]), "edits", std::filesystem::current_path()))
        specs.push_back(std::move(entry.spec));
    for (const auto& spec : specs) validate_intervention(s.hooks(), spec, 1);

    std::lock_guard lock(s.mutex);
    at::NoGradGuard no_grad;
    const int64_t pos = position < 0 ? len + position : position;
    const ForwardOutput before = run_forward(s, p, {}, true);
    const ForwardOutput after = run_forward(s, p, {}, true, specs);
    const at::Tensor lb = before.logits[0][pos].to(at::kFloat).log_softmax(0);
    const at::Tensor la = after.logits[0][pos].to(at::kFloat).log_softmax(0);
    const double kl = (lb.exp() * (lb - la)).sum().item<double>();
    json applied = json::array();
    for (const auto& spec : specs) applied.push_back(spec.raw);
    return {{"model", s.name},
            {"tokens", tokens_json(p)},
            {"position", pos},
            {"edits", applied},
            {"kl", num(kl)},
            {"before", top_tokens(s, lb, k, &la)},
            {"after", top_tokens(s, la, k, &lb)},
            {"top_changed", lb.argmax().item<int64_t>() != la.argmax().item<int64_t>()}};
}

}  // namespace nscope::serve

#include "core/lua/lua_model.h"

#include <algorithm>
#include <map>
#include <optional>

#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include "core/lua/lua_host.h"
#include "core/lua/lua_tensor.h"
#include "core/lua/lua_util.h"
#include "core/model/hook_match.h"
#include "core/model/model_loader.h"
#include "core/model/metric.h"
#include "core/model/session.h"
#include "core/run/model_access.h"
#include "core/plugin/call_plugin.h"
#include "core/plugin/registry.h"
#include "core/run/recipe.h"
#include "core/run/run_dir.h"
#include "core/run/run_plan.h"
#include "core/run/runner.h"
#include "core/sae/sae_adapter.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/concurrency.h"
#include "core/util/files.h"
#include "core/util/sha256.h"
#include "core/util/text.h"
#include "nscope/error.h"

namespace nscope::lua {
namespace fs = std::filesystem;

namespace {

// ---- the model userdata ------------------------------------------------------------------------------------

struct LuaModel {
    std::string ref;
    std::string dtype;
    LoadedModel loaded;
    std::optional<Tokenizer> tokenizer;
    std::unique_ptr<ModelSession> session;

    const std::vector<HookPoint>& hooks() const { return loaded.handle.hooks; }
    const HookPoint* hook(const std::string& name) const { return loaded.handle.hook(name); }
    std::string token_text(int64_t id) const { return token_text_or_id(tokenizer ? &*tokenizer : nullptr, id); }
    const Tokenizer& require_tokenizer(const char* fn) const {
        if (!tokenizer)
            throw std::invalid_argument(std::string(fn) + ": model '" + ref +
                                        "' has no tokenizer.json; give prompts as token ids: {ids={...}}");
        return *tokenizer;
    }
};

LuaModel* test_model(lua_State* L, int idx) {
    auto* p = static_cast<LuaModel**>(luaL_testudata(L, idx, kModelMeta));
    return p == nullptr ? nullptr : *p;
}

LuaModel& arg_model(lua_State* L, int idx, const char* fn) {
    LuaModel* m = test_model(L, idx);
    if (m == nullptr) arg_fail(idx, fn, "model expected (from nscope.load), got " + type_name_at(L, idx) +
                                            "; call methods with ':' (model:run(...))");
    return *m;
}

std::string sizes_str(at::IntArrayRef s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

bool is_position_dim(const std::string& d) { return d == "pos" || d == "query_pos" || d == "key_pos"; }

/// Dims of a hook, or {"batch","pos",...} when unknown.
std::vector<std::string> dims_of(const LuaModel* m, const std::string& hook, int64_t rank) {
    if (m != nullptr)
        if (const HookPoint* h = m->hook(hook)) return h->dims;
    std::vector<std::string> d{"batch", "pos"};
    while (static_cast<int64_t>(d.size()) < rank) {
        std::string name = "d";  // (not "d" + ...: GCC 12 warns falsely about that form here)
        name += std::to_string(d.size());
        d.push_back(std::move(name));
    }
    return d;
}

// ---- nscope.load ---------------------------------------------------------------------------------------------

// nscope.load's `saes = {{hook = H, path = DIR}, ...}` (docs/sae.md).
std::vector<SaeAttachment> sae_attachments(lua_State* L, int idx) {
    if (lua_type(L, idx) != LUA_TTABLE) arg_fail(2, "nscope.load", "saes must be a list of {hook = ..., path = ...} tables");
    std::vector<SaeAttachment> out;
    const auto n = static_cast<lua_Integer>(lua_rawlen(L, idx));
    for (lua_Integer i = 1; i <= n; ++i) {
        lua_rawgeti(L, idx, i);
        const int entry = lua_gettop(L);
        if (lua_type(L, entry) != LUA_TTABLE || raw_field(L, entry, "hook") != LUA_TSTRING || raw_field(L, entry, "path") != LUA_TSTRING)
            arg_fail(2, "nscope.load", "saes[" + std::to_string(i) + "] must be {hook = \"blocks.L...\", path = \"DIR\"}");
        out.push_back({lua_tostring(L, -2), lua_tostring(L, -1)});
        lua_settop(L, entry - 1);
    }
    return out;
}

int f_load(lua_State* L) {
    // stack: path_or_id, opts
    const std::string ref = arg_string(L, 1, "nscope.load");
    std::string dtype = "float32";
    std::vector<SaeAttachment> saes;
    if (lua_type(L, 2) == LUA_TTABLE) {
        if (raw_field(L, 2, "dtype") != LUA_TNIL) dtype = arg_string(L, -1, "nscope.load");
        lua_pop(L, 1);
        if (raw_field(L, 2, "saes") != LUA_TNIL) saes = sae_attachments(L, lua_gettop(L));
        lua_pop(L, 1);
    } else if (!lua_isnoneornil(L, 2)) {
        arg_fail(2, "nscope.load", "options table expected, got " + type_name_at(L, 2));
    }
    const ModelOptions options = parse_model_dtype(dtype);
    auto model = std::make_unique<LuaModel>();
    model->ref = ref;
    model->dtype = model_dtype_name(options);
    model->loaded = load_model(host(L).plugins(), ref, options);
    attach_saes(model->loaded, saes);  // `<hook>.sae` hook points
    if (!model->loaded.handle.files.tokenizer_json.empty())
        model->tokenizer = Tokenizer::from_file(model->loaded.handle.files.tokenizer_json);
    model->session = std::make_unique<ModelSession>(model->loaded);
    spdlog::debug("loaded {} ({}, {} hooks)", ref, model->loaded.handle.info.architecture, model->hooks().size());
    auto** slot = static_cast<LuaModel**>(lua_newuserdatauv(L, sizeof(LuaModel*), 0));
    *slot = model.release();
    luaL_setmetatable(L, kModelMeta);
    return 1;
}

int model_gc(lua_State* L) {
    auto* p = static_cast<LuaModel**>(luaL_testudata(L, 1, kModelMeta));
    if (p != nullptr && *p != nullptr) {
        delete *p;
        *p = nullptr;
    }
    return 0;
}

int model_tostring(lua_State* L) {
    const LuaModel& m = arg_model(L, 1, "tostring");
    const std::string s = "nscope.Model(" + m.ref + ", " + m.loaded.handle.info.architecture + ", " + m.dtype + ")";
    lua_pushlstring(L, s.data(), s.size());
    return 1;
}

int model_index(lua_State* L) {
    // stack: model, key
    const LuaModel& m = arg_model(L, 1, "index");
    const std::string key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    if (key == "info") {
        nlohmann::json info = m.loaded.handle.info.to_json();
        info["n_hooks"] = m.hooks().size();
        info["dtype"] = m.dtype;
        info["has_tokenizer"] = m.tokenizer.has_value();
        push_json(L, info);
        return 1;
    }
    if (key == "name") {
        lua_pushstring(L, m.ref.c_str());
        return 1;
    }
    lua_getmetatable(L, 1);       // stack: model, key, mt
    lua_pushliteral(L, "methods");
    lua_rawget(L, -2);            // stack: model, key, mt, methods
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);            // stack: model, key, mt, methods, value
    if (lua_isnil(L, -1)) throw std::invalid_argument("models have no method or field '" + key + "'");
    return 1;
}

int model_unembed(lua_State* L) {
    // stack: model, tensor [..., d_model] -> logits [..., vocab] (final norm + unembedding: the logit lens)
    const LuaModel& m = arg_model(L, 1, "model:unembed");
    const at::Tensor& x = arg_tensor(L, 2, "model:unembed");
    const int64_t d = m.loaded.handle.info.d_model;
    if (x.dim() == 0 || x.size(-1) != d)
        throw std::invalid_argument("model:unembed: expects residual-stream vectors [..., " + std::to_string(d) +
                                    "], got a tensor of shape " + sizes_str(x.sizes()));
    at::NoGradGuard no_grad;
    push_tensor(L, m.loaded.adapter->unembed(x.to(m.loaded.options.dtype)).to(at::kFloat).contiguous());
    return 1;
}

int model_hooks(lua_State* L) {
    // stack: model, [pattern]
    const LuaModel& m = arg_model(L, 1, "model:hooks");
    std::vector<std::string> names;
    if (lua_isnoneornil(L, 2)) {
        for (const auto& h : m.hooks()) names.push_back(h.name);
    } else {
        names = match_hooks(m.hooks(), {arg_string(L, 2, "model:hooks")});
    }
    lua_createtable(L, static_cast<int>(names.size()), 0);
    for (size_t i = 0; i < names.size(); ++i) {
        lua_pushstring(L, names[i].c_str());
        lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
    }
    return 1;
}

void push_strings(lua_State* L, const std::vector<std::string>& v) {
    lua_createtable(L, static_cast<int>(v.size()), 0);
    for (size_t i = 0; i < v.size(); ++i) {
        lua_pushlstring(L, v[i].data(), v[i].size());
        lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
    }
}

int model_tokenize(lua_State* L) {
    // stack: model, text, [add_special]
    const LuaModel& m = arg_model(L, 1, "model:tokenize");
    const std::string text = arg_string(L, 2, "model:tokenize");
    const Encoding e = m.require_tokenizer("model:tokenize").encode(text, opt_bool(L, 3, true));
    lua_createtable(L, static_cast<int>(e.ids.size()), 0);
    for (size_t i = 0; i < e.ids.size(); ++i) {
        lua_pushinteger(L, e.ids[i]);
        lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
    }
    std::vector<std::string> tokens;
    for (int64_t id : e.ids) tokens.push_back(m.token_text(id));
    push_strings(L, tokens);
    return 2;
}

std::vector<int64_t> int_list(lua_State* L, int idx, const std::string& what) {
    if (lua_type(L, idx) != LUA_TTABLE) throw std::invalid_argument(what + " must be a list of integers");
    std::vector<int64_t> out;
    const int64_t n = raw_len(L, idx);
    for (int64_t i = 1; i <= n; ++i) {
        lua_rawgeti(L, idx, i);
        const bool ok = lua_isinteger(L, -1);
        const int64_t v = lua_tointeger(L, -1);
        lua_pop(L, 1);
        if (!ok) throw std::invalid_argument(what + "[" + std::to_string(i) + "] is not an integer");
        out.push_back(v);
    }
    return out;
}

int model_decode(lua_State* L) {
    const LuaModel& m = arg_model(L, 1, "model:decode");
    const std::vector<int64_t> ids = int_list(L, 2, "model:decode ids");
    const std::string s = m.require_tokenizer("model:decode").decode(ids, !opt_bool(L, 3, false));
    lua_pushlstring(L, s.data(), s.size());
    return 1;
}

int model_token_text(lua_State* L) {
    const LuaModel& m = arg_model(L, 1, "model:token_text");
    const std::string s = m.token_text(arg_integer(L, 2, "model:token_text"));
    lua_pushlstring(L, s.data(), s.size());
    return 1;
}

int model_token_id(lua_State* L) {
    const LuaModel& m = arg_model(L, 1, "model:token_id");
    const auto id = m.require_tokenizer("model:token_id").token_to_id(arg_string(L, 2, "model:token_id"));
    if (id) lua_pushinteger(L, *id);
    else lua_pushnil(L);
    return 1;
}

// ---- model:run ---------------------------------------------------------------------------------------------

struct RunPrompt {
    std::vector<int64_t> ids;
    PromptInfo info;
};

struct RunArgs {
    std::vector<std::string> capture_patterns;
    std::vector<std::pair<std::string, int>> hook_fns;  ///< pattern -> stack index of the Lua function
    std::vector<InterventionSpec> interventions;
    size_t batch_size = 8;
    size_t max_tokens = 128;
    bool logits = true;
    bool add_special = true;
    std::optional<Metric> gradient;  ///< `gradient = {metric=..., target=..., tokens={...}, position=...}`
};

int64_t opt_int_field(lua_State* L, int idx, const char* key, int64_t def, int64_t lo, int64_t hi, const char* fn) {
    int64_t v = def;
    const int t = raw_field(L, idx, key);
    if (t != LUA_TNIL) {
        if (!lua_isinteger(L, -1)) {
            lua_pop(L, 1);
            throw std::invalid_argument(std::string(fn) + ": option '" + key + "' must be an integer");
        }
        v = lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    if (v < lo || v > hi)
        throw std::invalid_argument(std::string(fn) + ": option '" + key + "' must be between " + std::to_string(lo) +
                                    " and " + std::to_string(hi));
    return v;
}

/// A token of a Lua metric: its id, or its text (exactly one token under the model's tokenizer).
int64_t lua_token(const nlohmann::json& t, const LuaModel& m, const std::string& where) {
    if (t.is_number_integer()) {
        const int64_t id = t.get<int64_t>();
        const int64_t vocab = m.loaded.handle.info.vocab_size;
        if (id < 0 || (vocab > 0 && id >= vocab))
            throw std::invalid_argument(where + ": token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                                        std::to_string(vocab - 1) + ")");
        return id;
    }
    if (t.is_string()) return single_token_id(m.require_tokenizer("model:run gradient"), t.get<std::string>(), where);
    throw std::invalid_argument(where + " must be a token's text or its id");
}

/// `gradient = {metric="logprob", target=" Paris"}` / `{metric="logit_diff", tokens={a, b}}` / `{metric="loss"}`.
Metric parse_lua_metric(const nlohmann::json& g, const LuaModel& m) {
    const std::string fn = "model:run gradient";
    if (!g.is_object()) throw std::invalid_argument(fn + " must be a table {metric=..., target=...}");
    static const std::vector<std::string> keys = {"metric", "target", "tokens", "position"};
    for (const auto& [k, v] : g.items())
        if (std::find(keys.begin(), keys.end(), k) == keys.end())
            throw std::invalid_argument(fn + ": unknown key '" + k + "'" + did_you_mean(k, keys) + " (keys: " + join(keys, ", ") + ")");
    if (!g.contains("metric") || !g["metric"].is_string())
        throw std::invalid_argument(fn + " needs metric = one of " + join(metric_kinds(), ", "));
    Metric metric;
    metric.kind = g["metric"].get<std::string>();
    if (g.contains("target")) metric.tokens.push_back(lua_token(g["target"], m, fn + ".target"));
    if (g.contains("tokens")) {
        if (!g["tokens"].is_array()) throw std::invalid_argument(fn + ".tokens must be a list of two tokens");
        for (size_t i = 0; i < g["tokens"].size(); ++i)
            metric.tokens.push_back(lua_token(g["tokens"][i], m, fn + ".tokens[" + std::to_string(i + 1) + "]"));
    }
    if (g.contains("position")) {
        if (!g["position"].is_number_integer()) throw std::invalid_argument(fn + ".position must be an integer");
        const int64_t p = g["position"].get<int64_t>();
        metric.position = p > 0 ? p - 1 : p;  // Lua counts positions from 1; negative ones from the end (-1 = last)
        if (p == 0) throw std::invalid_argument(fn + ".position counts from 1 (or from the end: -1 = last)");
    }
    validate_metric(metric, m.loaded.handle.info.vocab_size, 1, fn);
    return metric;
}

RunArgs parse_run_options(lua_State* L, int idx, const LuaModel& m) {
    RunArgs a;
    if (lua_isnoneornil(L, idx)) return a;
    if (lua_type(L, idx) != LUA_TTABLE) arg_fail(idx, "model:run", "options table expected, got " + type_name_at(L, idx));
    static const std::vector<std::string> known = {"hooks", "interventions", "batch_size", "max_tokens", "logits",
                                                   "add_special_tokens", "gradient"};
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        const std::string key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        lua_pop(L, 1);
        if (std::find(known.begin(), known.end(), key) == known.end()) {
            lua_pop(L, 1);
            throw std::invalid_argument("model:run: unknown option '" + key + "'" + did_you_mean(key, known) +
                                        " (options: " + join(known, ", ") + ")");
        }
    }
    a.batch_size = static_cast<size_t>(opt_int_field(L, idx, "batch_size", 8, 1, 4096, "model:run"));
    a.max_tokens = static_cast<size_t>(opt_int_field(L, idx, "max_tokens", 128, 1, 1 << 20, "model:run"));
    if (raw_field(L, idx, "logits") != LUA_TNIL) a.logits = lua_toboolean(L, -1) != 0;
    lua_pop(L, 1);
    if (raw_field(L, idx, "add_special_tokens") != LUA_TNIL) a.add_special = lua_toboolean(L, -1) != 0;
    lua_pop(L, 1);

    // hooks: array part = capture patterns; pattern = function(t, ctx) entries edit during the forward.
    if (raw_field(L, idx, "hooks") != LUA_TNIL) {
        int h = lua_gettop(L);  // the hooks table (moves up as functions are parked below it)
        if (lua_type(L, h) != LUA_TTABLE) throw std::invalid_argument("model:run: 'hooks' must be a table");
        lua_pushnil(L);
        while (lua_next(L, h) != 0) {
            // stack: ..., hooks, key, value
            if (lua_isinteger(L, -2)) {
                if (lua_type(L, -1) != LUA_TSTRING)
                    throw std::invalid_argument("model:run: hooks[" + std::to_string(lua_tointeger(L, -2)) +
                                                "] must be a hook name or pattern (string)");
                a.capture_patterns.push_back(lua_tostring(L, -1));
                lua_pop(L, 1);
            } else if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TFUNCTION) {
                const std::string pattern = lua_tostring(L, -2);
                match_hooks(m.hooks(), {pattern});  // throws with "did you mean" when nothing matches
                if (!lua_checkstack(L, 4)) throw std::runtime_error("model:run: too many hook functions");
                // Keep the function on the stack below the iteration: move it under the hooks table.
                lua_insert(L, h);  // stack: ..., fn, hooks, key
                a.hook_fns.emplace_back(pattern, h);
                ++h;
            } else {
                throw std::invalid_argument("model:run: 'hooks' takes hook patterns as a list and "
                                            "[\"pattern\"] = function(t, ctx) entries");
            }
        }
        lua_pop(L, 1);  // hooks
    } else {
        lua_pop(L, 1);
    }

    if (raw_field(L, idx, "gradient") != LUA_TNIL) {
        const nlohmann::json g = to_json(L, -1, "gradient");
        lua_pop(L, 1);
        a.gradient = parse_lua_metric(g, m);
    } else {
        lua_pop(L, 1);
    }

    if (raw_field(L, idx, "interventions") != LUA_TNIL) {
        const nlohmann::json j = to_json(L, -1, "interventions");
        lua_pop(L, 1);
        for (auto& e : parse_interventions(json_to_yaml(j), "model:run interventions", fs::current_path(), 1))
            a.interventions.push_back(std::move(e.spec));
    } else {
        lua_pop(L, 1);
    }
    return a;
}

std::vector<RunPrompt> parse_prompts(lua_State* L, int idx, const LuaModel& m, const RunArgs& a) {
    std::vector<RunPrompt> out;
    const int64_t vocab = m.loaded.handle.info.vocab_size;
    auto add_text = [&](const std::string& text, nlohmann::json labels) {
        RunPrompt p;
        p.ids = m.require_tokenizer("model:run").encode(text, a.add_special).ids;
        p.info.text = text;
        p.info.labels = std::move(labels);
        out.push_back(std::move(p));
    };
    if (lua_type(L, idx) == LUA_TSTRING) {
        add_text(lua_tostring(L, idx), nullptr);
    } else if (lua_type(L, idx) == LUA_TTABLE) {
        const int64_t n = raw_len(L, idx);
        if (n == 0) throw std::invalid_argument("model:run: no prompts (give a string or a list of prompts)");
        for (int64_t i = 1; i <= n; ++i) {
            lua_rawgeti(L, idx, i);  // stack: ..., prompt
            const int p = lua_gettop(L);
            const std::string where = "prompts[" + std::to_string(i) + "]";
            if (lua_type(L, p) == LUA_TSTRING) {
                add_text(lua_tostring(L, p), nullptr);
            } else if (lua_type(L, p) == LUA_TTABLE) {
                nlohmann::json labels;
                if (raw_field(L, p, "labels") != LUA_TNIL) labels = to_json(L, -1, where + ".labels");
                lua_pop(L, 1);
                if (raw_field(L, p, "ids") != LUA_TNIL) {
                    RunPrompt rp;
                    rp.ids = int_list(L, lua_gettop(L), where + ".ids");
                    lua_pop(L, 1);
                    for (int64_t id : rp.ids)
                        if (id < 0 || (vocab > 0 && id >= vocab))
                            throw std::invalid_argument(where + ".ids: token id " + std::to_string(id) +
                                                        " is outside the vocabulary (0.." + std::to_string(vocab - 1) + ")");
                    if (m.tokenizer) rp.info.text = m.tokenizer->decode(rp.ids, false);
                    rp.info.labels = std::move(labels);
                    out.push_back(std::move(rp));
                } else {
                    lua_pop(L, 1);
                    if (raw_field(L, p, "text") != LUA_TSTRING)
                        throw std::invalid_argument(where + " needs 'text' (a string) or 'ids' (a list of token ids)");
                    const std::string text = lua_tostring(L, -1);
                    lua_pop(L, 1);
                    add_text(text, std::move(labels));
                }
            } else {
                throw std::invalid_argument(where + " must be a string or a table {text=..., labels=...} / {ids={...}}");
            }
            lua_pop(L, 1);
        }
    } else {
        arg_fail(2, "model:run", "prompts expected (a string or a list), got " + type_name_at(L, idx));
    }
    for (size_t i = 0; i < out.size(); ++i) {
        RunPrompt& p = out[i];
        if (p.ids.empty()) throw std::invalid_argument("prompt " + std::to_string(i + 1) + " has no tokens (empty text?)");
        if (p.ids.size() > a.max_tokens) p.ids.resize(a.max_tokens);
        p.info.index = i;
        for (int64_t id : p.ids) p.info.tokens.push_back(m.token_text(id));
    }
    return out;
}

/// Concatenate per-batch tensors [b, P_batch, ...] along the batch, zero-padding position dims to `P`.
at::Tensor assemble(const std::vector<at::Tensor>& parts, const std::vector<std::string>& dims, int64_t n, int64_t P) {
    std::vector<int64_t> shape = parts.front().sizes().vec();
    shape[0] = n;
    for (size_t d = 1; d < shape.size() && d < dims.size(); ++d)
        if (is_position_dim(dims[d])) shape[d] = P;
    at::Tensor out = at::zeros(shape, parts.front().options());
    int64_t row = 0;
    for (const auto& part : parts) {
        at::Tensor dst = out.narrow(0, row, part.size(0));
        for (size_t d = 1; d < shape.size() && d < dims.size(); ++d)
            if (is_position_dim(dims[d])) dst = dst.narrow(static_cast<int64_t>(d), 0, part.size(static_cast<int64_t>(d)));
        dst.copy_(part);
        row += part.size(0);
    }
    return out;
}

int model_run(lua_State* L) {
    // stack: model, prompts, opts
    LuaModel& m = arg_model(L, 1, "model:run");
    lua_settop(L, 3);
    const RunArgs a = parse_run_options(L, 3, m);
    const std::vector<RunPrompt> prompts = parse_prompts(L, 2, m, a);
    // stack: model, prompts, opts, hook functions...

    ForwardRequest req;
    req.capture = a.capture_patterns.empty() ? std::vector<std::string>{} : match_hooks(m.hooks(), a.capture_patterns);
    req.interventions = a.interventions;
    req.keep_logits = a.logits;
    if (a.gradient) {
        if (req.capture.empty())
            throw std::invalid_argument("model:run: gradient is delivered at the captured hooks; list them in hooks={...}");
        req.metric = a.gradient;
        req.gradients = req.capture;
    }
    std::vector<size_t> batch_prompts;  // global prompt indices of the batch being run (for hook contexts)
    for (const auto& [pattern, fn_idx] : a.hook_fns) {
        const int fn = fn_idx;
        req.callbacks.emplace_back(pattern, [L, fn, &batch_prompts](const std::string& hook, at::Tensor& t) {
            if (!lua_checkstack(L, 8)) throw std::runtime_error("Lua stack overflow in a hook function");
            at::Tensor work = t.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
            lua_pushvalue(L, fn);   // stack: ..., fn
            push_tensor(L, work);   // stack: ..., fn, t
            lua_createtable(L, 0, 3);  // stack: ..., fn, t, ctx
            lua_pushstring(L, hook.c_str());
            lua_setfield(L, -2, "hook");
            lua_createtable(L, static_cast<int>(batch_prompts.size()), 0);
            for (size_t i = 0; i < batch_prompts.size(); ++i) {
                lua_pushinteger(L, static_cast<lua_Integer>(batch_prompts[i] + 1));
                lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
            }
            lua_setfield(L, -2, "prompts");
            if (protected_call(L, 2, 1) != LUA_OK) {
                std::string msg = to_display(L, -1);
                lua_pop(L, 1);
                const size_t nl = msg.find('\n');
                const std::string note = " (in the hook function for " + hook + ")";
                msg = nl == std::string::npos ? msg + note : msg.substr(0, nl) + note + msg.substr(nl);
                throw ScriptError(msg);
            }
            // stack: ..., result
            at::Tensor result = work;
            if (at::Tensor* r = test_tensor(L, -1)) {
                result = *r;
            } else if (!lua_isnil(L, -1)) {
                const std::string tn = type_name_at(L, -1);
                lua_pop(L, 1);
                throw std::invalid_argument("the hook function for " + hook + " returned a " + tn +
                                            "; return nothing (edit t in place) or a tensor of the same shape");
            }
            lua_pop(L, 1);
            if (result.sizes() != t.sizes())
                throw std::invalid_argument("the hook function for " + hook + " returned a tensor of shape " +
                                            sizes_str(result.sizes()) + "; the hook's tensor has shape " +
                                            sizes_str(t.sizes()));
            t = result.to(t.scalar_type()).contiguous();
        });
    }

    const auto n = static_cast<int64_t>(prompts.size());
    int64_t P = 0;
    for (const auto& p : prompts) P = std::max<int64_t>(P, static_cast<int64_t>(p.ids.size()));
    std::map<std::string, std::vector<at::Tensor>> parts, grad_parts;
    std::vector<at::Tensor> logits, metric;
    for (size_t start = 0; start < prompts.size(); start += a.batch_size) {
        const size_t end = std::min(prompts.size(), start + a.batch_size);
        std::vector<std::vector<int64_t>> rows;
        batch_prompts.clear();
        for (size_t i = start; i < end; ++i) {
            rows.push_back(prompts[i].ids);
            batch_prompts.push_back(i);
        }
        ForwardOutput out = m.session->forward(rows, nullptr, batch_prompts, req);
        for (const auto& name : req.capture) parts[name].push_back(out.captures.at(name));
        for (const auto& [name, g] : out.gradients) grad_parts[name].push_back(g);
        if (a.logits) logits.push_back(out.logits);
        if (out.metric.defined()) metric.push_back(out.metric);
    }

    // The cache table.
    lua_createtable(L, 0, static_cast<int>(req.capture.size()) + 8);  // stack: ..., cache
    const int cache = lua_gettop(L);
    for (const auto& name : req.capture) {
        const at::Tensor& first = parts[name].front();
        push_tensor(L, assemble(parts[name], dims_of(&m, name, first.dim()), n, P));
        lua_setfield(L, cache, name.c_str());
    }
    if (a.logits) {
        push_tensor(L, assemble(logits, {"batch", "pos", "vocab"}, n, P));
        lua_setfield(L, cache, "logits");
    }
    if (!grad_parts.empty()) {  // cache.grad[hook]: d(metric summed over prompts)/d(activation); cache.metric [n]
        lua_createtable(L, 0, static_cast<int>(grad_parts.size()));
        for (const auto& [name, g] : grad_parts) {
            push_tensor(L, assemble(g, dims_of(&m, name, g.front().dim()), n, P));
            lua_setfield(L, -2, name.c_str());
        }
        lua_setfield(L, cache, "grad");
    }
    if (!metric.empty()) {
        push_tensor(L, at::cat(metric));
        lua_setfield(L, cache, "metric");
    }
    at::Tensor ids = at::zeros({n, P}, at::kLong), mask = at::zeros({n, P}, at::kLong);
    for (int64_t i = 0; i < n; ++i) {
        const auto& row = prompts[static_cast<size_t>(i)].ids;
        for (size_t p = 0; p < row.size(); ++p) {
            ids[i][static_cast<int64_t>(p)] = row[p];
            mask[i][static_cast<int64_t>(p)] = 1;
        }
    }
    push_tensor(L, ids);
    lua_setfield(L, cache, "ids");
    push_tensor(L, mask);
    lua_setfield(L, cache, "mask");
    lua_createtable(L, static_cast<int>(n), 0);  // lengths
    lua_createtable(L, static_cast<int>(n), 0);  // tokens
    lua_createtable(L, static_cast<int>(n), 0);  // prompts
    for (int64_t i = 0; i < n; ++i) {
        const RunPrompt& p = prompts[static_cast<size_t>(i)];
        lua_pushinteger(L, static_cast<lua_Integer>(p.ids.size()));
        lua_rawseti(L, -4, i + 1);
        push_strings(L, p.info.tokens);
        lua_rawseti(L, -3, i + 1);
        lua_createtable(L, 0, 2);
        lua_pushlstring(L, p.info.text.data(), p.info.text.size());
        lua_setfield(L, -2, "text");
        push_json(L, p.info.labels);
        lua_setfield(L, -2, "labels");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, cache, "prompts");
    lua_setfield(L, cache, "tokens");
    lua_setfield(L, cache, "lengths");
    push_strings(L, req.capture);
    lua_setfield(L, cache, "hooks");
    lua_pushvalue(L, 1);
    lua_setfield(L, cache, "model");
    luaL_setmetatable(L, kCacheMeta);
    return 1;
}

int cache_index(lua_State* L) {
    // stack: cache, key   (only called for missing keys)
    if (lua_type(L, 2) == LUA_TSTRING) {
        const std::string key = lua_tostring(L, 2);
        if (key.find("hook") != std::string::npos || key.rfind("blocks.", 0) == 0) {
            std::vector<std::string> names;
            if (raw_field(L, 1, "hooks") == LUA_TTABLE) {
                const int64_t n = raw_len(L, -1);
                for (int64_t i = 1; i <= n; ++i) {
                    lua_rawgeti(L, -1, i);
                    if (lua_type(L, -1) == LUA_TSTRING) names.push_back(lua_tostring(L, -1));
                    lua_pop(L, 1);
                }
            }
            lua_pop(L, 1);
            throw std::invalid_argument("hook '" + key + "' was not captured in this run" + did_you_mean(key, names) +
                                        "; list it in model:run(prompts, {hooks={...}})" +
                                        (names.empty() ? "" : " (captured: " + join(names, ", ") + ")"));
        }
    }
    lua_pushnil(L);
    return 1;
}

int cache_tostring(lua_State* L) {
    std::string s = "nscope.Cache(";
    if (raw_field(L, 1, "lengths") == LUA_TTABLE) s += std::to_string(raw_len(L, -1)) + " prompts";
    lua_pop(L, 1);
    if (raw_field(L, 1, "hooks") == LUA_TTABLE) s += ", " + std::to_string(raw_len(L, -1)) + " hooks";
    lua_pop(L, 1);
    s += ")";
    lua_pushlstring(L, s.data(), s.size());
    return 1;
}

// ---- caches as plugin input ---------------------------------------------------------------------------------

bool is_cache(lua_State* L, int idx) {
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return false;  // stack: ..., mt
    luaL_getmetatable(L, kCacheMeta);                                                 // stack: ..., mt, cache mt
    const bool same = lua_rawequal(L, -1, -2) != 0;
    lua_pop(L, 2);
    return same;
}

struct CacheData {
    std::vector<std::string> hooks;
    std::map<std::string, at::Tensor> acts;
    at::Tensor ids, mask;
    std::vector<PromptInfo> prompts;
    const LuaModel* model = nullptr;
};

CacheData read_cache(lua_State* L, int idx, const char* fn) {
    idx = lua_absindex(L, idx);
    if (!is_cache(L, idx)) arg_fail(idx, fn, "a cache from model:run expected, got " + type_name_at(L, idx));
    CacheData c;
    auto tensor_field = [&](const char* key) {
        raw_field(L, idx, key);
        at::Tensor* t = test_tensor(L, -1);
        lua_pop(L, 1);
        if (t == nullptr) throw std::invalid_argument(std::string(fn) + ": the cache has no tensor '" + key + "'");
        return *t;
    };
    c.ids = tensor_field("ids").to(at::kLong).contiguous();
    c.mask = tensor_field("mask").to(at::kLong).contiguous();
    if (raw_field(L, idx, "hooks") == LUA_TTABLE) {
        const int64_t n = raw_len(L, -1);
        for (int64_t i = 1; i <= n; ++i) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) == LUA_TSTRING) c.hooks.push_back(lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    for (const auto& h : c.hooks) c.acts[h] = tensor_field(h.c_str());
    raw_field(L, idx, "model");
    c.model = test_model(L, -1);
    lua_pop(L, 1);
    const int64_t n = c.ids.size(0);
    raw_field(L, idx, "prompts");
    raw_field(L, idx, "tokens");  // stack: ..., prompts, tokens
    for (int64_t i = 0; i < n; ++i) {
        PromptInfo info;
        info.index = static_cast<size_t>(i);
        if (lua_type(L, -2) == LUA_TTABLE) {
            lua_rawgeti(L, -2, i + 1);
            if (lua_type(L, -1) == LUA_TTABLE) {
                if (raw_field(L, -1, "text") == LUA_TSTRING) info.text = lua_tostring(L, -1);
                lua_pop(L, 1);
                raw_field(L, -1, "labels");
                info.labels = to_json(L, -1, "cache.prompts.labels");
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_rawgeti(L, -1, i + 1);
            if (lua_type(L, -1) == LUA_TTABLE) {
                const int64_t k = raw_len(L, -1);
                for (int64_t j = 1; j <= k; ++j) {
                    lua_rawgeti(L, -1, j);
                    info.tokens.push_back(lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "");
                    lua_pop(L, 1);
                }
            }
            lua_pop(L, 1);
        }
        c.prompts.push_back(std::move(info));
    }
    lua_pop(L, 2);
    return c;
}

bool pattern_matches(const std::string& pattern, const std::string& name) {
    for (const auto& p : expand_braces(pattern))
        if (glob_match(p, name)) return true;
    return false;
}

RunContext cache_context(lua_State* L, const CacheData& c, const std::vector<std::string>& hooks) {
    RunContext ctx;
    ctx.run_dir = host(L).has_run_dir() ? host(L).run_dir().string() : "";
    ctx.parallel_for = parallel_for_on(at::get_num_threads());
    ctx.host = &host_services();
    if (c.model) {
        ctx.model_name = c.model->ref;
        ctx.model_info = c.model->loaded.handle.info.to_json();
    }
    for (const auto& h : hooks) {
        const at::Tensor& t = c.acts.at(h);
        HookPoint info;
        info.name = h;
        info.dims = dims_of(c.model, h, t.dim());
        for (int64_t d = 0; d < t.dim(); ++d)
            info.shape.push_back(d == 0 || (static_cast<size_t>(d) < info.dims.size() && is_position_dim(info.dims[d]))
                                     ? -1
                                     : t.size(d));
        ctx.hooks.push_back(std::move(info));
    }
    for (const auto& p : c.prompts) ctx.prompts.push_back(&p);
    const LuaModel* m = c.model;
    ctx.token_text = [m](int64_t id) { return m ? m->token_text(id) : token_text_or_id(nullptr, id); };
    return ctx;
}

/// The SDK Batch of the cache's rows [start, start + rows), positions trimmed to their longest prompt. The
/// batch points into tensors appended to `keep`, which must outlive it.
Batch cache_batch(const CacheData& c, const std::vector<std::string>& hooks, int64_t start, int64_t rows,
                  std::vector<at::Tensor>& keep) {
    const at::Tensor mask_rows = c.mask.narrow(0, start, rows);
    const int64_t P = std::max<int64_t>(1, mask_rows.sum(1).max().item<int64_t>());
    keep.push_back(c.ids.narrow(0, start, rows).narrow(1, 0, P).contiguous());
    keep.push_back(mask_rows.narrow(1, 0, P).contiguous());
    Batch b;
    b.rows = static_cast<size_t>(rows);
    b.positions = static_cast<size_t>(P);
    b.input_ids = keep[keep.size() - 2].data_ptr<int64_t>();
    b.attention_mask = keep.back().data_ptr<int64_t>();
    for (int64_t i = start; i < start + rows; ++i) b.prompts.push_back(&c.prompts[static_cast<size_t>(i)]);
    for (const auto& h : hooks) {
        at::Tensor t = c.acts.at(h).narrow(0, start, rows);
        const auto dims = dims_of(c.model, h, t.dim());
        for (int64_t d = 1; d < t.dim() && static_cast<size_t>(d) < dims.size(); ++d)
            if (is_position_dim(dims[static_cast<size_t>(d)])) t = t.narrow(d, 0, std::min(P, t.size(d)));
        keep.push_back(t.to(at::kFloat).contiguous());
        b.activations.push_back({h, {keep.back().data_ptr<float>(), DType::Float32, keep.back().sizes().vec()}});
    }
    return b;
}

/// Feed the caches to `fn` as SDK Batches of `batch_size` rows: for every block of rows, one batch per cache
/// in order (Batch::model = its index), the lockstep order of a `models:` run.
template <typename Fn>
void for_each_batch(const std::vector<const CacheData*>& caches, const std::vector<std::string>& hooks,
                    size_t batch_size, Fn&& fn) {
    const int64_t n = caches[0]->ids.size(0);
    for (int64_t start = 0; start < n; start += static_cast<int64_t>(batch_size)) {
        const int64_t rows = std::min<int64_t>(static_cast<int64_t>(batch_size), n - start);
        for (size_t m = 0; m < caches.size(); ++m) {
            std::vector<at::Tensor> keep;
            Batch b = cache_batch(*caches[m], hooks, start, rows, keep);
            b.model = m;
            fn(b);
        }
    }
}

/// nscope.analyze's second argument: one cache, or a list of caches (the models an analyzer compares).
std::vector<CacheData> read_caches(lua_State* L, int idx, const char* fn) {
    idx = lua_absindex(L, idx);
    std::vector<CacheData> out;
    if (is_cache(L, idx) || lua_type(L, idx) != LUA_TTABLE) {
        out.push_back(read_cache(L, idx, fn));
        return out;
    }
    const int64_t n = raw_len(L, idx);
    if (n == 0) arg_fail(idx, fn, "a cache from model:run, or a list of caches {base, checkpoint, ...}, expected; got an empty table");
    for (int64_t i = 1; i <= n; ++i) {
        lua_rawgeti(L, idx, i);
        if (!is_cache(L, -1))
            arg_fail(idx, fn, "element " + std::to_string(i) + " of the list is " + type_name_at(L, -1) +
                                  ", and a list must hold caches from model:run");
        out.push_back(read_cache(L, -1, fn));
        lua_pop(L, 1);
        if (out.back().ids.size(0) != out[0].ids.size(0))
            arg_fail(idx, fn, "cache " + std::to_string(i) + " has " + std::to_string(out.back().ids.size(0)) +
                                  " prompts and cache 1 has " + std::to_string(out[0].ids.size(0)) +
                                  "; models are compared on the same prompts: run them all on one prompt list");
    }
    return out;
}

/// The models of a list of caches, for an analyzer that compares them (RunContext::models). Labels: `labels`
/// when given, else each model's folder name (made unique).
std::vector<ModelContext> cache_models(lua_State* L, const std::vector<CacheData>& caches,
                                       const std::vector<std::string>& hooks, const std::vector<std::string>& labels) {
    std::vector<ModelContext> out;
    std::map<std::string, int> seen;
    for (size_t m = 0; m < caches.size(); ++m) {
        const CacheData& c = caches[m];
        ModelContext mc;
        const RunContext one = cache_context(L, c, hooks);
        mc.hooks = one.hooks;
        mc.token_text = one.token_text;
        mc.model_info = one.model_info;
        mc.ref = c.model ? c.model->ref : "";
        if (c.model && !c.model->loaded.handle.files.tokenizer_json.empty())
            mc.tokenizer_sha256 = sha256_file(c.model->loaded.handle.files.tokenizer_json);
        if (m < labels.size()) {
            mc.label = labels[m];
        } else {
            std::string base = c.model ? std::filesystem::path(c.model->ref).filename().string() : "";
            if (base.empty()) base = "model" + std::to_string(m + 1);
            const int k = seen[base]++;
            mc.label = k == 0 ? base : base + "-" + std::to_string(k + 1);
        }
        out.push_back(std::move(mc));
    }
    return out;
}

void push_result(lua_State* L, const Result& r, const std::string& plugin) {
    if (r.data.is_object()) {
        push_json(L, r.data);
    } else {
        lua_createtable(L, 0, 2);
        push_json(L, r.data);
        lua_setfield(L, -2, "value");
    }
    if (!r.arrays.empty()) {
        lua_createtable(L, 0, static_cast<int>(r.arrays.size()));
        for (const auto& [name, a] : r.arrays) {
            at::Tensor t = a.is_int64 ? at::tensor(a.i64, at::kLong) : at::tensor(a.f32, at::kFloat);
            push_tensor(L, t.reshape(a.shape));
            lua_setfield(L, -2, name.c_str());
        }
        lua_setfield(L, -2, "arrays");
    }
    lua_pushstring(L, plugin.c_str());
    lua_setfield(L, -2, "_plugin");
}

/// A result table (from nscope.analyze, possibly edited) back to a Result.
Result to_result(lua_State* L, int idx, const std::string& where) {
    idx = lua_absindex(L, idx);
    Result r;
    r.data = to_json(L, idx, where, {"arrays", "_plugin"});
    if (r.data.is_array() && r.data.empty()) r.data = nlohmann::json::object();
    if (raw_field(L, idx, "arrays") == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            at::Tensor* t = test_tensor(L, -1);
            if (t != nullptr && lua_type(L, -2) == LUA_TSTRING) {
                const at::Tensor& x = *t;
                NdArray a;
                a.shape = x.sizes().vec();
                if (at::isIntegralType(x.scalar_type(), true)) {
                    const at::Tensor c = x.to(at::kLong).contiguous();
                    a.is_int64 = true;
                    a.i64.assign(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
                } else {
                    const at::Tensor c = x.to(at::kFloat).contiguous();
                    a.f32.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
                }
                r.arrays[lua_tostring(L, -2)] = std::move(a);
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return r;
}

// ---- nscope.analyze ------------------------------------------------------------------------------------------

int f_analyze(lua_State* L) {
    // stack: plugin, cache, params
    const std::string plugin = arg_string(L, 1, "nscope.analyze");
    const std::vector<CacheData> caches = read_caches(L, 2, "nscope.analyze");
    const CacheData& cache = caches[0];
    nlohmann::json params = nlohmann::json::object();
    if (lua_type(L, 3) == LUA_TTABLE) params = to_json(L, 3, "nscope.analyze params");
    else if (!lua_isnoneornil(L, 3)) arg_fail(3, "nscope.analyze", "parameter table expected, got " + type_name_at(L, 3));
    if (params.is_array() && params.empty()) params = nlohmann::json::object();

    std::vector<std::string> patterns;
    if (params.contains("hooks")) {
        const auto& h = params["hooks"];
        if (h.is_string()) patterns.push_back(h.get<std::string>());
        else if (h.is_array())
            for (const auto& x : h) patterns.push_back(x.is_string() ? x.get<std::string>() : x.dump());
        params.erase("hooks");
    }
    std::vector<std::string> labels;
    if (params.contains("labels")) {
        if (!params["labels"].is_array() || params["labels"].size() != caches.size())
            throw std::invalid_argument("nscope.analyze('" + plugin + "'): 'labels' must list one name per cache (" +
                                        std::to_string(caches.size()) + ")");
        for (const auto& l : params["labels"]) labels.push_back(l.is_string() ? l.get<std::string>() : l.dump());
        params.erase("labels");
    }
    const size_t batch_size = 16;
    AnalysisSpec spec;
    spec.id = params.contains("id") && params["id"].is_string() ? params["id"].get<std::string>() : plugin;
    params.erase("id");
    spec.use = plugin;
    spec.params = params;
    spec.loc = {"nscope.analyze"};
    std::unique_ptr<Analyzer> analyzer = make_analyzer(host(L).plugins(), spec);

    // Hooks fed to the analyzer: the `hooks` patterns (default: every captured hook) plus what it requires.
    std::vector<std::string> fed;
    auto add_matching = [&](const std::string& pattern, bool required) {
        bool any = false;
        for (const auto& h : cache.hooks)
            if (pattern_matches(pattern, h)) {
                any = true;
                if (std::find(fed.begin(), fed.end(), h) == fed.end()) fed.push_back(h);
            }
        if (!any)
            throw std::invalid_argument("nscope.analyze('" + plugin + "'): " +
                                        (required ? "the analyzer needs hooks matching '" : "no captured hook matches '") +
                                        pattern + "'; capture them with model:run(prompts, {hooks={...}})" +
                                        (cache.hooks.empty() ? "" : " (captured: " + join(cache.hooks, ", ") + ")"));
    };
    if (patterns.empty()) fed = cache.hooks;
    for (const auto& p : patterns) add_matching(p, false);
    const std::string role = analysis_role(spec.id, plugin);
    for (const auto& p : call_plugin(role, "required_hooks", [&] { return analyzer->required_hooks(); }))
        add_matching(p, true);

    for (size_t m = 1; m < caches.size(); ++m)
        for (const auto& h : fed)
            if (!caches[m].acts.count(h))
                throw std::invalid_argument("nscope.analyze('" + plugin + "'): cache " + std::to_string(m + 1) +
                                            " has no hook '" + h + "'; run every model with the same hooks");
    const bool spans = call_plugin(role, "spans_models", [&] { return analyzer->spans_models(); });
    if (spans && caches.size() < 2)
        throw std::invalid_argument("nscope.analyze('" + plugin + "'): this analysis compares models; give a list of "
                                    "caches of the same prompts, the reference first: nscope.analyze('" + plugin +
                                    "', {base_cache, other_cache, ...}, params)");
    if (!spans && caches.size() > 1)
        throw std::invalid_argument("nscope.analyze('" + plugin + "'): a list of " + std::to_string(caches.size()) +
                                    " caches is for analyses that compare models (drift, cka with across='models'); "
                                    "give one cache");

    RunContext ctx = cache_context(L, cache, fed);
    if (spans) {
        ctx.models = cache_models(L, caches, fed, labels);
        call_plugin(role, "check", [&] { analyzer->check(ctx); });
    }
    // The cache's model serves the analyzer's own forwards and the unembedding (logit lens, ablations).
    std::optional<SessionModelAccess> access;
    if (cache.model != nullptr && cache.model->session) {
        const LuaModel* m = cache.model;
        access.emplace(*m->session, m->tokenizer ? std::function<std::vector<int64_t>(const std::string&)>(
                                                       [m](const std::string& t) { return m->tokenizer->encode(t, false).ids; })
                                                 : nullptr);
        ctx.model = access->access();
    }
    call_plugin(role, "begin", [&] { analyzer->begin(ctx); });
    std::vector<const CacheData*> fed_caches;
    for (const auto& c : caches) fed_caches.push_back(&c);
    for_each_batch(fed_caches, fed, batch_size, [&](const Batch& b) { call_plugin(role, "consume", [&] { analyzer->consume(b); }); });
    Result result = call_plugin(role, "finish", [&] { return analyzer->finish(); });
    push_result(L, result, plugin);
    return 1;
}

// ---- nscope.export -------------------------------------------------------------------------------------------

int f_export(lua_State* L) {
    // stack: plugin, results | cache, params
    const std::string plugin = arg_string(L, 1, "nscope.export");
    lua_settop(L, 3);
    int cache_idx = 0;
    std::map<std::string, Result> results;
    std::map<std::string, std::string> plugins_of;
    if (is_cache(L, 2)) {
        cache_idx = 2;
    } else if (lua_type(L, 2) == LUA_TTABLE) {
        if (raw_field(L, 2, "_plugin") == LUA_TSTRING) {  // a single result
            const std::string p = lua_tostring(L, -1);
            results[p] = to_result(L, 2, "nscope.export results");
            plugins_of[p] = p;
        } else {
            lua_pushnil(L);
            while (lua_next(L, 2) != 0) {
                // stack: ..., key, result
                if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TTABLE) {
                    lua_pop(L, 2);
                    throw std::invalid_argument("nscope.export: results must map analysis ids to results of nscope.analyze");
                }
                const std::string id = lua_tostring(L, -2);
                results[id] = to_result(L, -1, "nscope.export results." + id);
                plugins_of[id] = raw_field(L, -1, "_plugin") == LUA_TSTRING ? lua_tostring(L, -1) : id;
                lua_pop(L, 2);
            }
        }
        lua_pop(L, 1);
    } else if (!lua_isnil(L, 2)) {
        arg_fail(2, "nscope.export", "results table or cache expected, got " + type_name_at(L, 2));
    }
    nlohmann::json params = nlohmann::json::object();
    if (lua_type(L, 3) == LUA_TTABLE) {
        if (raw_field(L, 3, "cache") != LUA_TNIL) {
            if (!is_cache(L, -1)) throw std::invalid_argument("nscope.export: option 'cache' must be a cache from model:run");
            lua_replace(L, 2);  // the cache takes the place of the results argument (results already read)
            cache_idx = 2;
        } else {
            lua_pop(L, 1);
        }
        params = to_json(L, 3, "nscope.export params", {"cache"});
        if (params.is_array() && params.empty()) params = nlohmann::json::object();
    }
    ExportSpec spec;
    spec.use = plugin;
    spec.params = params;
    spec.loc = {"nscope.export"};
    std::unique_ptr<Exporter> exporter = make_exporter(host(L).plugins(), spec);
    const std::string role = export_role(plugin);

    ScriptHost& h = host(L);
    const fs::path dir = h.run_dir();
    std::optional<CacheData> cache;
    if (cache_idx) cache = read_cache(L, cache_idx, "nscope.export");
    RunContext ctx = cache ? cache_context(L, *cache, cache->hooks) : RunContext{};
    ctx.run_dir = dir.string();
    ctx.host = &host_services();
    call_plugin(role, "begin", [&] { exporter->begin(ctx); });
    if (exporter->wants_activations()) {
        if (!cache)
            throw std::invalid_argument("nscope.export('" + plugin + "') writes activations: pass the cache, "
                                        "nscope.export('" + plugin + "', cache) or {cache=cache}");
        for_each_batch({&*cache}, cache->hooks, 16, [&](const Batch& b) { call_plugin(role, "consume", [&] { exporter->consume(b); }); });
    }
    ExportContext ectx;
    ectx.run_dir = dir;
    ectx.manifest = &h.run_directory()->manifest();
    for (const auto& [id, r] : results) {
        ectx.analysis_order.push_back(id);
        ectx.results[id] = &r;
    }
    ectx.analysis_plugins = plugins_of;
    ectx.run = &ctx;
    ectx.host = &host_services();
    call_plugin(role, "write", [&] { exporter->write(ectx); });
    h.run_directory()->manifest()["exports"].push_back(plugin);
    h.run_directory()->save_manifest();
    h.run_directory()->log("export_done", {{"use", plugin}});
    lua_pushstring(L, dir.c_str());
    return 1;
}

// ---- nscope.recipe -------------------------------------------------------------------------------------------

int f_recipe(lua_State* L) {
    // stack: recipe table, [opts]
    if (lua_type(L, 1) != LUA_TTABLE) arg_fail(1, "nscope.recipe", "recipe table expected, got " + type_name_at(L, 1));
    ScriptHost& h = host(L);
    const nlohmann::json j = to_json(L, 1, "recipe");
    bool dry_run = false;
    if (lua_type(L, 2) == LUA_TTABLE) {
        dry_run = raw_field(L, 2, "dry_run") != LUA_TNIL && lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    Recipe recipe = parse_recipe(json_to_yaml(j), h.options().script.string() + " (nscope.recipe)", fs::current_path());
    RunOptions ro;
    // Sandbox: recipe runs land inside the script's run directory.
    ro.out_root = h.unsafe() ? h.options().out_root : h.run_dir();
    ro.threads = h.options().threads;
    ro.dry_run = dry_run;
    ro.command_line = h.options().command_line;
    const RunOutcome out = run_recipe(h.plugins(), std::move(recipe), ro);
    if (out.run_dir.empty()) lua_pushnil(L);
    else lua_pushstring(L, out.run_dir.c_str());
    return 1;
}

const luaL_Reg kModelMethods[] = {
    {"run", guarded<model_run>},           {"hooks", guarded<model_hooks>},
    {"unembed", guarded<model_unembed>},
    {"tokenize", guarded<model_tokenize>}, {"decode", guarded<model_decode>},
    {"token_text", guarded<model_token_text>}, {"token_id", guarded<model_token_id>},
    {nullptr, nullptr}};

const luaL_Reg kModelMeta_[] = {{"__gc", model_gc},
                                {"__tostring", guarded<model_tostring>},
                                {"__index", guarded<model_index>},
                                {nullptr, nullptr}};

const luaL_Reg kFunctions[] = {{"load", guarded<f_load>},
                               {"analyze", guarded<f_analyze>},
                               {"export", guarded<f_export>},
                               {"recipe", guarded<f_recipe>},
                               {nullptr, nullptr}};

}  // namespace

void register_model_api(lua_State* L, int nscope_idx, int internal_idx) {
    nscope_idx = lua_absindex(L, nscope_idx);
    internal_idx = lua_absindex(L, internal_idx);
    luaL_newmetatable(L, kModelMeta);  // stack: mt
    luaL_setfuncs(L, kModelMeta_, 0);
    lua_newtable(L);                   // stack: mt, methods
    luaL_setfuncs(L, kModelMethods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, internal_idx, "model_methods");
    lua_setfield(L, -2, "methods");    // stack: mt
    lua_pop(L, 1);

    luaL_newmetatable(L, kCacheMeta);  // stack: cache mt
    lua_pushcfunction(L, guarded<cache_index>);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, guarded<cache_tostring>);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    lua_pushvalue(L, nscope_idx);      // stack: nscope
    luaL_setfuncs(L, kFunctions, 0);
    lua_pop(L, 1);
}

}  // namespace nscope::lua

#include "core/run/run_plan.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <ostream>
#include <set>

#include <spdlog/spdlog.h>

#include "core/model/hook_match.h"
#include "core/model/interventions.h"
#include "core/plugin/call_plugin.h"
#include "core/plugin/registry.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/memory.h"
#include "core/util/sha256.h"
#include "core/util/text.h"
#include "nscope/error.h"

namespace nscope {

namespace {

/// Run `f`, prefixing any error with the recipe entry's file:line:column (the error keeps its type).
template <typename F>
auto at_entry(const SourceLoc& loc, F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const InputError& e) {
        throw InputError(loc.text + ": " + e.what());
    } catch (const Error& e) {
        throw RuntimeError(loc.text + ": " + e.what());
    }
}

/// Run host code on behalf of a recipe entry (creating its plugin): an InputError gains the entry's role.
template <typename F>
auto with_role(const std::string& role, F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const InputError& e) {
        throw InputError(role + ": " + e.what());
    }
}

/// A hook pattern and where it comes from (for error messages).
struct PatternSource {
    std::string pattern;
    SourceLoc loc;
};

/// The exact hook names `patterns` select, each pattern checked on its own so an error points at it.
std::vector<std::string> resolve_patterns(const std::vector<HookPoint>& hooks, const std::vector<PatternSource>& patterns,
                                          const std::string& model_note) {
    std::vector<std::string> plain;
    for (const auto& p : patterns) {
        try {
            match_hooks(hooks, {p.pattern});
        } catch (const InputError& e) {
            throw InputError(p.loc.text + ": " + e.what() + model_note);
        }
        plain.push_back(p.pattern);
    }
    return plain.empty() ? std::vector<std::string>{} : match_hooks(hooks, plain);
}

std::vector<std::vector<size_t>> order_analyses(const std::vector<AnalysisSpec>& analyses) {
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < analyses.size(); ++i) index[analyses[i].id] = i;
    std::vector<std::string> ids;
    for (const auto& a : analyses) ids.push_back(a.id);
    for (const auto& a : analyses)
        for (const auto& in : a.inputs) {
            if (!index.count(in))
                throw InputError(a.loc.text + ": analysis '" + a.id + "' names input '" + in +
                                 "', which is not an analysis of this recipe" + did_you_mean(in, ids) +
                                 ". Analyses: " + join(ids, ", ") + ".");
            if (in == a.id) throw InputError(a.loc.text + ": analysis '" + a.id + "' names itself as input");
        }
    // Longest-path layering (Kahn); anything left over is on a cycle.
    std::vector<int> level(analyses.size(), -1);
    bool progress = true;
    while (progress) {
        progress = false;
        for (size_t i = 0; i < analyses.size(); ++i) {
            if (level[i] >= 0) continue;
            int lvl = 0;
            bool ready = true;
            for (const auto& in : analyses[i].inputs) {
                const int l = level[index[in]];
                if (l < 0) ready = false;
                lvl = std::max(lvl, l + 1);
            }
            if (ready) level[i] = lvl, progress = true;
        }
    }
    std::vector<std::string> cyc;
    for (size_t i = 0; i < analyses.size(); ++i)
        if (level[i] < 0) cyc.push_back(analyses[i].id);
    if (!cyc.empty()) {
        const auto& first = analyses[index[cyc.front()]];
        throw InputError(first.loc.text + ": the analyses " + join(cyc, ", ") +
                         " form a cycle through their 'input:' entries; an analysis can only read results of "
                         "analyses that do not depend on it");
    }
    const int depth = analyses.empty() ? 0 : *std::max_element(level.begin(), level.end()) + 1;
    std::vector<std::vector<size_t>> waves(static_cast<size_t>(depth));
    for (size_t i = 0; i < analyses.size(); ++i) waves[static_cast<size_t>(level[i])].push_back(i);
    return waves;
}

MemoryEstimate plan_memory(const Recipe& r, const ModelPlan& mp) {
    std::vector<HookPoint> captured;
    bool logits = false;
    for (const auto& name : mp.captured)
        for (const auto& h : mp.handle.hooks)
            if (h.name == name) captured.push_back(h), logits |= name == "hook_logits";
    const auto batch = static_cast<int64_t>(std::max<size_t>(1, std::min(r.batch_size, r.prompts.size())));
    size_t longest = 1;  // the prompts are tokenized by now: the estimate is at the real longest prompt
    for (const auto& ids : mp.prompts->ids) longest = std::max(longest, ids.size());
    return estimate_memory(mp.handle.info, captured, parse_model_dtype(mp.spec.dtype), batch,
                           static_cast<int64_t>(longest), logits, current_rss_bytes());
}

/// The plan-time context of an analysis on one model: its hooks, the model and the tokenized prompts; no run.
RunContext plan_context(const ModelPlan& mp, const std::vector<std::string>& hooks) {
    RunContext ctx;
    ctx.model_name = mp.spec.ref;
    ctx.model_info = mp.handle.info.to_json();
    ctx.hooks = model_context(mp, hooks).hooks;
    for (const auto& p : mp.prompts->infos) ctx.prompts.push_back(&p);
    return ctx;
}

/// Analyses that span models need a `models:` run and stand apart from the per-model analyses' `input:` DAG.
void check_spanning(const Recipe& r, const std::vector<bool>& spans) {
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < r.analyses.size(); ++i) index[r.analyses[i].id] = i;
    for (size_t i = 0; i < r.analyses.size(); ++i) {
        const AnalysisSpec& a = r.analyses[i];
        if (spans[i] && r.models.size() < 2)
            throw InputError(a.loc.text + ": analysis '" + a.id + "' (" + a.use + ") compares the models of a run, and " +
                             "this recipe names one model; list the reference model first and the others after it " +
                             "under `models:` (docs/recipes.md)");
        for (const auto& in : a.inputs) {
            const size_t j = index.at(in);
            if (spans[i] != spans[j])
                throw InputError(a.loc.text + ": analysis '" + a.id + "' names input '" + in + "', but " +
                                 (spans[i] ? "'" + a.id + "'" : "'" + in + "'") +
                                 " spans the models of the run (one result for the whole run) and the other runs "
                                 "once per model; remove the 'input:' entry");
        }
    }
}

}  // namespace

std::unique_ptr<Analyzer> make_analyzer(const PluginRegistry& plugins, const AnalysisSpec& spec) {
    const std::string role = analysis_role(spec.id, spec.use);
    return at_entry(spec.loc, [&] {
        auto a = with_role(role, [&] { return plugins.create_analyzer(spec.use); });
        call_plugin(role, "configure", [&] { a->configure(spec.params); });
        return a;
    });
}

std::unique_ptr<Exporter> make_exporter(const PluginRegistry& plugins, const ExportSpec& spec) {
    const std::string role = export_role(spec.use);
    return at_entry(spec.loc, [&] {
        auto e = with_role(role, [&] { return plugins.create_exporter(spec.use); });
        call_plugin(role, "configure", [&] { e->configure(spec.params); });
        return e;
    });
}

RunPlan plan_run(const PluginRegistry& plugins, Recipe recipe) {
    RunPlan plan;
    plan.waves = order_analyses(recipe.analyses);

    // Plugins exist and accept their parameters; collect the hooks each analyzer needs of its own.
    std::vector<PatternSource> recipe_patterns;
    for (size_t i = 0; i < recipe.hooks.size(); ++i) recipe_patterns.push_back({recipe.hooks[i], recipe.hook_locs[i]});
    std::vector<std::vector<PatternSource>> required(recipe.analyses.size());
    std::vector<bool> spans(recipe.analyses.size(), false);
    std::vector<std::unique_ptr<Analyzer>> checkers;  // throwaway instances for the plan-time checks
    for (size_t i = 0; i < recipe.analyses.size(); ++i) {
        const AnalysisSpec& a = recipe.analyses[i];
        checkers.push_back(make_analyzer(plugins, a));
        Analyzer* analyzer = checkers.back().get();
        spans[i] = at_entry(a.loc, [&] {
            return call_plugin(analysis_role(a.id, a.use), "spans_models", [&] { return analyzer->spans_models(); });
        });
        const auto& p = plugins.require(a.use, PluginKind::Analyzer);
        plan.analyzer_versions.push_back(p.id + "@" + p.version);
        const auto hooks = at_entry(a.loc, [&] {
            return call_plugin(analysis_role(a.id, a.use), "required_hooks", [&] { return analyzer->required_hooks(); });
        });
        for (const auto& h : hooks) required[i].push_back({h, {a.loc.text + ": hooks needed by analysis '" + a.id + "'"}});
    }
    check_spanning(recipe, spans);
    for (size_t w = 0; w < plan.waves.size(); ++w) {  // the lockstep analyses leave the per-model waves
        std::vector<size_t> keep;
        for (size_t i : plan.waves[w]) (spans[i] ? plan.spanning : keep).push_back(i);
        plan.waves[w] = std::move(keep);
    }
    plan.waves.erase(std::remove_if(plan.waves.begin(), plan.waves.end(), [](const auto& w) { return w.empty(); }),
                     plan.waves.end());
    for (const auto& e : recipe.exports) {
        make_exporter(plugins, e);
        const auto& p = plugins.require(e.use, PluginKind::Exporter);
        plan.exporter_versions.push_back(p.id + "@" + p.version);
    }

    for (const auto& spec : recipe.models) {
        ModelPlan mp;
        mp.spec = spec;
        try {
            mp.handle = describe_model(plugins, spec.ref);
        } catch (const InputError& e) {
            throw InputError(spec.loc.text + ": " + e.what());
        }
        for (const auto& e : recipe.saes) {  // `<hook>.sae` points, checked against the hook widths from config.json
            try {
                mp.handle.hooks = hooks_with_saes(mp.handle.hooks, {e.sae});
            } catch (const InputError& err) {
                throw InputError(e.loc.text + ": " + err.what());
            }
        }
        const std::string note = recipe.models.size() > 1 ? " (model " + spec.ref + ")" : "";
        mp.export_hooks = resolve_patterns(mp.handle.hooks, recipe_patterns, note);
        std::vector<std::string> all = mp.export_hooks, lockstep;
        for (size_t i = 0; i < required.size(); ++i) {
            std::vector<PatternSource> own = recipe_patterns;
            own.insert(own.end(), required[i].begin(), required[i].end());
            mp.analysis_hooks.push_back(resolve_patterns(mp.handle.hooks, own, note));
            auto& to = spans[i] ? lockstep : all;
            to.insert(to.end(), mp.analysis_hooks.back().begin(), mp.analysis_hooks.back().end());
        }
        if (!all.empty()) mp.captured = match_hooks(mp.handle.hooks, all);  // the union, in forward order
        if (!lockstep.empty()) mp.lockstep_captured = match_hooks(mp.handle.hooks, lockstep);
        if (!mp.handle.files.tokenizer_json.empty()) mp.tokenizer_sha256 = sha256_file(mp.handle.files.tokenizer_json);
        for (const auto& iv : recipe.interventions) {  // against the model's dims: no run dir for a bad index
            try {
                validate_intervention(mp.handle.hooks, iv.spec, recipe.prompts.size());
            } catch (const InputError& e) {
                throw InputError(iv.loc.text + ": " + e.what() + note);
            }
            mp.interventions.push_back(iv.spec);
        }
        for (const auto& p : recipe.prompts)
            for (int64_t id : p.ids)
                if (id >= mp.handle.info.vocab_size)
                    throw InputError(p.loc.text + ": token id " + std::to_string(id) + " is outside the vocabulary of " +
                                     spec.ref + " (size " + std::to_string(mp.handle.info.vocab_size) + ")");
        for (const auto& p : recipe.prompts)
            if (p.random && p.random->hi > mp.handle.info.vocab_size)
                throw InputError(p.loc.text + ": random prompts: range [" + std::to_string(p.random->lo) + ", " +
                                 std::to_string(p.random->hi) + ") is outside the vocabulary of " + spec.ref + " (size " +
                                 std::to_string(mp.handle.info.vocab_size) + ")");
        if (recipe.gradient) {
            const GradientSpec& g = *recipe.gradient;
            if (spec.dtype != "float32")
                throw InputError(g.loc.text + ": gradients need the model in float32, and " + spec.ref + " runs in " +
                                 spec.dtype + "; set `dtype: float32`");
            if (mp.captured.empty())
                throw InputError(g.loc.text + ": 'gradient' is delivered at the captured hooks, and the recipe captures "
                                 "none; add `hooks:` (for example blocks.*.mlp.hook_post)");
            for (const auto& t : g.tokens) {
                if (t.id && *t.id >= mp.handle.info.vocab_size)
                    throw InputError(t.loc.text + ": token id " + std::to_string(*t.id) + " is outside the vocabulary of " +
                                     spec.ref + " (size " + std::to_string(mp.handle.info.vocab_size) + ")");
                if (!t.id && mp.handle.files.tokenizer_json.empty())
                    throw InputError(t.loc.text + ": a token given as text needs a tokenizer, and " + spec.ref +
                                     " has no tokenizer.json; give its id");
                if (!t.label.empty())
                    for (const auto& p : recipe.prompts)
                        if (!p.labels.is_object() || !p.labels.contains(t.label) || !p.labels[t.label].is_string())
                            throw InputError(t.loc.text + ": the token comes from prompt label '" + t.label + "', and " +
                                             p.loc.text + " has no such text label");
            }
        }
        if (mp.handle.files.tokenizer_json.empty()) {
            for (const auto& p : recipe.prompts)
                if (!p.has_ids && !p.random)
                    throw InputError(p.loc.text + ": text prompts need a tokenizer, but " + mp.handle.files.dir.string() +
                                     " has no tokenizer.json; add one or give prompts as 'ids'");
        }
        const auto t0 = std::chrono::steady_clock::now();
        if (!mp.handle.files.tokenizer_json.empty())
            mp.tokenizer = std::make_shared<const Tokenizer>(Tokenizer::from_file(mp.handle.files.tokenizer_json));
        mp.prompts = std::make_shared<const PromptSet>(tokenize_prompts(recipe, mp.tokenizer.get(), mp.handle.info.vocab_size));
        mp.tokenize_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        mp.memory = plan_memory(recipe, mp);
        plan.models.push_back(std::move(mp));
    }
    // Plan-time checks of the analyzers (Analyzer::check): per model, or once over every model.
    for (size_t i = 0; i < recipe.analyses.size(); ++i) {
        const AnalysisSpec& a = recipe.analyses[i];
        auto check = [&](const RunContext& ctx) {
            at_entry(a.loc, [&] { call_plugin(analysis_role(a.id, a.use), "check", [&] { checkers[i]->check(ctx); }); });
        };
        if (spans[i]) {
            RunContext ctx = plan_context(plan.models[0], plan.models[0].analysis_hooks[i]);
            for (const auto& mp : plan.models) ctx.models.push_back(model_context(mp, mp.analysis_hooks[i]));
            check(ctx);
        } else {
            for (const auto& mp : plan.models) check(plan_context(mp, mp.analysis_hooks[i]));
        }
    }
    plan.recipe = std::move(recipe);
    return plan;
}

PromptSet tokenize_prompts(const Recipe& r, const Tokenizer* tok, int64_t vocab_size) {
    PromptSet set;
    size_t truncated = 0;
    bool any_types = false;
    for (const auto& p : r.prompts) any_types |= !p.type_ids.empty();
    for (size_t i = 0; i < r.prompts.size(); ++i) {
        const PromptSpec& p = r.prompts[i];
        std::vector<int64_t> ids =
            p.random ? random_prompt_ids(*p.random, vocab_size, [&](int64_t id) { return tok && tok->is_special(id); })
            : p.has_ids ? p.ids
                        : tok->encode(p.text, r.add_special_tokens).ids;
        if (ids.empty())
            throw InputError(p.loc.text + ": prompt " + std::to_string(i) + " has no tokens (empty text?)");
        if (ids.size() > r.max_tokens) {
            ids.resize(r.max_tokens);
            ++truncated;
        }
        PromptInfo info;
        info.index = i;
        info.text = (p.has_ids || p.random) && tok ? tok->decode(ids, false) : p.text;
        info.labels = p.labels;
        for (int64_t id : ids) info.tokens.push_back(token_text_or_id(tok, id));
        set.tokens += ids.size();
        if (any_types) {
            std::vector<int64_t> types = p.type_ids;
            types.resize(ids.size(), 0);
            set.type_ids.push_back(std::move(types));
        }
        set.ids.push_back(std::move(ids));
        set.infos.push_back(std::move(info));
    }
    if (truncated)
        spdlog::warn("{} prompt(s) were longer than max_tokens={} and were truncated", truncated, r.max_tokens);
    return set;
}

ModelContext model_context(const ModelPlan& mp, const std::vector<std::string>& hooks) {
    ModelContext m;
    m.label = mp.spec.label;
    m.ref = mp.spec.ref;
    m.model_info = mp.handle.info.to_json();
    for (const auto& name : hooks)
        for (const auto& h : mp.handle.hooks)
            if (h.name == name) m.hooks.push_back(h);
    m.tokenizer_sha256 = mp.tokenizer_sha256;
    return m;
}

void print_plan(const RunPlan& plan, std::ostream& os) {
    const Recipe& r = plan.recipe;
    os << "recipe: " << r.name << (r.file.empty() ? "" : " (" + r.file.string() + ")") << "\n";
    os << "prompts: " << r.prompts.size() << " in " << (r.prompts.size() + r.batch_size - 1) / r.batch_size
       << " batches of up to " << r.batch_size << " (max_tokens " << r.max_tokens << ")\n";
    for (const auto& m : plan.models) {
        os << "model: " << m.spec.ref << " [" << m.handle.info.architecture << " via " << m.handle.plugin->id << ", "
           << m.spec.dtype << ", " << m.handle.info.n_layers << " layers, d_model " << m.handle.info.d_model << "]\n";
        os << "  hooks captured: " << m.captured.size() << "\n";
        for (const auto& h : m.captured) os << "    " << h << "\n";
        for (const auto& iv : m.interventions) os << "  intervention: " << iv.op << " at " << iv.hook << "\n";
        os << "  memory estimate at " << m.memory.batch << " x " << m.memory.tokens
           << " tokens: " << m.memory.breakdown() << "\n";
    }
    if (r.gradient) os << "gradient: d " << r.gradient->metric << " / d activation at every captured hook\n";
    for (size_t w = 0; w < plan.waves.size(); ++w) {
        os << "pass " << (w + 1) << ":";
        for (size_t i : plan.waves[w]) os << " " << r.analyses[i].id << " (" << r.analyses[i].use << ")";
        os << "\n";
    }
    if (!plan.spanning.empty()) {
        os << "lockstep pass over the " << plan.models.size() << " models (all loaded at once):";
        for (size_t i : plan.spanning) os << " " << r.analyses[i].id << " (" << r.analyses[i].use << ")";
        os << "\n";
    }
    os << "exports:";
    for (const auto& e : r.exports) os << " " << e.use;
    os << (r.exports.empty() ? " none" : "") << "\n";
    os << "output: runs/" << r.name << "/<run-id>/\n";
}

void check_memory_budget(const RunPlan& plan, uint64_t max_memory) {
    const bool machine = max_memory == 0;
    if (machine) max_memory = mem_available_bytes();
    if (max_memory == 0) return;  // no /proc/meminfo: nothing to compare with
    if (!plan.spanning.empty()) {
        // The lockstep pass keeps every model loaded, and one model's forward and captures alive at a time.
        uint64_t weights = 0, peak = 0, runtime = 0;
        for (const auto& m : plan.models) {
            weights += m.memory.weights;
            peak = std::max(peak, m.memory.forward + m.memory.captures);
            runtime = std::max(runtime, m.memory.runtime);
        }
        const uint64_t total = weights + peak + runtime;
        if (total > max_memory) {
            const AnalysisSpec& a = plan.recipe.analyses[plan.spanning.front()];
            throw InputError(a.loc.text + ": analysis '" + a.id + "' compares the " + std::to_string(plan.models.size()) +
                             " models in lockstep, which keeps them all loaded: weights " +
                             human_bytes(static_cast<double>(weights)) + " + one forward and its captures " +
                             human_bytes(static_cast<double>(peak)) + " + runtime " +
                             human_bytes(static_cast<double>(runtime)) + " = " + human_bytes(static_cast<double>(total)) +
                             ", above the memory limit of " + human_bytes(static_cast<double>(max_memory)) +
                             (machine ? " (the machine's available memory)" : " (--max-memory)") +
                             ". To fit: compare fewer models, load them as int8 (dtype: int8) or bfloat16, or lower "
                             "batch_size / max_tokens" + (machine ? "; or raise the limit with --max-memory." : "."));
        }
    }
    for (const auto& m : plan.models) {
        const MemoryEstimate& e = m.memory;
        if (e.total() <= max_memory) continue;
        std::string knobs = "lower batch_size (now " + std::to_string(plan.recipe.batch_size) +
                            "; the forward and the captures scale with it) or max_tokens";
        if (e.captures > 0)
            knobs += "; capture fewer hooks (the largest, " + e.largest_hook + ", is " +
                     human_bytes(static_cast<double>(e.largest_hook_bytes)) +
                     " per batch; analyzers and the streaming 'activations' export need no more than the hooks they read)";
        if (m.spec.dtype != "int8") knobs += "; load the weights as int8 (dtype: int8) or bfloat16";
        throw InputError(m.spec.loc.text + ": the run of " + m.spec.ref + " (" + m.spec.dtype + ") is estimated at " +
                         e.breakdown() + " at " + std::to_string(e.batch) + " x " + std::to_string(e.tokens) +
                         " tokens, above the memory limit of " + human_bytes(static_cast<double>(max_memory)) +
                         (machine ? " (the machine's available memory)" : " (--max-memory)") + ". To fit: " + knobs +
                         (machine ? "; or raise the limit with --max-memory if the estimate is too cautious." : "."));
    }
}

}  // namespace nscope

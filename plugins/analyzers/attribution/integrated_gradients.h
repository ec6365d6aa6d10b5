// `attribution` with `method: integrated_gradients` — integrated gradients over MLP neurons, and the "knowledge
// neurons" of Dai et al. (2022, "Knowledge Neurons in Pretrained Transformers").
//
// Per prompt and selected layer L, the activation x = blocks.L.mlp.hook_post (at the prompt's last position, or
// at every position) is scaled along the straight path from the baseline x' = 0 to x, and the gradient of the
// metric is integrated along it with a `steps`-point Riemann sum:
//     A_i = (x_i − x'_i) · Σ_k w_k ∂M/∂x_i (x' + α_k (x − x'))
// Each step is one row of a batched forward (op `scale`, factor α_k, on that row only), with the gradient taken
// at the scaled activation. By the fundamental theorem of calculus Σ_i A_i → M(x) − M(x') as the steps grow
// ("completeness"); the error of the sum is reported per prompt and layer.
//
// Knowledge neurons: a neuron is attributed for a prompt when A ≥ threshold × the prompt's largest A (over every
// selected layer); a concept's (the prompts sharing a `label` value) knowledge neurons are those attributed for
// at least a `share` fraction of its prompts.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nscope/sdk.h>

#include "nscope_common/hooks.h"
#include "nscope_common/metric_spec.h"
#include "nscope_common/params.h"

namespace nscope::attribution {

/// The quadrature of ∫_0^1 f(α) dα: points α_k with weights w_k.
struct Quadrature {
    std::vector<double> alpha, weight;
};

/// `steps`-point rules on [0, 1]: left / right Riemann sums, the midpoint sum, and the trapezoid rule (steps
/// intervals, steps + 1 points).
inline Quadrature quadrature(const std::string& rule, int64_t steps) {
    Quadrature q;
    const double m = static_cast<double>(steps);
    if (rule == "trapezoid") {
        for (int64_t k = 0; k <= steps; ++k) {
            q.alpha.push_back(static_cast<double>(k) / m);
            q.weight.push_back((k == 0 || k == steps) ? 0.5 / m : 1.0 / m);
        }
        return q;
    }
    const double shift = rule == "left" ? 0.0 : rule == "right" ? 1.0 : 0.5;
    for (int64_t k = 0; k < steps; ++k) {
        q.alpha.push_back((static_cast<double>(k) + shift) / m);
        q.weight.push_back(1.0 / m);
    }
    return q;
}

class IntegratedGradients {
public:
    static std::vector<std::string> keys() {
        return {"steps", "baseline", "rule", "positions", "label", "threshold", "share", "batch_size"};
    }

    void configure(const common::ParamReader& p, const std::vector<std::string>& hook_patterns) {
        steps_ = p.integer("steps", 20, 1, 100000);
        baseline_ = p.choice("baseline", "zero", {"zero"});
        rule_ = p.choice("rule", "midpoint", {"midpoint", "right", "left", "trapezoid"});
        positions_ = p.choice("positions", "last", {"last", "all"});
        if (p.has("label") && (!p.raw("label").is_string() || p.raw("label").get<std::string>().empty()))
            p.fail("label", "must be the name of a prompt label (its values are the concepts), got " +
                                common::describe(p.raw("label")));
        label_ = p.has("label") ? p.raw("label").get<std::string>() : "";
        threshold_ = p.number("threshold", 0.2, 0.0, 1.0);
        share_ = p.number("share", 0.5, 0.0, 1.0);
        batch_size_ = static_cast<size_t>(p.integer("batch_size", 32, 1, 4096));
        for (const auto& h : hook_patterns) {
            const std::string tail = ".mlp.hook_post";
            if (h.size() < tail.size() || h.compare(h.size() - tail.size(), tail.size(), tail) != 0)
                p.fail("hooks", "names '" + h + "', which is not an MLP neuron hook: integrated_gradients scales "
                                "the MLP neurons blocks.L.mlp.hook_post (e.g. hooks: [\"blocks.*.mlp.hook_post\"] or "
                                "[\"blocks.{2..3}.mlp.hook_post\"])");
        }
        patterns_ = hook_patterns;
        metric_.configure(p);
    }

    void begin(const RunContext& ctx) {
        if (ctx.model == nullptr || !ctx.model->run)
            throw InputError("attribution (method: integrated_gradients) needs the run's model for its forwards");
        model_ = ctx.model;
        const int64_t n_layers = ctx.model_info.value("n_layers", int64_t{0});
        if (n_layers <= 0) throw InputError("attribution: the model info has no n_layers");
        layers_.clear();
        for (int64_t l = 0; l < n_layers; ++l) {
            const std::string hook = "blocks." + std::to_string(l) + ".mlp.hook_post";
            if (patterns_.empty() ||
                std::any_of(patterns_.begin(), patterns_.end(), [&](const auto& pt) { return common::glob_match(pt, hook); }))
                layers_.push_back(l);
        }
        if (layers_.empty())
            throw InputError("attribution (integrated_gradients): no MLP layer of this " + std::to_string(n_layers) +
                             "-layer model matches hooks [" + common::join(patterns_) + "]");
        metric_.begin(model_, "attribution");
    }

    void collect(const Batch& batch) {
        for (size_t r = 0; r < batch.rows; ++r) {
            const PromptInfo* info = r < batch.prompts.size() ? batch.prompts[r] : nullptr;
            const auto index = static_cast<int64_t>(info ? info->index : r);
            const int64_t* row = batch.input_ids + r * batch.positions;
            ids_[index].assign(row, row + batch.length(r));
            labels_[index] = info ? info->labels : nlohmann::json();
        }
    }

    Result finish(size_t top) {
        if (ids_.empty()) throw InputError("attribution (integrated_gradients): the run has no prompt");
        const auto t0 = std::chrono::steady_clock::now();
        const Quadrature quad = quadrature(rule_, steps_);
        const size_t P = ids_.size(), L = layers_.size();
        std::vector<int64_t> prompt_index;
        for (const auto& [i, _] : ids_) prompt_index.push_back(i);

        // Rows: first one unscaled row per prompt (the activations x, M(x), and for the trapezoid rule the gradient
        // at α = 1), then per layer and point of the path (the baseline α = 0 first: M(x')) one row per prompt, so
        // that the rows of a forward that share a layer and α share one `scale` intervention.
        struct Row {
            size_t prompt, layer;  // layer: index into layers_, or L for the unscaled row
            double alpha, weight;
        };
        std::vector<std::pair<double, double>> path{{0.0, 0.0}};  // (α, weight); α = 1 comes from the unscaled row
        double w_one = 0.0;
        for (size_t k = 0; k < quad.alpha.size(); ++k) {
            if (quad.alpha[k] == 0.0) path[0].second += quad.weight[k];
            else if (quad.alpha[k] == 1.0) w_one += quad.weight[k];
            else path.emplace_back(quad.alpha[k], quad.weight[k]);
        }
        std::vector<Row> rows;
        for (size_t p = 0; p < P; ++p) rows.push_back({p, L, 1.0, 0.0});
        for (size_t l = 0; l < L; ++l)
            for (const auto& [alpha, weight] : path)
                for (size_t p = 0; p < P; ++p) rows.push_back({p, l, alpha, weight});

        std::vector<std::string> hooks;
        for (int64_t l : layers_) hooks.push_back("blocks." + std::to_string(l) + ".mlp.hook_post");
        // Per prompt: x per layer [positions, d_mlp] (as captured), the attributions, the metrics.
        std::vector<std::vector<OwnedTensor>> x(P, std::vector<OwnedTensor>(L));
        std::vector<std::vector<std::vector<double>>> attr(P, std::vector<std::vector<double>>(L));
        std::vector<double> m_clean(P, 0.0);
        std::vector<std::vector<double>> m_base(P, std::vector<double>(L, 0.0));
        std::vector<Metric> metrics;
        for (int64_t i : prompt_index) metrics.push_back(metric_.resolve(labels_.at(i), i));
        size_t forwards = 0;

        for (size_t start = 0; start < rows.size(); start += batch_size_) {
            const size_t end = std::min(rows.size(), start + batch_size_);
            ModelCall call;
            call.metric = metrics[rows[start].prompt];
            call.metric->tokens.clear();
            call.metric->row_tokens.clear();
            const bool per_row_tokens = !metrics[rows[start].prompt].tokens.empty();
            std::set<size_t> grad_layers;
            std::map<std::pair<size_t, double>, std::vector<size_t>> edits;  // (layer, α) -> rows of this call
            bool has_clean = false;
            for (size_t j = start; j < end; ++j) {
                const Row& row = rows[j];
                call.rows.push_back(ids_.at(prompt_index[row.prompt]));
                if (per_row_tokens) call.metric->row_tokens.push_back(metrics[row.prompt].tokens);
                if (row.layer == L) {
                    has_clean = true;
                    continue;
                }
                grad_layers.insert(row.layer);
                edits[{row.layer, row.alpha}].push_back(j - start);
            }
            for (const auto& [key, members] : edits) {
                nlohmann::json edit = {{"hook", hooks[key.first]}, {"op", "scale"}, {"factor", key.second},
                                       {"prompts", members}};
                if (positions_ == "last") edit["positions"] = {-1};
                call.interventions.push_back(std::move(edit));
            }
            if (has_clean) {
                call.capture = hooks;
                if (w_one != 0.0)
                    for (size_t l = 0; l < L; ++l) grad_layers.insert(l);
            }
            for (size_t l : grad_layers) call.gradients.push_back(hooks[l]);
            const ModelOutput out = model_->run(call);
            ++forwards;
            for (size_t j = start; j < end; ++j) {
                const Row& row = rows[j];
                const size_t r = j - start;
                if (row.layer == L) {
                    m_clean[row.prompt] = out.metric[r];
                    for (size_t l = 0; l < L; ++l) {
                        x[row.prompt][l] = slice_row(out.captures.at(hooks[l]), r, out.lengths[r]);
                        attr[row.prompt][l].assign(static_cast<size_t>(x[row.prompt][l].shape[1]), 0.0);
                        if (w_one != 0.0) accumulate(row.prompt, l, out.gradients.at(hooks[l]), r, w_one, x, attr);
                    }
                    continue;
                }
                if (row.alpha == 0.0) m_base[row.prompt][row.layer] = out.metric[r];
                if (row.weight != 0.0)
                    accumulate(row.prompt, row.layer, out.gradients.at(hooks[row.layer]), r, row.weight, x, attr);
            }
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        return make_result(prompt_index, hooks, attr, m_clean, m_base, top, rows.size(), forwards, seconds);
    }

private:
    /// Row r of a [rows, positions, m] tensor, its first `len` positions: [len, m].
    static OwnedTensor slice_row(const OwnedTensor& t, size_t r, int64_t len) {
        const auto Pn = static_cast<size_t>(t.shape[1]), M = static_cast<size_t>(t.shape[2]);
        OwnedTensor o;
        o.shape = {len, static_cast<int64_t>(M)};
        const float* src = t.data.data() + r * Pn * M;
        o.data.assign(src, src + static_cast<size_t>(len) * M);
        return o;
    }

    /// attr[p][l][i] += w · Σ_q (x − x')[q, i] · g[q, i] over the scaled positions q.
    void accumulate(size_t p, size_t l, const OwnedTensor& g, size_t r, double w,
                    const std::vector<std::vector<OwnedTensor>>& x, std::vector<std::vector<std::vector<double>>>& attr) const {
        const OwnedTensor& xs = x[p][l];
        const auto len = static_cast<size_t>(xs.shape[0]), M = static_cast<size_t>(xs.shape[1]);
        const auto Pn = static_cast<size_t>(g.shape[1]);
        const size_t first = positions_ == "last" ? len - 1 : 0;
        for (size_t q = first; q < len; ++q) {
            const float* gv = g.data.data() + (r * Pn + q) * M;
            const float* xv = xs.data.data() + q * M;
            for (size_t i = 0; i < M; ++i) attr[p][l][i] += w * static_cast<double>(xv[i]) * gv[i];
        }
    }

    Result make_result(const std::vector<int64_t>& prompt_index, const std::vector<std::string>& hooks,
                       const std::vector<std::vector<std::vector<double>>>& attr, const std::vector<double>& m_clean,
                       const std::vector<std::vector<double>>& m_base, size_t top, size_t n_rows, size_t forwards,
                       double seconds) const {
        const size_t P = prompt_index.size(), L = hooks.size();
        Result res;
        // Completeness per prompt and layer.
        Table comp;
        comp.columns = {"prompt", "layer", "metric", "metric_baseline", "sum_attribution", "error", "relative_error"};
        double max_abs = 0, max_rel = 0, sum_rel = 0;
        size_t n_rel = 0;
        for (size_t p = 0; p < P; ++p)
            for (size_t l = 0; l < L; ++l) {
                double sum = 0;
                for (double a : attr[p][l]) sum += a;
                const double delta = m_clean[p] - m_base[p][l];
                const double err = std::abs(sum - delta);
                nlohmann::json rel = nullptr;
                if (std::abs(delta) > 1e-12) {
                    const double re = err / std::abs(delta);
                    rel = re;
                    max_rel = std::max(max_rel, re), sum_rel += re, ++n_rel;
                }
                max_abs = std::max(max_abs, err);
                comp.add_row({prompt_index[p], layer_of(hooks[l]), m_clean[p], m_base[p][l], sum, err, rel});
            }
        res.set_table("completeness", std::move(comp));

        // Arrays H.effect [prompts, d_mlp]; per prompt, the largest attribution over every layer.
        std::vector<double> prompt_max(P, -std::numeric_limits<double>::infinity());
        for (size_t p = 0; p < P; ++p)
            for (size_t l = 0; l < L; ++l)
                for (double a : attr[p][l]) prompt_max[p] = std::max(prompt_max[p], a);
        struct Top {
            size_t layer, neuron;
            double mean;
        };
        std::vector<Top> tops;
        for (size_t l = 0; l < L; ++l) {
            const size_t M = attr[0][l].size();
            std::vector<float> flat(P * M);
            for (size_t i = 0; i < M; ++i) {
                double s = 0;
                for (size_t p = 0; p < P; ++p) {
                    flat[p * M + i] = static_cast<float>(attr[p][l][i]);
                    s += attr[p][l][i];
                }
                tops.push_back({l, i, s / static_cast<double>(P)});
            }
            res.set_array(hooks[l] + ".effect",
                          NdArray::floats({static_cast<int64_t>(P), static_cast<int64_t>(M)}, std::move(flat)));
        }
        const size_t k = std::min(top, tops.size());
        std::partial_sort(tops.begin(), tops.begin() + static_cast<ptrdiff_t>(k), tops.end(), [](const Top& a, const Top& b) {
            return std::abs(a.mean) > std::abs(b.mean) ||
                   (std::abs(a.mean) == std::abs(b.mean) && (a.layer < b.layer || (a.layer == b.layer && a.neuron < b.neuron)));
        });
        Table top_table;
        top_table.columns = {"layer", "neuron", "mean_attribution"};
        nlohmann::json fx = nlohmann::json::array(), fy = nlohmann::json::array();
        for (size_t i = 0; i < k; ++i) {
            const int layer = layer_of(hooks[tops[i].layer]);
            top_table.add_row({layer, tops[i].neuron, tops[i].mean});
            if (i < 30) fx.push_back("L" + std::to_string(layer) + " #" + std::to_string(tops[i].neuron)), fy.push_back(tops[i].mean);
        }
        res.set_table("top_neurons", std::move(top_table));
        res.set_figure("top_neurons", {{"kind", "bar"}, {"title", "integrated gradients: mean attribution over prompts"},
                                       {"x", fx}, {"y", fy}, {"x_label", "neuron"}, {"y_label", "mean attribution"}});

        // Knowledge neurons per concept.
        std::map<std::string, std::vector<size_t>> concepts;
        size_t unlabelled = 0;
        for (size_t p = 0; p < P; ++p) {
            if (label_.empty()) {
                concepts["all"].push_back(p);
                continue;
            }
            const auto& lab = labels_.at(prompt_index[p]);
            if (!lab.is_object() || !lab.contains(label_)) {
                ++unlabelled;
                continue;
            }
            const auto& v = lab[label_];
            concepts[v.is_string() ? v.get<std::string>() : v.dump()].push_back(p);
        }
        Table kn;
        kn.columns = {"concept", "hook", "layer", "neuron", "prompts", "attributed", "fraction", "mean_attribution"};
        nlohmann::json kn_json = nlohmann::json::object();
        for (const auto& [name, members] : concepts) {
            nlohmann::json list = nlohmann::json::array();
            for (size_t l = 0; l < L; ++l)
                for (size_t i = 0; i < attr[members[0]][l].size(); ++i) {
                    size_t hit = 0;
                    double s = 0;
                    for (size_t p : members) {
                        const double a = attr[p][l][i];
                        s += a;
                        if (prompt_max[p] > 0 && a >= threshold_ * prompt_max[p]) ++hit;
                    }
                    const double frac = static_cast<double>(hit) / static_cast<double>(members.size());
                    if (hit == 0 || frac < share_) continue;
                    const double mean = s / static_cast<double>(members.size());
                    const int layer = layer_of(hooks[l]);
                    kn.add_row({name, hooks[l], layer, i, members.size(), hit, frac, mean});
                    list.push_back({{"hook", hooks[l]}, {"layer", layer}, {"neuron", i}, {"attributed", hit},
                                    {"fraction", frac}, {"mean_attribution", mean}});
                }
            kn_json[name] = {{"prompts", members.size()}, {"neurons", std::move(list)}};
        }
        res.set_table("knowledge_neurons", std::move(kn));
        res.data["knowledge_neurons"] = std::move(kn_json);
        res.data["prompts"] = prompt_index;
        res.data["dims"] = nlohmann::json::object();
        for (const auto& h : hooks) res.data["dims"][h + ".effect"] = {"prompt", "neuron"};
        res.data["summary"] = {
            {"method", "integrated_gradients"}, {"metric", metric_.kind()}, {"steps", steps_}, {"rule", rule_},
            {"baseline", baseline_}, {"positions", positions_}, {"prompts", P}, {"layers", L},
            {"threshold", threshold_}, {"share", share_}, {"label", label_.empty() ? nlohmann::json() : nlohmann::json(label_)},
            {"concepts", concepts.size()}, {"unlabelled_prompts", unlabelled},
            {"completeness", {{"max_error", max_abs}, {"max_relative_error", n_rel ? nlohmann::json(max_rel) : nlohmann::json()},
                              {"mean_relative_error", n_rel ? nlohmann::json(sum_rel / static_cast<double>(n_rel)) : nlohmann::json()}}},
            {"rows", n_rows}, {"forwards", forwards}, {"seconds", seconds}};
        return res;
    }

    static int layer_of(const std::string& hook) { return common::hook_layer(hook); }

    int64_t steps_ = 20;
    std::string baseline_, rule_, positions_, label_;
    double threshold_ = 0.2, share_ = 0.5;
    size_t batch_size_ = 32;
    std::vector<std::string> patterns_;
    std::vector<int64_t> layers_;
    common::MetricSpec metric_;
    const ModelAccess* model_ = nullptr;
    std::map<int64_t, std::vector<int64_t>> ids_;
    std::map<int64_t, nlohmann::json> labels_;
};

}  // namespace nscope::attribution

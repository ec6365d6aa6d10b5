// `polysemantic` analyzer: how many distinct concepts drive each neuron. Two sources of concepts:
//
// With `label: KEY` (the values of a prompt label are the concepts): per neuron j and concept c, the
// standardized effect d_c = (mean_c - mean_rest_c) / sd_j, where mean_rest_c is j's mean over every other
// token and sd_j its standard deviation over all tokens. Concepts with d_c >= `min_effect` drive j. Score =
// the effective number of driving concepts, exp(entropy of d over them) (two equally strong concepts: 2; one
// strong and one weak: between 1 and 2; none: 0). Evidence: the driving concepts with d, their means, and the
// overlap of each pair's Gaussian fits (Bhattacharyya coefficient: 1 = the same distribution, 0 = disjoint).
//
// With `input: <a topk analysis>` (no labels needed): the concepts are the tokens that trigger j's top
// activations; score = the effective number of distinct triggering tokens, exp(entropy of their frequency
// among the top examples). A neuron firing only for " bank" scores 1; for " bank", " river", " money" equally 3.
//
// Arrays `H.score` [neurons] per hook; table `neurons` ranked by score with the evidence; figure: score
// histogram per hook. Mergeable in label mode (moments merge exactly). Memory: concepts x neurons x 5 doubles.
#include <nscope/sdk.h>

#include <cmath>
#include <map>
#include <numeric>

#include "nscope_common/hooks.h"
#include "nscope_common/moments.h"
#include "nscope_common/params.h"
#include "nscope_common/tables.h"

namespace {

using nscope::common::NeuronMoments;

/// exp(entropy) of weights w (>= 0), the effective number of items; 0 when all are 0.
double effective_number(const std::vector<double>& w) {
    const double total = std::accumulate(w.begin(), w.end(), 0.0);
    if (total <= 0) return 0.0;
    double h = 0;
    for (double x : w)
        if (x > 0) h -= (x / total) * std::log(x / total);
    return std::exp(h);
}

/// Bhattacharyya coefficient of two normal distributions.
double bhattacharyya(double m1, double s1, double m2, double s2) {
    const double v1 = std::max(s1 * s1, 1e-12), v2 = std::max(s2 * s2, 1e-12), v = (v1 + v2) / 2;
    const double db = (m1 - m2) * (m1 - m2) / (8 * v) + 0.5 * std::log(v / std::sqrt(v1 * v2));
    return std::exp(-db);
}

class Polysemantic : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("polysemantic", params, {"label", "min_effect", "top", "hooks"});
        if (p.has("label")) {
            if (!p.raw("label").is_string() || p.raw("label").get<std::string>().empty())
                p.fail("label", "must be a prompt label name (string)");
            label_ = p.raw("label").get<std::string>();
        }
        min_effect_ = p.number("min_effect", 1.0, 0.0, 1000.0);
        top_ = static_cast<size_t>(p.integer("top", 50, 1, 1000000));
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
    }

    void begin(const nscope::RunContext& ctx) override {
        topk_ = nscope::common::topk_input(ctx);
        if (label_.empty() && !topk_)
            throw nscope::InputError("polysemantic: give `label: KEY` (prompt labels as concepts) or `input:` a topk "
                                     "analysis (its top examples' tokens as concepts)");
    }

    void consume(const nscope::Batch& batch) override {
        if (label_.empty()) return;  // token mode reads the topk input only
        for (size_t r = 0; r < batch.rows; ++r) {
            const nscope::PromptInfo* info = r < batch.prompts.size() ? batch.prompts[r] : nullptr;
            if (!info || !info->labels.is_object() || !info->labels.contains(label_)) {
                ++unlabelled_;
                continue;
            }
            const auto& v = info->labels[label_];
            auto& per_hook = concepts_[v.is_string() ? v.get<std::string>() : v.dump()];
            for (const auto& act : batch.activations) {
                nscope::common::TokenLayout lay;
                if (!filter_.accept(act.hook, act.view, batch, lay)) continue;
                std::vector<const float*> rows;
                for (size_t p = 0; p < batch.positions; ++p)
                    if (batch.valid(r, p)) rows.push_back(lay.at(act.view, r, p));
                auto [it, fresh] = per_hook.try_emplace(act.hook);
                if (fresh) it->second.init(lay.neurons, false, 0.0);
                it->second.add(rows);
            }
        }
    }

    bool mergeable() const override { return !label_.empty(); }
    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const Polysemantic&>(other);
        for (const auto& [c, hooks] : o.concepts_)
            for (const auto& [hook, m] : hooks) {
                auto [it, fresh] = concepts_[c].try_emplace(hook, m);
                if (!fresh) it->second.merge(m);
            }
        unlabelled_ += o.unlabelled_;
        filter_.merge(o.filter_);
    }

    nscope::Result finish() override { return label_.empty() ? finish_tokens() : finish_labels(); }

private:
    struct Row {
        std::string hook;
        int64_t neuron;
        double score;
        nlohmann::json evidence;
    };

    nscope::Result finish_labels() {
        if (concepts_.size() < 2)
            throw nscope::InputError("polysemantic: label '" + label_ + "' has " + std::to_string(concepts_.size()) +
                                     " value(s) among the prompts; at least 2 concepts are needed");
        std::vector<std::string> hooks;
        for (const auto& [c, per_hook] : concepts_)
            for (const auto& [hook, m] : per_hook)
                if (std::find(hooks.begin(), hooks.end(), hook) == hooks.end()) hooks.push_back(hook);
        std::sort(hooks.begin(), hooks.end(), nscope::common::hook_order);
        nscope::Result res;
        std::vector<Row> rows;
        for (const auto& hook : hooks) {
            NeuronMoments all;  // every labelled token of this hook
            std::vector<std::pair<std::string, const NeuronMoments*>> parts;
            for (const auto& [c, per_hook] : concepts_) {
                const auto it = per_hook.find(hook);
                if (it == per_hook.end()) continue;
                if (parts.empty()) all = it->second;
                else all.merge(it->second);
                parts.emplace_back(c, &it->second);
            }
            const size_t n = all.neurons();
            std::vector<float> scores(n, 0.0f);
            for (size_t j = 0; j < n; ++j) {
                const double sd = all.stddev(j);
                if (!(sd > 0)) continue;
                std::vector<double> effects;
                nlohmann::json drivers = nlohmann::json::array();
                std::vector<std::pair<double, double>> fits;
                for (const auto& [c, m] : parts) {
                    const double nc = static_cast<double>(m->count), na = static_cast<double>(all.count);
                    if (nc == 0 || na == nc) continue;
                    const double mean_c = m->mean[j], mean_rest = (all.mean[j] * na - mean_c * nc) / (na - nc);
                    const double d = (mean_c - mean_rest) / sd;
                    if (d < min_effect_) continue;
                    effects.push_back(d);
                    fits.emplace_back(mean_c, m->stddev(j));
                    drivers.push_back({{"concept", c}, {"effect", d}, {"mean", mean_c}, {"std", m->stddev(j)}});
                }
                const double score = effective_number(effects);
                scores[j] = static_cast<float>(score);
                if (effects.empty()) continue;
                double overlap = 0;  // the largest overlap between two driving concepts
                for (size_t a = 0; a < fits.size(); ++a)
                    for (size_t b = a + 1; b < fits.size(); ++b)
                        overlap = std::max(overlap, bhattacharyya(fits[a].first, fits[a].second, fits[b].first, fits[b].second));
                rows.push_back({hook, static_cast<int64_t>(j), score, {{"drivers", drivers}, {"max_overlap", overlap}}});
            }
            res.set_array(hook + ".score", nscope::NdArray::floats({static_cast<int64_t>(n)}, std::move(scores)));
        }
        return finish_common(std::move(res), std::move(rows), {{"mode", "labels"}, {"label", label_},
                                                                 {"concepts", concepts_.size()},
                                                                 {"min_effect", min_effect_},
                                                                 {"unlabelled_prompts", unlabelled_}});
    }

    nscope::Result finish_tokens() {
        nscope::common::TopTokens tokens = nscope::common::top_example_tokens(*topk_);  // " bank" and "bank" are one
        std::map<std::string, int64_t> widths;
        for (auto it = tokens.begin(); it != tokens.end();) {
            if (!filter_.selected(it->first)) {
                it = tokens.erase(it);
                continue;
            }
            widths[it->first] = it->second.rbegin()->first + 1;
            ++it;
        }
        if (tokens.empty())
            throw nscope::InputError("polysemantic: the topk input has no top examples of single neurons");
        nscope::Result res;
        std::vector<Row> rows;
        for (const auto& [hook, neurons] : tokens) {
            std::vector<float> scores(static_cast<size_t>(widths[hook]), 0.0f);
            for (const auto& [neuron, counts] : neurons) {
                std::vector<double> w;
                std::vector<std::pair<double, std::string>> by_count;
                for (const auto& [tok, n] : counts) w.push_back(n), by_count.emplace_back(n, tok);
                std::sort(by_count.rbegin(), by_count.rend());
                nlohmann::json evidence = nlohmann::json::array();
                for (size_t k = 0; k < by_count.size() && k < 8; ++k)
                    evidence.push_back({{"token", by_count[k].second}, {"count", by_count[k].first}});
                const double score = effective_number(w);
                scores[static_cast<size_t>(neuron)] = static_cast<float>(score);
                rows.push_back({hook, neuron, score, {{"tokens", evidence}}});
            }
            res.set_array(hook + ".score", nscope::NdArray::floats({widths[hook]}, std::move(scores)));
        }
        return finish_common(std::move(res), std::move(rows), {{"mode", "tokens"}});
    }

    nscope::Result finish_common(nscope::Result res, std::vector<Row> rows, nlohmann::json summary) {
        std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
            if (a.score != b.score) return a.score > b.score;
            if (a.hook != b.hook) return nscope::common::hook_order(a.hook, b.hook);
            return a.neuron < b.neuron;
        });
        nscope::Table table;
        table.columns = {"rank", "hook", "layer", "neuron", "score", "evidence"};
        nlohmann::json hist = nlohmann::json::array();
        for (size_t i = 0; i < rows.size(); ++i) {
            if (i < top_)
                table.add_row({i + 1, rows[i].hook, nscope::common::hook_layer(rows[i].hook), rows[i].neuron, rows[i].score,
                               rows[i].evidence.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)});
            hist.push_back(rows[i].score);
        }
        res.set_table("neurons", std::move(table));
        res.set_figure("scores", {{"kind", "histogram"}, {"title", "polysemanticity scores (neurons with any driver)"},
                                  {"values", hist}, {"x_label", "effective number of concepts"}, {"y_label", "neurons"}});
        summary["ranked"] = rows.size();
        summary["skipped"] = filter_.skipped_json();
        res.data["summary"] = std::move(summary);
        return res;
    }

    std::string label_;
    double min_effect_ = 1.0;
    size_t top_ = 50;
    nscope::common::HookFilter filter_;
    const nscope::Result* topk_ = nullptr;
    std::map<std::string, std::map<std::string, NeuronMoments>> concepts_;  // concept -> hook -> moments
    size_t unlabelled_ = 0;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Polysemantic, "polysemantic", "1.0.0",
                       "per neuron: how many distinct concepts (label values or triggering tokens) drive it")

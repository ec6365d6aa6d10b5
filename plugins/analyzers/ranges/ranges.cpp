// `ranges` analyzer (NeuronLens, "Neurons speak in ranges", arXiv 2502.06809): per concept — the value of a
// prompt label, e.g. `label: book` with prompts labelled {book: genesis} / {book: psalms} — and neuron, the
// concept-conditioned activation distribution over every real token of that concept's prompts (count, mean,
// std, skewness and excess kurtosis as a check of the Gaussian the method assumes), the concept's salient
// neurons (the top `salient` fraction of each hook by mean |activation|), and their ranges
// [mu - tau sigma, mu + tau sigma]. A later recipe masks a concept's ranges with
// `interventions: [{ from: RUN/results/<id>.json, concept: X }]` (op mask_ranges), or its whole salient
// neurons with `mode: neurons` (op zero), the comparison the paper makes.
//
// Result JSON (`data.concepts`): {concept: {prompts, tokens, hooks: {hook: {neurons, mu, sigma, lo, hi}}}},
// plus `data.tau`; table `ranges` (one row per concept x salient neuron); figure: salient neurons per concept
// and hook. Mergeable (moments merge exactly). Memory: concepts x hooks x neurons x 7 doubles.
#include <nscope/sdk.h>

#include <cmath>
#include <map>
#include <numeric>

#include "nscope_common/hooks.h"
#include "nscope_common/moments.h"
#include "nscope_common/params.h"

namespace {

using nscope::common::NeuronMoments;

struct ConceptHook {
    NeuronMoments moments;
    std::vector<double> abs_sum;  ///< sum of |x| per neuron (salience)
};

struct Concept {
    size_t prompts = 0;
    std::map<std::string, ConceptHook> hooks;
};

class Ranges : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("ranges", params, {"label", "concepts", "salient", "tau", "min_prompts", "hooks"});
        if (!p.has("label") || !p.raw("label").is_string() || p.raw("label").get<std::string>().empty())
            p.fail("label", "is required: the prompt label whose values are the concepts (e.g. label: book)");
        label_ = p.raw("label").get<std::string>();
        concepts_ = p.strings("concepts");
        salient_ = p.number("salient", 0.05, 1e-6, 1.0);
        tau_ = p.number("tau", 2.0, 0.0, 100.0);
        min_prompts_ = static_cast<size_t>(p.integer("min_prompts", 2, 1, 1000000));
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
    }

    void begin(const nscope::RunContext&) override {}

    void consume(const nscope::Batch& batch) override {
        for (size_t r = 0; r < batch.rows; ++r) {
            const nscope::PromptInfo* info = r < batch.prompts.size() ? batch.prompts[r] : nullptr;
            const std::string concept_name = concept_of(info);
            if (concept_name.empty()) {
                ++unlabelled_;
                continue;
            }
            Concept& c = concepts_seen_[concept_name];
            ++c.prompts;
            std::vector<size_t> valid;
            for (size_t p = 0; p < batch.positions; ++p)
                if (batch.valid(r, p)) valid.push_back(p);
            for (const auto& act : batch.activations) {
                nscope::common::TokenLayout lay;
                if (!filter_.accept(act.hook, act.view, batch, lay) || valid.empty()) continue;
                const auto n = static_cast<size_t>(lay.neurons);
                auto [it, fresh] = c.hooks.try_emplace(act.hook);
                ConceptHook& ch = it->second;
                if (fresh) {
                    ch.moments.init(lay.neurons, true, 0.0);
                    ch.abs_sum.assign(n, 0.0);
                }
                std::vector<const float*> rows;
                for (size_t p : valid) {
                    const float* x = lay.at(act.view, r, p);
                    rows.push_back(x);
                    for (size_t j = 0; j < n; ++j) ch.abs_sum[j] += std::fabs(x[j]);
                }
                ch.moments.add(rows);
            }
        }
    }

    bool mergeable() const override { return true; }
    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const Ranges&>(other);
        for (const auto& [name, oc] : o.concepts_seen_) {
            Concept& c = concepts_seen_[name];
            c.prompts += oc.prompts;
            for (const auto& [hook, och] : oc.hooks) {
                auto [it, fresh] = c.hooks.try_emplace(hook, och);
                if (fresh) continue;
                it->second.moments.merge(och.moments);
                for (size_t j = 0; j < och.abs_sum.size(); ++j) it->second.abs_sum[j] += och.abs_sum[j];
            }
        }
        unlabelled_ += o.unlabelled_;
        filter_.merge(o.filter_);
    }

    nscope::Result finish() override {
        if (concepts_seen_.empty())
            throw nscope::InputError("ranges: no prompt has a label '" + label_ + "'" +
                                     (concepts_.empty() ? "" : " with one of the listed concepts") +
                                     "; label the prompts ({labels: {" + label_ + ": ...}})");
        for (const auto& want : concepts_)
            if (!concepts_seen_.count(want))
                throw nscope::InputError("ranges: concept '" + want + "' (label " + label_ + ") has no prompt in this run");
        for (const auto& [name, c] : concepts_seen_)
            if (c.prompts < min_prompts_)
                throw nscope::InputError("ranges: concept '" + name + "' has " + std::to_string(c.prompts) +
                                         " prompt(s), fewer than min_prompts " + std::to_string(min_prompts_) +
                                         ": its distribution would not mean much; add prompts or lower min_prompts");
        nscope::Result res;
        nscope::Table table;
        table.columns = {"concept", "hook", "layer", "rank", "neuron", "tokens", "mean_abs", "mean", "std",
                         "lo", "hi", "skewness", "excess_kurtosis"};
        nlohmann::json concepts = nlohmann::json::object(), fig_x = nlohmann::json::array(), series = nlohmann::json::array();
        std::vector<std::string> hooks_seen;
        for (const auto& [name, c] : concepts_seen_)
            for (const auto& [hook, ch] : c.hooks)
                if (std::find(hooks_seen.begin(), hooks_seen.end(), hook) == hooks_seen.end()) hooks_seen.push_back(hook);
        std::sort(hooks_seen.begin(), hooks_seen.end(), nscope::common::hook_order);
        for (const auto& h : hooks_seen) fig_x.push_back(h);
        for (const auto& [name, c] : concepts_seen_) {
            nlohmann::json hooks = nlohmann::json::object(), ys = nlohmann::json::array();
            uint64_t tokens = 0;
            for (const auto& hook : hooks_seen) {
                const auto it = c.hooks.find(hook);
                if (it == c.hooks.end()) {
                    ys.push_back(nullptr);
                    continue;
                }
                const NeuronMoments& m = it->second.moments;
                tokens = m.count;
                const size_t n = m.neurons(), take = std::max<size_t>(1, static_cast<size_t>(std::ceil(salient_ * n)));
                std::vector<size_t> order(n);
                std::iota(order.begin(), order.end(), 0);
                const auto& abs_sum = it->second.abs_sum;
                std::partial_sort(order.begin(), order.begin() + static_cast<ptrdiff_t>(take), order.end(),
                                  [&](size_t a, size_t b) { return abs_sum[a] != abs_sum[b] ? abs_sum[a] > abs_sum[b] : a < b; });
                nlohmann::json neurons = nlohmann::json::array(), mu = neurons, sigma = neurons, lo = neurons, hi = neurons;
                const int layer = nscope::common::hook_layer(hook);
                for (size_t k = 0; k < take; ++k) {
                    const size_t j = order[k];
                    const double mean = m.mean[j], sd = m.stddev(j);
                    const double mean_abs = m.count ? abs_sum[j] / static_cast<double>(m.count) : 0.0;
                    neurons.push_back(j), mu.push_back(mean), sigma.push_back(sd);
                    lo.push_back(mean - tau_ * sd), hi.push_back(mean + tau_ * sd);
                    table.add_row({name, hook, layer, k + 1, j, m.count, mean_abs, mean, sd, mean - tau_ * sd,
                                   mean + tau_ * sd, finite(m.skewness(j)), finite(m.kurtosis(j))});
                }
                hooks[hook] = {{"neurons", neurons}, {"mu", mu}, {"sigma", sigma}, {"lo", lo}, {"hi", hi}};
                ys.push_back(take);
            }
            concepts[name] = {{"prompts", c.prompts}, {"tokens", tokens}, {"hooks", hooks}};
            series.push_back({{"name", name}, {"y", ys}});
        }
        res.set_table("ranges", std::move(table));
        res.set_figure("salient_neurons", {{"kind", "bar"}, {"title", "salient neurons per concept and hook"},
                                           {"x", fig_x}, {"series", series}, {"x_label", "hook"},
                                           {"y_label", "neurons"}});
        res.data["label"] = label_;
        res.data["tau"] = tau_;
        res.data["concepts"] = concepts;
        res.data["summary"] = {{"label", label_}, {"concepts", concepts_seen_.size()}, {"tau", tau_},
                               {"salient", salient_}, {"unlabelled_prompts", unlabelled_},
                               {"skipped", filter_.skipped_json()}};
        return res;
    }

private:
    static nlohmann::json finite(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

    /// The prompt's concept, or "" when it has none (or one that is not listed).
    std::string concept_of(const nscope::PromptInfo* info) const {
        if (!info || !info->labels.is_object() || !info->labels.contains(label_)) return "";
        const auto& v = info->labels[label_];
        const std::string c = v.is_string() ? v.get<std::string>() : v.dump();
        if (!concepts_.empty() && std::find(concepts_.begin(), concepts_.end(), c) == concepts_.end()) return "";
        return c;
    }

    std::string label_;
    std::vector<std::string> concepts_;
    double salient_ = 0.05, tau_ = 2.0;
    size_t min_prompts_ = 2;
    nscope::common::HookFilter filter_;
    std::map<std::string, Concept> concepts_seen_;
    size_t unlabelled_ = 0;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Ranges, "ranges", "1.0.0",
                       "NeuronLens: per concept, each neuron's activation range and the concept's salient neurons")

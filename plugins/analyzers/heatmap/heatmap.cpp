// `heatmap` analyzer: token x neuron matrices for a few prompts (`prompts`, default the first 8) and every
// selected hook, for chosen `neurons` or the `top_n` neurons of highest variance over those prompts' tokens
// (picked at finish). Keeps only the selected prompts' matrices. Schema: docs/analyses.md#heatmap.
#include <nscope/sdk.h>

#include <map>
#include <set>

#include "nscope_common/hooks.h"
#include "nscope_common/params.h"

namespace {

struct Matrix {
    std::vector<std::string> tokens;
    std::vector<float> values;  ///< [tokens, neurons]
    size_t neurons = 0;
};

class Heatmap : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("heatmap", params, {"hooks", "prompts", "neurons", "top_n"});
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
        const auto prompts = p.integers("prompts", {0, 1, 2, 3, 4, 5, 6, 7});
        prompts_ = std::set<int64_t>(prompts.begin(), prompts.end());
        neurons_ = p.integers("neurons");
        if (p.has("neurons") && neurons_.empty()) p.fail("neurons", "must name at least one neuron index");
        top_n_ = static_cast<size_t>(p.integer("top_n", 20, 1, 100000));
        if (p.has("neurons") && p.has("top_n")) p.fail("top_n", "cannot be combined with 'neurons' (give one of them)");
    }

    void begin(const nscope::RunContext& ctx) override { token_text_ = ctx.token_text; }

    void consume(const nscope::Batch& batch) override {
        for (size_t r = 0; r < batch.rows; ++r) {
            const nscope::PromptInfo* info = r < batch.prompts.size() ? batch.prompts[r] : nullptr;
            const int64_t index = info ? static_cast<int64_t>(info->index) : static_cast<int64_t>(rows_seen_ + r);
            if (!prompts_.count(index)) continue;
            std::vector<size_t> valid;
            for (size_t p = 0; p < batch.positions; ++p)
                if (batch.valid(r, p)) valid.push_back(p);
            std::vector<std::string> tokens;
            for (size_t t = 0; t < valid.size(); ++t) {
                const int64_t id = batch.input_ids[r * batch.positions + valid[t]];
                if (info && info->tokens.size() == valid.size()) tokens.push_back(info->tokens[t]);
                else if (token_text_) tokens.push_back(token_text_(id));
                else tokens.push_back("[" + std::to_string(id) + "]");
            }
            for (const auto& act : batch.activations) {
                nscope::common::TokenLayout lay;
                if (!filter_.accept(act.hook, act.view, batch, lay)) continue;
                Matrix& m = kept_[act.hook][index];
                m.tokens = tokens;
                m.neurons = static_cast<size_t>(lay.neurons);
                m.values.resize(valid.size() * m.neurons);
                for (size_t t = 0; t < valid.size(); ++t) {
                    const float* x = lay.at(act.view, r, valid[t]);
                    std::copy(x, x + m.neurons, m.values.begin() + static_cast<int64_t>(t * m.neurons));
                }
            }
        }
        rows_seen_ += batch.rows;
    }

    bool mergeable() const override { return true; }
    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const Heatmap&>(other);
        for (const auto& [hook, per] : o.kept_)
            for (const auto& [i, m] : per) kept_[hook].emplace(i, m);
        filter_.merge(o.filter_);
    }

    uint32_t state_version() const override { return 1; }
    void save_state(nscope::StateWriter& out) const override {
        out.u64(kept_.size());
        for (const auto& [hook, per] : kept_) {
            out.str(hook);
            out.u64(per.size());
            for (const auto& [index, m] : per) {
                out.pod(index);
                out.u64(m.neurons);
                out.strings(m.tokens);
                out.array(m.values);
            }
        }
        out.u64(rows_seen_);
        filter_.save(out);
    }
    void load_state(nscope::StateReader& in) override {
        kept_.clear();
        const uint64_t hooks = in.count(2 * sizeof(uint64_t), "heatmap hooks");
        for (uint64_t h = 0; h < hooks; ++h) {
            auto& per = kept_[in.str()];
            const uint64_t n = in.count(4 * sizeof(uint64_t), "heatmap prompts");
            for (uint64_t i = 0; i < n; ++i) {
                const auto index = in.pod<int64_t>();
                if (!prompts_.count(index)) in.fail("prompt " + std::to_string(index) + " is not one this heatmap keeps");
                Matrix& m = per[index];
                m.neurons = in.u64();
                m.tokens = in.strings();
                m.values = in.array_of<float>(m.tokens.size() * m.neurons, "heatmap values");
            }
        }
        rows_seen_ = in.u64();
        filter_.load(in);
    }

    nscope::Result finish() override {
        nscope::Result res;
        std::vector<std::string> hooks;
        for (const auto& [hook, _] : kept_) hooks.push_back(hook);
        std::sort(hooks.begin(), hooks.end(), nscope::common::hook_order);
        nscope::Table sel;
        sel.columns = {"hook", "layer", "rank", "neuron", "variance"};
        nlohmann::json shown = nlohmann::json::array();
        for (const auto& hook : hooks) {
            const auto& per = kept_.at(hook);
            const size_t n = per.begin()->second.neurons;
            const int layer = nscope::common::hook_layer(hook);
            // Population variance of each neuron over every kept token of this hook.
            std::vector<double> mean(n, 0.0), m2(n, 0.0);
            double count = 0;
            for (const auto& [i, m] : per)
                for (size_t t = 0; t < m.tokens.size(); ++t) {
                    count += 1;
                    for (size_t j = 0; j < n; ++j) {
                        const double x = m.values[t * n + j], d = x - mean[j];
                        mean[j] += d / count;
                        m2[j] += d * (x - mean[j]);
                    }
                }
            auto variance = [&](size_t j) { return count > 0 ? m2[j] / count : 0.0; };
            std::vector<size_t> chosen;
            if (!neurons_.empty()) {
                for (int64_t j : neurons_) {
                    if (j >= static_cast<int64_t>(n))
                        throw nscope::InputError("heatmap: parameter 'neurons' names neuron " + std::to_string(j) +
                                                 " but '" + hook + "' has " + std::to_string(n) + " neurons");
                    chosen.push_back(static_cast<size_t>(j));
                }
            } else {
                chosen.resize(n);
                for (size_t j = 0; j < n; ++j) chosen[j] = j;
                const size_t take = std::min(top_n_, n);
                std::partial_sort(chosen.begin(), chosen.begin() + static_cast<int64_t>(take), chosen.end(),
                                  [&](size_t a, size_t b) {
                                      return variance(a) != variance(b) ? variance(a) > variance(b) : a < b;
                                  });
                chosen.resize(take);
            }
            nlohmann::json labels = nlohmann::json::array();
            std::vector<int64_t> idx;
            std::vector<float> var;
            for (size_t r = 0; r < chosen.size(); ++r) {
                labels.push_back("n" + std::to_string(chosen[r]));
                idx.push_back(static_cast<int64_t>(chosen[r]));
                var.push_back(static_cast<float>(variance(chosen[r])));
                sel.add_row({hook, layer, r + 1, chosen[r], variance(chosen[r])});
            }
            const auto k = static_cast<int64_t>(chosen.size());
            res.set_array(hook + ".neurons", nscope::NdArray::ints({k}, idx));
            res.set_array(hook + ".variance", nscope::NdArray::floats({k}, var));
            for (const auto& [i, m] : per) {
                nlohmann::json z = nlohmann::json::array();
                std::vector<float> flat;
                for (size_t t = 0; t < m.tokens.size(); ++t) {
                    nlohmann::json row = nlohmann::json::array();
                    for (size_t j : chosen) row.push_back(m.values[t * n + j]), flat.push_back(m.values[t * n + j]);
                    z.push_back(std::move(row));
                }
                const std::string name = hook + ".prompt" + std::to_string(i);
                res.set_figure(name, {{"kind", "heatmap"}, {"title", hook + " — prompt " + std::to_string(i)},
                                      {"hook", hook}, {"prompt", i}, {"x", labels}, {"y", m.tokens}, {"z", z},
                                      {"x_label", "neuron"}, {"y_label", "token"}});
                res.set_array(name, nscope::NdArray::floats({static_cast<int64_t>(m.tokens.size()), k}, std::move(flat)));
                shown.push_back({{"hook", hook}, {"prompt", i}, {"figure", name}, {"tokens", m.tokens.size()}});
            }
        }
        res.set_table("selected_neurons", std::move(sel));
        std::set<int64_t> seen;
        for (const auto& [hook, per] : kept_)
            for (const auto& [i, m] : per) seen.insert(i);
        res.data["heatmaps"] = shown;
        res.data["summary"] = {{"selection", neurons_.empty() ? "top_variance" : "neurons"},
                               {"top_n", neurons_.empty() ? nlohmann::json(top_n_) : nlohmann::json(nullptr)},
                               {"prompts", std::vector<int64_t>(seen.begin(), seen.end())},
                               {"hooks", hooks}, {"skipped", filter_.skipped_json()}};
        return res;
    }

private:
    nscope::common::HookFilter filter_;
    std::set<int64_t> prompts_;
    std::vector<int64_t> neurons_;
    size_t top_n_ = 20;
    std::function<std::string(int64_t)> token_text_;
    std::map<std::string, std::map<int64_t, Matrix>> kept_;
    size_t rows_seen_ = 0;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Heatmap, "heatmap", "1.0.0",
                       "token x neuron heatmaps for a few prompts (chosen or top-variance neurons)")

// `stats` analyzer: per hook and neuron, streaming count / mean / std / min / max / fraction active /
// skewness / kurtosis over every real token of the corpus (double precision, mergeable), plus a per-layer
// summary table. Schema: docs/analyses.md#stats.
#include <nscope/sdk.h>

#include "nscope_common/hooks.h"
#include "nscope_common/moments.h"
#include "nscope_common/params.h"

namespace {

using nscope::common::NeuronMoments;

class Stats : public nscope::common::MomentsAnalyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("stats", params, {"hooks", "threshold", "neuron_table"});
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
        threshold_ = p.number("threshold", 0.0);
        neuron_table_ = p.boolean("neuron_table", false);
    }

    void begin(const nscope::RunContext& ctx) override {
        parallel_for_ = ctx.parallel_for;
        moments_.init("stats", true, threshold_);
    }

    void consume(const nscope::Batch& batch) override { moments_.consume(batch, filter_, parallel_for_); }

    nscope::Result finish() override {
        nscope::Result res;
        const std::vector<std::string> names = nscope::common::hooks_in_order(moments_.hooks());

        nscope::Table layers;
        layers.columns = {"hook",     "layer",       "neurons",        "count",        "mean",
                          "std",      "min",         "max",            "frac_active",  "frac_positive",
                          "skewness", "kurtosis"};
        nscope::Table neurons;
        neurons.columns = {"hook", "layer", "neuron", "mean", "std", "min", "max", "frac_active", "frac_positive",
                           "skewness", "kurtosis"};
        nlohmann::json fig_x = nlohmann::json::array(), fig_y = nlohmann::json::array();
        uint64_t tokens = 0;
        int64_t total_neurons = 0;
        for (const auto& hook : names) {
            const NeuronMoments& m = moments_.hooks().at(hook);
            const size_t n = m.neurons();
            const int layer = nscope::common::hook_layer(hook);
            std::vector<float> mean(n), sd(n), mn(n), mx(n), act(n), pos(n), sk(n), ku(n);
            double s_mean = 0, s_sd = 0, s_act = 0, s_pos = 0, s_sk = 0, s_ku = 0;
            double g_min = std::numeric_limits<double>::infinity(), g_max = -g_min;
            const double cnt = static_cast<double>(m.count);
            for (size_t j = 0; j < n; ++j) {
                const double fa = cnt ? m.above[j] / cnt : 0.0, fp = cnt ? m.positive[j] / cnt : 0.0;
                mean[j] = static_cast<float>(m.mean[j]);
                sd[j] = static_cast<float>(m.stddev(j));
                mn[j] = m.count ? static_cast<float>(m.min[j]) : 0.0f;
                mx[j] = m.count ? static_cast<float>(m.max[j]) : 0.0f;
                act[j] = static_cast<float>(fa);
                pos[j] = static_cast<float>(fp);
                sk[j] = static_cast<float>(m.skewness(j));
                ku[j] = static_cast<float>(m.kurtosis(j));
                s_mean += m.mean[j], s_sd += m.stddev(j), s_act += fa, s_pos += fp;
                s_sk += m.skewness(j), s_ku += m.kurtosis(j);
                g_min = std::min(g_min, m.min[j]), g_max = std::max(g_max, m.max[j]);
                if (neuron_table_)
                    neurons.add_row({hook, layer, j, m.mean[j], m.stddev(j), m.min[j], m.max[j], fa, fp,
                                     m.skewness(j), m.kurtosis(j)});
            }
            const double dn = n ? static_cast<double>(n) : 1.0;
            layers.add_row({hook, layer, n, m.count, s_mean / dn, s_sd / dn, m.count ? g_min : 0.0,
                            m.count ? g_max : 0.0, s_act / dn, s_pos / dn, s_sk / dn, s_ku / dn});
            fig_x.push_back(hook);
            fig_y.push_back(s_act / dn);
            const std::vector<int64_t> shape{static_cast<int64_t>(n)};
            res.set_array(hook + ".mean", nscope::NdArray::floats(shape, std::move(mean)));
            res.set_array(hook + ".std", nscope::NdArray::floats(shape, std::move(sd)));
            res.set_array(hook + ".min", nscope::NdArray::floats(shape, std::move(mn)));
            res.set_array(hook + ".max", nscope::NdArray::floats(shape, std::move(mx)));
            res.set_array(hook + ".frac_active", nscope::NdArray::floats(shape, std::move(act)));
            res.set_array(hook + ".frac_positive", nscope::NdArray::floats(shape, std::move(pos)));
            res.set_array(hook + ".skewness", nscope::NdArray::floats(shape, std::move(sk)));
            res.set_array(hook + ".kurtosis", nscope::NdArray::floats(shape, std::move(ku)));
            tokens = std::max<uint64_t>(tokens, m.count);
            total_neurons += static_cast<int64_t>(n);
        }
        res.set_table("layers", std::move(layers));
        if (neuron_table_) res.set_table("neurons", std::move(neurons));
        res.set_figure("frac_active_by_hook", {{"kind", "bar"}, {"title", "mean fraction active per hook"},
                                               {"x", fig_x}, {"y", fig_y}, {"x_label", "hook"},
                                               {"y_label", "fraction of tokens > threshold"}});
        res.data["summary"] = {{"hooks", names.size()}, {"tokens", tokens}, {"neurons", total_neurons},
                               {"threshold", threshold_}, {"skipped", filter_.skipped_json()}};
        return res;
    }

private:
    double threshold_ = 0.0;
    bool neuron_table_ = false;
    nscope::ParallelFor parallel_for_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Stats, "stats", "1.0.0",
                       "per-neuron mean/std/min/max/fraction active/skewness/kurtosis, streaming and mergeable")

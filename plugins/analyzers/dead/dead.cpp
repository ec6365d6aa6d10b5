// `dead` analyzer: neurons that never exceed `epsilon` on the corpus (dead), that are active on at least
// `on_fraction` of real tokens (always on), and that barely move (flat: std < flat_std, not dead), per hook
// and layer, with counts and index lists. Streaming and mergeable. Schema: docs/analyses.md#dead.
#include <nscope/sdk.h>

#include "nscope_common/hooks.h"
#include "nscope_common/moments.h"
#include "nscope_common/params.h"

namespace {

using nscope::common::NeuronMoments;

class Dead : public nscope::common::MomentsAnalyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("dead", params, {"hooks", "epsilon", "on_fraction", "flat_std"});
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
        epsilon_ = p.number("epsilon", 0.0);
        on_fraction_ = p.number("on_fraction", 0.99, 0.0, 1.0);
        if (on_fraction_ <= 0.0) p.fail("on_fraction", "must be greater than 0 (a fraction of tokens in (0, 1])");
        flat_std_ = p.number("flat_std", 1e-6, 0.0);
    }

    void begin(const nscope::RunContext& ctx) override {
        parallel_for_ = ctx.parallel_for;
        moments_.init("dead", false, epsilon_);
    }

    void consume(const nscope::Batch& batch) override { moments_.consume(batch, filter_, parallel_for_); }

    nscope::Result finish() override {
        nscope::Result res;
        const std::vector<std::string> names = nscope::common::hooks_in_order(moments_.hooks());

        nscope::Table layers, neurons;
        layers.columns = {"hook", "layer", "neurons", "tokens", "dead", "always_on", "flat",
                          "dead_frac", "always_on_frac", "flat_frac"};
        neurons.columns = {"hook", "layer", "neuron", "category", "max", "frac_active", "mean", "std"};
        size_t n_dead = 0, n_on = 0, n_flat = 0;
        int64_t total = 0;
        uint64_t tokens = 0;
        for (const auto& hook : names) {
            const NeuronMoments& m = moments_.hooks().at(hook);
            const int layer = nscope::common::hook_layer(hook);
            std::vector<int64_t> dead, on, flat;
            for (size_t j = 0; j < m.neurons() && m.count > 0; ++j) {
                const double frac = static_cast<double>(m.above[j]) / static_cast<double>(m.count);
                const double sd = m.stddev(j);
                auto row = [&](const char* category) {
                    neurons.add_row({hook, layer, j, category, m.max[j], frac, m.mean[j], sd});
                };
                const bool is_dead = m.max[j] <= epsilon_;
                if (is_dead) dead.push_back(static_cast<int64_t>(j)), row("dead");
                if (frac >= on_fraction_) on.push_back(static_cast<int64_t>(j)), row("always_on");
                if (!is_dead && sd < flat_std_) flat.push_back(static_cast<int64_t>(j)), row("flat");
            }
            const double n = m.neurons() ? static_cast<double>(m.neurons()) : 1.0;
            layers.add_row({hook, layer, m.neurons(), m.count, dead.size(), on.size(), flat.size(), dead.size() / n,
                            on.size() / n, flat.size() / n});
            res.data["hooks"][hook] = {{"layer", layer}, {"neurons", m.neurons()}, {"tokens", m.count},
                                       {"dead", dead}, {"always_on", on}, {"flat", flat}};
            n_dead += dead.size(), n_on += on.size(), n_flat += flat.size();
            total += static_cast<int64_t>(m.neurons());
            tokens = std::max<uint64_t>(tokens, m.count);
            auto ints = [](std::vector<int64_t> v) {
                const auto n = static_cast<int64_t>(v.size());
                return nscope::NdArray::ints({n}, std::move(v));
            };
            res.set_array(hook + ".dead", ints(std::move(dead)));
            res.set_array(hook + ".always_on", ints(std::move(on)));
            res.set_array(hook + ".flat", ints(std::move(flat)));
        }
        res.set_table("layers", std::move(layers));
        res.set_table("neurons", std::move(neurons));
        res.data["summary"] = {{"hooks", names.size()}, {"tokens", tokens}, {"neurons", total}, {"dead", n_dead},
                               {"always_on", n_on}, {"flat", n_flat}, {"epsilon", epsilon_},
                               {"on_fraction", on_fraction_}, {"flat_std", flat_std_},
                               {"skipped", filter_.skipped_json()}};
        return res;
    }

private:
    double epsilon_ = 0.0, on_fraction_ = 0.99, flat_std_ = 1e-6;
    nscope::ParallelFor parallel_for_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Dead, "dead", "1.0.0", "dead, always-on and flat neurons per layer (mergeable)")

// `heads` analyzer: what each attention head attends to, from `blocks.*.attn.hook_pattern` ([b, h, q, k],
// probabilities over keys). Per layer x head, averaged over every real query position of the corpus:
//
//   entropy       -sum_k p log p (nats) over the real keys
//   first_token   p[q, 0]: attention to the first token (an attention "sink")
//   prev_token    p[q, q-1] (queries q >= 1)
//   duplicate     sum of p[q, j] over earlier positions j < q holding the same token as q (queries that have one)
//   induction     sum of p[q, j] over positions j <= q whose previous token equals q's token (j - 1 < q): the
//                 token that followed the last time; queries that have one. Repeated random sequences
//                 (recipe prompts `random: {repeat: 2}`) make induction heads light up.
//
// Scores of queries without a qualifying key (the first position for prev_token, tokens seen for the first time
// for duplicate / induction) are left out of that score's mean. Each score's value under uniform attention over
// the real keys, on the same tokens, is reported beside it (summary `uniform`): a head matters where it is far
// from that baseline. Arrays `scores.<name>` [layers, heads] (NaN
// where no query qualified), one heatmap figure per score, a table of every head. Mergeable (sums and counts).
// Memory: 5 sums + 5 counts per head; time O(batch x heads x positions^2) per layer.
#include <nscope/sdk.h>

#include <cmath>
#include <limits>
#include <map>

#include "nscope_common/hooks.h"
#include "nscope_common/params.h"

namespace {

constexpr const char* kScores[] = {"entropy", "first_token", "prev_token", "duplicate", "induction"};
constexpr size_t kNumScores = sizeof(kScores) / sizeof(kScores[0]);

struct HeadSums {
    double sum[kNumScores] = {};
    uint64_t count[kNumScores] = {};
};

/// "L3", "H7" (built by appending: GCC 12 warns falsely about `"L" + std::to_string(n)` here).
std::string label(char prefix, size_t n) {
    std::string s(1, prefix);
    s += std::to_string(n);
    return s;
}

class Heads : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("heads", params, {"layers", "ablation"});
        layers_ = p.strings("layers");  // hook patterns: restrict to some layers ("blocks.{0..3}.attn.hook_pattern")
        ablation_ = p.boolean("ablation", false);
    }

    std::vector<std::string> required_hooks() const override {
        return layers_.empty() ? std::vector<std::string>{"blocks.*.attn.hook_pattern"} : layers_;
    }

    void begin(const nscope::RunContext& ctx) override {
        parallel_for_ = ctx.parallel_for;
        if (ablation_ && (ctx.model == nullptr || !ctx.model->run))
            throw nscope::InputError("heads: ablation: true needs the run's model (one forward per head and batch)");
        model_ = ctx.model;
    }

    void consume(const nscope::Batch& batch) override {
        std::vector<std::pair<int, const nscope::ActivationView*>> maps;
        for (const auto& a : batch.activations) {
            const std::string& hook = a.hook;
            if (!hook.ends_with(".attn.hook_pattern")) continue;
            const auto& s = a.view.shape;
            if (s.size() != 4 || s[0] != static_cast<int64_t>(batch.rows) || s[2] != s[3] ||
                s[2] != static_cast<int64_t>(batch.positions))
                throw nscope::RuntimeError("heads: " + hook + " is not [batch, heads, pos, pos]");
            maps.emplace_back(nscope::common::hook_layer(hook), &a.view);
        }
        if (maps.empty())
            throw nscope::InputError("heads: no attn.hook_pattern among the hooks it received (the model exposes none?)");
        for (const auto& [layer, v] : maps)
            if (sums_[layer].size() < static_cast<size_t>(v->shape[1])) sums_[layer].resize(static_cast<size_t>(v->shape[1]));
        add_uniform(batch);
        nscope::run_tasks(parallel_for_, maps.size(), [&](size_t m) { add(batch, maps[m].first, *maps[m].second); });
        if (ablation_) ablate(batch, maps);
    }

    bool mergeable() const override { return true; }
    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const Heads&>(other);
        for (size_t s = 0; s < kNumScores; ++s) uniform_.sum[s] += o.uniform_.sum[s], uniform_.count[s] += o.uniform_.count[s];
        for (const auto& [key, a] : o.ablation_sums_) {
            AblationSums& m = ablation_sums_[key];
            m.kl += a.kl, m.loss_change += a.loss_change, m.rows += a.rows;
        }
        for (const auto& [layer, heads] : o.sums_) {
            auto& mine = sums_[layer];
            if (mine.size() < heads.size()) mine.resize(heads.size());
            for (size_t h = 0; h < heads.size(); ++h)
                for (size_t s = 0; s < kNumScores; ++s) {
                    mine[h].sum[s] += heads[h].sum[s];
                    mine[h].count[s] += heads[h].count[s];
                }
        }
    }

    nscope::Result finish() override {
        nscope::Result res;
        size_t n_heads = 0;
        for (const auto& [layer, heads] : sums_) n_heads = std::max(n_heads, heads.size());
        const auto L = static_cast<int64_t>(sums_.size()), H = static_cast<int64_t>(n_heads);
        nscope::Table table;
        table.columns = {"layer", "head", "entropy", "first_token", "prev_token", "duplicate", "induction"};
        nlohmann::json layer_names = nlohmann::json::array(), head_names = nlohmann::json::array();
        for (const auto& [layer, heads] : sums_) layer_names.push_back(label('L', static_cast<size_t>(layer)));
        for (size_t h = 0; h < n_heads; ++h) head_names.push_back(label('H', h));
        const double nan = std::numeric_limits<double>::quiet_NaN();
        std::vector<std::vector<float>> arrays(kNumScores, std::vector<float>(static_cast<size_t>(L * H), static_cast<float>(nan)));
        std::vector<nlohmann::json> z(kNumScores, nlohmann::json::array());
        size_t li = 0;
        for (const auto& [layer, heads] : sums_) {
            std::vector<nlohmann::json> zrow(kNumScores, nlohmann::json::array());
            for (size_t h = 0; h < n_heads; ++h) {
                nlohmann::json row = {layer, h};
                for (size_t s = 0; s < kNumScores; ++s) {
                    const bool has = h < heads.size() && heads[h].count[s] > 0;
                    const double v = has ? heads[h].sum[s] / static_cast<double>(heads[h].count[s]) : nan;
                    arrays[s][li * n_heads + h] = static_cast<float>(v);
                    row.push_back(has ? nlohmann::json(v) : nlohmann::json(nullptr));
                    zrow[s].push_back(has ? nlohmann::json(v) : nlohmann::json(nullptr));
                }
                table.add_row(std::move(row));
            }
            for (size_t s = 0; s < kNumScores; ++s) z[s].push_back(std::move(zrow[s]));
            ++li;
        }
        for (size_t s = 0; s < kNumScores; ++s) {
            res.set_array(std::string("scores.") + kScores[s], nscope::NdArray::floats({L, H}, std::move(arrays[s])));
            res.set_figure(std::string("heads_") + kScores[s],
                           {{"kind", "heatmap"}, {"title", std::string(kScores[s]) + " per head"}, {"x", head_names},
                            {"y", layer_names}, {"z", z[s]}, {"x_label", "head"}, {"y_label", "layer"},
                            {"z_label", kScores[s]}});
        }
        res.set_table("heads", std::move(table));
        nlohmann::json best = nlohmann::json::object();  // the strongest head per score
        for (size_t s = 1; s < kNumScores; ++s) {
            double top = -1;
            nlohmann::json at = nullptr;
            for (const auto& [layer, heads] : sums_)
                for (size_t h = 0; h < heads.size(); ++h)
                    if (heads[h].count[s] > 0) {
                        const double v = heads[h].sum[s] / static_cast<double>(heads[h].count[s]);
                        if (v > top) top = v, at = {{"layer", layer}, {"head", h}, {"score", v}};
                    }
            best[kScores[s]] = at;
        }
        if (ablation_) {
            // Ablation effects: mean over prompts of KL(clean || ablated) and of the loss change.
            const char* names[] = {"ablation_kl", "ablation_loss"};
            for (int which = 0; which < 2; ++which) {
                std::vector<float> arr(static_cast<size_t>(L * H), static_cast<float>(nan));
                nlohmann::json zz = nlohmann::json::array();
                size_t row = 0;
                for (const auto& [layer, heads] : sums_) {
                    nlohmann::json zr = nlohmann::json::array();
                    for (size_t h = 0; h < n_heads; ++h) {
                        const auto it = ablation_sums_.find({layer, h});
                        const bool has = it != ablation_sums_.end() && it->second.rows > 0;
                        const double v = !has ? nan
                                         : (which == 0 ? it->second.kl : it->second.loss_change) /
                                               static_cast<double>(it->second.rows);
                        arr[row * n_heads + h] = static_cast<float>(v);
                        zr.push_back(has ? nlohmann::json(v) : nlohmann::json(nullptr));
                    }
                    zz.push_back(std::move(zr));
                    ++row;
                }
                res.set_array(std::string("scores.") + names[which], nscope::NdArray::floats({L, H}, std::move(arr)));
                res.set_figure(std::string("heads_") + names[which],
                               {{"kind", "heatmap"},
                                {"title", which == 0 ? "zero-ablation: KL(clean || ablated) per head"
                                                     : "zero-ablation: loss change per head"},
                                {"x", head_names}, {"y", layer_names}, {"z", zz}, {"x_label", "head"},
                                {"y_label", "layer"}, {"z_label", which == 0 ? "KL (nats)" : "Δ loss (nats)"}});
            }
            add_ablation_columns(res);
        }
        res.data["layers"] = layer_names;
        res.data["scores"] = nlohmann::json(std::vector<std::string>(std::begin(kScores), std::end(kScores)));
        nlohmann::json uniform = nlohmann::json::object();
        for (size_t s = 0; s < kNumScores; ++s)
            uniform[kScores[s]] = uniform_.count[s] ? nlohmann::json(uniform_.sum[s] / static_cast<double>(uniform_.count[s]))
                                                    : nlohmann::json(nullptr);
        res.data["summary"] = {{"layers", L}, {"heads", H}, {"best", best}, {"uniform", uniform}};
        return res;
    }

private:
    /// Add one layer's patterns of a batch. p[r, h, q, k] is the attention of query q to key k.
    void add(const nscope::Batch& batch, int layer, const nscope::ActivationView& v) {
        const auto H = static_cast<size_t>(v.shape[1]), P = batch.positions;
        std::vector<HeadSums>& heads = sums_.at(layer);
        for (size_t r = 0; r < batch.rows; ++r) {
            const size_t len = batch.length(r);  // rows are right-padded: real tokens are 0..len-1
            const int64_t* ids = batch.input_ids + r * P;
            for (size_t h = 0; h < H; ++h) {
                const float* map = v.f32() + ((r * H + h) * P) * P;
                HeadSums& acc = heads[h];
                for (size_t q = 0; q < len; ++q) {
                    const float* p = map + q * P;
                    double entropy = 0, dup = 0, ind = 0;
                    bool has_dup = false, has_ind = false;
                    for (size_t k = 0; k < len; ++k) {
                        const double x = p[k];
                        if (x > 0) entropy -= x * std::log(x);
                        if (k < q && ids[k] == ids[q]) dup += x, has_dup = true;
                        if (k >= 1 && k <= q && ids[k - 1] == ids[q]) ind += x, has_ind = true;  // k - 1 < q
                    }
                    acc.sum[0] += entropy, ++acc.count[0];
                    acc.sum[1] += p[0], ++acc.count[1];
                    if (q >= 1) acc.sum[2] += p[q - 1], ++acc.count[2];
                    if (has_dup) acc.sum[3] += dup, ++acc.count[3];
                    if (has_ind) acc.sum[4] += ind, ++acc.count[4];
                }
            }
        }
    }

    /// The scores of uniform attention over the real keys (p = 1 / (q + 1)) on the batch's tokens.
    void add_uniform(const nscope::Batch& batch) {
        for (size_t r = 0; r < batch.rows; ++r) {
            const size_t len = batch.length(r);
            const int64_t* ids = batch.input_ids + r * batch.positions;
            for (size_t q = 0; q < len; ++q) {
                const double p = 1.0 / static_cast<double>(q + 1);
                size_t dup = 0, ind = 0;
                for (size_t k = 0; k <= q; ++k) {
                    dup += k < q && ids[k] == ids[q];
                    ind += k >= 1 && ids[k - 1] == ids[q];
                }
                uniform_.sum[0] += std::log(static_cast<double>(q + 1)), ++uniform_.count[0];
                uniform_.sum[1] += p, ++uniform_.count[1];
                if (q >= 1) uniform_.sum[2] += p, ++uniform_.count[2];
                if (dup) uniform_.sum[3] += static_cast<double>(dup) * p, ++uniform_.count[3];
                if (ind) uniform_.sum[4] += static_cast<double>(ind) * p, ++uniform_.count[4];
            }
        }
    }

    struct AblationSums {
        double kl = 0, loss_change = 0;
        uint64_t rows = 0;
    };

    /// Zero each head's `hook_z` in turn on this batch's prompts: mean KL(clean || ablated) of the next-token
    /// distributions over each prompt's positions, and the change of its mean next-token loss.
    void ablate(const nscope::Batch& batch, const std::vector<std::pair<int, const nscope::ActivationView*>>& maps) {
        nscope::ModelCall call;
        for (size_t r = 0; r < batch.rows; ++r) {
            const int64_t* ids = batch.input_ids + r * batch.positions;
            call.rows.emplace_back(ids, ids + batch.length(r));
            if (call.rows.back().size() < 2) return;  // one-token prompts have no next-token loss to compare
        }
        call.metric = nscope::Metric{"loss", {}, {}, {}};
        const std::vector<double> base = model_->run(call).metric;
        call.metric = nscope::Metric{"kl", {}, {}, {}};
        call.more_metrics = {nscope::Metric{"loss", {}, {}, {}}};
        for (const auto& [layer, view] : maps) {
            const auto H = static_cast<size_t>(view->shape[1]);
            for (size_t h = 0; h < H; ++h) {
                call.interventions = nlohmann::json::array(
                    {{{"hook", "blocks." + std::to_string(layer) + ".attn.hook_z"}, {"op", "zero"}, {"heads", {h}}}});
                const nscope::ModelOutput out = model_->run(call);
                AblationSums& a = ablation_sums_[{layer, h}];
                for (size_t r = 0; r < call.rows.size(); ++r) {
                    a.kl += out.metric[r];
                    a.loss_change += out.more_metrics[0][r] - base[r];
                    ++a.rows;
                }
            }
        }
    }

    /// The `heads` table gains the two ablation columns.
    void add_ablation_columns(nscope::Result& res) const {
        auto& table = res.data["tables"]["heads"];
        table["columns"].push_back("ablation_kl");
        table["columns"].push_back("ablation_loss");
        for (auto& row : table["rows"]) {
            const auto key = std::make_pair(row[0].get<int>(), row[1].get<size_t>());
            const auto it = ablation_sums_.find(key);
            const bool has = it != ablation_sums_.end() && it->second.rows > 0;
            const double n = has ? static_cast<double>(it->second.rows) : 1.0;
            row.push_back(has ? nlohmann::json(it->second.kl / n) : nlohmann::json(nullptr));
            row.push_back(has ? nlohmann::json(it->second.loss_change / n) : nlohmann::json(nullptr));
        }
    }

    bool ablation_ = false;
    const nscope::ModelAccess* model_ = nullptr;
    std::map<std::pair<int, size_t>, AblationSums> ablation_sums_;
    std::vector<std::string> layers_;
    HeadSums uniform_;
    std::map<int, std::vector<HeadSums>> sums_;  // layer -> heads (the map is filled before tasks run)
    nscope::ParallelFor parallel_for_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Heads, "heads", "1.0.0",
                       "per attention head: entropy, first-token, previous-token, duplicate-token and induction scores")

// `drift` analyzer: how far the neurons of each checkpoint of a fine-tuning series moved from the base model.
// Spans the models of a `models:` run (the first is the base): for every batch of prompts the host hands it
// the base's batch, then each checkpoint's, with the same tokens (checked). Per hook and neuron, over every
// real token:
//   drift        = 1 − r, r = Pearson correlation of the neuron's activations in the checkpoint with the same
//                  neuron's in the base over the same tokens (0: the same profile up to an affine map, 1:
//                  unrelated, 2: reversed); NaN when the neuron is constant in either model
//   mean_shift   = mean in the checkpoint − mean in the base
//   topk_overlap = |top-k (prompt, position) in the base ∩ in the checkpoint| / k
// and per hook the linear CKA of the checkpoint's token matrix with the base's. Streaming: per-neuron paired
// co-moments (nscope_common NeuronPairMoments), top-k lists (TopKLists), and for CKA the covariance of each
// model's hook plus the cross-covariance with the base (CoMoments, CrossMoments). Only the base's current
// batch is kept between calls. Schema: docs/analyses.md#drift.
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include <nscope/eigen.h>
#include <nscope/sdk.h>

#include "nscope_common/covariance.h"
#include "nscope_common/hooks.h"
#include "nscope_common/lockstep.h"
#include "nscope_common/params.h"
#include "nscope_common/topk.h"

namespace {

namespace nc = nscope::common;
using nlohmann::json;

struct Hit {
    nc::Occurrence occ;
};

struct HookState {
    int64_t width = 0;
    std::vector<nc::NeuronPairMoments> pairs;  // [checkpoints]
    std::vector<nc::TopKLists<Hit>> top;       // [models]
    nc::CoMoments base_cov;                    // with cka
    std::vector<nc::CoMoments> cov;            // [checkpoints]
    std::vector<nc::CrossMoments> cross;       // [checkpoints]: base × checkpoint
    std::vector<float> base_rows;              // the base's tokens of the current batch [tokens, width]
    std::vector<std::pair<int64_t, int64_t>> base_where;
};

const char* kFix = "drift compares neurons token by token, so every model must tokenize the prompts alike (a fine-tuning "
                   "series of one base shares its tokenizer)";

double nan() { return std::numeric_limits<double>::quiet_NaN(); }
json num(double v) { return std::isfinite(v) ? json(v) : json(); }

class Drift : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nc::ParamReader p("drift", params, {"hooks", "k", "cka", "top_neurons", "max_memory_mb", "min_tokens"});
        filter_ = nc::HookFilter(p.strings("hooks"));
        k_ = static_cast<size_t>(p.integer("k", 20, 1, 100000));
        cka_ = p.boolean("cka", true);
        top_neurons_ = static_cast<size_t>(p.integer("top_neurons", 10, 0, 1000000));
        max_memory_mb_ = p.number("max_memory_mb", 2048, 1);
        min_tokens_ = p.integer("min_tokens", 2, 2);
    }

    bool spans_models() const override { return true; }

    void check(const nscope::RunContext& ctx) override { plan(ctx); }

    void begin(const nscope::RunContext& ctx) override {
        plan(ctx);
        models_ = ctx.models;
        checkpoints_ = models_.size() - 1;
    }

    void consume(const nscope::Batch& batch) override {
        if (models_.empty()) nc::check_models("drift", {});
        const size_t m = batch.model;
        if (m >= models_.size())
            throw nscope::RuntimeError("drift: a batch of model " + std::to_string(m) + ", and the run has " +
                                       std::to_string(models_.size()));
        if (m == 0) lock_.reference(batch);
        else lock_.check("drift", batch, models_, true, kFix);
        std::vector<HookState*> states;
        std::vector<const nscope::ActivationView*> views;
        for (const auto& act : batch.activations) {
            nc::TokenLayout lay;
            if (!filter_.accept(act.hook, act.view, batch, lay)) continue;
            if (m == 0) {
                states.push_back(&nc::hook_state("drift", hooks_, act.hook, lay.neurons, [&](HookState& s) { init(s); }));
            } else {
                auto it = hooks_.find(act.hook);
                if (it == hooks_.end()) continue;  // not in the base: check() refused such runs up front
                if (it->second.width != lay.neurons)
                    throw nscope::InputError("drift: hook '" + act.hook + "' has " + std::to_string(lay.neurons) +
                                             " neurons in " + nc::model_name(models_, m) + " and " +
                                             std::to_string(it->second.width) + " in the base");
                states.push_back(&it->second);
            }
            views.push_back(&act.view);
        }
        nscope::run_tasks(parallel_for_, states.size(), [&](size_t i) { consume_hook(*states[i], *views[i], batch, m); });
    }

    nscope::Result finish() override {
        nscope::Result res;
        if (hooks_.empty()) throw nscope::InputError("drift: no token-wise hook was selected; check parameter 'hooks'");
        const auto names = nc::hooks_in_order(hooks_);
        const uint64_t tokens = hooks_.at(names[0]).pairs.empty() ? 0 : hooks_.at(names[0]).pairs[0].count;
        if (tokens < static_cast<uint64_t>(min_tokens_))
            throw nscope::InputError("drift: too few tokens: " + std::to_string(tokens) + " (at least " +
                                     std::to_string(min_tokens_) + " needed, parameter 'min_tokens'); add prompts");
        const auto K = static_cast<int64_t>(checkpoints_);
        nscope::Table layers, neurons;
        layers.columns = {"model", "checkpoint", "hook", "layer", "neurons", "mean_drift", "median_drift",
                          "mean_correlation", "mean_abs_shift", "mean_topk_overlap", "cka", "undefined"};
        neurons.columns = {"model", "hook", "layer", "neuron", "drift", "correlation", "mean_base", "mean_model",
                           "mean_shift", "topk_overlap"};
        // Per checkpoint: the averages over every hook's neurons (for the summary and the series figures).
        std::vector<double> sum_drift(checkpoints_, 0), sum_shift(checkpoints_, 0), sum_overlap(checkpoints_, 0),
            sum_cka(checkpoints_, 0);
        std::vector<size_t> n_drift(checkpoints_, 0), n_neurons(checkpoints_, 0), n_cka(checkpoints_, 0);
        json series_drift = json::array(), series_cka = json::array(), series_overlap = json::array();
        json frames = json::array();
        std::vector<std::vector<double>> frame_y(checkpoints_);
        std::vector<std::string> labels;
        for (size_t c = 1; c < models_.size(); ++c) labels.push_back(models_[c].label);
        for (const auto& name : names) {
            HookState& s = hooks_.at(name);
            const auto n = static_cast<size_t>(s.width);
            const int layer = nc::hook_layer(name);
            std::vector<float> drift(checkpoints_ * n), corr(checkpoints_ * n), shift(checkpoints_ * n),
                overlap(checkpoints_ * n);
            const std::vector<std::set<std::pair<uint32_t, uint32_t>>> base_top = top_sets(s.top[0]);
            json y_drift = json::array(), y_cka = json::array(), y_overlap = json::array();
            for (size_t c = 0; c < checkpoints_; ++c) {
                const nc::NeuronPairMoments& pm = s.pairs[c];
                const auto top = top_sets(s.top[c + 1]);
                std::vector<double> defined;
                double corr_sum = 0, shift_sum = 0, overlap_sum = 0;
                for (size_t j = 0; j < n; ++j) {
                    const double r = pm.correlation(j);
                    const double d = 1.0 - r;
                    const double sh = pm.mean_y[j] - pm.mean_x[j];
                    size_t common = 0;
                    for (const auto& o : top[j]) common += base_top[j].count(o);
                    const size_t denom = std::min(base_top[j].size(), top[j].size());
                    const double ov = denom ? static_cast<double>(common) / static_cast<double>(denom) : nan();
                    drift[c * n + j] = static_cast<float>(d);
                    corr[c * n + j] = static_cast<float>(r);
                    shift[c * n + j] = static_cast<float>(sh);
                    overlap[c * n + j] = static_cast<float>(ov);
                    if (std::isfinite(d)) defined.push_back(d), corr_sum += r;
                    shift_sum += std::abs(sh);
                    if (std::isfinite(ov)) overlap_sum += ov;
                }
                const double mean_drift = defined.empty() ? nan() : mean(defined);
                const double cka = cka_ ? nc::linear_cka(s.cross[c].c, s.base_cov.m2, s.cov[c].m2) : nan();
                layers.add_row({models_[c + 1].label, static_cast<int64_t>(c + 1), name, layer, static_cast<int64_t>(n),
                                num(mean_drift), num(defined.empty() ? nan() : median(defined)),
                                num(defined.empty() ? nan() : corr_sum / static_cast<double>(defined.size())),
                                num(shift_sum / static_cast<double>(n)), num(overlap_sum / static_cast<double>(n)), num(cka),
                                static_cast<int64_t>(n - defined.size())});
                for (double d : defined) sum_drift[c] += d;
                n_drift[c] += defined.size();
                sum_shift[c] += shift_sum, sum_overlap[c] += overlap_sum, n_neurons[c] += n;
                if (std::isfinite(cka)) sum_cka[c] += cka, ++n_cka[c];
                y_drift.push_back(num(mean_drift));
                y_cka.push_back(num(cka));
                y_overlap.push_back(num(overlap_sum / static_cast<double>(n)));
                frame_y[c].push_back(mean_drift);
                add_top_neurons(neurons, c, name, layer, pm, drift, corr, shift, overlap, n);
            }
            res.set_array(name + ".drift", nscope::NdArray::floats({K, s.width}, std::move(drift)));
            res.set_array(name + ".correlation", nscope::NdArray::floats({K, s.width}, std::move(corr)));
            res.set_array(name + ".mean_shift", nscope::NdArray::floats({K, s.width}, std::move(shift)));
            res.set_array(name + ".topk_overlap", nscope::NdArray::floats({K, s.width}, std::move(overlap)));
            series_drift.push_back({{"name", name}, {"y", std::move(y_drift)}});
            series_overlap.push_back({{"name", name}, {"y", std::move(y_overlap)}});
            if (cka_) series_cka.push_back({{"name", name}, {"y", std::move(y_cka)}});
        }
        json checkpoints = json::array();
        for (size_t c = 0; c < checkpoints_; ++c) {
            checkpoints.push_back(
                {{"model", labels[c]},
                 {"mean_drift", num(n_drift[c] ? sum_drift[c] / static_cast<double>(n_drift[c]) : nan())},
                 {"mean_abs_shift", num(sum_shift[c] / static_cast<double>(n_neurons[c]))},
                 {"mean_topk_overlap", num(sum_overlap[c] / static_cast<double>(n_neurons[c]))},
                 {"mean_cka", num(n_cka[c] ? sum_cka[c] / static_cast<double>(n_cka[c]) : nan())}});
            json y = json::array();
            for (double v : frame_y[c]) y.push_back(num(v));
            frames.push_back({{"name", labels[c]}, {"x", names}, {"y", std::move(y)}});
        }
        res.set_table("layers", std::move(layers));
        res.set_table("neurons", std::move(neurons));
        res.set_figure("drift", {{"kind", "line"}, {"title", "mean neuron drift (1 − profile correlation) from the base"},
                                 {"x", labels}, {"series", std::move(series_drift)}, {"x_label", "checkpoint"},
                                 {"y_label", "mean drift"}});
        res.set_figure("topk_overlap", {{"kind", "line"}, {"title", "top-" + std::to_string(k_) + " example overlap with the base"},
                                        {"x", labels}, {"series", std::move(series_overlap)}, {"x_label", "checkpoint"},
                                        {"y_label", "overlap fraction"}});
        if (cka_)
            res.set_figure("cka", {{"kind", "line"}, {"title", "linear CKA of each hook with the base (token by token)"},
                                   {"x", labels}, {"series", std::move(series_cka)}, {"x_label", "checkpoint"},
                                   {"y_label", "CKA"}});
        res.set_figure("drift_by_hook", {{"kind", "bar"}, {"title", "mean drift per hook, checkpoint by checkpoint"},
                                         {"x_label", "hook"}, {"y_label", "mean drift"}, {"frames", std::move(frames)}});
        json models = json::array();
        for (const auto& mc : models_) models.push_back(mc.label);
        res.data["summary"] = {{"base", models_[0].label}, {"models", models}, {"hooks", names.size()},
                               {"tokens", tokens}, {"k", k_}, {"cka", cka_}, {"checkpoints", std::move(checkpoints)},
                               {"skipped", filter_.skipped_json()}};
        return res;
    }

private:
    /// The hooks of the base this analysis selects, with the checks and the memory estimate a run needs.
    void plan(const nscope::RunContext& ctx) {
        nc::check_models("drift", ctx);
        parallel_for_ = ctx.parallel_for;
        const auto hooks = nc::planned_hooks("drift", ctx, filter_);
        nc::require_same_hooks("drift", ctx, hooks);
        nc::require_same_tokenizer("drift", ctx, kFix);
        const double K = static_cast<double>(ctx.models.size() - 1), M = static_cast<double>(ctx.models.size());
        double bytes = 0;
        std::string widest;
        int64_t widest_n = 0;
        for (const auto& h : hooks) {
            const double n = static_cast<double>(h.width);
            bytes += K * 5 * 8 * n + M * n * static_cast<double>(k_) * (sizeof(Hit) + 4 + 8);
            if (cka_) bytes += (1 + 2 * K) * nc::comoments_bytes(h.width) + 2 * 4 * n * n;  // + float temporaries
            if (h.width > widest_n) widest_n = h.width, widest = h.name;
        }
        nc::check_memory("drift", bytes, max_memory_mb_,
                         "the state for " + std::to_string(hooks.size()) + " hooks and " +
                             std::to_string(ctx.models.size()) + " models (per-hook CKA covariances: " +
                             (cka_ ? "on" : "off") + ")",
                         "set 'cka: false' (the covariances grow with the square of a hook's width; the widest is '" +
                             widest + "', " + std::to_string(widest_n) + "), select fewer hooks with 'hooks', or lower 'k'");
    }

    void init(HookState& s) const {
        s.pairs.assign(checkpoints_, {});
        for (auto& p : s.pairs) p.init(s.width);
        s.top.assign(models_.size(), {});
        for (auto& t : s.top) t.init(static_cast<size_t>(s.width), k_);
        if (cka_) {
            s.base_cov.init(s.width);
            s.cov.assign(checkpoints_, {});
            s.cross.assign(checkpoints_, {});
            for (auto& c : s.cov) c.init(s.width);
            for (auto& c : s.cross) c.init(s.width, s.width);
        }
    }

    void consume_hook(HookState& s, const nscope::ActivationView& view, const nscope::Batch& batch, size_t m) const {
        std::vector<float> local;
        std::vector<std::pair<int64_t, int64_t>> where_local;
        std::vector<float>& rows = m == 0 ? s.base_rows : local;
        auto& where = m == 0 ? s.base_where : where_local;
        nc::gather_tokens(batch, view, s.width, rows, &where);
        const size_t tokens = where.size(), n = static_cast<size_t>(s.width);
        auto& top = s.top[m];
        for (size_t t = 0; t < tokens; ++t)
            for (size_t j = 0; j < n; ++j) {
                const float v = rows[t * n + j];
                if (!(v >= top.floor(j))) continue;
                top.take(j, {v, static_cast<uint32_t>(where[t].first), static_cast<uint32_t>(where[t].second)});
            }
        if (m == 0) {
            if (cka_) s.base_cov.add(rows.data(), tokens);
            return;
        }
        if (s.base_where.size() != tokens)
            throw nscope::RuntimeError("drift: the base's batch has " + std::to_string(s.base_where.size()) +
                                       " tokens and " + nc::model_name(models_, m) + "'s " + std::to_string(tokens));
        s.pairs[m - 1].add(s.base_rows.data(), rows.data(), tokens);
        if (cka_) {
            s.cov[m - 1].add(rows.data(), tokens);
            s.cross[m - 1].add(s.base_rows.data(), rows.data(), tokens);
        }
    }

    /// Per neuron: the set of (prompt, position) of its top-k list.
    static std::vector<std::set<std::pair<uint32_t, uint32_t>>> top_sets(const nc::TopKLists<Hit>& top) {
        std::vector<std::set<std::pair<uint32_t, uint32_t>>> out(top.lists());
        for (size_t l = 0; l < top.lists(); ++l)
            for (size_t j = 0; j < top.size(l); ++j) {
                const auto& o = top.item(l * top.k() + j).occ;
                out[l].emplace(o.prompt, o.position);
            }
        return out;
    }

    void add_top_neurons(nscope::Table& t, size_t c, const std::string& hook, int layer, const nc::NeuronPairMoments& pm,
                         const std::vector<float>& drift, const std::vector<float>& corr, const std::vector<float>& shift,
                         const std::vector<float>& overlap, size_t n) const {
        std::vector<size_t> order;
        for (size_t j = 0; j < n; ++j)
            if (std::isfinite(drift[c * n + j])) order.push_back(j);
        const size_t keep = std::min(top_neurons_, order.size());
        std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep), order.end(), [&](size_t a, size_t b) {
            return drift[c * n + a] != drift[c * n + b] ? drift[c * n + a] > drift[c * n + b] : a < b;
        });
        for (size_t i = 0; i < keep; ++i) {
            const size_t j = order[i];
            t.add_row({models_[c + 1].label, hook, layer, static_cast<int64_t>(j), num(drift[c * n + j]), num(corr[c * n + j]),
                       num(pm.mean_x[j]), num(pm.mean_y[j]), num(shift[c * n + j]), num(overlap[c * n + j])});
        }
    }

    static double mean(const std::vector<double>& v) {
        double s = 0;
        for (double x : v) s += x;
        return s / static_cast<double>(v.size());
    }
    static double median(std::vector<double> v) {
        const size_t h = v.size() / 2;
        std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(h), v.end());
        if (v.size() % 2) return v[h];
        const double hi = v[h];
        return (*std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(h)) + hi) / 2;
    }

    nc::HookFilter filter_;
    size_t k_ = 20;
    bool cka_ = true;
    size_t top_neurons_ = 10;
    double max_memory_mb_ = 2048;
    int64_t min_tokens_ = 2;
    std::vector<nscope::ModelContext> models_;
    size_t checkpoints_ = 0;
    nscope::ParallelFor parallel_for_;
    nc::LockstepBatches lock_;
    std::map<std::string, HookState> hooks_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Drift, "drift", "1.0.0",
                       "neuron drift of fine-tuned checkpoints from their base: profile correlation, mean shift, top-k "
                       "overlap, CKA (spans the models of a models: run)")

// `cka` analyzer: linear CKA (Kornblith et al. 2019) between every pair of hooks of one model, token by token
// (padding excluded), as a hooks × hooks matrix with a heatmap; or, with `across: models` in a `models:` run,
// between every hook of the first model and every hook of each other model (a checkpoint against its base),
// token by token (same tokens required, checked) or on per-prompt pooled points (`pool: mean | last`, any
// tokenizers). Schema: docs/analyses.md#cka.
//
// For centred token matrices X [tokens, p] and Y [tokens, q] of two hooks,
//   CKA(X, Y) = ‖Xᵀ Y‖²_F / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F),
// which needs only the cross-covariances, never the tokens × tokens Gram matrices. They are blocks of the
// covariance of the concatenated hooks (D = Σ widths), accumulated streaming and mergeable (CoMoments):
// memory D² doubles, cost D²/2 multiply-adds per token; the finish is O(D²). Across models, each model's
// joint covariance (D_m²) plus the cross-covariance of the first model's hooks with each other model's
// (CrossMoments, D_0 × D_m). The memory is estimated before the first batch (at plan time across models) and
// refused above `max_memory_mb`. Deterministic.
//
// `method: minibatch` (minibatch CKA from the debiased HSIC) and `method: rsa` (RDMs + Spearman) work from
// points instead (point_similarity.h): the choice when the joint covariance of many wide hooks would not fit,
// or when a rank-based, nonlinear comparison is wanted.
#include <nscope/eigen.h>
#include <nscope/sdk.h>

#include "nscope_common/covariance.h"
#include "nscope_common/hooks.h"
#include "nscope_common/lockstep.h"
#include "nscope_common/params.h"
#include "nscope_common/points.h"
#include "point_similarity.h"

namespace {

using nscope::common::CoMoments;
using nscope::common::CrossMoments;
namespace nc = nscope::common;

const char* kPoolFix = "set 'pool: mean' or 'pool: last' to compare one pooled point per prompt instead";

/// How two hooks are compared: linear CKA from covariances (exact), minibatch CKA, or RSA.
enum class Method { Linear, Minibatch, Rsa };

/// The selected token-wise hooks of one model of an `across: models` run.
struct ModelHooks {
    std::vector<std::string> names;
    std::vector<int64_t> widths;
    int64_t total = 0;
};

class Cka : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("cka", params,
                                      {"hooks", "max_memory_mb", "min_tokens", "across", "pool", "method", "minibatch", "max_points"});
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
        max_memory_mb_ = p.number("max_memory_mb", 2048, 1);
        min_tokens_ = p.integer("min_tokens", 2, 2);
        across_ = p.choice("across", "hooks", {"hooks", "models"}) == "models";
        pool_ = p.choice("pool", "tokens", {"tokens", "mean", "last"});
        if (!across_ && pool_ != "tokens")
            p.fail("pool", "is only for 'across: models' (pooled points of models with different tokenizers); "
                           "between the hooks of one model CKA compares token by token");
        const std::string method = p.choice("method", "linear", {"linear", "minibatch", "rsa"});
        method_ = method == "minibatch" ? Method::Minibatch : method == "rsa" ? Method::Rsa : Method::Linear;
        minibatch_ = static_cast<size_t>(p.integer("minibatch", 256, 4));
        max_points_ = static_cast<size_t>(p.integer("max_points", 1000, 3));
        if (method_ != Method::Minibatch && params.contains("minibatch"))
            p.fail("minibatch", "is the minibatch size of 'method: minibatch'");
        if (method_ != Method::Rsa && params.contains("max_points"))
            p.fail("max_points", "is the sample size of 'method: rsa'");
    }

    bool spans_models() const override { return across_; }

    void check(const nscope::RunContext& ctx) override {
        if (across_) plan_models(ctx);
    }

    void begin(const nscope::RunContext& ctx) override {
        seed_ = ctx.seed;
        if (across_) {
            plan_models(ctx);
            models_ = ctx.models;
            if (method_ != Method::Linear) return init_measure(model_hooks_, across_pairs());
            cov_models_.assign(models_.size(), {});
            cross_.assign(models_.size() - 1, {});
            for (size_t m = 0; m < models_.size(); ++m) cov_models_[m].init(model_hooks_[m].total);
            for (size_t m = 1; m < models_.size(); ++m) cross_[m - 1].init(model_hooks_[0].total, model_hooks_[m].total);
            return;
        }
        double width = 0;
        std::string widest;
        int64_t widest_n = 0;
        ModelHooks planned;
        for (const auto& h : nscope::common::planned_hooks("cka", ctx, filter_)) {
            width += static_cast<double>(h.width);
            if (h.width > widest_n) widest_n = h.width, widest = h.name;
            planned.names.push_back(h.name), planned.widths.push_back(h.width), planned.total += h.width;
        }
        if (method_ != Method::Linear) {
            if (!planned.names.empty())
                nc::check_memory("cka", measure_bytes({planned}), max_memory_mb_, measure_what(),
                                 "select fewer hooks with 'hooks' (the widest is '" + widest + "', " +
                                     std::to_string(widest_n) + ")");
            return;
        }
        // Joint covariance (double) + the per-chunk float Gram of the same size.
        nscope::common::check_memory("cka", 1.5 * nscope::common::comoments_bytes(static_cast<int64_t>(width)),
                                     max_memory_mb_,
                                     "the joint covariance of " + std::to_string(static_cast<int64_t>(width)) +
                                         " features (the widths of all selected hooks together)",
                                     "select fewer hooks with 'hooks' (the widest is '" + widest + "', " +
                                         std::to_string(widest_n) + ")");
    }

    void consume(const nscope::Batch& batch) override {
        if (across_) return consume_across(batch);
        std::vector<std::pair<std::string, const nscope::ActivationView*>> acts;
        std::vector<int64_t> widths;
        for (const auto& act : batch.activations) {
            nscope::common::TokenLayout lay;
            if (!filter_.accept(act.hook, act.view, batch, lay)) continue;
            acts.emplace_back(act.hook, &act.view);
            widths.push_back(lay.neurons);
        }
        std::vector<size_t> order(acts.size());
        std::iota(order.begin(), order.end(), size_t{0});
        std::sort(order.begin(), order.end(),
                  [&](size_t a, size_t b) { return nscope::common::hook_order(acts[a].first, acts[b].first); });
        if (hooks_.empty()) {
            int64_t total = 0;
            for (size_t i : order) hooks_.push_back(acts[i].first), widths_.push_back(widths[i]), total += widths[i];
            if (method_ == Method::Linear) cov_.init(total);
            else init_measure({ModelHooks{hooks_, widths_, total}}, hooks_pairs());
        }
        check_same_hooks(acts, widths, order);
        // One row per real token: the hooks' values side by side.
        const auto total = static_cast<size_t>(std::accumulate(widths_.begin(), widths_.end(), int64_t{0}));
        size_t tokens = 0;
        for (size_t r = 0; r < batch.rows; ++r) tokens += batch.length(r);
        joint_.resize(tokens * total);
        size_t offset = 0;
        for (size_t i : order) {
            const auto w = static_cast<size_t>(widths[i]);
            const float* data = acts[i].second->f32();
            size_t t = 0;
            for (size_t r = 0; r < batch.rows; ++r)
                for (size_t p = 0; p < batch.positions; ++p)
                    if (batch.valid(r, p)) {
                        std::copy_n(data + (r * batch.positions + p) * w, w, joint_.data() + t * total + offset);
                        ++t;
                    }
            offset += w;
        }
        if (method_ == Method::Linear) return cov_.add(joint_.data(), tokens);
        seen_ += tokens;
        if (method_ == Method::Minibatch) return minibatch_cka_.add(0, joint_.data(), tokens);
        origin_.clear();
        for (size_t r = 0; r < batch.rows; ++r)
            for (size_t p = 0; p < batch.positions; ++p)
                if (batch.valid(r, p))
                    origin_.push_back({static_cast<int64_t>(batch.prompts[r]->index), static_cast<int64_t>(p),
                                       batch.input_ids[r * batch.positions + p], batch.prompts[r]});
        rsa_.add(0, joint_, origin_);
    }

    // Minibatch CKA depends on where the minibatches fall, so shards would not add up to one pass.
    bool mergeable() const override { return !across_ && method_ == Method::Linear; }

    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const Cka&>(other);
        if (o.hooks_.empty()) return;
        if (hooks_.empty()) {
            hooks_ = o.hooks_, widths_ = o.widths_;
            cov_.init(o.cov_.features());
        } else if (hooks_ != o.hooks_) {
            throw nscope::RuntimeError("cka: cannot merge shards that saw different hooks");
        }
        cov_.merge(o.cov_);
        filter_.merge(o.filter_);
    }

    /// Linear CKA within one model saves its streaming state (the hooks seen and their joint covariance);
    /// minibatch CKA, RSA and `across: models` cannot (they are not mergeable either).
    uint32_t state_version() const override { return mergeable() ? 1 : 0; }
    void save_state(nscope::StateWriter& out) const override {
        out.strings(hooks_);
        out.array(widths_);
        if (!hooks_.empty()) cov_.save(out);
        filter_.save(out);
    }
    void load_state(nscope::StateReader& in) override {
        hooks_ = in.strings();
        widths_ = in.array_of<int64_t>(hooks_.size(), "hook widths");
        uint64_t total = 0;
        for (int64_t w : widths_) {
            if (w <= 0) in.fail("a hook has width " + std::to_string(w));
            total += static_cast<uint64_t>(w);
        }
        if (!hooks_.empty()) {
            // The joint covariance holds total² doubles: a total the blob cannot hold is damage.
            if (total > in.left() || total * total * sizeof(double) > in.left())
                in.fail("the hooks claim " + std::to_string(total) + " features together");
            cov_.init(static_cast<int64_t>(total));
            cov_.load(in);
        }
        filter_.load(in);
    }

    nscope::Result finish() override {
        if (across_) return finish_across();
        nscope::Result res;
        const auto h = static_cast<int64_t>(hooks_.size());
        if (h == 0) throw nscope::InputError("cka: no token-wise hook was selected; check parameter 'hooks'");
        const uint64_t seen = method_ == Method::Linear ? cov_.count : seen_;
        if (seen < static_cast<uint64_t>(min_tokens_))
            throw nscope::InputError("cka: too few tokens: " + std::to_string(seen) + " (at least " +
                                     std::to_string(min_tokens_) + " needed, parameter 'min_tokens'); add prompts");
        finish_measure();
        std::vector<int64_t> start(static_cast<size_t>(h) + 1, 0);
        for (int64_t i = 0; i < h; ++i) start[i + 1] = start[i] + widths_[i];
        auto block = [&](int64_t i, int64_t j) {
            return cov_.m2.block(start[i], start[j], widths_[i], widths_[j]);
        };
        auto similarity = [&](int64_t i, int64_t j) {
            if (method_ != Method::Linear) return measure_value(hooks_pair(std::min(i, j), std::max(i, j)));
            return nc::linear_cka(block(i, j), block(i, i), block(j, j));
        };
        std::vector<float> matrix(static_cast<size_t>(h * h));
        nlohmann::json z = nlohmann::json::array();
        nscope::Table pairs;
        pairs.columns = {"hook_a", "layer_a", "hook_b", "layer_b", value_name()};
        for (int64_t i = 0; i < h; ++i) {
            nlohmann::json row = nlohmann::json::array();
            for (int64_t j = 0; j < h; ++j) {
                // A constant hook has no variance to compare: CKA is undefined (NaN, null in JSON).
                const double v = similarity(i, j);
                matrix[static_cast<size_t>(i * h + j)] = static_cast<float>(v);
                row.push_back(std::isfinite(v) ? nlohmann::json(v) : nlohmann::json());
                if (j > i)
                    pairs.add_row({hooks_[i], nscope::common::hook_layer(hooks_[i]), hooks_[j],
                                   nscope::common::hook_layer(hooks_[j]),
                                   std::isfinite(v) ? nlohmann::json(v) : nlohmann::json()});
            }
            z.push_back(std::move(row));
        }
        res.set_array("matrix", nscope::NdArray::floats({h, h}, std::move(matrix)));
        res.data["rows"] = hooks_;
        res.data["cols"] = hooks_;
        res.set_table("pairs", std::move(pairs));
        res.set_figure("cka", {{"kind", "heatmap"}, {"title", method_title() + " between hooks (token by token)"},
                               {"z", std::move(z)}, {"x", hooks_}, {"y", hooks_}, {"z_label", value_label()}});
        res.data["summary"] = {{"hooks", h}, {"tokens", seen}, {"features", start.back()},
                               {"skipped", filter_.skipped_json()}};
        add_measure_summary(res.data["summary"]);
        return res;
    }

private:
    /// Across models: each model's selected hooks, the checks and the memory estimate.
    void plan_models(const nscope::RunContext& ctx) {
        nc::check_models("cka", ctx);
        if (pool_ == "tokens") nc::require_same_tokenizer("cka", ctx, kPoolFix);
        model_hooks_.clear();
        double bytes = 0;
        std::string widest;
        int64_t widest_n = 0;
        for (size_t m = 0; m < ctx.models.size(); ++m) {
            nscope::RunContext one;
            one.hooks = ctx.models[m].hooks;
            ModelHooks mh;
            try {
                for (const auto& h : nc::planned_hooks("cka", one, filter_)) {
                    mh.names.push_back(h.name), mh.widths.push_back(h.width), mh.total += h.width;
                    if (h.width > widest_n) widest_n = h.width, widest = h.name;
                }
            } catch (const nscope::InputError& e) {
                throw nscope::InputError(std::string(e.what()) + " (in model " + nc::model_name(ctx.models, m) + ")");
            }
            if (mh.names.empty() && !one.hooks.empty())
                throw nscope::InputError("cka: no token-wise hook of " + nc::model_name(ctx.models, m) +
                                         " is selected; check parameter 'hooks'");
            model_hooks_.push_back(std::move(mh));
        }
        if (method_ != Method::Linear)
            return nc::check_memory("cka", measure_bytes(model_hooks_), max_memory_mb_,
                                    "across " + std::to_string(ctx.models.size()) + " models, " + measure_what(),
                                    "select fewer hooks with 'hooks' (the widest is '" + widest + "', " +
                                        std::to_string(widest_n) + ")");
        // Each model's joint covariance (+ its float Gram) and the cross-covariances with the first model (+ the
        // float product).
        const double d0 = static_cast<double>(model_hooks_[0].total);
        for (size_t m = 0; m < model_hooks_.size(); ++m) {
            const double dm = static_cast<double>(model_hooks_[m].total);
            bytes += 1.5 * nc::comoments_bytes(model_hooks_[m].total);
            if (m > 0) bytes += 1.5 * 8 * d0 * dm;
        }
        nc::check_memory("cka", bytes, max_memory_mb_,
                         "across " + std::to_string(ctx.models.size()) + " models, the covariances of each model's " +
                             "hooks and their cross-covariances with the first model's",
                         "select fewer hooks with 'hooks' (the widest is '" + widest + "', " + std::to_string(widest_n) + ")");
    }

    /// Model m's points of this batch, its selected hooks side by side: joint [points, D_m].
    void joint_points(const nscope::Batch& batch, const ModelHooks& mh, std::vector<float>& joint) {
        const auto total = static_cast<size_t>(mh.total);
        const nc::PointMode mode = nc::point_mode(pool_);
        size_t offset = 0, points = 0;
        for (size_t i = 0; i < mh.names.size(); ++i) {
            const nscope::ActivationView* v = batch.find(mh.names[i]);
            nc::TokenLayout lay;
            if (!v || !filter_.accept(mh.names[i], *v, batch, lay) || lay.neurons != mh.widths[i])
                throw nscope::RuntimeError("cka: a batch of " + nc::model_name(models_, batch.model) +
                                           " lacks hook '" + mh.names[i] + "' or has it with another width");
            nc::batch_points(batch, v->f32(), lay.neurons, mode, points_, origin_);
            if (i == 0) points = origin_.size(), joint.assign(points * total, 0.0f);
            const auto w = static_cast<size_t>(lay.neurons);
            for (size_t t = 0; t < points; ++t)
                std::copy_n(points_.data() + t * w, w, joint.data() + t * total + offset);
            offset += w;
        }
    }

    void consume_across(const nscope::Batch& batch) {
        const size_t m = batch.model;
        if (m >= models_.size())
            throw nscope::RuntimeError("cka: a batch of model " + std::to_string(m) + ", and the run has " +
                                       std::to_string(models_.size()) + " (across: models needs a models: run)");
        if (m == 0) lock_.reference(batch);
        else lock_.check("cka", batch, models_, pool_ == "tokens", kPoolFix);
        std::vector<float>& joint = m == 0 ? base_joint_ : joint_;
        joint_points(batch, model_hooks_[m], joint);
        const size_t points = model_hooks_[m].total ? joint.size() / static_cast<size_t>(model_hooks_[m].total) : 0;
        if (method_ != Method::Linear) {
            if (m == 0) seen_ += points;
            if (method_ == Method::Minibatch) return minibatch_cka_.add(m, joint.data(), points);
            return rsa_.add(m, joint, origin_);
        }
        cov_models_[m].add(joint.data(), points);
        if (m > 0) cross_[m - 1].add(base_joint_.data(), joint.data(), points);
    }

    nscope::Result finish_across() {
        nscope::Result res;
        if (models_.empty()) throw nscope::InputError("cka: across: models needs a models: run");
        const ModelHooks& base = model_hooks_[0];
        if (base.names.empty()) throw nscope::InputError("cka: no token-wise hook was selected; check parameter 'hooks'");
        const uint64_t points = method_ == Method::Linear ? cov_models_[0].count : seen_;
        if (points < static_cast<uint64_t>(min_tokens_))
            throw nscope::InputError("cka: too few " + std::string(pool_ == "tokens" ? "tokens" : "prompts") + ": " +
                                     std::to_string(points) + " (at least " + std::to_string(min_tokens_) +
                                     " needed, parameter 'min_tokens'); add prompts");
        auto starts = [](const ModelHooks& mh) {
            std::vector<int64_t> s(mh.names.size() + 1, 0);
            for (size_t i = 0; i < mh.names.size(); ++i) s[i + 1] = s[i] + mh.widths[i];
            return s;
        };
        const auto s0 = starts(base);
        finish_measure();
        nscope::Table pairs;
        pairs.columns = {"model", "hook_a", "layer_a", "hook_b", "layer_b", value_name()};
        nlohmann::json cols = nlohmann::json::object(), labels = nlohmann::json::array();
        // CKA of each base hook with the same hook of every model, when the models share the hooks.
        bool same_hooks = true;
        for (const auto& mh : model_hooks_) same_hooks &= mh.names == base.names;
        nlohmann::json same_series = nlohmann::json::array();
        std::vector<std::vector<double>> same(base.names.size());
        for (size_t m = 1; m < models_.size(); ++m) {
            const ModelHooks& mh = model_hooks_[m];
            const auto sm = starts(mh);
            const auto h0 = static_cast<int64_t>(base.names.size()), hm = static_cast<int64_t>(mh.names.size());
            auto similarity = [&](int64_t i, int64_t j) {
                if (method_ != Method::Linear) return measure_value(across_pair(m, static_cast<size_t>(i), static_cast<size_t>(j)));
                const auto& c0 = cov_models_[0].m2;
                const auto& cm = cov_models_[m].m2;
                const auto& cx = cross_[m - 1].c;
                return nc::linear_cka(cx.block(s0[i], sm[j], base.widths[i], mh.widths[j]),
                                      c0.block(s0[i], s0[i], base.widths[i], base.widths[i]),
                                      cm.block(sm[j], sm[j], mh.widths[j], mh.widths[j]));
            };
            std::vector<float> matrix(static_cast<size_t>(h0 * hm));
            nlohmann::json z = nlohmann::json::array();
            for (int64_t i = 0; i < h0; ++i) {
                nlohmann::json row = nlohmann::json::array();
                for (int64_t j = 0; j < hm; ++j) {
                    const double v = similarity(i, j);
                    matrix[static_cast<size_t>(i * hm + j)] = static_cast<float>(v);
                    const nlohmann::json cell = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
                    row.push_back(cell);
                    pairs.add_row({models_[m].label, base.names[i], nc::hook_layer(base.names[i]), mh.names[j],
                                   nc::hook_layer(mh.names[j]), cell});
                    if (same_hooks && i == j) same[i].push_back(v);
                }
                z.push_back(std::move(row));
            }
            const std::string& label = models_[m].label;
            res.set_array("matrix." + label, nscope::NdArray::floats({h0, hm}, std::move(matrix)));
            cols[label] = mh.names;
            labels.push_back(label);
            res.set_figure("cka." + label,
                           {{"kind", "heatmap"},
                            {"title", method_title() + ": " + models_[0].label + " (rows) vs " + label + " (columns), " +
                                          (pool_ == "tokens" ? "token by token" : "pooled by " + pool_ + " per prompt")},
                            {"z", std::move(z)}, {"x", mh.names}, {"y", base.names}, {"z_label", value_label()}});
        }
        if (same_hooks) {
            const auto k = static_cast<int64_t>(models_.size() - 1), h = static_cast<int64_t>(base.names.size());
            std::vector<float> diag(static_cast<size_t>(k * h));
            for (int64_t m = 0; m < k; ++m)
                for (int64_t i = 0; i < h; ++i) diag[static_cast<size_t>(m * h + i)] = static_cast<float>(same[i][m]);
            res.set_array("same_hook", nscope::NdArray::floats({k, h}, std::move(diag)));
            for (size_t i = 0; i < base.names.size(); ++i) {
                nlohmann::json y = nlohmann::json::array();
                for (double v : same[i]) y.push_back(std::isfinite(v) ? nlohmann::json(v) : nlohmann::json());
                same_series.push_back({{"name", base.names[i]}, {"y", std::move(y)}});
            }
            res.set_figure("same_hook", {{"kind", "line"},
                                         {"title", method_title() + " of each hook with the same hook of " + models_[0].label},
                                         {"x", labels}, {"series", std::move(same_series)}, {"x_label", "model"},
                                         {"y_label", value_label()}});
        }
        res.data["rows"] = base.names;
        res.data["cols"] = cols;
        res.data["models"] = labels;
        res.set_table("pairs", std::move(pairs));
        res.data["summary"] = {{"across", "models"}, {"base", models_[0].label}, {"models", labels},
                               {"pool", pool_}, {"points", points}, {"hooks", base.names.size()},
                               {"same_hooks", same_hooks}, {"skipped", filter_.skipped_json()}};
        add_measure_summary(res.data["summary"]);
        return res;
    }

    // --- method: minibatch | rsa (point_similarity.h) ---

    /// Between the hooks of one model: every pair (i, j), i ≤ j, in row-major order of the upper triangle.
    std::vector<nscope::cka::HookPair> hooks_pairs() const {
        std::vector<nscope::cka::HookPair> out;
        for (size_t i = 0; i < hooks_.size(); ++i)
            for (size_t j = i; j < hooks_.size(); ++j) out.emplace_back(i, j);
        return out;
    }
    size_t hooks_pair(int64_t i, int64_t j) const {
        const auto h = static_cast<int64_t>(hooks_.size());
        return static_cast<size_t>(i * h - i * (i - 1) / 2 + (j - i));
    }

    /// Across models: each hook of the first model with each hook of model m ≥ 1, models in order. Hooks are
    /// numbered model by model (the order init_measure lays them out).
    std::vector<nscope::cka::HookPair> across_pairs() const {
        std::vector<nscope::cka::HookPair> out;
        size_t first = model_hooks_[0].names.size();
        for (size_t m = 1; m < model_hooks_.size(); ++m) {
            for (size_t i = 0; i < model_hooks_[0].names.size(); ++i)
                for (size_t j = 0; j < model_hooks_[m].names.size(); ++j) out.emplace_back(i, first + j);
            first += model_hooks_[m].names.size();
        }
        return out;
    }
    size_t across_pair(size_t m, size_t i, size_t j) const {
        size_t offset = 0;
        const size_t h0 = model_hooks_[0].names.size();
        for (size_t k = 1; k < m; ++k) offset += h0 * model_hooks_[k].names.size();
        return offset + i * model_hooks_[m].names.size() + j;
    }

    void init_measure(const std::vector<ModelHooks>& models, std::vector<nscope::cka::HookPair> pairs) {
        std::vector<int64_t> totals;
        std::vector<nscope::cka::HookColumns> columns;
        for (size_t m = 0; m < models.size(); ++m) {
            totals.push_back(models[m].total);
            int64_t start = 0;
            for (int64_t w : models[m].widths) columns.push_back({m, start, w}), start += w;
        }
        seen_ = 0;
        if (method_ == Method::Minibatch) minibatch_cka_.init(totals, std::move(columns), std::move(pairs), minibatch_);
        else rsa_.init(totals, std::move(columns), std::move(pairs), max_points_, seed_);
    }

    double measure_bytes(const std::vector<ModelHooks>& models) const {
        std::vector<int64_t> totals;
        size_t hooks = 0;
        for (const auto& mh : models) totals.push_back(std::max<int64_t>(mh.total, 1)), hooks += mh.names.size();
        return method_ == Method::Minibatch ? nscope::cka::MinibatchCka::bytes(totals, hooks, minibatch_)
                                            : nscope::cka::Rsa::bytes(totals, hooks, max_points_);
    }
    std::string measure_what() const {
        return method_ == Method::Minibatch
                   ? "minibatches of " + std::to_string(minibatch_) + " points of every selected hook and their Gram matrices"
                   : "a sample of " + std::to_string(max_points_) + " points of every selected hook and their ranked RDMs";
    }

    void finish_measure() {
        if (method_ == Method::Minibatch) minibatch_cka_.finish();
        else if (method_ == Method::Rsa) rsa_.finish();
    }
    double measure_value(size_t pair) const {
        return method_ == Method::Minibatch ? minibatch_cka_.value(pair) : rsa_.value(pair);
    }

    std::string method_title() const {
        if (method_ == Method::Minibatch) return "minibatch CKA (debiased HSIC, " + std::to_string(minibatch_) + " points)";
        if (method_ == Method::Rsa) return "RSA (Spearman ρ of correlation-distance RDMs)";
        return "linear CKA";
    }
    std::string value_name() const { return method_ == Method::Rsa ? "rsa" : "cka"; }
    std::string value_label() const { return method_ == Method::Rsa ? "Spearman ρ" : "CKA"; }

    void add_measure_summary(nlohmann::json& summary) const {
        summary["method"] = method_ == Method::Minibatch ? "minibatch" : method_ == Method::Rsa ? "rsa" : "linear";
        if (method_ == Method::Minibatch)
            summary.update({{"minibatch", minibatch_}, {"minibatches", minibatch_cka_.minibatches},
                            {"dropped", minibatch_cka_.dropped}});
        if (method_ == Method::Rsa)
            summary.update({{"max_points", max_points_}, {"sampled", rsa_.points}, {"seed", seed_}});
    }

    // Every batch must carry the same hooks with the same widths: the joint covariance has fixed columns.
    void check_same_hooks(const std::vector<std::pair<std::string, const nscope::ActivationView*>>& acts,
                          const std::vector<int64_t>& widths, const std::vector<size_t>& order) const {
        bool same = order.size() == hooks_.size();
        for (size_t k = 0; same && k < order.size(); ++k)
            same = acts[order[k]].first == hooks_[k] && widths[order[k]] == widths_[k];
        if (!same)
            throw nscope::RuntimeError("cka: a batch carries different hooks or widths than the first one (" +
                                       nscope::common::join(hooks_) + ")");
    }

    nscope::common::HookFilter filter_;
    Method method_ = Method::Linear;
    size_t minibatch_ = 256, max_points_ = 1000;
    uint64_t seed_ = 0, seen_ = 0;
    nscope::cka::MinibatchCka minibatch_cka_;
    nscope::cka::Rsa rsa_;
    double max_memory_mb_ = 2048;
    int64_t min_tokens_ = 2;
    std::vector<std::string> hooks_;
    std::vector<int64_t> widths_;
    CoMoments cov_;
    std::vector<float> joint_;
    // across: models
    bool across_ = false;
    std::string pool_ = "tokens";
    std::vector<nscope::ModelContext> models_;
    std::vector<ModelHooks> model_hooks_;
    std::vector<CoMoments> cov_models_;
    std::vector<CrossMoments> cross_;
    std::vector<float> base_joint_, points_;
    std::vector<nc::PointOrigin> origin_;
    nc::LockstepBatches lock_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Cka, "cka", "1.0.0", "linear CKA between the hooks of one model, or across the models of a models: run, streaming")

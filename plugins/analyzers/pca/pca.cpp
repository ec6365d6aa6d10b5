// `pca` analyzer: per hook, the streaming covariance of its points (every real token, or one pooled point per
// prompt; double totals, mergeable), its top-k principal components and explained variance ratios, and the
// projection of a seeded, capped sample of the points on them, with a scatter figure per hook.
// Schema: docs/analyses.md#pca.
//
// Cost: per point n²/2 multiply-adds (n = hook width); at finish one symmetric eigen-decomposition of n×n
// (Eigen's SelfAdjointEigenSolver, O(n³)) per hook. Memory: n² doubles + points × n floats per hook.
// Deterministic for a given seed: the sample does not depend on batching, threads or shards.
#include <nscope/eigen.h>
#include <nscope/sdk.h>

#include <Eigen/Eigenvalues>

#include "nscope_common/covariance.h"
#include "nscope_common/hooks.h"
#include "nscope_common/params.h"
#include "nscope_common/points.h"

namespace {

using nscope::common::CoMoments;
using nscope::common::PointMode;
using nscope::common::PointOrigin;
using nscope::common::PointSample;

struct HookState {
    int64_t width = 0;
    CoMoments cov;
    PointSample sample;
    // Per-batch scratch.
    std::vector<float> x;
    std::vector<PointOrigin> origin;
};

class Pca : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("pca", params,
                                      {"hooks", "k", "points", "pool", "color", "label", "max_memory_mb"});
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
        k_ = p.integer("k", 10, 1, 100000);
        cap_ = static_cast<size_t>(p.integer("points", 2000, 0, 10000000));
        pool_ = p.choice("pool", "tokens", {"tokens", "mean", "last"});
        mode_ = nscope::common::point_mode(pool_);
        if (p.has("label")) {
            const auto& v = p.raw("label");
            if (!v.is_string() || v.get<std::string>().empty())
                p.fail("label", "must be the name of a prompt label (labels: {sense: river} -> 'sense'), got " +
                                    nscope::common::describe(v));
            label_ = v.get<std::string>();
        }
        color_ = p.choice("color", label_.empty() ? (mode_ == PointMode::Mean ? "prompt" : "position") : "label",
                          {"position", "token", "prompt", "label"});
        if (color_ == "label" && label_.empty()) p.fail("color", "'label' needs parameter 'label' (the label's key)");
        if (color_ == "position" && mode_ == PointMode::Mean)
            p.fail("color", "'position' has no meaning for mean-pooled points; use prompt, token or label");
        max_memory_mb_ = p.number("max_memory_mb", 4096, 1);
    }

    void begin(const nscope::RunContext& ctx) override {
        parallel_for_ = ctx.parallel_for;
        seed_ = ctx.seed;
        token_text_ = ctx.token_text;
        prompts_ = ctx.prompts;
        double bytes = 0;
        for (const auto& h : nscope::common::planned_hooks("pca", ctx, filter_)) {
            if (h.width > 0) check_width(h.name, h.width);
            // covariance (double) + per-chunk float Gram + the sampled points
            bytes += 12.0 * h.width * h.width + 4.0 * static_cast<double>(cap_) * h.width;
        }
        nscope::common::check_memory("pca", bytes, max_memory_mb_, "the covariance matrices and sampled points",
                                     "select fewer / narrower hooks with 'hooks', or lower 'points'");
    }

    void consume(const nscope::Batch& batch) override {
        nscope::common::for_each_hook<HookState>(
            batch, filter_, parallel_for_, [&](const std::string& hook, int64_t width) -> HookState& { return state(hook, width); },
            [&](HookState& s, const nscope::ActivationView& view, int64_t width) {
                nscope::common::batch_points(batch, view.f32(), width, mode_, s.x, s.origin);
                s.cov.add(s.x.data(), s.origin.size());
                s.sample.offer_all(s.x, s.origin, width);
            });
    }

    bool mergeable() const override { return true; }

    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const Pca&>(other);
        for (const auto& [hook, s] : o.hooks_) {
            HookState& mine = state(hook, s.cov.features());
            mine.cov.merge(s.cov);
            mine.sample.merge(s.sample);
        }
        filter_.merge(o.filter_);
    }

    /// Per hook: the streaming covariance and the point sample (everything consume() accumulated).
    uint32_t state_version() const override { return 1; }
    void save_state(nscope::StateWriter& out) const override {
        nscope::common::save_hook_states(out, hooks_, [&](const HookState& s) {
            s.cov.save(out);
            s.sample.save(out);
        });
        filter_.save(out);
    }
    void load_state(nscope::StateReader& in) override {
        hooks_.clear();
        nscope::common::load_hook_states(
            in, [](uint64_t width) { return width * width * sizeof(double); },
            [&](const std::string& hook, int64_t width) -> HookState& { return state(hook, width); },
            [&](HookState& s) {
                s.cov.load(in);
                s.sample.load(in, s.width, prompts_);
            });
        filter_.load(in);
    }

    nscope::Result finish() override {
        nscope::Result res;
        const std::vector<std::string> names = nscope::common::hooks_in_order(hooks_);

        nscope::Table layers, components;
        layers.columns = {"hook", "layer", "neurons", "points", "k", "evr_1", "evr_cumulative", "dims_90",
                          "effective_dim"};
        components.columns = {"hook", "layer", "component", "explained_variance", "explained_variance_ratio",
                              "cumulative"};
        nlohmann::json evr_series = nlohmann::json::array();
        int64_t sampled = 0;
        for (const auto& hook : names) {
            const HookState& s = hooks_.at(hook);
            const int64_t n = s.cov.features(), k = k_;
            const int layer = nscope::common::hook_layer(hook);
            if (s.cov.count < static_cast<uint64_t>(k + 1))
                throw nscope::InputError("pca: too few points: hook '" + hook + "' has " +
                                         std::to_string(s.cov.count) + " " + point_word() + ", and k = " +
                                         std::to_string(k) + " components need at least " + std::to_string(k + 1) +
                                         "; lower parameter 'k' or add prompts");
            Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(s.cov.covariance());
            if (eig.info() != Eigen::Success) throw nscope::RuntimeError("pca: eigen-decomposition of '" + hook + "' failed");
            // Eigenvalues come ascending; tiny negatives are rounding of a rank-deficient covariance.
            const Eigen::VectorXd lambda = eig.eigenvalues().reverse().cwiseMax(0.0);
            const double total = lambda.sum(), sq = lambda.squaredNorm();
            std::vector<float> evr(static_cast<size_t>(k)), comp(static_cast<size_t>(k * n));
            Eigen::MatrixXd top(k, n);
            double cumulative = 0;
            nlohmann::json series_y = nlohmann::json::array(), series_x = nlohmann::json::array();
            for (int64_t c = 0; c < k; ++c) {
                Eigen::VectorXd v = eig.eigenvectors().col(n - 1 - c);
                Eigen::Index arg = 0;
                v.cwiseAbs().maxCoeff(&arg);
                if (v(arg) < 0) v = -v;  // sign convention: the largest-magnitude coefficient is positive
                top.row(c) = v.transpose();
                const double ratio = total > 0 ? lambda(c) / total : 0.0;
                cumulative += ratio;
                evr[static_cast<size_t>(c)] = static_cast<float>(ratio);
                for (int64_t j = 0; j < n; ++j) comp[static_cast<size_t>(c * n + j)] = static_cast<float>(v(j));
                components.add_row({hook, layer, c, lambda(c), ratio, cumulative});
                series_x.push_back(c + 1);
                series_y.push_back(ratio);
            }
            int64_t dims90 = 0;
            for (double acc = 0; dims90 < n && acc < 0.9 * total; ++dims90) acc += lambda(dims90);
            layers.add_row({hook, layer, n, s.cov.count, k, evr[0], cumulative, dims90,
                            sq > 0 ? total * total / sq : 0.0});
            evr_series.push_back({{"name", hook}, {"x", series_x}, {"y", series_y}});

            // Projection of the sampled points on the components, about the mean.
            const auto points = s.sample.sorted();
            const auto np = static_cast<int64_t>(points.size());
            std::vector<float> proj(static_cast<size_t>(np * k));
            std::vector<int64_t> where(static_cast<size_t>(np * 2));
            nlohmann::json fx = nlohmann::json::array(), fy = nlohmann::json::array(), text = nlohmann::json::array(),
                           color = nlohmann::json::array();
            for (int64_t i = 0; i < np; ++i) {
                const auto& pt = points[static_cast<size_t>(i)];
                const Eigen::VectorXd x =
                    Eigen::Map<const Eigen::VectorXf>(pt.x.data(), n).cast<double>() - s.cov.mean;
                const Eigen::VectorXd y = top * x;
                for (int64_t c = 0; c < k; ++c) proj[static_cast<size_t>(i * k + c)] = static_cast<float>(y(c));
                where[static_cast<size_t>(2 * i)] = pt.origin.prompt;
                where[static_cast<size_t>(2 * i + 1)] = pt.origin.position;
                fx.push_back(y(0));
                fy.push_back(k > 1 ? y(1) : 0.0);
                text.push_back(nscope::common::point_hover(pt.origin, token_text_));
                color.push_back(colour(pt.origin));
            }
            sampled = std::max(sampled, np);
            res.set_array(hook + ".explained_variance_ratio", nscope::NdArray::floats({k}, std::move(evr)));
            res.set_array(hook + ".components", nscope::NdArray::floats({k, n}, std::move(comp)));
            res.set_array(hook + ".projection", nscope::NdArray::floats({np, k}, std::move(proj)));
            res.set_array(hook + ".points", nscope::NdArray::ints({np, 2}, std::move(where)));
            if (np > 0)
                res.set_figure("scatter." + hook,
                               {{"kind", "scatter"},
                                {"title", hook + ": " + std::to_string(np) + " " + point_word() + " on PC1 / PC2" +
                                              " (colour: " + (color_ == "label" ? "label " + label_ : color_) + ")"},
                                {"x", std::move(fx)}, {"y", std::move(fy)}, {"text", std::move(text)},
                                {"color", std::move(color)}, {"x_label", "PC1"}, {"y_label", k > 1 ? "PC2" : "0"}});
        }
        res.set_table("layers", std::move(layers));
        res.set_table("components", std::move(components));
        res.set_figure("explained_variance", {{"kind", "line"}, {"title", "explained variance ratio per component"},
                                              {"series", std::move(evr_series)}, {"x_label", "component"},
                                              {"y_label", "fraction of variance"}});
        res.data["summary"] = {{"hooks", names.size()}, {"k", k_},           {"pool", pool_},
                               {"points", sampled},     {"seed", seed_},     {"color", color_},
                               {"skipped", filter_.skipped_json()}};
        return res;
    }

private:
    void check_width(const std::string& hook, int64_t width) const {
        if (k_ > width)
            throw nscope::InputError("pca: parameter 'k' = " + std::to_string(k_) + " is larger than hook '" + hook +
                                     "' (" + std::to_string(width) + " neurons); lower 'k' or select wider hooks");
    }

    HookState& state(const std::string& hook, int64_t width) {
        return nscope::common::hook_state("pca", hooks_, hook, width, [&](HookState& s) {
            check_width(hook, width);
            s.cov.init(width);
            s.sample.init(cap_, seed_);
        });
    }

    std::string point_word() const { return mode_ == PointMode::Tokens ? "tokens" : "prompts"; }

    nlohmann::json colour(const PointOrigin& o) const {
        if (color_ == "position") return o.position;
        if (color_ == "prompt") return o.prompt;
        if (color_ == "token") return nscope::common::token_string(token_text_, o.token);
        return nscope::common::prompt_label(o.info, label_);
    }

    nscope::common::HookFilter filter_;
    int64_t k_ = 10;
    size_t cap_ = 2000;
    std::string pool_ = "tokens", color_ = "position", label_;
    PointMode mode_ = PointMode::Tokens;
    double max_memory_mb_ = 4096;
    uint64_t seed_ = 0;
    std::function<std::string(int64_t)> token_text_;
    std::vector<const nscope::PromptInfo*> prompts_;
    std::map<std::string, HookState> hooks_;
    nscope::ParallelFor parallel_for_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Pca, "pca", "1.0.0",
                       "principal components per hook: streaming covariance, explained variance, projected sample")

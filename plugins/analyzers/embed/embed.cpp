// `embed` analyzer: maps points of each hook's activation space to 2-D or 3-D with t-SNE (Barnes-Hut) or UMAP,
// and reports how trustworthy the map is. Points are token positions (a seeded, capped sample), prompts
// (mean- or last-pooled, capped), or neurons (each neuron's activation profile over a seeded sample of token
// positions). Optional PCA first; neighbours exact (Eigen) or approximate (hnswlib).
// Schema: docs/analyses.md#embed. Algorithms: tsne.h, umap.h (written from the papers), knn.h, linear.h,
// quality.h.
//
// State: a bounded sample per hook (nscope_common/points.h: bottom-k on a hash of (seed, prompt, position),
// independent of batching, threads and shards; mergeable). All the work happens in finish(), one hook after
// the other, each using the run's threads over fixed blocks: the result is bit-identical for a given seed
// whatever the thread count.
#include <nscope/eigen.h>
#include <nscope/sdk.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>

#include "nscope_common/covariance.h"
#include "nscope_common/hooks.h"
#include "nscope_common/params.h"
#include "nscope_common/points.h"
#include "plugins/analyzers/embed/knn.h"
#include "plugins/analyzers/embed/linear.h"
#include "plugins/analyzers/embed/quality.h"
#include "plugins/analyzers/embed/tsne.h"
#include "plugins/analyzers/embed/umap.h"

namespace {

using nscope::RowMatrixXf;
using nscope::common::PointMode;
using nscope::common::PointOrigin;
using nscope::common::PointSample;
using nscope::common::SampledPoint;

constexpr int64_t kTrustK = 15;
constexpr int64_t kExactLimit = 20000;  // knn: auto uses the exact search up to this many points
constexpr size_t kColourCategories = 20;

struct HookState {
    PointSample sample;
    int64_t width = 0;
    std::vector<float> x;  // per-batch scratch
    std::vector<PointOrigin> origin;
};

/// What one embedded point stands for: the point's origin, or for a neuron the origin of its peak activation.
struct PointMeta {
    PointOrigin origin;
    int64_t neuron = -1;
    float peak = 0;
};

/// The `n` smallest of [0, total) by a seeded hash, ascending: a uniform subset that depends only on the seed.
std::vector<int64_t> seeded_subset(int64_t total, int64_t n, uint64_t seed) {
    std::vector<int64_t> all(static_cast<size_t>(total));
    std::iota(all.begin(), all.end(), int64_t{0});
    if (n >= total) return all;
    std::vector<std::pair<uint64_t, int64_t>> keyed;
    for (int64_t i = 0; i < total; ++i)
        keyed.emplace_back(nscope::common::mix64(nscope::common::mix64(seed) ^ static_cast<uint64_t>(i)), i);
    std::nth_element(keyed.begin(), keyed.begin() + n, keyed.end());
    std::vector<int64_t> out;
    for (int64_t i = 0; i < n; ++i) out.push_back(keyed[static_cast<size_t>(i)].second);
    std::sort(out.begin(), out.end());
    return out;
}

/// The label key to colour by when none is given: of the keys the prompts carry, the one with the fewest distinct
/// values, at least two (a grouping, not an identifier like a verse reference); ties alphabetical. "" when no
/// prompt has labels; a key with one value only when there is no other.
std::string default_label(const std::vector<const nscope::PromptInfo*>& prompts) {
    std::map<std::string, std::set<std::string>> values;
    for (const auto* info : prompts)
        if (info && info->labels.is_object())
            for (const auto& [key, v] : info->labels.items()) values[key].insert(v.dump());
    std::string best;
    size_t best_count = 0;
    for (const auto& [key, v] : values) {
        const size_t rank = v.size() >= 2 ? v.size() : std::numeric_limits<size_t>::max();
        if (best.empty() || rank < best_count) best = key, best_count = rank;
    }
    return best;
}

/// Initial coordinates: the top `dims` principal components of `y` (fewer columns than dims: zero-padded).
std::vector<double> pca_coordinates(const RowMatrixXf& y, int dims) {
    const int64_t n = y.rows(), d = y.cols();
    RowMatrixXf top;
    if (d > dims) {
        top = nscope::embed::principal_components(y, dims).y;
    } else {
        top = y.rowwise() - y.colwise().mean();
    }
    std::vector<double> out(static_cast<size_t>(n * dims), 0.0);
    for (int64_t i = 0; i < n; ++i)
        for (int64_t c = 0; c < std::min<int64_t>(d, dims); ++c) out[static_cast<size_t>(i * dims + c)] = top(i, c);
    return out;
}

class Embed : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p(
            "embed", params,
            {"hooks", "method", "dims", "points", "pool", "max_points", "profile_tokens", "standardize", "pca",
             "seed", "perplexity", "theta", "early_exaggeration", "iterations", "learning_rate", "neighbors",
             "min_dist", "spread", "epochs", "negative_samples", "knn", "trust_points", "label", "color",
             "max_memory_mb"});
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
        method_ = p.choice("method", "tsne", {"tsne", "umap"});
        const bool tsne = method_ == "tsne";
        auto only = [&](const std::string& key, bool applies, const std::string& where) {
            if (p.has(key) && !applies) p.fail(key, "applies to " + where + " only");
        };
        for (const char* key : {"perplexity", "theta", "early_exaggeration", "iterations"})
            only(key, tsne, "method: tsne (this entry has method: " + method_ + ")");
        for (const char* key : {"neighbors", "min_dist", "spread", "epochs", "negative_samples"})
            only(key, !tsne, "method: umap (this entry has method: " + method_ + ")");
        dims_ = static_cast<int>(p.integer("dims", 2, 2, 3));
        points_ = p.choice("points", "tokens", {"tokens", "prompts", "neurons"});
        only("pool", points_ == "prompts", "points: prompts");
        only("profile_tokens", points_ == "neurons", "points: neurons");
        only("standardize", points_ == "neurons", "points: neurons");
        pool_ = p.choice("pool", "mean", {"mean", "last"});
        mode_ = points_ == "prompts" ? nscope::common::point_mode(pool_) : PointMode::Tokens;
        max_points_ = p.integer("max_points", 2000, 2, 10000000);
        profile_tokens_ = p.integer("profile_tokens", 2000, 2, 10000000);
        standardize_ = p.boolean("standardize", true);
        pca_ = p.integer("pca", 50, 0, 100000);
        if (pca_ > 0 && pca_ < dims_)
            p.fail("pca", "must be 0 (no PCA step) or at least dims = " + std::to_string(dims_) + ", got " +
                              std::to_string(pca_));
        if (p.has("seed")) seed_param_ = static_cast<uint64_t>(p.integer("seed", 0, 0));
        if (tsne) {
            perplexity_ = p.number("perplexity", 30, 1, 10000);
            theta_ = p.number("theta", 0.5, 0, 1);
            early_exaggeration_ = p.number("early_exaggeration", 12, 1, 1000);
            iterations_ = p.integer("iterations", 1000, 250, 1000000);
            if (p.has("learning_rate") && !(p.raw("learning_rate").is_string() && p.raw("learning_rate") == "auto"))
                learning_rate_ = p.number("learning_rate", 0, 1e-6, 1e9);
        } else {
            neighbors_ = p.integer("neighbors", 15, 2, 10000);
            spread_ = p.number("spread", 1.0, 1e-3, 1000);
            min_dist_ = p.number("min_dist", 0.1, 0, 1000);
            if (min_dist_ > spread_)
                p.fail("min_dist", "must be at most 'spread' (" + number(spread_) + "), got " + number(min_dist_));
            epochs_ = p.integer("epochs", 0, 1, 1000000);
            negative_samples_ = p.integer("negative_samples", 5, 1, 1000);
            learning_rate_ = p.number("learning_rate", 1.0, 1e-6, 1000);
        }
        knn_ = p.choice("knn", "auto", {"auto", "exact", "hnsw"});
        trust_points_ = p.integer("trust_points", 2000, 0, 1000000);
        if (p.has("label")) {
            const auto& v = p.raw("label");
            if (!v.is_string() || v.get<std::string>().empty())
                p.fail("label", "must be the name of a prompt label (labels: {sense: river} -> 'sense'), got " +
                                    nscope::common::describe(v));
            label_ = v.get<std::string>();
        }
        if (p.has("color")) color_ = p.choice("color", "", {"label", "token", "prompt", "position"});
        if (color_ == "position" && mode_ == PointMode::Mean)
            p.fail("color", "'position' has no meaning for mean-pooled points; use prompt, token or label");
        if (color_ == "token" && mode_ == PointMode::Mean)
            p.fail("color", "'token' has no meaning for mean-pooled points; use prompt or label");
        max_memory_mb_ = p.number("max_memory_mb", 4096, 1);
        if (max_points_ < min_points())
            p.fail("max_points", "= " + std::to_string(max_points_) + " caps the points below the " +
                                     std::to_string(min_points()) + " that " + requirement() +
                                     "; raise 'max_points' or " + knob());
    }

    void begin(const nscope::RunContext& ctx) override {
        parallel_for_ = ctx.parallel_for;
        seed_ = seed_param_ ? *seed_param_ : ctx.seed;
        token_text_ = ctx.token_text;
        if (label_.empty()) label_ = default_label(ctx.prompts);
        if (color_.empty()) color_ = !label_.empty() ? "label" : mode_ == PointMode::Mean ? "prompt" : "token";
        if (color_ == "label" && label_.empty())
            throw nscope::InputError("embed: parameter 'color' = label, but no prompt has labels and parameter 'label' "
                                     "is not set; label the prompts or choose color: token, prompt or position");
        // The point counts the run will give, where known before the first batch.
        int64_t tokens = 0;
        bool tokens_known = !ctx.prompts.empty();
        for (const auto* info : ctx.prompts) {
            if (!info || info->tokens.empty()) tokens_known = false;
            else tokens += static_cast<int64_t>(info->tokens.size());
        }
        double bytes = 0;
        for (const auto& h : nscope::common::planned_hooks("embed", ctx, filter_)) {
            int64_t n = -1;
            if (points_ == "tokens" && tokens_known) n = std::min(tokens, max_points_);
            if (points_ == "prompts" && !ctx.prompts.empty())
                n = std::min(static_cast<int64_t>(ctx.prompts.size()), max_points_);
            if (points_ == "neurons" && h.width > 0) n = std::min(h.width, max_points_);
            if (n >= 0) check_count(h.name, n, "");
            // Memory from the counts where known, else from the caps.
            const double width = static_cast<double>(h.width);
            int64_t sampled = points_ == "neurons" ? profile_tokens_ : max_points_;
            if (points_ != "prompts" && tokens_known) sampled = std::min(sampled, tokens);
            if (points_ == "prompts" && !ctx.prompts.empty()) sampled = n;
            const double cap = static_cast<double>(sampled);
            const double pts = static_cast<double>(points_ == "neurons" ? std::min(h.width, max_points_) : sampled);
            const double in = points_ == "neurons" ? cap : width;  // input dimension of the embedding
            const double trust = static_cast<double>(std::min<int64_t>(trust_points_, static_cast<int64_t>(pts)));
            bytes += 4.0 * cap * width                                     // the sample
                     + 8.0 * pts * in                                      // the point matrix (+ copies)
                     + (pca_ > 0 ? nscope::common::comoments_bytes(static_cast<int64_t>(in)) * 1.5 : 0.0)
                     + 8.0 * trust * trust + 8.0 * trust * in              // trustworthiness
                     + 48.0 * pts * static_cast<double>(neighbour_count()); // neighbours, affinities
        }
        nscope::common::check_memory("embed", bytes, max_memory_mb_, "the sampled points and the embedding's matrices",
                                     "select fewer / narrower hooks with 'hooks', or lower 'max_points'" +
                                         std::string(points_ == "neurons" ? " / 'profile_tokens'" : "") +
                                         " or 'trust_points'");
    }

    void consume(const nscope::Batch& batch) override {
        nscope::common::for_each_hook<HookState>(
            batch, filter_, parallel_for_, [&](const std::string& hook, int64_t width) -> HookState& { return state(hook, width); },
            [&](HookState& s, const nscope::ActivationView& view, int64_t width) {
                nscope::common::batch_points(batch, view.f32(), width, mode_, s.x, s.origin);
                s.sample.offer_all(s.x, s.origin, width);
            });
    }

    bool mergeable() const override { return true; }

    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const Embed&>(other);
        for (const auto& [hook, s] : o.hooks_) state(hook, s.width).sample.merge(s.sample);
        filter_.merge(o.filter_);
    }

    nscope::Result finish() override {
        nscope::Result res;
        const std::vector<std::string> names = nscope::common::hooks_in_order(hooks_);
        nscope::Table layers;
        layers.columns = {"hook", "layer", "method", "dims", "points", "input_dims", "pca", "trustworthiness",
                          "kl_divergence"};
        for (const auto& hook : names) embed_hook(hook, hooks_.at(hook), res, layers);
        res.set_table("layers", std::move(layers));
        res.data["summary"] = {{"hooks", names.size()},    {"method", method_}, {"dims", dims_},
                               {"points", points_},         {"max_points", max_points_},
                               {"seed", seed_},             {"color", color_},  {"label", label_.empty() ? nlohmann::json() : nlohmann::json(label_)},
                               {"skipped", filter_.skipped_json()}};
        return res;
    }

private:
    int64_t min_points() const {
        return method_ == "tsne" ? static_cast<int64_t>(std::floor(3 * perplexity_)) + 1 : neighbors_;
    }
    int64_t neighbour_count() const {
        return method_ == "tsne" ? static_cast<int64_t>(std::floor(3 * perplexity_)) : neighbors_ - 1;
    }
    std::string requirement() const {
        if (method_ == "tsne")
            return "perplexity " + number(perplexity_) + " needs (t-SNE uses the " +
                   std::to_string(neighbour_count()) + " = 3 × perplexity nearest neighbours of each point)";
        return "neighbors = " + std::to_string(neighbors_) + " needs (each point and its " +
               std::to_string(neighbors_ - 1) + " nearest neighbours)";
    }
    std::string knob() const { return method_ == "tsne" ? "lower 'perplexity'" : "lower 'neighbors'"; }
    std::string point_word() const {
        return points_ == "tokens" ? "token points" : points_ == "prompts" ? "prompt points" : "neurons";
    }

    void check_count(const std::string& hook, int64_t n, const std::string& note) const {
        if (n >= min_points()) return;
        std::string more = points_ == "neurons" ? "select a wider hook" : "add prompts";
        if (n == max_points_) more = "raise 'max_points'";
        throw nscope::InputError("embed: too few points: hook '" + hook + "' has " + std::to_string(n) + " " +
                                 point_word() + note + ", fewer than the " + std::to_string(min_points()) + " that " +
                                 requirement() + "; " + knob() + " or " + more);
    }

    HookState& state(const std::string& hook, int64_t width) {
        return nscope::common::hook_state("embed", hooks_, hook, width, [&](HookState& s) {
            s.sample.init(static_cast<size_t>(points_ == "neurons" ? profile_tokens_ : max_points_), seed_);
        });
    }

    /// The matrix of points to embed and what each stands for.
    RowMatrixXf point_matrix(const std::string& hook, const HookState& s, std::vector<PointMeta>& meta) const {
        const std::vector<SampledPoint> sample = s.sample.sorted();
        const auto t = static_cast<int64_t>(sample.size());
        RowMatrixXf x;
        if (points_ != "neurons") {
            x.resize(t, s.width);
            for (int64_t i = 0; i < t; ++i) {
                x.row(i) = Eigen::Map<const Eigen::RowVectorXf>(sample[static_cast<size_t>(i)].x.data(), s.width);
                meta.push_back({sample[static_cast<size_t>(i)].origin, -1, 0});
            }
            return x;
        }
        if (t < 2)
            throw nscope::InputError("embed: hook '" + hook + "' has " + std::to_string(t) +
                                     " token positions: a neuron's profile needs at least 2; add prompts");
        const std::vector<int64_t> neurons = seeded_subset(s.width, max_points_, seed_ ^ 0x6E6575726F6E73ull);
        x.resize(static_cast<Eigen::Index>(neurons.size()), t);
        for (size_t r = 0; r < neurons.size(); ++r) {
            PointMeta m{sample[0].origin, neurons[r], -std::numeric_limits<float>::infinity()};
            for (int64_t c = 0; c < t; ++c) {
                const float v = sample[static_cast<size_t>(c)].x[static_cast<size_t>(neurons[r])];
                x(static_cast<Eigen::Index>(r), c) = v;
                if (v > m.peak) m.peak = v, m.origin = sample[static_cast<size_t>(c)].origin;
            }
            meta.push_back(m);
            if (standardize_) {
                auto row = x.row(static_cast<Eigen::Index>(r));
                const double mean = row.cast<double>().mean();
                const double sd = std::sqrt((row.cast<double>().array() - mean).square().mean());
                if (sd > 0) row = ((row.cast<double>().array() - mean) / sd).cast<float>().matrix();
                else row.setZero();
            }
        }
        return x;
    }

    void embed_hook(const std::string& hook, const HookState& s, nscope::Result& res, nscope::Table& layers) const {
        std::vector<PointMeta> meta;
        const RowMatrixXf x = point_matrix(hook, s, meta);
        const int64_t n = x.rows(), d = x.cols();
        const std::string note = points_ == "tokens" && s.sample.offered == static_cast<uint64_t>(n)
                                     ? " (every real token)" : "";
        check_count(hook, n, note);

        // Optional PCA step; the neighbour search and the optimisation run on its output.
        const int64_t pcs = std::min(pca_, n - 1);
        nlohmann::json pca_json = nullptr;
        std::optional<nscope::embed::Projection> proj;
        if (pca_ > 0 && pcs < d && pcs >= dims_) {
            proj = nscope::embed::principal_components(x, pcs);
            pca_json = {{"components", pcs}, {"variance_kept", proj->kept()}};
        }
        const RowMatrixXf& y = proj ? proj->y : x;

        const int64_t k = neighbour_count();
        const std::string knn = knn_ == "auto" ? (n <= kExactLimit ? "exact" : "hnsw") : knn_;
        const nscope::embed::Neighbours nn = knn == "exact" ? nscope::embed::exact_knn(y, k, parallel_for_)
                                                            : nscope::embed::hnsw_knn(y, k, seed_, parallel_for_);
        std::vector<double> init;
        if (proj) {
            init.resize(static_cast<size_t>(n * dims_));
            for (int64_t i = 0; i < n; ++i)
                for (int c = 0; c < dims_; ++c) init[static_cast<size_t>(i * dims_ + c)] = proj->y(i, c);
        } else {
            init = pca_coordinates(y, dims_);
        }

        nlohmann::json info = {{"layer", nscope::common::hook_layer(hook)}, {"method", method_}, {"dims", dims_},
                               {"points", n}, {"point_kind", points_}, {"input_dims", d}, {"pca", pca_json},
                               {"knn", knn}};
        nlohmann::json used = {{"seed", seed_}, {"neighbors", k}, {"init", "pca"}};
        std::vector<double> emb;
        nlohmann::json kl = nullptr;
        if (method_ == "tsne") {
            double sd = 0;  // scale the start so that its first axis has standard deviation 1e-4
            for (int64_t i = 0; i < n; ++i) sd += init[static_cast<size_t>(i * dims_)] * init[static_cast<size_t>(i * dims_)];
            sd = std::sqrt(sd / static_cast<double>(n));
            for (double& v : init) v *= sd > 0 ? 1e-4 / sd : 1.0;
            nscope::embed::TsneOptions o;
            o.dims = dims_, o.perplexity = perplexity_, o.theta = theta_, o.early_exaggeration = early_exaggeration_;
            o.learning_rate = learning_rate_, o.iterations = iterations_;
            auto out = nscope::embed::tsne(nn, std::move(init), o, parallel_for_);
            emb = std::move(out.y);
            kl = out.kl;
            info["kl_divergence"] = out.kl;
            used.update({{"perplexity", perplexity_}, {"theta", theta_}, {"early_exaggeration", early_exaggeration_},
                         {"exaggeration_iterations", 250},
                         {"learning_rate", out.learning_rate}, {"iterations", iterations_}});
        } else {
            for (int c = 0; c < dims_; ++c) {  // each axis of the start scaled to [0, 10]
                double lo = std::numeric_limits<double>::infinity(), hi = -lo;
                for (int64_t i = 0; i < n; ++i) {
                    lo = std::min(lo, init[static_cast<size_t>(i * dims_ + c)]);
                    hi = std::max(hi, init[static_cast<size_t>(i * dims_ + c)]);
                }
                for (int64_t i = 0; i < n; ++i) {
                    double& v = init[static_cast<size_t>(i * dims_ + c)];
                    v = hi > lo ? 10.0 * (v - lo) / (hi - lo) : 5.0;
                }
            }
            nscope::embed::UmapOptions o;
            o.dims = dims_, o.neighbors = neighbors_, o.epochs = epochs_, o.negative_samples = negative_samples_;
            o.min_dist = min_dist_, o.spread = spread_, o.learning_rate = learning_rate_, o.seed = seed_;
            auto out = nscope::embed::umap(nn, std::move(init), o, parallel_for_);
            emb = std::move(out.y);
            info.update({{"a", out.a}, {"b", out.b}, {"edges", out.edges}});
            used.update({{"neighbors", neighbors_}, {"min_dist", min_dist_}, {"spread", spread_},
                         {"epochs", out.epochs}, {"negative_samples", negative_samples_},
                         {"learning_rate", learning_rate_}});
        }
        info["params"] = used;

        // Trustworthiness against the input points (before the PCA step), on a seeded subsample.
        const int64_t m = std::min(n, trust_points_);
        info["trust_k"] = kTrustK;
        info["trust_points"] = m;
        nlohmann::json trust = nullptr;
        if (m > 2 * kTrustK) {
            const std::vector<int64_t> sub = seeded_subset(n, m, seed_ ^ 0x7472757374ull);
            RowMatrixXf xs(m, d);
            std::vector<double> ys(static_cast<size_t>(m * dims_));
            for (int64_t i = 0; i < m; ++i) {
                xs.row(i) = x.row(sub[static_cast<size_t>(i)]);
                for (int c = 0; c < dims_; ++c)
                    ys[static_cast<size_t>(i * dims_ + c)] = emb[static_cast<size_t>(sub[static_cast<size_t>(i)] * dims_ + c)];
            }
            trust = nscope::embed::trustworthiness(xs, ys, dims_, kTrustK, parallel_for_);
        } else {
            info["trust_note"] = "needs more than " + std::to_string(2 * kTrustK) + " points (k = 15 < points / 2); " +
                                 (trust_points_ < n ? "raise 'trust_points'" : "too few points");
        }
        info["trustworthiness"] = trust;

        // Arrays, hover texts, colours.
        std::vector<float> coords(emb.begin(), emb.end());
        std::vector<int64_t> where;
        nlohmann::json tokens = nlohmann::json::array(), labels = nlohmann::json::array(), text = nlohmann::json::array(),
                       colour = nlohmann::json::array();
        for (const auto& p : meta) {
            if (points_ == "tokens") where.insert(where.end(), {p.origin.prompt, p.origin.position});
            else where.push_back(points_ == "prompts" ? p.origin.prompt : p.neuron);
            const std::string tok = nscope::common::token_string(token_text_, p.origin.token);
            tokens.push_back(points_ == "prompts" && p.origin.position < 0 && p.origin.info ? p.origin.info->text.substr(0, 80) : tok);
            if (!label_.empty()) labels.push_back(nscope::common::prompt_label(p.origin.info, label_));
            std::string hover = nscope::common::point_hover(p.origin, token_text_);
            if (points_ == "neurons") {
                char peak[32];
                std::snprintf(peak, sizeof peak, "%.4g", static_cast<double>(p.peak));
                hover = "neuron " + std::to_string(p.neuron) + ": peak " + peak + " at " + hover;
            }
            text.push_back(hover);
            if (color_ == "label") colour.push_back(nscope::common::prompt_label(p.origin.info, label_));
            else if (color_ == "token") colour.push_back(tok);
            else if (color_ == "prompt") colour.push_back(p.origin.prompt);
            else colour.push_back(p.origin.position);
        }
        info["tokens"] = std::move(tokens);
        if (!label_.empty()) info["labels"] = std::move(labels);
        if (colour.size() && colour[0].is_string()) colour = top_categories(colour);

        res.set_array(hook + ".embedding", nscope::NdArray::floats({n, dims_}, std::move(coords)));
        res.set_array(hook + ".points", points_ == "tokens" ? nscope::NdArray::ints({n, 2}, std::move(where))
                                                            : nscope::NdArray::ints({n}, std::move(where)));
        nlohmann::json fig = {{"kind", "scatter"},
                              {"title", hook + ": " + (method_ == "tsne" ? "t-SNE" : "UMAP") + " of " +
                                            std::to_string(n) + " " + point_word() + " (colour: " +
                                            (color_ == "label" ? "label " + label_ : color_) + "; trustworthiness " +
                                            (trust.is_null() ? std::string("n/a") : fixed(trust.get<double>())) + ")"},
                              {"x_label", "dim 1"}, {"y_label", "dim 2"}, {"text", std::move(text)},
                              {"color", std::move(colour)}};
        nlohmann::json ax = nlohmann::json::array(), ay = nlohmann::json::array(), az = nlohmann::json::array();
        for (int64_t i = 0; i < n; ++i) {
            ax.push_back(emb[static_cast<size_t>(i * dims_)]);
            ay.push_back(emb[static_cast<size_t>(i * dims_ + 1)]);
            if (dims_ == 3) az.push_back(emb[static_cast<size_t>(i * dims_ + 2)]);
        }
        fig["x"] = std::move(ax);
        fig["y"] = std::move(ay);
        if (dims_ == 3) fig["z"] = std::move(az), fig["z_label"] = "dim 3";
        res.set_figure("embedding." + hook, std::move(fig));
        layers.add_row({hook, nscope::common::hook_layer(hook), method_, dims_, n, d,
                        pca_json.is_null() ? nlohmann::json(0) : pca_json["components"], trust, kl});
        res.data["hooks"][hook] = std::move(info);
    }

    /// String colours: the kColourCategories most frequent values (ties: first seen) kept, the rest "(other)".
    static nlohmann::json top_categories(const nlohmann::json& colour) {
        std::map<std::string, std::pair<int64_t, int64_t>> count;  // value -> (−count, first seen)
        for (size_t i = 0; i < colour.size(); ++i) {
            auto [it, fresh] = count.emplace(colour[i].get<std::string>(), std::pair<int64_t, int64_t>{0, static_cast<int64_t>(i)});
            --it->second.first;
        }
        if (count.size() <= kColourCategories) return colour;
        std::vector<std::pair<std::pair<int64_t, int64_t>, std::string>> ranked;
        for (const auto& [v, c] : count) ranked.emplace_back(c, v);
        std::sort(ranked.begin(), ranked.end());
        std::set<std::string> keep;
        for (size_t i = 0; i < kColourCategories; ++i) keep.insert(ranked[i].second);
        nlohmann::json out = nlohmann::json::array();
        for (const auto& c : colour) out.push_back(keep.count(c.get<std::string>()) ? c : nlohmann::json("(other)"));
        return out;
    }

    static std::string number(double v) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%g", v);
        return buf;
    }

    static std::string fixed(double v) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.3f", v);
        return buf;
    }

    nscope::common::HookFilter filter_;
    std::string method_ = "tsne", points_ = "tokens", pool_ = "mean", knn_ = "auto", color_, label_;
    PointMode mode_ = PointMode::Tokens;
    int dims_ = 2;
    int64_t max_points_ = 2000, profile_tokens_ = 2000, pca_ = 50, iterations_ = 1000, neighbors_ = 15, epochs_ = 0,
            negative_samples_ = 5, trust_points_ = 2000;
    bool standardize_ = true;
    double perplexity_ = 30, theta_ = 0.5, early_exaggeration_ = 12, learning_rate_ = 0, min_dist_ = 0.1, spread_ = 1,
           max_memory_mb_ = 4096;
    std::optional<uint64_t> seed_param_;
    uint64_t seed_ = 0;
    std::function<std::string(int64_t)> token_text_;
    std::map<std::string, HookState> hooks_;
    nscope::ParallelFor parallel_for_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Embed, "embed", "1.0.0",
                       "t-SNE (Barnes-Hut) and UMAP maps of token, prompt or neuron points, with trustworthiness")

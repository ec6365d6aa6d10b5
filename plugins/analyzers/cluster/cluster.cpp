// `cluster` analyzer: the neurons of each hook grouped by how their activations co-vary over the corpus.
//
// `method: linkage` (default): streaming, mergeable covariance of the hook's neurons over every real token
// (CoMoments) → Pearson correlation → dissimilarity 1 − |corr| → average-linkage dendrogram (linkage.h) cut at
// `threshold`. Cost per token n²/2 multiply-adds (n = hook width); at finish O(n²). Memory ~2.5 n² doubles per
// hook (covariance, float Gram, then the dissimilarity matrix).
//
// `method: kmeans`: k-means (faiss::Clustering, Debian's libfaiss) on the neurons' activation profiles, each
// neuron's values over a seeded bottom-k sample of `points` token points (nscope_common/points.h; mergeable),
// standardised and scaled to unit length so that the squared distance of two profiles is 2 (1 − corr); with
// more points than neurons, on an exact n-dimensional embedding of the profiles (from their Gram matrix).
// Memory: points × n floats per hook, at finish n × points floats and ~2.5 n² doubles (one hook at a time).
//
// Both: clusters smaller than `min_size`, and constant neurons (no correlation defined), are labelled −1;
// silhouette over the clustered neurons; with a `topk` analysis as `input:`, each cluster's typical tokens
// (those that recur most among its members' top examples). Schema: docs/analyses.md#cluster. Deterministic.
#include <nscope/eigen.h>
#include <nscope/sdk.h>

#include <cblas.h>
#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <omp.h>

#include <Eigen/Cholesky>

#include <set>

#include "linkage.h"
#include "nscope_common/covariance.h"
#include "nscope_common/hooks.h"
#include "nscope_common/params.h"
#include "nscope_common/points.h"
#include "nscope_common/tables.h"

namespace {

using nscope::common::CoMoments;
using nscope::common::PointOrigin;
using nscope::common::PointSample;

struct HookState {
    CoMoments cov;       // linkage
    PointSample sample;  // kmeans
    uint64_t tokens = 0;
    int64_t width = 0;
    // Per-batch scratch.
    std::vector<float> x;
    std::vector<PointOrigin> origin;
};

/// One hook's clustering.
struct Clustering {
    std::vector<int64_t> labels;                 // per neuron, −1 = unclustered
    std::vector<std::vector<int64_t>> members;   // per label, ascending
    std::vector<double> within;                  // per label: mean |corr| over its pairs
    double silhouette = std::numeric_limits<double>::quiet_NaN();
    double inertia = std::numeric_limits<double>::quiet_NaN();  // kmeans: Σ squared distance to the centroid
    int64_t constant = 0;
};

nlohmann::json number_or_null(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); }

class Cluster : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("cluster", params,
                                      {"hooks", "method", "threshold", "min_size", "k", "n_init", "max_iter", "points",
                                       "typical_tokens", "heatmap_neurons", "max_memory_mb"});
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
        kmeans_ = p.choice("method", "linkage", {"linkage", "kmeans"}) == "kmeans";
        for (const char* key : kmeans_ ? std::vector<const char*>{"threshold"}
                                       : std::vector<const char*>{"k", "n_init", "max_iter", "points"})
            if (p.has(key)) p.fail(key, std::string("does not apply to method ") + (kmeans_ ? "kmeans" : "linkage"));
        threshold_ = p.number("threshold", 0.5, 0.0, 1.0);
        min_size_ = p.integer("min_size", kmeans_ ? 1 : 2, 1);
        k_ = p.integer("k", 10, 1, 1000000);
        n_init_ = p.integer("n_init", 10, 1, 1000);
        max_iter_ = p.integer("max_iter", 50, 1, 100000);
        cap_ = static_cast<size_t>(p.integer("points", 2000, 3, 10000000));
        typical_ = p.integer("typical_tokens", 5, 0, 1000);
        heatmap_neurons_ = p.integer("heatmap_neurons", 64, 0, 2000);
        max_memory_mb_ = p.number("max_memory_mb", 4096, 1);
    }

    void begin(const nscope::RunContext& ctx) override {
        parallel_for_ = ctx.parallel_for;
        seed_ = ctx.seed;
        prompts_ = ctx.prompts;
        topk_ = nscope::common::topk_input(ctx);
        if (!ctx.inputs.empty() && !topk_) {
            std::vector<std::string> ids;
            for (const auto& [id, r] : ctx.inputs) ids.push_back(id);
            throw nscope::InputError("cluster: input " + nscope::common::join(ids) +
                                     " is not a topk analysis (no top_activations table); name a topk analysis as "
                                     "'input:' for the clusters' typical tokens, or drop 'input:'");
        }
        double bytes = 0, widest = 0;
        for (const auto& h : nscope::common::planned_hooks("cluster", ctx, filter_)) {
            const double n2 = comoments(h.width);
            if (kmeans_) {
                const double sample = (4.0 * static_cast<double>(h.width) + 64.0) * static_cast<double>(cap_);
                bytes += sample;  // the sampled token points, kept per hook for the whole run
                // + at finish, one hook at a time: the profile matrix, the Gram (float), correlation and distance
                // matrices, and the factors of the embedding
                widest = std::max(widest, 4.0 * static_cast<double>(h.width) * static_cast<double>(cap_) + 4 * n2);
            } else {
                bytes += n2 * 1.5;               // covariance + float Gram, kept per hook for the whole run
                widest = std::max(widest, n2);   // + one dissimilarity matrix at a time, at finish
            }
        }
        if (kmeans_)
            nscope::common::check_memory("cluster", bytes + widest, max_memory_mb_,
                                         "the neuron profiles (neurons x points) and their correlation matrices",
                                         "lower 'points', or select fewer / narrower hooks with 'hooks'");
        else
            nscope::common::check_memory("cluster", bytes + widest, max_memory_mb_, "the neuron correlation matrices",
                                         "select fewer / narrower hooks with 'hooks'");
    }

    void consume(const nscope::Batch& batch) override {
        std::vector<HookState*> tasks;
        std::vector<const nscope::ActivationView*> views;
        std::vector<int64_t> widths;
        for (const auto& act : batch.activations) {
            nscope::common::TokenLayout lay;
            if (!filter_.accept(act.hook, act.view, batch, lay)) continue;
            tasks.push_back(&state(act.hook, lay.neurons));
            views.push_back(&act.view);
            widths.push_back(lay.neurons);
        }
        nscope::run_tasks(parallel_for_, tasks.size(), [&](size_t i) {
            HookState& s = *tasks[i];
            const auto w = static_cast<size_t>(widths[i]);
            if (kmeans_) {
                nscope::common::batch_points(batch, views[i]->f32(), widths[i], nscope::common::PointMode::Tokens, s.x,
                                             s.origin);
                for (size_t r = 0; r < s.origin.size(); ++r) s.sample.offer(s.origin[r], s.x.data() + r * w, widths[i]);
                s.tokens += s.origin.size();
            } else {
                nscope::common::gather_tokens(batch, *views[i], widths[i], s.x);
                s.cov.add(s.x.data(), s.x.size() / w);
                s.tokens += s.x.size() / w;
            }
        });
    }

    bool mergeable() const override { return true; }

    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const Cluster&>(other);
        for (const auto& [hook, s] : o.hooks_) {
            HookState& mine = state(hook, s.width);
            if (kmeans_) mine.sample.merge(s.sample);
            else mine.cov.merge(s.cov);
            mine.tokens += s.tokens;
        }
        filter_.merge(o.filter_);
    }

    /// Per hook: its token count and the streaming part of the method (linkage: the covariance; kmeans: the
    /// point sample, clustered at finish).
    uint32_t state_version() const override { return 1; }
    void save_state(nscope::StateWriter& out) const override {
        nscope::common::save_hook_states(out, hooks_, [&](const HookState& s) {
            out.u64(s.tokens);
            if (kmeans_) s.sample.save(out);
            else s.cov.save(out);
        });
        filter_.save(out);
    }
    void load_state(nscope::StateReader& in) override {
        hooks_.clear();
        nscope::common::load_hook_states(
            in, [&](uint64_t width) { return kmeans_ ? 2 * sizeof(uint64_t) : width * width * sizeof(double); },
            [&](const std::string& hook, int64_t width) -> HookState& { return state(hook, width); },
            [&](HookState& s) {
                s.tokens = in.u64();
                if (kmeans_) s.sample.load(in, s.width, prompts_);
                else s.cov.load(in);
            });
        filter_.load(in);
    }

    nscope::Result finish() override {
        nscope::Result res;
        const std::vector<std::string> names = nscope::common::hooks_in_order(hooks_);
        nscope::Table layers, clusters;
        layers.columns = {"hook", "layer", "neurons", "tokens", "constant", "clustered", "clusters", "largest",
                          "silhouette", "inertia"};
        clusters.columns = {"hook", "layer", "cluster", "size", "mean_abs_corr", "neurons", "typical_tokens"};
        nlohmann::json bar_x = nlohmann::json::array(), bar_y = nlohmann::json::array();
        const nscope::common::TopTokens top_tokens =
            topk_ ? nscope::common::top_example_tokens(*topk_) : nscope::common::TopTokens{};
        nlohmann::json typical_json = nlohmann::json::object();
        for (const auto& hook : names) {
            const HookState& s = hooks_.at(hook);
            const int64_t n = s.width;
            const int layer = nscope::common::hook_layer(hook);
            const uint64_t points = kmeans_ ? s.sample.sorted().size() : s.cov.count;
            if (points < 3)
                throw nscope::InputError("cluster: too few tokens: hook '" + hook + "' has " + std::to_string(points) +
                                         "; correlations need at least 3 (add prompts)");
            Eigen::MatrixXd corr;
            const Clustering c = kmeans_ ? kmeans(hook, s.sample, n, corr) : linkage(s.cov, corr);
            const auto tokens_it = top_tokens.find(hook);
            int64_t clustered = 0, largest = 0;
            for (size_t l = 0; l < c.members.size(); ++l) {
                const auto size = static_cast<int64_t>(c.members[l].size());
                clustered += size, largest = std::max(largest, size);
                std::string list;
                for (size_t m = 0; m < c.members[l].size() && m < 32; ++m) {
                    if (m) list += ' ';
                    list += std::to_string(c.members[l][m]);
                }
                if (c.members[l].size() > 32) list += " ...";
                nlohmann::json typical;  // null without a topk input
                if (topk_) {
                    const auto t = typical_tokens(c.members[l], tokens_it == top_tokens.end() ? nullptr : &tokens_it->second);
                    typical = t.first;
                    typical_json[hook].push_back(std::move(t.second));
                }
                clusters.add_row({hook, layer, l, size, c.within[l], list, typical});
            }
            layers.add_row({hook, layer, n, s.tokens, c.constant, clustered, c.members.size(), largest,
                            number_or_null(c.silhouette), number_or_null(c.inertia)});
            bar_x.push_back(hook);
            bar_y.push_back(c.members.size());
            res.set_array(hook + ".labels", nscope::NdArray::ints({n}, c.labels));
            heatmap(res, hook, c, corr);
        }
        res.set_table("layers", std::move(layers));
        res.set_table("clusters", std::move(clusters));
        if (topk_) res.data["typical_tokens"] = std::move(typical_json);
        res.set_figure("clusters_by_hook", {{"kind", "bar"}, {"title", "clusters per hook (size ≥ min_size)"},
                                            {"x", bar_x}, {"y", bar_y}, {"x_label", "hook"},
                                            {"y_label", "clusters"}});
        nlohmann::json summary = {{"hooks", names.size()}, {"method", kmeans_ ? "kmeans" : "linkage"},
                                  {"min_size", min_size_}, {"typical_tokens", topk_ != nullptr},
                                  {"skipped", filter_.skipped_json()}};
        if (kmeans_) {
            summary.update({{"k", k_}, {"n_init", n_init_}, {"max_iter", max_iter_}, {"points", cap_}, {"seed", seed_}});
        } else {
            summary["threshold"] = threshold_;
        }
        res.data["summary"] = std::move(summary);
        return res;
    }

private:
    static double comoments(int64_t n) { return nscope::common::comoments_bytes(n); }

    HookState& state(const std::string& hook, int64_t width) {
        auto it = hooks_.find(hook);
        if (it == hooks_.end()) {
            it = hooks_.emplace(hook, HookState{}).first;
            it->second.width = width;
            if (kmeans_) it->second.sample.init(cap_, seed_);
            else it->second.cov.init(width);
        } else if (it->second.width != width) {
            throw nscope::RuntimeError("cluster: hook '" + hook + "' changed width from " +
                                       std::to_string(it->second.width) + " to " + std::to_string(width));
        }
        return it->second;
    }

    /// Linkage: the correlation of the live neurons (into `corr`, over all n, 0 rows for constant ones) from the
    /// streamed covariance, and their average-linkage clusters cut at the threshold.
    Clustering linkage(const CoMoments& cov, Eigen::MatrixXd& corr) const {
        const int64_t n = cov.features();
        // A neuron whose variance is rounding noise of its mean is constant: its correlation is undefined.
        std::vector<int64_t> live;
        Eigen::VectorXd sd(n);
        for (int64_t j = 0; j < n; ++j) {
            const double m2 = cov.m2(j, j), mu = cov.mean(j);
            sd(j) = std::sqrt(std::max(0.0, m2));
            if (live_variance(m2, static_cast<double>(cov.count), mu)) live.push_back(j);
        }
        corr = Eigen::MatrixXd::Zero(n, n);
        for (int64_t a : live)
            for (int64_t b : live) corr(a, b) = std::clamp(cov.m2(a, b) / (sd(a) * sd(b)), -1.0, 1.0);
        const auto m = static_cast<Eigen::Index>(live.size());
        Eigen::MatrixXd dist(m, m);
        for (Eigen::Index i = 0; i < m; ++i)
            for (Eigen::Index j = 0; j < m; ++j) dist(i, j) = i == j ? 0.0 : 1.0 - std::abs(corr(live[i], live[j]));
        const Eigen::MatrixXd dist0 = dist;  // the linkage overwrites its copy
        const auto roots = nscope::cluster::cut(nscope::cluster::average_linkage(dist), m, threshold_);
        std::map<int64_t, std::vector<int64_t>> groups;  // root -> positions in `live`
        for (Eigen::Index i = 0; i < m; ++i) groups[roots[static_cast<size_t>(i)]].push_back(i);
        return number_groups(std::move(groups), live, n, corr, dist0);
    }

    /// k-means: profiles of the live neurons over the sampled points, standardised and scaled to unit length
    /// (so ‖a − b‖² = 2 (1 − corr(a, b))), clustered by faiss; `corr` is the profiles' correlation, the
    /// silhouette uses the Euclidean distance of the unit profiles, sqrt(2 (1 − corr)).
    Clustering kmeans(const std::string& hook, const PointSample& sample, int64_t n, Eigen::MatrixXd& corr) const {
        const auto pts = sample.sorted();
        const auto p = static_cast<Eigen::Index>(pts.size());
        nscope::RowMatrixXf x(n, p);  // neuron j's profile in row j
        for (Eigen::Index i = 0; i < p; ++i) x.col(i) = Eigen::Map<const Eigen::VectorXf>(pts[static_cast<size_t>(i)].x.data(), n);
        std::vector<int64_t> live;
        for (int64_t j = 0; j < n; ++j) {
            const double mu = x.row(j).cast<double>().mean();
            const double m2 = (x.row(j).cast<double>().array() - mu).square().sum();
            if (!live_variance(m2, static_cast<double>(p), mu)) continue;
            x.row(static_cast<Eigen::Index>(live.size())) =
                ((x.row(j).cast<double>().array() - mu) / std::sqrt(m2)).cast<float>().matrix();
            live.push_back(j);
        }
        const auto m = static_cast<Eigen::Index>(live.size());
        x.conservativeResize(m, p);
        if (m < k_)
            throw nscope::InputError("cluster: parameter 'k' = " + std::to_string(k_) + " is more than the " +
                                     std::to_string(m) + " non-constant neurons of hook '" + hook + "'; lower 'k'");
        // The profiles' Gram matrix = their correlation (BLAS, on OpenBLAS's threads): for the silhouette and the
        // heatmap, and, with more points than neurons, an exact embedding of the profiles in m dimensions —
        // Y Yᵀ = G for the Cholesky factor Y = L of G (or Y = Pᵀ L D^½ of its pivoted LDLᵀ when G is singular)
        // keeps every distance and inner product, so k-means on the rows of Y is k-means on the profiles at
        // m / points of the cost.
        Eigen::MatrixXf gram(m, m);
        cblas_ssyrk(CblasColMajor, CblasLower, CblasTrans, static_cast<int>(m), static_cast<int>(p), 1.0f, x.data(),
                    static_cast<int>(p), 0.0f, gram.data(), static_cast<int>(m));
        gram.triangularView<Eigen::StrictlyUpper>() = gram.transpose();
        if (p > m) {
            const Eigen::MatrixXd g = gram.cast<double>();
            const Eigen::LLT<Eigen::MatrixXd> llt(g);  // G = L Lᵀ when G is positive definite (the usual case)
            if (llt.info() == Eigen::Success) {
                x = Eigen::MatrixXd(llt.matrixL()).cast<float>();
            } else {  // singular (duplicate or collinear profiles): the pivoted LDLᵀ
                const Eigen::LDLT<Eigen::MatrixXd> ldlt(g);
                const Eigen::MatrixXd l = ldlt.matrixL();
                x = (ldlt.transpositionsP().transpose() * (l * ldlt.vectorD().cwiseMax(0.0).cwiseSqrt().asDiagonal()))
                        .cast<float>();
            }
        }
        // The n_init initialisations run as separate single-threaded faiss k-means, spread over the run's
        // threads (an OpenMP team per faiss call spins at every barrier, which is most of the time on a busy
        // machine for problems this small); the lowest inertia wins, ties to the first.
        const auto dims = x.cols();
        struct Run {
            std::vector<float> d2;
            std::vector<faiss::Index::idx_t> assign;
            double inertia = 0;
        };
        std::vector<Run> runs(static_cast<size_t>(n_init_));
        const uint64_t base = nscope::common::mix64(seed_ ^ 0x6B6D65616E73ull);
        nscope::run_tasks(parallel_for_, runs.size(), [&](size_t r) {
            const int threads = omp_get_max_threads();
            omp_set_num_threads(1);  // faiss's and OpenBLAS's OpenMP regions on this thread: one thread each
            faiss::ClusteringParameters cp;
            cp.niter = static_cast<int>(max_iter_);
            cp.nredo = 1;
            cp.seed = static_cast<int>(nscope::common::mix64(base + r) & 0x7fffffff);
            cp.min_points_per_centroid = 1;                                               // no warning for few points
            cp.max_points_per_centroid = static_cast<int>(std::max<Eigen::Index>(1, m));  // and no subsampling
            faiss::Clustering km(static_cast<int>(dims), static_cast<int>(k_), cp);
            faiss::IndexFlatL2 index(dims);
            km.train(m, x.data(), index);  // leaves the final centroids in `index`
            Run& run = runs[r];
            run.d2.resize(static_cast<size_t>(m));
            run.assign.resize(static_cast<size_t>(m));
            index.search(m, x.data(), 1, run.d2.data(), run.assign.data());
            for (float v : run.d2) run.inertia += v;
            omp_set_num_threads(threads);
        });
        size_t best = 0;
        for (size_t r = 1; r < runs.size(); ++r)
            if (runs[r].inertia < runs[best].inertia) best = r;
        const auto& assign = runs[best].assign;
        x.resize(0, 0);
        corr = Eigen::MatrixXd::Zero(n, n);
        Eigen::MatrixXd dist(m, m);
        for (Eigen::Index i = 0; i < m; ++i)
            for (Eigen::Index j = 0; j < m; ++j) {
                const double r = i == j ? 1.0 : std::clamp(static_cast<double>(gram(i, j)), -1.0, 1.0);
                corr(live[static_cast<size_t>(i)], live[static_cast<size_t>(j)]) = r;
                dist(i, j) = std::sqrt(2.0 * (1.0 - r));
            }
        std::map<int64_t, std::vector<int64_t>> groups;  // faiss label -> positions in `live`
        for (Eigen::Index i = 0; i < m; ++i) groups[assign[static_cast<size_t>(i)]].push_back(i);
        Clustering c = number_groups(std::move(groups), live, n, corr, dist);
        c.inertia = runs[best].inertia;
        return c;
    }

    /// A neuron whose variance (m2 = Σ (x − mean)² over `count` values) is rounding noise of its mean is
    /// constant: its correlation is undefined.
    static bool live_variance(double m2, double count, double mean) {
        return m2 > 1e-12 * count * std::max(1.0, mean * mean);
    }

    /// Labels from groups of positions in `live`: groups of at least min_size are kept and numbered by size
    /// (desc), then first neuron; mean |corr| within each; the silhouette on `dist` (over `live` positions).
    Clustering number_groups(std::map<int64_t, std::vector<int64_t>> groups, const std::vector<int64_t>& live,
                             int64_t n, const Eigen::MatrixXd& corr, const Eigen::MatrixXd& dist) const {
        Clustering c;
        c.labels.assign(static_cast<size_t>(n), -1);
        c.constant = n - static_cast<int64_t>(live.size());
        std::vector<std::vector<int64_t>> kept;
        for (auto& [key, g] : groups)
            if (static_cast<int64_t>(g.size()) >= min_size_) kept.push_back(std::move(g));
        std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) {
            return a.size() != b.size() ? a.size() > b.size() : a.front() < b.front();
        });
        for (size_t l = 0; l < kept.size(); ++l) {
            std::vector<int64_t> neurons;
            double sum = 0;
            for (int64_t i : kept[l]) {
                const int64_t a = live[static_cast<size_t>(i)];
                neurons.push_back(a);
                c.labels[static_cast<size_t>(a)] = static_cast<int64_t>(l);
                for (int64_t j : kept[l])
                    if (j > i) sum += std::abs(corr(a, live[static_cast<size_t>(j)]));
            }
            const double pairs = 0.5 * static_cast<double>(kept[l].size() * (kept[l].size() - 1));
            c.members.push_back(std::move(neurons));
            c.within.push_back(pairs > 0 ? sum / pairs : 1.0);
        }
        c.silhouette = silhouette(dist, kept);
        return c;
    }

    /// A cluster's typical tokens: for each token, how many of its members have it among their top examples
    /// (each member counts once); the `typical_tokens` most shared ones (ties: more occurrences, then text),
    /// shared by at least two members (one for a cluster of one). Text "tok (members/size), ..." and JSON.
    std::pair<std::string, nlohmann::json> typical_tokens(const std::vector<int64_t>& members,
                                                          const std::map<int64_t, std::map<std::string, double>>* top) const {
        std::map<std::string, std::pair<int64_t, double>> shared;  // token -> (members, occurrences)
        for (int64_t j : members) {
            if (!top) break;
            const auto it = top->find(j);
            if (it == top->end()) continue;
            for (const auto& [tok, count] : it->second) {
                auto& e = shared[tok];
                ++e.first, e.second += count;
            }
        }
        std::vector<std::pair<std::string, std::pair<int64_t, double>>> order(shared.begin(), shared.end());
        std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
            return a.second != b.second ? a.second > b.second : a.first < b.first;
        });
        const int64_t need = members.size() > 1 ? 2 : 1;
        std::string text;
        nlohmann::json list = nlohmann::json::array();
        for (const auto& [tok, e] : order) {
            if (static_cast<int64_t>(list.size()) >= typical_ || e.first < need) break;
            if (!list.empty()) text += ", ";
            text += tok + " (" + std::to_string(e.first) + "/" + std::to_string(members.size()) + ")";
            list.push_back({{"token", tok}, {"members", e.first}, {"occurrences", e.second}});
        }
        return {text, std::move(list)};
    }

    /// Mean silhouette (Rousseeuw 1987) of the clustered neurons on the 1 − |corr| dissimilarity: per neuron
    /// s = (b − a) / max(a, b), a = mean dissimilarity to its own cluster, b = the smallest mean to another
    /// cluster; 0 for a cluster of one. NaN with fewer than 2 clusters. O(n²).
    static double silhouette(const Eigen::MatrixXd& dist, const std::vector<std::vector<int64_t>>& kept) {
        if (kept.size() < 2) return std::numeric_limits<double>::quiet_NaN();
        double total = 0;
        int64_t count = 0;
        std::vector<double> mean_to(kept.size());
        for (size_t l = 0; l < kept.size(); ++l)
            for (int64_t i : kept[l]) {
                for (size_t o = 0; o < kept.size(); ++o) {
                    double s = 0;
                    for (int64_t j : kept[o]) s += dist(i, j);
                    const double others = static_cast<double>(kept[o].size()) - (o == l ? 1.0 : 0.0);
                    mean_to[o] = others > 0 ? s / others : 0.0;
                }
                ++count;
                if (kept[l].size() == 1) continue;
                double b = std::numeric_limits<double>::infinity();
                for (size_t o = 0; o < kept.size(); ++o)
                    if (o != l) b = std::min(b, mean_to[o]);
                const double a = mean_to[l], denom = std::max(a, b);
                total += denom > 0 ? (b - a) / denom : 0.0;
            }
        return total / static_cast<double>(count);
    }

    /// The correlation of the clustered neurons, ordered by cluster, the first `heatmap_neurons` of them.
    void heatmap(nscope::Result& res, const std::string& hook, const Clustering& c, const Eigen::MatrixXd& corr) const {
        std::vector<int64_t> order;
        for (const auto& g : c.members)
            for (int64_t j : g)
                if (static_cast<int64_t>(order.size()) < heatmap_neurons_) order.push_back(j);
        if (order.empty()) return;
        nlohmann::json z = nlohmann::json::array(), labels = nlohmann::json::array();
        for (int64_t a : order) {
            nlohmann::json row = nlohmann::json::array();
            for (int64_t b : order) row.push_back(corr(a, b));
            z.push_back(std::move(row));
            labels.push_back("#" + std::to_string(a) + " c" + std::to_string(c.labels[static_cast<size_t>(a)]));
        }
        res.set_figure("correlation." + hook,
                       {{"kind", "heatmap"},
                        {"title", hook + ": activation correlation of " + std::to_string(order.size()) +
                                      " clustered neurons, ordered by cluster"},
                        {"z", std::move(z)}, {"x", labels}, {"y", labels}, {"zmid", 0}, {"z_label", "corr"}});
    }

    nscope::common::HookFilter filter_;
    bool kmeans_ = false;
    double threshold_ = 0.5;
    int64_t min_size_ = 2, k_ = 10, n_init_ = 10, max_iter_ = 50, typical_ = 5;
    size_t cap_ = 2000;
    int64_t heatmap_neurons_ = 64;
    double max_memory_mb_ = 4096;
    uint64_t seed_ = 0;
    const nscope::Result* topk_ = nullptr;
    std::vector<const nscope::PromptInfo*> prompts_;
    std::map<std::string, HookState> hooks_;
    nscope::ParallelFor parallel_for_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Cluster, "cluster", "1.1.0",
                       "neurons grouped by activation correlation: average linkage on 1 - |corr| cut at a threshold, "
                       "or k-means (faiss) on activation profiles")

// `cluster` analyzer: the neurons of each hook grouped by how their activations co-vary over the corpus.
// Streaming, mergeable covariance of the hook's neurons over every real token (CoMoments) → Pearson
// correlation → dissimilarity 1 − |corr| → average-linkage dendrogram (linkage.h) cut at `threshold`.
// Clusters smaller than `min_size`, and constant neurons (no correlation defined), are labelled −1.
// Schema: docs/analyses.md#cluster.
//
// Cost per token n²/2 multiply-adds (n = hook width); at finish O(n²) for the linkage and the silhouette.
// Memory ~2.5 n² doubles per hook (covariance, float Gram, then the dissimilarity matrix). Deterministic.
#include <nscope/eigen.h>
#include <nscope/sdk.h>

#include "linkage.h"
#include "nscope_common/covariance.h"
#include "nscope_common/hooks.h"
#include "nscope_common/params.h"

namespace {

using nscope::common::CoMoments;

struct HookState {
    CoMoments cov;
    std::vector<float> x;  // per-batch scratch
};

/// One hook's clustering.
struct Clustering {
    std::vector<int64_t> labels;                 // per neuron, −1 = unclustered
    std::vector<std::vector<int64_t>> members;   // per label, ascending
    std::vector<double> within;                  // per label: mean |corr| over its pairs
    double silhouette = std::numeric_limits<double>::quiet_NaN();
    int64_t constant = 0;
};

class Cluster : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("cluster", params,
                                      {"hooks", "threshold", "min_size", "heatmap_neurons", "max_memory_mb"});
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
        threshold_ = p.number("threshold", 0.5, 0.0, 1.0);
        min_size_ = p.integer("min_size", 2, 1);
        heatmap_neurons_ = p.integer("heatmap_neurons", 64, 0, 2000);
        max_memory_mb_ = p.number("max_memory_mb", 4096, 1);
    }

    void begin(const nscope::RunContext& ctx) override {
        parallel_for_ = ctx.parallel_for;
        double bytes = 0, widest = 0;
        for (const auto& h : nscope::common::planned_hooks("cluster", ctx, filter_)) {
            const double n2 = comoments(h.width);
            bytes += n2 * 1.5;               // covariance + float Gram, kept per hook for the whole run
            widest = std::max(widest, n2);   // + one dissimilarity matrix at a time, at finish
        }
        nscope::common::check_memory("cluster", bytes + widest, max_memory_mb_,
                                     "the neuron correlation matrices", "select fewer / narrower hooks with 'hooks'");
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
            nscope::common::gather_tokens(batch, *views[i], widths[i], s.x);
            s.cov.add(s.x.data(), s.x.size() / static_cast<size_t>(widths[i]));
        });
    }

    bool mergeable() const override { return true; }

    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const Cluster&>(other);
        for (const auto& [hook, s] : o.hooks_) state(hook, s.cov.features()).cov.merge(s.cov);
        filter_.merge(o.filter_);
    }

    nscope::Result finish() override {
        nscope::Result res;
        const std::vector<std::string> names = nscope::common::hooks_in_order(hooks_);
        nscope::Table layers, clusters;
        layers.columns = {"hook", "layer", "neurons", "tokens", "constant", "clustered", "clusters", "largest",
                          "silhouette"};
        clusters.columns = {"hook", "layer", "cluster", "size", "mean_abs_corr", "neurons"};
        nlohmann::json bar_x = nlohmann::json::array(), bar_y = nlohmann::json::array();
        for (const auto& hook : names) {
            const HookState& s = hooks_.at(hook);
            const int64_t n = s.cov.features();
            const int layer = nscope::common::hook_layer(hook);
            if (s.cov.count < 3)
                throw nscope::InputError("cluster: too few tokens: hook '" + hook + "' has " +
                                         std::to_string(s.cov.count) +
                                         "; correlations need at least 3 (add prompts)");
            Eigen::MatrixXd corr;
            const Clustering c = cluster(s.cov, corr);
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
                clusters.add_row({hook, layer, l, size, c.within[l], list});
            }
            const nlohmann::json sil = std::isfinite(c.silhouette) ? nlohmann::json(c.silhouette) : nlohmann::json();
            layers.add_row({hook, layer, n, s.cov.count, c.constant, clustered, c.members.size(), largest, sil});
            bar_x.push_back(hook);
            bar_y.push_back(c.members.size());
            res.set_array(hook + ".labels", nscope::NdArray::ints({n}, c.labels));
            heatmap(res, hook, c, corr);
        }
        res.set_table("layers", std::move(layers));
        res.set_table("clusters", std::move(clusters));
        res.set_figure("clusters_by_hook", {{"kind", "bar"}, {"title", "clusters per hook (size ≥ min_size)"},
                                            {"x", bar_x}, {"y", bar_y}, {"x_label", "hook"},
                                            {"y_label", "clusters"}});
        res.data["summary"] = {{"hooks", names.size()}, {"threshold", threshold_}, {"min_size", min_size_},
                               {"skipped", filter_.skipped_json()}};
        return res;
    }

private:
    static double comoments(int64_t n) { return nscope::common::comoments_bytes(n); }

    HookState& state(const std::string& hook, int64_t width) {
        auto it = hooks_.find(hook);
        if (it == hooks_.end()) {
            it = hooks_.emplace(hook, HookState{}).first;
            it->second.cov.init(width);
        } else if (it->second.cov.features() != width) {
            throw nscope::RuntimeError("cluster: hook '" + hook + "' changed width from " +
                                       std::to_string(it->second.cov.features()) + " to " + std::to_string(width));
        }
        return it->second;
    }

    /// Correlation of the live neurons (into `corr`, over all n, 0 rows for constant ones) and their clusters.
    Clustering cluster(const CoMoments& cov, Eigen::MatrixXd& corr) const {
        const int64_t n = cov.features();
        Clustering c;
        c.labels.assign(static_cast<size_t>(n), -1);
        // A neuron whose variance is rounding noise of its mean is constant: its correlation is undefined.
        std::vector<int64_t> live;
        Eigen::VectorXd sd(n);
        for (int64_t j = 0; j < n; ++j) {
            const double m2 = cov.m2(j, j), mu = cov.mean(j);
            sd(j) = std::sqrt(std::max(0.0, m2));
            if (m2 > 1e-12 * static_cast<double>(cov.count) * std::max(1.0, mu * mu)) live.push_back(j);
        }
        c.constant = n - static_cast<int64_t>(live.size());
        corr = Eigen::MatrixXd::Zero(n, n);
        for (int64_t a : live)
            for (int64_t b : live) corr(a, b) = std::clamp(cov.m2(a, b) / (sd(a) * sd(b)), -1.0, 1.0);
        const auto m = static_cast<Eigen::Index>(live.size());
        Eigen::MatrixXd dist(m, m);
        for (Eigen::Index i = 0; i < m; ++i)
            for (Eigen::Index j = 0; j < m; ++j) dist(i, j) = i == j ? 0.0 : 1.0 - std::abs(corr(live[i], live[j]));
        const Eigen::MatrixXd dist0 = dist;  // the linkage overwrites its copy
        const auto roots = nscope::cluster::cut(nscope::cluster::average_linkage(dist), m, threshold_);

        // Group by root; keep groups of at least min_size; number them by size (desc), then first neuron.
        std::map<int64_t, std::vector<int64_t>> groups;  // root -> positions in `live`
        for (Eigen::Index i = 0; i < m; ++i) groups[roots[static_cast<size_t>(i)]].push_back(i);
        std::vector<std::vector<int64_t>> kept;
        for (auto& [root, g] : groups)
            if (static_cast<int64_t>(g.size()) >= min_size_) kept.push_back(std::move(g));
        std::stable_sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
        for (size_t l = 0; l < kept.size(); ++l) {
            std::vector<int64_t> neurons;
            double sum = 0;
            for (int64_t i : kept[l]) {
                neurons.push_back(live[static_cast<size_t>(i)]);
                c.labels[static_cast<size_t>(live[static_cast<size_t>(i)])] = static_cast<int64_t>(l);
                for (int64_t j : kept[l])
                    if (j > i) sum += 1.0 - dist0(i, j);
            }
            const double pairs = 0.5 * static_cast<double>(kept[l].size() * (kept[l].size() - 1));
            c.members.push_back(std::move(neurons));
            c.within.push_back(pairs > 0 ? sum / pairs : 1.0);
        }
        c.silhouette = silhouette(dist0, kept);
        return c;
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
    double threshold_ = 0.5;
    int64_t min_size_ = 2;
    int64_t heatmap_neurons_ = 64;
    double max_memory_mb_ = 4096;
    std::map<std::string, HookState> hooks_;
    nscope::ParallelFor parallel_for_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Cluster, "cluster", "1.0.0",
                       "neurons grouped by activation correlation: average linkage on 1 - |corr|, cut at a threshold")

// Two measures of the `cka` analyzer that work from points rather than from a D × D covariance:
//  - minibatch CKA (Nguyen, Raghu & Kornblith 2021): CKA from the debiased HSIC estimator (Song et al. 2012)
//    averaged over minibatches of n points; memory n × D floats + n² doubles per hook, so it compares many
//    wide hooks whose joint covariance would not fit;
//  - RSA (Kriegeskorte et al. 2008): each hook's representational dissimilarity matrix (1 − Pearson
//    correlation between the points' activation vectors) over a seeded sample of points, compared by
//    Spearman rank correlation of the upper triangles.
// Both see the points of every model of the run (one model between hooks; several across models) as joint
// rows: the selected hooks of a model side by side. Deterministic.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include <nscope/eigen.h>
#include <nscope/sdk.h>

#include "nscope_common/points.h"

namespace nscope::cka {

/// A hook as the columns [start, start + width) of its model's joint rows.
struct HookColumns {
    size_t model = 0;
    int64_t start = 0;
    int64_t width = 0;
};

/// Indices (a, b) into the hook list of a measure.
using HookPair = std::pair<size_t, size_t>;

/// Minibatch CKA = Σ_b n_b HSIC₁(K_b, L_b) / √(Σ_b n_b HSIC₁(K_b, K_b) · Σ_b n_b HSIC₁(L_b, L_b)) over minibatches b
/// of n_b points (linear kernels K = X Xᵀ). HSIC₁ is unbiased, so its average over minibatches converges to
/// the full-data HSIC as the number of minibatches grows, whatever n. The final partial minibatch counts if it
/// has at least 4 points (the estimator's minimum); fewer are dropped and counted.
class MinibatchCka {
public:
    void init(std::vector<int64_t> model_widths, std::vector<HookColumns> hooks, std::vector<HookPair> pairs,
              size_t size) {
        widths_ = std::move(model_widths);
        hooks_ = std::move(hooks);
        pairs_ = std::move(pairs);
        size_ = size;
        buffers_.assign(widths_.size(), {});
        cross_.assign(pairs_.size(), 0.0);
        self_.assign(hooks_.size(), 0.0);
        minibatches = points = dropped = 0;
    }

    /// Bytes this measure holds: the minibatch buffers and each hook's centred Gram (for plan-time checks).
    static double bytes(const std::vector<int64_t>& model_widths, size_t hooks, size_t size) {
        const double n = static_cast<double>(size);
        double d = 0;
        for (int64_t w : model_widths) d += static_cast<double>(w);
        return 4.0 * n * d + 8.0 * n * n * static_cast<double>(hooks) + 8.0 * n * static_cast<double>(*std::max_element(
                                                                                     model_widths.begin(), model_widths.end()));
    }

    /// Model `model`'s points: joint row-major [rows, D_model]. A minibatch is folded in once every model has
    /// delivered its points (models of a lockstep run deliver the same number).
    void add(size_t model, const float* joint, size_t rows) {
        auto& buf = buffers_.at(model);
        buf.insert(buf.end(), joint, joint + rows * static_cast<size_t>(widths_[model]));
        fold(false);
    }

    /// Folds the final partial minibatch. Call once, after the last `add`.
    void finish() { fold(true); }

    /// Minibatch CKA of pair `p` (NaN when a hook has no variance in the minibatches).
    double value(size_t p) const {
        const auto [a, b] = pairs_[p];
        const double d = self_[a] * self_[b];
        return d > 0 ? cross_[p] / std::sqrt(d) : std::numeric_limits<double>::quiet_NaN();
    }

    uint64_t minibatches = 0, points = 0, dropped = 0;

private:
    size_t buffered(size_t m) const { return buffers_[m].size() / static_cast<size_t>(widths_[m]); }

    void fold(bool last) {
        for (;;) {
            size_t n = buffered(0);
            for (size_t m = 1; m < buffers_.size(); ++m) n = std::min(n, buffered(m));
            if (n == 0 || (n < size_ && !last)) return;
            n = std::min(n, size_);
            if (n >= 4) fold_minibatch(n);
            else dropped += n;
            for (size_t m = 0; m < buffers_.size(); ++m)
                buffers_[m].erase(buffers_[m].begin(), buffers_[m].begin() + static_cast<ptrdiff_t>(n * static_cast<size_t>(widths_[m])));
        }
    }

    /// The hook's Gram matrix over the first n buffered points with its diagonal zeroed (K̃), with row sums.
    void gram(const HookColumns& h, size_t n, Eigen::MatrixXd& k, Eigen::VectorXd& rows) {
        Eigen::Map<const RowMatrixXf> joint(buffers_[h.model].data(), static_cast<Eigen::Index>(n), widths_[h.model]);
        x_ = joint.middleCols(h.start, h.width).cast<double>();
        // HSIC₁ with linear kernels is exactly invariant to a shift of the points; centring only keeps the
        // Gram entries small, which keeps their rounding small.
        x_.rowwise() -= x_.colwise().mean();
        k.noalias() = x_ * x_.transpose();
        k.diagonal().setZero();
        rows = k.rowwise().sum();
    }

    void fold_minibatch(size_t n) {
        const double nd = static_cast<double>(n);
        k_.resize(hooks_.size());
        rows_.resize(hooks_.size());
        for (size_t h = 0; h < hooks_.size(); ++h) gram(hooks_[h], n, k_[h], rows_[h]);
        // HSIC₁(K, L) = [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)), K̃ symmetric.
        auto hsic = [&](size_t a, size_t b) {
            const double trace = (k_[a].array() * k_[b].array()).sum();
            const double sums = rows_[a].sum() * rows_[b].sum() / ((nd - 1) * (nd - 2));
            const double cross = 2.0 / (nd - 2) * rows_[a].dot(rows_[b]);
            return (trace + sums - cross) / (nd * (nd - 3));
        };
        for (size_t h = 0; h < hooks_.size(); ++h) self_[h] += nd * hsic(h, h);
        for (size_t p = 0; p < pairs_.size(); ++p) cross_[p] += nd * hsic(pairs_[p].first, pairs_[p].second);
        ++minibatches;
        points += n;
    }

    std::vector<int64_t> widths_;
    std::vector<HookColumns> hooks_;
    std::vector<HookPair> pairs_;
    size_t size_ = 256;
    std::vector<std::vector<float>> buffers_;
    std::vector<double> cross_, self_;
    std::vector<Eigen::MatrixXd> k_;
    std::vector<Eigen::VectorXd> rows_;
    Eigen::MatrixXd x_;
};

/// RSA over a sample of at most `cap` points, the same points in every model (the sample is a function of the
/// points' origins and the seed, nscope_common PointSample). A point whose activations are constant over a
/// hook has no correlation with any other: its dissimilarities are 1.
class Rsa {
public:
    void init(std::vector<int64_t> model_widths, std::vector<HookColumns> hooks, std::vector<HookPair> pairs,
              size_t cap, uint64_t seed) {
        widths_ = std::move(model_widths);
        hooks_ = std::move(hooks);
        pairs_ = std::move(pairs);
        samples_.assign(widths_.size(), {});
        for (auto& s : samples_) s.init(cap, seed);
        ranks_.clear();
        points = 0;
    }

    /// Bytes this measure holds at most: the sampled points and each hook's ranked dissimilarities.
    static double bytes(const std::vector<int64_t>& model_widths, size_t hooks, size_t cap) {
        const double n = static_cast<double>(cap);
        double d = 0;
        for (int64_t w : model_widths) d += static_cast<double>(w);
        return 4.0 * n * d + 8.0 * n * (n - 1) / 2 * (static_cast<double>(hooks) + 2);
    }

    /// Model `model`'s points: joint row-major [rows, D_model] with their origins.
    void add(size_t model, const std::vector<float>& joint, const std::vector<common::PointOrigin>& origin) {
        samples_.at(model).offer_all(joint, origin, widths_[model]);
    }

    uint64_t offered() const { return samples_.empty() ? 0 : samples_[0].offered; }

    /// Builds every hook's ranked RDM. Call once, after the last `add`.
    void finish() {
        std::vector<std::vector<common::SampledPoint>> sorted;
        for (const auto& s : samples_) sorted.push_back(s.sorted());
        for (size_t m = 1; m < sorted.size(); ++m) {
            bool same = sorted[m].size() == sorted[0].size();
            for (size_t i = 0; same && i < sorted[0].size(); ++i)
                same = sorted[m][i].origin.prompt == sorted[0][i].origin.prompt &&
                       sorted[m][i].origin.position == sorted[0][i].origin.position;
            if (!same)
                throw RuntimeError("cka: the models' point samples differ (the models saw different points); "
                                   "RSA compares the same points in every model");
        }
        points = sorted.empty() ? 0 : sorted[0].size();
        ranks_.assign(hooks_.size(), {});
        for (size_t h = 0; h < hooks_.size(); ++h) ranks_[h] = ranked_rdm(sorted[hooks_[h].model], hooks_[h]);
    }

    /// Spearman correlation of pair `p`'s RDMs (NaN with fewer than 3 points or a constant RDM).
    double value(size_t p) const {
        const auto& a = ranks_[pairs_[p].first];
        const auto& b = ranks_[pairs_[p].second];
        if (a.size() < 3 || a.isZero(0) || b.isZero(0)) return std::numeric_limits<double>::quiet_NaN();
        return a.dot(b);
    }

    uint64_t points = 0;

private:
    /// The upper triangle of the hook's RDM over the sample, as ranks (ties averaged), centred and scaled to
    /// unit norm, so that the Spearman correlation of two hooks is the dot product.
    static Eigen::VectorXd ranked_rdm(const std::vector<common::SampledPoint>& pts, const HookColumns& h) {
        const auto n = static_cast<Eigen::Index>(pts.size());
        Eigen::MatrixXd z(n, h.width);
        for (Eigen::Index i = 0; i < n; ++i)
            for (int64_t j = 0; j < h.width; ++j) z(i, j) = pts[static_cast<size_t>(i)].x[static_cast<size_t>(h.start + j)];
        z.colwise() -= z.rowwise().mean();
        for (Eigen::Index i = 0; i < n; ++i) {
            const double norm = z.row(i).norm();
            if (norm > 0) z.row(i) /= norm;
        }
        const Eigen::MatrixXd corr = z * z.transpose();
        Eigen::VectorXd d(n * (n - 1) / 2);
        Eigen::Index k = 0;
        for (Eigen::Index i = 0; i < n; ++i)
            for (Eigen::Index j = i + 1; j < n; ++j) d(k++) = 1.0 - corr(i, j);
        Eigen::VectorXd r = average_ranks(d);
        if (r.size() == 0) return r;
        r.array() -= r.mean();
        const double norm = r.norm();
        if (norm > 0) r /= norm;
        return r;
    }

    static Eigen::VectorXd average_ranks(const Eigen::VectorXd& v) {
        std::vector<Eigen::Index> order(static_cast<size_t>(v.size()));
        std::iota(order.begin(), order.end(), Eigen::Index{0});
        std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return v(a) < v(b); });
        Eigen::VectorXd r(v.size());
        for (size_t i = 0; i < order.size();) {
            size_t j = i;
            while (j + 1 < order.size() && v(order[j + 1]) == v(order[i])) ++j;
            const double rank = 0.5 * static_cast<double>(i + j) + 1.0;
            for (size_t t = i; t <= j; ++t) r(order[t]) = rank;
            i = j + 1;
        }
        return r;
    }

    std::vector<int64_t> widths_;
    std::vector<HookColumns> hooks_;
    std::vector<HookPair> pairs_;
    std::vector<common::PointSample> samples_;
    std::vector<Eigen::VectorXd> ranks_;
};

}  // namespace nscope::cka

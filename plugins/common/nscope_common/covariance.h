// Streaming, mergeable covariance of n features (the co-moment matrix M = Σ (x − mean)(x − mean)ᵀ), the
// state that `pca`, `cka` and `cluster` share.
//
// Contract: rows are n float32 values each (one token or pooled point); `add` folds in a block of rows,
// `merge` another instance's state. Memory n² doubles. Cost per row: n²/2 multiply-adds (a float32
// symmetric rank-k update, Eigen), plus n² double additions per chunk of kChunk rows. Deterministic for a
// given sequence of blocks; a merge equals one pass up to rounding.
//
// Numerics: each chunk of rows is centred on its own mean (computed in double) before the product, so the
// float32 products see values of the size of the spread, not of the mean; chunk sums of at most kChunk
// products are then added into double totals and folded in with the pairwise update of Chan et al.:
//   n = na + nb, d = mean_b − mean_a, mean = mean_a + d·nb/n, M = Ma + Mb + d dᵀ·na·nb/n.
// Agreement with a double two-pass computation is ~1e-6 relative (the precision of the float32 inputs).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <Eigen/Core>

#include <nscope/eigen.h>
#include <nscope/sdk.h>

namespace nscope::common {

class CoMoments {
public:
    static constexpr size_t kChunk = 256;

    void init(int64_t n) {
        n_ = n;
        count = 0;
        mean = Eigen::VectorXd::Zero(n);
        m2 = Eigen::MatrixXd::Zero(n, n);
    }
    int64_t features() const { return n_; }

    /// Fold in `rows` rows of `features()` floats, row-major and contiguous.
    void add(const float* x, size_t rows) {
        for (size_t start = 0; start < rows; start += kChunk) {
            const size_t nb = std::min(kChunk, rows - start);
            Eigen::Map<const RowMatrixXf> block(x + start * n_, static_cast<Eigen::Index>(nb), n_);
            const Eigen::VectorXd mb = block.cast<double>().colwise().sum().transpose() / static_cast<double>(nb);
            centred_ = block.rowwise() - mb.cast<float>().transpose();
            gram_.setZero(n_, n_);
            gram_.selfadjointView<Eigen::Lower>().rankUpdate(centred_.transpose());
            // Only the lower triangle is filled; combine() symmetrises.
            combine(nb, mb, gram_.cast<double>());
        }
    }

    void merge(const CoMoments& o) {
        if (o.count == 0) return;
        if (o.n_ != n_) throw RuntimeError("covariance merge: width " + std::to_string(o.n_) + " vs " + std::to_string(n_));
        combine(o.count, o.mean, o.m2, true);
    }

    /// Population covariance M / count (symmetric, full).
    Eigen::MatrixXd covariance() const { return count ? Eigen::MatrixXd(m2 / static_cast<double>(count)) : m2; }

    uint64_t count = 0;
    Eigen::VectorXd mean;
    Eigen::MatrixXd m2;  ///< full and symmetric between calls

private:
    void combine(uint64_t nb_count, const Eigen::VectorXd& mb, const Eigen::MatrixXd& mb2, bool full = false) {
        Eigen::MatrixXd b = mb2;
        if (!full) b.triangularView<Eigen::StrictlyUpper>() = b.transpose();
        if (count == 0) {
            count = nb_count;
            mean = mb;
            m2 = std::move(b);
            return;
        }
        const double na = static_cast<double>(count), nb = static_cast<double>(nb_count), n = na + nb;
        const Eigen::VectorXd d = mb - mean;
        m2 += b;
        m2.noalias() += (na * nb / n) * d * d.transpose();
        mean += d * (nb / n);
        count += nb_count;
    }

    int64_t n_ = 0;
    RowMatrixXf centred_;
    Eigen::MatrixXf gram_;
};

/// Bytes of the n×n double matrix a CoMoments of n features holds (for plan-time memory checks).
inline double comoments_bytes(int64_t n) { return 8.0 * static_cast<double>(n) * static_cast<double>(n); }

/// Refuses (InputError) a state of `bytes` above `max_memory_mb`, naming what it is for and the knobs.
inline void check_memory(const std::string& plugin, double bytes, double max_memory_mb, const std::string& what,
                         const std::string& knobs) {
    const double mb = bytes / (1024.0 * 1024.0);
    if (mb <= max_memory_mb) return;
    throw InputError(plugin + ": " + what + " would need " + std::to_string(static_cast<int64_t>(mb + 0.5)) +
                     " MB, above max_memory_mb = " + std::to_string(static_cast<int64_t>(max_memory_mb)) +
                     "; raise parameter 'max_memory_mb' or " + knobs);
}

/// The valid (unpadded) token rows of a [rows, positions, neurons] activation, copied contiguously into
/// `out` ([tokens, neurons], resized) and, when `where` is given, their (prompt index, position).
inline void gather_tokens(const Batch& batch, const ActivationView& view, int64_t neurons, std::vector<float>& out,
                          std::vector<std::pair<int64_t, int64_t>>* where = nullptr) {
    out.clear();
    if (where) where->clear();
    for (size_t r = 0; r < batch.rows; ++r)
        for (size_t p = 0; p < batch.positions; ++p) {
            if (!batch.valid(r, p)) continue;
            const float* x = view.f32() + (r * batch.positions + p) * static_cast<size_t>(neurons);
            out.insert(out.end(), x, x + neurons);
            if (where) where->emplace_back(static_cast<int64_t>(batch.prompts[r]->index), static_cast<int64_t>(p));
        }
}

}  // namespace nscope::common

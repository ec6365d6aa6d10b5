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
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <Eigen/Core>

#include <nscope/eigen.h>
#include <nscope/sdk.h>

namespace nscope::common {

/// A dense double matrix or vector in a saved state: its shape, then its values (column-major).
template <typename Dense>
void save_dense(StateWriter& out, const Dense& m) {
    out.u64(static_cast<uint64_t>(m.rows()));
    out.u64(static_cast<uint64_t>(m.cols()));
    out.array(std::vector<double>(m.data(), m.data() + m.size()));
}
/// Read a matrix save_dense wrote; it must have the shape [rows, cols] that the configuration implies.
template <typename Dense>
void load_dense(StateReader& in, Dense& m, int64_t rows, int64_t cols, std::string_view what) {
    if (in.u64() != static_cast<uint64_t>(rows) || in.u64() != static_cast<uint64_t>(cols))
        in.fail(std::string(what) + " has another shape than " + std::to_string(rows) + "x" + std::to_string(cols));
    const auto v = in.array_of<double>(static_cast<size_t>(rows * cols), what);
    m.resize(rows, cols);
    std::copy(v.begin(), v.end(), m.data());
}

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

    /// The width, then count, mean and M; load() into an instance init()-ed with the same width.
    void save(StateWriter& out) const {
        out.u64(static_cast<uint64_t>(n_));
        out.u64(count);
        save_dense(out, mean);
        save_dense(out, m2);
    }
    void load(StateReader& in) {
        if (in.u64() != static_cast<uint64_t>(n_)) in.fail("the covariance has another width than configured");
        count = in.u64();
        load_dense(in, mean, n_, 1, "covariance mean");
        load_dense(in, m2, n_, n_, "co-moment matrix");
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

/// Streaming, mergeable cross co-moments of two aligned streams of rows: row i of x (p floats) and row i of
/// y (q floats) come from the same token or point. C = Σ (x − mean_x)(y − mean_y)ᵀ [p, q] with both means; the
/// numerics of CoMoments (chunks centred on their own means in double, a float32 product, double totals,
/// the pairwise update C = Ca + Cb + dx dyᵀ·na·nb/n). Memory p·q doubles; cost p·q multiply-adds per row.
class CrossMoments {
public:
    void init(int64_t p, int64_t q) {
        p_ = p, q_ = q;
        count = 0;
        mean_x = Eigen::VectorXd::Zero(p);
        mean_y = Eigen::VectorXd::Zero(q);
        c = Eigen::MatrixXd::Zero(p, q);
    }
    int64_t rows_features() const { return p_; }
    int64_t cols_features() const { return q_; }

    /// Fold in `rows` aligned rows: x row-major [rows, p], y row-major [rows, q].
    void add(const float* x, const float* y, size_t rows) {
        for (size_t start = 0; start < rows; start += CoMoments::kChunk) {
            const size_t nb = std::min(CoMoments::kChunk, rows - start);
            const auto n = static_cast<Eigen::Index>(nb);
            Eigen::Map<const RowMatrixXf> bx(x + start * p_, n, p_), by(y + start * q_, n, q_);
            const Eigen::VectorXd mx = bx.cast<double>().colwise().sum().transpose() / static_cast<double>(nb);
            const Eigen::VectorXd my = by.cast<double>().colwise().sum().transpose() / static_cast<double>(nb);
            xc_ = bx.rowwise() - mx.cast<float>().transpose();
            yc_ = by.rowwise() - my.cast<float>().transpose();
            prod_.noalias() = xc_.transpose() * yc_;
            combine(nb, mx, my, prod_.cast<double>());
        }
    }

    void merge(const CrossMoments& o) {
        if (o.count == 0) return;
        if (o.p_ != p_ || o.q_ != q_)
            throw RuntimeError("cross co-moments merge: shape " + std::to_string(o.p_) + "x" + std::to_string(o.q_) +
                               " vs " + std::to_string(p_) + "x" + std::to_string(q_));
        combine(o.count, o.mean_x, o.mean_y, o.c);
    }

    /// The shape, then count, means and C; load() into an instance init()-ed with the same shape.
    void save(StateWriter& out) const {
        out.u64(static_cast<uint64_t>(p_));
        out.u64(static_cast<uint64_t>(q_));
        out.u64(count);
        save_dense(out, mean_x);
        save_dense(out, mean_y);
        save_dense(out, c);
    }
    void load(StateReader& in) {
        if (in.u64() != static_cast<uint64_t>(p_) || in.u64() != static_cast<uint64_t>(q_))
            in.fail("the cross co-moments have another shape than configured");
        count = in.u64();
        load_dense(in, mean_x, p_, 1, "cross mean x");
        load_dense(in, mean_y, q_, 1, "cross mean y");
        load_dense(in, c, p_, q_, "cross co-moment matrix");
    }

    uint64_t count = 0;
    Eigen::VectorXd mean_x, mean_y;
    Eigen::MatrixXd c;

private:
    void combine(uint64_t nb_count, const Eigen::VectorXd& mx, const Eigen::VectorXd& my, const Eigen::MatrixXd& cb) {
        if (count == 0) {
            count = nb_count, mean_x = mx, mean_y = my, c = cb;
            return;
        }
        const double na = static_cast<double>(count), nb = static_cast<double>(nb_count), n = na + nb;
        const Eigen::VectorXd dx = mx - mean_x, dy = my - mean_y;
        c += cb;
        c.noalias() += (na * nb / n) * dx * dy.transpose();
        mean_x += dx * (nb / n);
        mean_y += dy * (nb / n);
        count += nb_count;
    }

    int64_t p_ = 0, q_ = 0;
    RowMatrixXf xc_, yc_;
    Eigen::MatrixXf prod_;
};

/// Per-neuron co-moments of two aligned streams of the same n neurons (a neuron in a base model and in a
/// checkpoint, over the same tokens): count, both means, both M2 and the co-moment Σ (x − x̄)(y − ȳ), in
/// double, per chunk centred on the chunk's means and folded in with the pairwise update. Memory 5n doubles;
/// mergeable.
class NeuronPairMoments {
public:
    void init(int64_t n) {
        n_ = static_cast<size_t>(n);
        count = 0;
        for (auto* v : {&mean_x, &mean_y, &m2_x, &m2_y, &c_xy}) v->assign(n_, 0.0);
    }
    size_t neurons() const { return n_; }

    /// Fold in `rows` aligned rows of n floats each (x and y row-major).
    void add(const float* x, const float* y, size_t rows) {
        if (rows == 0) return;
        const double nb = static_cast<double>(rows);
        std::vector<double> mx(n_, 0.0), my(n_, 0.0), sxx(n_, 0.0), syy(n_, 0.0), sxy(n_, 0.0);
        for (size_t r = 0; r < rows; ++r)
            for (size_t j = 0; j < n_; ++j) mx[j] += x[r * n_ + j], my[j] += y[r * n_ + j];
        for (size_t j = 0; j < n_; ++j) mx[j] /= nb, my[j] /= nb;
        for (size_t r = 0; r < rows; ++r)
            for (size_t j = 0; j < n_; ++j) {
                const double a = x[r * n_ + j] - mx[j], b = y[r * n_ + j] - my[j];
                sxx[j] += a * a, syy[j] += b * b, sxy[j] += a * b;
            }
        combine(rows, mx, my, sxx, syy, sxy);
    }

    void merge(const NeuronPairMoments& o) {
        if (o.count == 0) return;
        if (o.n_ != n_) throw RuntimeError("paired moments merge: " + std::to_string(o.n_) + " vs " + std::to_string(n_));
        combine(o.count, o.mean_x, o.mean_y, o.m2_x, o.m2_y, o.c_xy);
    }

    /// Pearson correlation of neuron j over the rows; NaN when either side is constant.
    double correlation(size_t j) const {
        const double d = std::sqrt(m2_x[j] * m2_y[j]);
        return d > 0 ? c_xy[j] / d : std::numeric_limits<double>::quiet_NaN();
    }

    uint64_t count = 0;
    std::vector<double> mean_x, mean_y, m2_x, m2_y, c_xy;

private:
    void combine(uint64_t nb_count, const std::vector<double>& mx, const std::vector<double>& my,
                 const std::vector<double>& sxx, const std::vector<double>& syy, const std::vector<double>& sxy) {
        if (count == 0) {
            count = nb_count, mean_x = mx, mean_y = my, m2_x = sxx, m2_y = syy, c_xy = sxy;
            return;
        }
        const double na = static_cast<double>(count), nb = static_cast<double>(nb_count), n = na + nb, f = na * nb / n;
        for (size_t j = 0; j < n_; ++j) {
            const double dx = mx[j] - mean_x[j], dy = my[j] - mean_y[j];
            m2_x[j] += sxx[j] + f * dx * dx;
            m2_y[j] += syy[j] + f * dy * dy;
            c_xy[j] += sxy[j] + f * dx * dy;
            mean_x[j] += dx * nb / n;
            mean_y[j] += dy * nb / n;
        }
        count += nb_count;
    }

    size_t n_ = 0;
};

/// Linear CKA from co-moments: ‖Cxy‖²_F / (‖Cxx‖_F ‖Cyy‖_F) (Kornblith et al. 2019, the feature-space form
/// of tr(K H L H) / √(tr(K H K H) tr(L H L H))); NaN when either side is constant.
template <typename Cross, typename SelfX, typename SelfY>
double linear_cka(const Cross& cxy, const SelfX& cxx, const SelfY& cyy) {
    const double d = cxx.norm() * cyy.norm();
    return d > 0 ? cxy.squaredNorm() / d : std::numeric_limits<double>::quiet_NaN();
}

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

// Elastic-net logistic regression for the `probe` analyzer: standardisation, a FISTA solver and prediction.
//
// Written here (no Debian C++ library fits: mlpack's LogisticRegression is binary and L2-only, liblinear has
// L1 or L2 but not both, and shogun is gone from Debian 12). The objective is scikit-learn's, so results can
// be checked against `LogisticRegression(penalty="elasticnet", solver="saga")` on the same data:
//
//   minimise  (1/n) Σ_i loss_i(W, b)  +  α · ( ρ ‖W‖₁ + (1 − ρ)/2 ‖W‖²_F )        (b is not penalised)
//
// with α = 1 / (C n) for scikit-learn's C, ρ = l1_ratio. Classes: two → the binary model, one weight vector w
// and loss log(1 + exp(−ỹ (w·x + b))) (scikit-learn's choice for two classes); three or more → the multinomial
// model, one weight row per class and loss −log softmax(W x + b)_y. The binary model is reported in the
// centred multinomial form, rows (−w/2, +w/2) and intercepts (−b/2, +b/2), whose softmax gives the same
// probabilities, so that every model has one row per class.
//
// Solver: accelerated proximal gradient (FISTA, Beck & Teboulle 2009) with soft thresholding as the prox of
// the L1 term, step 1/L from a power-iteration estimate of the Lipschitz constant of the smooth part
// (c · λ_max([X 1]ᵀ[X 1] / n) + α(1 − ρ), c = 1/4 binary, 1/2 multinomial; doubled whenever a plain step fails
// to decrease the objective), and function-value adaptive restart (O'Donoghue & Candès 2015). Each iteration
// costs two products of the [n, d] data with a [d, classes] matrix, each one pass over the data in row blocks
// on the run's threads (nscope_common/kernels.h: rows_dot, rows_axpy). It stops when the gradient mapping
// L · ‖W⁺ − V‖_∞ (the violation of the optimality conditions, in per-sample loss units) is ≤ tol, or after
// max_iter iterations (`converged` false). The data are float32 (the products run at float speed); partial
// sums of the gradient over 256 rows are float, their totals and the loss double. Deterministic (the row
// blocks do not depend on the thread count).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <Eigen/Core>

#include <nscope/analyzer.h>
#include <nscope/eigen.h>

#include "nscope_common/kernels.h"

namespace nscope::probe {

/// Column means and scales (population standard deviation) of the rows `train` of x; a constant column
/// gets scale 0 (it is zeroed by `standardise`).
struct Standardiser {
    Eigen::VectorXd mean, scale;

    void fit(const RowMatrixXf& x, const std::vector<int64_t>& train) {
        const Eigen::Index d = x.cols();
        Eigen::VectorXd sum = Eigen::VectorXd::Zero(d), sq = Eigen::VectorXd::Zero(d);
        for (int64_t r : train) sum += x.row(r).cast<double>().transpose();
        const double n = static_cast<double>(train.size());
        mean = sum / n;
        for (int64_t r : train) sq += (x.row(r).cast<double>().transpose() - mean).array().square().matrix();
        scale = (sq / n).cwiseSqrt();
        for (Eigen::Index j = 0; j < d; ++j)
            if (!(scale(j) > 1e-12 * std::max(1.0, std::abs(mean(j))))) scale(j) = 0;
    }

    /// (x − mean) / scale, 0 in constant columns.
    RowMatrixXf standardise(const RowMatrixXf& x) const {
        const Eigen::RowVectorXf m = mean.cast<float>().transpose();
        Eigen::RowVectorXf inv(scale.size());
        for (Eigen::Index j = 0; j < scale.size(); ++j) inv(j) = scale(j) > 0 ? static_cast<float>(1.0 / scale(j)) : 0.0f;
        RowMatrixXf out = x.rowwise() - m;
        out.array().rowwise() *= inv.array();
        return out;
    }
};

struct LogisticOptions {
    double alpha = 1e-4;    ///< penalty strength per sample (scikit-learn: 1 / (C · n))
    double l1_ratio = 0.5;  ///< ρ: 1 = lasso, 0 = ridge
    double tol = 1e-4;      ///< stop when the gradient mapping's largest entry is ≤ tol
    int max_iter = 2000;
    ParallelFor parallel_for;  ///< threads for the products (empty: this thread)
};

struct LogisticModel {
    int classes = 0;
    Eigen::MatrixXd coef;       ///< [classes, features] (binary: rows −w/2, +w/2)
    Eigen::VectorXd intercept;  ///< [classes]
    int iterations = 0;
    bool converged = false;
    double objective = 0;

    /// The predicted class of each row (the largest logit; ties to the lower class).
    std::vector<int> predict(const RowMatrixXf& x) const {
        const Eigen::MatrixXf z = (x * coef.cast<float>().transpose()).rowwise() + intercept.cast<float>().transpose();
        std::vector<int> out(static_cast<size_t>(x.rows()));
        for (Eigen::Index i = 0; i < z.rows(); ++i) {
            Eigen::Index best = 0;
            for (Eigen::Index c = 1; c < z.cols(); ++c)
                if (z(i, c) > z(i, best)) best = c;
            out[static_cast<size_t>(i)] = static_cast<int>(best);
        }
        return out;
    }
};

/// Fraction of `rows` of x whose predicted class equals `y[row]`.
inline double accuracy(const LogisticModel& m, const RowMatrixXf& x, const std::vector<int>& y) {
    if (x.rows() == 0) return std::numeric_limits<double>::quiet_NaN();
    const std::vector<int> p = m.predict(x);
    int64_t right = 0;
    for (size_t i = 0; i < p.size(); ++i) right += p[i] == y[i] ? 1 : 0;
    return static_cast<double>(right) / static_cast<double>(p.size());
}

namespace detail {

/// Products of the standardised data x [n, d] (row-major) with thin matrices, in row blocks on the threads.
class Products {
public:
    Products(const RowMatrixXf& x, const ParallelFor& parallel_for) : x_(x), parallel_for_(parallel_for) {}

    /// z = x w: w [d, r] column-major (each column contiguous), z [n, r] row-major.
    void times(const Eigen::MatrixXf& w, RowMatrixXf& z) const {
        const auto n = static_cast<size_t>(x_.rows()), d = static_cast<size_t>(x_.cols()), r = static_cast<size_t>(w.cols());
        z.resize(x_.rows(), w.cols());
        run_tasks(parallel_for_, (n + kTimesRows - 1) / kTimesRows, [&](size_t b) {
            const size_t r0 = b * kTimesRows, rows = std::min(kTimesRows, n - r0);
            common::kernels::rows_dot(x_.data() + r0 * d, rows, d, w.data(), r, z.data() + r0 * r);
        });
    }

    /// out = xᵀ g: g [n, r] row-major, out [d, r] column-major. Float sums over 256 rows, double totals.
    void transposed_times(const RowMatrixXf& g, Eigen::MatrixXf& out) const {
        const auto n = static_cast<size_t>(x_.rows()), d = static_cast<size_t>(x_.cols()), r = static_cast<size_t>(g.cols());
        const size_t tasks = (n + kTaskRows - 1) / kTaskRows;
        std::vector<Eigen::MatrixXd> partial(tasks);
        run_tasks(parallel_for_, tasks, [&](size_t t) {
            Eigen::MatrixXd& total = partial[t];
            total.setZero(static_cast<Eigen::Index>(d), static_cast<Eigen::Index>(r));
            Eigen::MatrixXf part(static_cast<Eigen::Index>(d), static_cast<Eigen::Index>(r));
            for (size_t r0 = t * kTaskRows; r0 < std::min(n, (t + 1) * kTaskRows); r0 += kSumRows) {
                part.setZero();
                common::kernels::rows_axpy(x_.data() + r0 * d, std::min(kSumRows, n - r0), d, g.data() + r0 * r, r,
                                           part.data());
                total += part.cast<double>();
            }
        });
        Eigen::MatrixXd sum = Eigen::MatrixXd::Zero(static_cast<Eigen::Index>(d), static_cast<Eigen::Index>(r));
        for (const auto& p : partial) sum += p;
        out = sum.cast<float>();
    }

private:
    static constexpr size_t kTimesRows = 512, kTaskRows = 2048, kSumRows = 256;
    const RowMatrixXf& x_;
    const ParallelFor& parallel_for_;
};

/// Loss (mean over rows) and, if `g` is given, its gradient with respect to the logits z ([n, r], already
/// divided by n). Binary (r = 1): logistic loss with y ∈ {0, 1}; multinomial (r = classes): softmax loss.
inline double loss(const RowMatrixXf& z, const std::vector<int>& y, bool binary, RowMatrixXf* g) {
    const Eigen::Index n = z.rows(), r = z.cols();
    const double inv_n = 1.0 / static_cast<double>(n);
    double total = 0;
    if (g) g->resize(n, r);
    for (Eigen::Index i = 0; i < n; ++i) {
        const int yi = y[static_cast<size_t>(i)];
        if (binary) {
            const double zi = z(i, 0), s = yi == 1 ? -zi : zi;  // loss = log(1 + exp(s))
            total += s > 0 ? s + std::log1p(std::exp(-s)) : std::log1p(std::exp(s));
            if (g) (*g)(i, 0) = static_cast<float>((1.0 / (1.0 + std::exp(-zi)) - yi) * inv_n);
        } else {
            double mx = -std::numeric_limits<double>::infinity();
            for (Eigen::Index c = 0; c < r; ++c) mx = std::max(mx, static_cast<double>(z(i, c)));
            double se = 0;
            for (Eigen::Index c = 0; c < r; ++c) se += std::exp(z(i, c) - mx);
            total += mx + std::log(se) - z(i, yi);
            if (g)
                for (Eigen::Index c = 0; c < r; ++c)
                    (*g)(i, c) = static_cast<float>((std::exp(z(i, c) - mx) / se - (c == yi ? 1.0 : 0.0)) * inv_n);
        }
    }
    return total * inv_n;
}

/// λ_max([X 1]ᵀ [X 1] / n) by power iteration (from a fixed start, so deterministic). A rough estimate is
/// enough: the solver doubles L when a step does not descend.
inline double top_eigenvalue(const Products& x, Eigen::Index d, Eigen::Index n) {
    Eigen::MatrixXf v = Eigen::MatrixXf::Constant(d, 1, 1.0f / std::sqrt(static_cast<float>(d + 1))), xtv;
    float vb = 1.0f / std::sqrt(static_cast<float>(d + 1));
    RowMatrixXf xv;
    double lambda = 0;
    for (int it = 0; it < 30; ++it) {
        x.times(v, xv);
        xv.array() += vb;
        x.transposed_times(xv, xtv);
        const double b = static_cast<double>(xv.sum());
        const double next = std::sqrt(xtv.squaredNorm() + b * b) / static_cast<double>(n);
        if (!(next > 0)) return 0;
        v = xtv / static_cast<float>(next * static_cast<double>(n));
        vb = static_cast<float>(b / (next * static_cast<double>(n)));
        const bool done = std::abs(next - lambda) <= 1e-3 * next;
        lambda = next;
        if (done) break;
    }
    return lambda;
}

inline void soft_threshold(Eigen::MatrixXf& w, float t) {
    w = w.unaryExpr([t](float v) { return v > t ? v - t : v < -t ? v + t : 0.0f; });
}

}  // namespace detail

/// Fit on standardised rows x [n, d] with labels y in [0, classes). classes ≥ 2.
inline LogisticModel fit_logistic(const RowMatrixXf& x, const std::vector<int>& y, int classes,
                                  const LogisticOptions& opt) {
    const bool binary = classes == 2;
    const Eigen::Index d = x.cols(), r = binary ? 1 : classes;
    const float l2 = static_cast<float>(opt.alpha * (1.0 - opt.l1_ratio)), l1 = static_cast<float>(opt.alpha * opt.l1_ratio);
    auto penalty = [&](const Eigen::MatrixXf& w) {
        return static_cast<double>(l1) * w.cwiseAbs().cast<double>().sum() +
               0.5 * static_cast<double>(l2) * w.cast<double>().squaredNorm();
    };
    const detail::Products products(x, opt.parallel_for);
    double lip = (binary ? 0.25 : 0.5) * detail::top_eigenvalue(products, d, x.rows()) * 1.05 + l2;
    if (!(lip > 0)) lip = 1;

    Eigen::MatrixXf w = Eigen::MatrixXf::Zero(d, r), v = w, grad, next;
    Eigen::RowVectorXf b = Eigen::RowVectorXf::Zero(r), bv = b, bnext;
    RowMatrixXf zw = RowMatrixXf::Zero(x.rows(), r), zv = zw, znext, gz;
    double fw = detail::loss(zw, y, binary, nullptr);
    double t = 1;
    bool momentum = false;
    LogisticModel m;
    m.classes = classes;
    for (int it = 1; it <= opt.max_iter; ++it) {
        m.iterations = it;
        detail::loss(zv, y, binary, &gz);
        products.transposed_times(gz, grad);
        grad += l2 * v;
        const Eigen::RowVectorXf gb = gz.colwise().sum();
        const float step = static_cast<float>(1.0 / lip);
        next = v - step * grad;
        detail::soft_threshold(next, l1 * step);
        bnext = bv - step * gb;
        products.times(next, znext);
        znext.rowwise() += bnext;
        const double fnext = detail::loss(znext, y, binary, nullptr) + penalty(next);
        const double gap = std::max((next - v).cwiseAbs().maxCoeff(), (bnext - bv).cwiseAbs().maxCoeff()) * lip;
        if (fnext > fw + 1e-7 * std::max(1.0, std::abs(fw)) && gap > opt.tol) {
            // Not a descent: drop the momentum (restart); a plain step that fails means L was too small.
            if (momentum) {
                momentum = false;
            } else {
                lip *= 2;
            }
            t = 1, v = w, bv = b, zv = zw;
            continue;
        }
        const double tnext = 0.5 * (1.0 + std::sqrt(1.0 + 4.0 * t * t));
        const float beta = static_cast<float>((t - 1.0) / tnext);
        v = next + beta * (next - w);
        bv = bnext + beta * (bnext - b);
        zv = znext + beta * (znext - zw);
        momentum = beta > 0;
        t = tnext;
        w.swap(next), b.swap(bnext), zw.swap(znext);
        fw = fnext;
        if (gap <= opt.tol) {
            m.converged = true;
            break;
        }
    }
    m.objective = fw;
    m.coef.resize(classes, d);
    m.intercept.resize(classes);
    if (binary) {
        m.coef.row(0) = -0.5 * w.col(0).cast<double>().transpose();
        m.coef.row(1) = 0.5 * w.col(0).cast<double>().transpose();
        m.intercept << -0.5 * b(0), 0.5 * b(0);
    } else {
        m.coef = w.transpose().cast<double>();
        m.intercept = b.transpose().cast<double>();
    }
    return m;
}

}  // namespace nscope::probe

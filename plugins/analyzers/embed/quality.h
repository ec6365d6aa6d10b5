// Trustworthiness of an embedding (Venna & Kaski 2001), the measure sklearn.manifold.trustworthiness computes:
//
//   T(k) = 1 − 2 / (n k (2n − 3k − 1)) · Σ_i Σ_{j ∈ U_k(i)} (r(i, j) − k)
//
// where U_k(i) are the k nearest neighbours of i in the embedding that are not among its k nearest in the
// input space, and r(i, j) is the rank of j among i's neighbours in the input space (1 = nearest). T = 1 when
// every embedded neighbourhood holds only true neighbours; intruders from far away lower it. Needs k < n / 2.
// Ties (equal distances) are ranked by index. Cost: an n × n Gram matrix in double (n² d multiply-adds,
// parallel over fixed blocks of rows) and O(n (n + k log k)) per row for the ranks; memory n² doubles.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include <nscope/eigen.h>
#include <nscope/sdk.h>

#include "plugins/analyzers/embed/knn.h"

namespace nscope::embed {

/// T(k) of the embedding `y` ([n, dims] row-major) of the points `x` ([n, d]). Requires 1 ≤ k < n / 2.
inline double trustworthiness(const RowMatrixXf& x, const std::vector<double>& y, int dims, int64_t k,
                              const ParallelFor& parallel_for) {
    const int64_t n = x.rows();
    const Eigen::MatrixXd xd = x.cast<double>();
    const Eigen::VectorXd sq = xd.rowwise().squaredNorm();
    constexpr size_t kBlock = 64;
    const size_t blocks = (static_cast<size_t>(n) + kBlock - 1) / kBlock;
    std::vector<double> penalty(blocks, 0.0);
    run_tasks(parallel_for, blocks, [&](size_t blk) {
        const auto b = static_cast<Eigen::Index>(blk * kBlock);
        const Eigen::Index rows = std::min<Eigen::Index>(static_cast<Eigen::Index>(kBlock), n - b);
        const Eigen::MatrixXd dot = xd.middleRows(b, rows) * xd.transpose();
        std::vector<double> dx(static_cast<size_t>(n));
        std::vector<std::pair<double, int64_t>> dy(static_cast<size_t>(n - 1));
        double sum = 0;
        for (Eigen::Index r = 0; r < rows; ++r) {
            const int64_t i = b + r;
            for (int64_t j = 0; j < n; ++j) dx[static_cast<size_t>(j)] = sq(i) + sq(j) - 2.0 * dot(r, j);
            size_t c = 0;
            for (int64_t j = 0; j < n; ++j) {
                if (j == i) continue;
                double d2 = 0;
                for (int d = 0; d < dims; ++d) {
                    const double t = y[static_cast<size_t>(i * dims + d)] - y[static_cast<size_t>(j * dims + d)];
                    d2 += t * t;
                }
                dy[c++] = {d2, j};
            }
            std::partial_sort(dy.begin(), dy.begin() + k, dy.end());
            for (int64_t m = 0; m < k; ++m) {
                const int64_t j = dy[static_cast<size_t>(m)].second;
                const double dij = dx[static_cast<size_t>(j)];
                int64_t rank = 1;  // 1 + the points closer to i than j in the input space (ties: lower index first)
                for (int64_t l = 0; l < n; ++l) {
                    if (l == i) continue;
                    const double dil = dx[static_cast<size_t>(l)];
                    rank += dil < dij || (dil == dij && l < j) ? 1 : 0;
                }
                if (rank > k) sum += static_cast<double>(rank - k);
            }
        }
        penalty[blk] = sum;
    });
    double total = 0;
    for (double p : penalty) total += p;
    const double nn = static_cast<double>(n), kk = static_cast<double>(k);
    return 1.0 - total * 2.0 / (nn * kk * (2.0 * nn - 3.0 * kk - 1.0));
}

}  // namespace nscope::embed

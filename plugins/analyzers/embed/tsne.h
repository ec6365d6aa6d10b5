// Barnes-Hut t-SNE (van der Maaten & Hinton 2008; van der Maaten 2014), written for the `embed` analyzer from
// the papers (Debian packages no C++ t-SNE). The schedule and defaults follow the common implementations
// (sklearn's TSNE, openTSNE) so that results are comparable:
//
//   affinities  p_j|i ∝ exp(−β_i ‖x_i − x_j‖²) over the 3·perplexity nearest neighbours of i, β_i found by
//               bisection so that the entropy of p_·|i is ln(perplexity) (tolerance 1e-5, 100 steps);
//               P = (P_cond + P_condᵀ) / Σ, sparse and symmetric, summing to 1.
//   kernel      w_ij = 1 / (1 + ‖y_i − y_j‖²) (Student t, one degree of freedom, in 2-D and 3-D alike),
//               q_ij = w_ij / Z, Z = Σ_{k≠l} w_kl.
//   gradient    ∂KL/∂y_i = 4 [ α Σ_j p_ij w_ij (y_i − y_j) − Σ_j w_ij² (y_i − y_j) / Z ], α = the early
//               exaggeration for the first 250 iterations, then 1. The repulsive sums over all j and Z come
//               from a 2^dims-tree (quadtree / octree) rebuilt every iteration: a cell of side s whose centre of
//               mass is at distance r from y_i stands for all its points when s < θ r (θ = 0 is exact).
//   descent     gradient descent with momentum (0.5 while exaggerated, then 0.8) and per-coordinate gains
//               (+0.2 when the gradient changes sign against the last step, ×0.8 otherwise, at least 0.01),
//               both restarted (step 0, gains 1) when the exaggeration ends, as sklearn's two descents do;
//               learning rate "auto" = max(n / early_exaggeration / 4, 50) (Belkina et al. 2019, sklearn).
//   init        the top principal components of the input, scaled so that the first has standard deviation
//               1e-4 (sklearn's and openTSNE's "pca" initialisation).
//
// Determinism: every parallel loop runs over fixed blocks of points and every sum is reduced in block order,
// so the embedding is bit-identical for a given input whatever the thread count.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <nscope/sdk.h>

#include "plugins/analyzers/embed/knn.h"

namespace nscope::embed {

/// A sparse symmetric matrix in CSR form (rows of (column, value), columns ascending).
struct SparseRows {
    int64_t n = 0;
    std::vector<int64_t> start;  ///< [n + 1]
    std::vector<int32_t> col;
    std::vector<double> val;
};

/// Builds a CSR matrix from (row, column, value) entries, summing duplicates.
struct Entry {
    int32_t row, col;
    double val;
};
inline SparseRows to_rows(int64_t n, std::vector<Entry>& entries) {
    std::sort(entries.begin(), entries.end(),
              [](const Entry& a, const Entry& b) { return a.row != b.row ? a.row < b.row : a.col < b.col; });
    SparseRows m;
    m.n = n;
    m.start.assign(static_cast<size_t>(n + 1), 0);
    for (size_t e = 0; e < entries.size(); ++e) {
        if (e > 0 && entries[e].row == entries[e - 1].row && entries[e].col == entries[e - 1].col) {
            m.val.back() += entries[e].val;
            continue;
        }
        m.col.push_back(entries[e].col);
        m.val.push_back(entries[e].val);
        ++m.start[static_cast<size_t>(entries[e].row) + 1];
    }
    for (int64_t i = 0; i < n; ++i) m.start[static_cast<size_t>(i + 1)] += m.start[static_cast<size_t>(i)];
    return m;
}

/// The conditional distribution p_·|i over i's neighbours (squared distances `d2`, ascending) with entropy
/// ln(perplexity): writes it to `p` and returns β. Distances are shifted by the nearest one (which leaves
/// p unchanged) so that exp never underflows to an all-zero row.
inline double calibrate_row(const double* d2, int64_t k, double perplexity, double* p) {
    const double target = std::log(perplexity), shift = d2[0];
    double beta = 1.0, lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
    for (int step = 0; step < 100; ++step) {
        double sum = 0, weighted = 0;
        for (int64_t j = 0; j < k; ++j) {
            p[j] = std::exp(-(d2[j] - shift) * beta);
            sum += p[j];
            weighted += (d2[j] - shift) * p[j];
        }
        const double entropy = std::log(sum) + beta * weighted / sum;
        for (int64_t j = 0; j < k; ++j) p[j] /= sum;
        const double diff = entropy - target;
        if (std::abs(diff) <= 1e-5) break;
        if (diff > 0) {
            lo = beta;
            beta = std::isinf(hi) ? beta * 2 : (beta + hi) / 2;
        } else {
            hi = beta;
            beta = std::isinf(lo) ? beta / 2 : (beta + lo) / 2;
        }
    }
    return beta;
}

/// The symmetric joint probabilities P of t-SNE from each point's k nearest neighbours.
inline SparseRows tsne_affinities(const Neighbours& nn, double perplexity, const ParallelFor& parallel_for) {
    const int64_t n = nn.n, k = nn.k;
    std::vector<double> cond(static_cast<size_t>(n * k));
    for_blocks(parallel_for, static_cast<size_t>(n), 256, [&](size_t b, size_t e) {
        std::vector<double> d2(static_cast<size_t>(k));
        for (size_t i = b; i < e; ++i) {
            for (int64_t j = 0; j < k; ++j) d2[static_cast<size_t>(j)] = std::pow(nn.dist(static_cast<int64_t>(i), j), 2);
            calibrate_row(d2.data(), k, perplexity, cond.data() + i * static_cast<size_t>(k));
        }
    });
    std::vector<Entry> entries;
    entries.reserve(static_cast<size_t>(2 * n * k));
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < k; ++j) {
            const double v = cond[static_cast<size_t>(i * k + j)];
            entries.push_back({static_cast<int32_t>(i), nn.at(i, j), v});
            entries.push_back({nn.at(i, j), static_cast<int32_t>(i), v});
        }
    SparseRows p = to_rows(n, entries);
    double total = 0;
    for (double v : p.val) total += v;
    for (double& v : p.val) v /= std::max(total, std::numeric_limits<double>::min());
    return p;
}

/// A 2^D-tree (quadtree for D = 2, octree for D = 3) over points, for the Barnes-Hut repulsive forces. Cells
/// with at most kLeafSize points (or at kMaxDepth, where coincident points end up) are leaves; empty cells are
/// not stored, so a node's children are its `children` non-empty sub-cells, consecutive from `first_child`.
template <int D>
class SpaceTree {
public:
    static constexpr int kChildren = 1 << D;
    static constexpr int kLeafSize = 8;
    static constexpr int kMaxDepth = 40;  // cells of side 2^-40 of the box: coincident points share a leaf

    void build(const double* y, int32_t n) {
        nodes_.clear();
        order_.resize(static_cast<size_t>(n));
        scratch_.resize(static_cast<size_t>(n));
        where_.resize(static_cast<size_t>(n));
        for (int32_t i = 0; i < n; ++i) order_[static_cast<size_t>(i)] = i;
        std::array<double, D> lo, hi;
        lo.fill(std::numeric_limits<double>::infinity());
        hi.fill(-std::numeric_limits<double>::infinity());
        for (int32_t i = 0; i < n; ++i)
            for (int d = 0; d < D; ++d) {
                lo[d] = std::min(lo[d], y[i * D + d]);
                hi[d] = std::max(hi[d], y[i * D + d]);
            }
        double side = 0;
        for (int d = 0; d < D; ++d) side = std::max(side, hi[d] - lo[d]);
        side = side * (1 + 1e-9) + 1e-300;
        nodes_.push_back({});
        split(y, 0, 0, n, lo, side, 0);
        for (int32_t p = 0; p < n; ++p) where_[static_cast<size_t>(order_[static_cast<size_t>(p)])] = p;
    }

    /// The points in tree order (spatially coherent: neighbours in the plane are mostly near in this order).
    const std::vector<int32_t>& order() const { return order_; }

    /// Σ_j w_ij² (y_i − y_j) into `force` and Σ_j w_ij into `z` (j ≠ i), approximated with cells.
    void repulsion(const double* y, int32_t i, double theta2, double* force, double& z) const {
        const double* yi = y + static_cast<size_t>(i) * D;
        const int32_t pos = where_[static_cast<size_t>(i)];
        std::array<int32_t, kMaxDepth * kChildren + 1> stack;
        int top = 0;
        stack[top++] = 0;
        double f[D] = {};
        double sum = 0;
        while (top > 0) {
            const Node& nd = nodes_[static_cast<size_t>(stack[--top])];
            if (pos < nd.begin || pos >= nd.end) {  // a cell holding i itself is always opened
                double diff[D], d2 = 0;
                for (int d = 0; d < D; ++d) diff[d] = yi[d] - nd.com[d], d2 += diff[d] * diff[d];
                if (nd.width2 < theta2 * d2) {
                    const double w = 1.0 / (1.0 + d2), cw = (nd.end - nd.begin) * w;
                    sum += cw;
                    for (int d = 0; d < D; ++d) f[d] += cw * w * diff[d];
                    continue;
                }
            }
            if (nd.children == 0) {
                for (int32_t p = nd.begin; p < nd.end; ++p) {
                    if (p == pos) continue;
                    const double* yj = y + static_cast<size_t>(order_[static_cast<size_t>(p)]) * D;
                    double diff[D], d2 = 0;
                    for (int d = 0; d < D; ++d) diff[d] = yi[d] - yj[d], d2 += diff[d] * diff[d];
                    const double w = 1.0 / (1.0 + d2);
                    sum += w;
                    for (int d = 0; d < D; ++d) f[d] += w * w * diff[d];
                }
                continue;
            }
            for (int c = 0; c < nd.children; ++c) stack[top++] = nd.first_child + c;
        }
        for (int d = 0; d < D; ++d) force[d] = f[d];
        z = sum;
    }

private:
    struct Node {
        double com[D] = {};
        double width2 = 0;          // squared side of the cell
        int32_t begin = 0, end = 0;  // the cell's points: order_[begin, end)
        int32_t first_child = 0;
        int32_t children = 0;        // non-empty sub-cells; 0: leaf
    };

    void split(const double* y, size_t node, int32_t begin, int32_t end, const std::array<double, D>& lo, double side,
               int depth) {
        Node& nd = nodes_[node];
        nd.begin = begin, nd.end = end, nd.width2 = side * side;
        for (int32_t p = begin; p < end; ++p)
            for (int d = 0; d < D; ++d) nd.com[d] += y[static_cast<size_t>(order_[static_cast<size_t>(p)]) * D + d];
        for (int d = 0; d < D; ++d) nd.com[d] /= end - begin;
        if (end - begin <= kLeafSize || depth >= kMaxDepth) return;
        // Counting sort of the cell's points by sub-cell (bit d set: upper half along axis d).
        const double half = side / 2;
        std::array<int32_t, kChildren + 1> bucket{};
        auto child_of = [&](int32_t j) {
            int c = 0;
            for (int d = 0; d < D; ++d) c |= (y[static_cast<size_t>(j) * D + d] >= lo[d] + half ? 1 : 0) << d;
            return c;
        };
        for (int32_t p = begin; p < end; ++p) ++bucket[child_of(order_[static_cast<size_t>(p)]) + 1];
        for (int c = 0; c < kChildren; ++c) bucket[c + 1] += bucket[c];
        std::array<int32_t, kChildren> fill{};
        for (int32_t p = begin; p < end; ++p) {
            const int32_t j = order_[static_cast<size_t>(p)];
            const int c = child_of(j);
            scratch_[static_cast<size_t>(begin + bucket[c] + fill[c]++)] = j;
        }
        std::copy(scratch_.begin() + begin, scratch_.begin() + end, order_.begin() + begin);
        int children = 0;
        for (int c = 0; c < kChildren; ++c) children += bucket[c + 1] > bucket[c] ? 1 : 0;
        const auto first = static_cast<int32_t>(nodes_.size());
        nodes_[node].first_child = first;  // (nd dangles after the resize below)
        nodes_[node].children = children;
        nodes_.resize(nodes_.size() + static_cast<size_t>(children));
        int32_t next = first;
        for (int c = 0; c < kChildren; ++c) {
            if (bucket[c + 1] == bucket[c]) continue;
            std::array<double, D> child_lo = lo;
            for (int d = 0; d < D; ++d)
                if (c >> d & 1) child_lo[d] += half;
            split(y, static_cast<size_t>(next++), begin + bucket[c], begin + bucket[c + 1], child_lo, half, depth + 1);
        }
    }

    std::vector<Node> nodes_;
    std::vector<int32_t> order_, scratch_, where_;
};

struct TsneOptions {
    int dims = 2;
    double perplexity = 30, theta = 0.5, early_exaggeration = 12, learning_rate = 0;  // 0: auto
    int64_t iterations = 1000, exaggeration_iterations = 250;
};

struct TsneOutput {
    std::vector<double> y;  ///< [n, dims]
    double kl = 0;          ///< KL(P ‖ Q) at the end (Z from the tree, as the gradient uses it)
    double learning_rate = 0;
};

template <int D>
TsneOutput tsne_optimize(const SparseRows& p, std::vector<double> y, const TsneOptions& o,
                         const ParallelFor& parallel_for) {
    const int64_t n = p.n;
    const auto un = static_cast<size_t>(n);
    TsneOutput out;
    out.learning_rate = o.learning_rate > 0 ? o.learning_rate : std::max(static_cast<double>(n) / o.early_exaggeration / 4, 50.0);
    std::vector<double> grad(un * D), update(un * D, 0.0), gains(un * D, 1.0), attract(un * D), repel(un * D);
    constexpr size_t kBlock = 256;
    const size_t blocks = (un + kBlock - 1) / kBlock;
    std::vector<double> z_block(blocks), kl_block(blocks);
    SpaceTree<D> tree;
    const double theta2 = o.theta * o.theta;
    for (int64_t it = 0; it < o.iterations; ++it) {
        const bool early = it < o.exaggeration_iterations;
        const double exaggeration = early ? o.early_exaggeration : 1.0, momentum = early ? 0.5 : 0.8;
        const bool last = it + 1 == o.iterations;
        if (it == o.exaggeration_iterations) {  // a new descent: momentum and gains start afresh, as in sklearn
            std::fill(update.begin(), update.end(), 0.0);
            std::fill(gains.begin(), gains.end(), 1.0);
        }
        tree.build(y.data(), static_cast<int32_t>(n));
        // Blocks of points in tree order: each block's points are close together, so are the cells they open.
        const std::vector<int32_t>& order = tree.order();
        run_tasks(parallel_for, blocks, [&](size_t b) {
            double z = 0, kl = 0;
            for (size_t q = b * kBlock; q < std::min(un, (b + 1) * kBlock); ++q) {
                const auto i = static_cast<size_t>(order[q]);
                double zi = 0;
                tree.repulsion(y.data(), static_cast<int32_t>(i), theta2, repel.data() + i * D, zi);
                z += zi;
                double f[D] = {};
                for (int64_t e = p.start[i]; e < p.start[i + 1]; ++e) {
                    const size_t j = static_cast<size_t>(p.col[static_cast<size_t>(e)]);
                    double diff[D], d2 = 0;
                    for (int d = 0; d < D; ++d) diff[d] = y[i * D + d] - y[j * D + d], d2 += diff[d] * diff[d];
                    const double w = 1.0 / (1.0 + d2), pw = p.val[static_cast<size_t>(e)] * w;
                    for (int d = 0; d < D; ++d) f[d] += pw * diff[d];
                    if (last) kl += p.val[static_cast<size_t>(e)] * std::log(std::max(p.val[static_cast<size_t>(e)], 1e-300) / w);
                }
                for (int d = 0; d < D; ++d) attract[i * D + d] = f[d];
            }
            z_block[b] = z;
            kl_block[b] = kl;
        });
        double z = 0;
        for (double v : z_block) z += v;
        if (last) {
            // KL = Σ p log(p / (w / Z)) = Σ p log(p / w) + log Z (Σ p = 1).
            out.kl = std::log(z);
            for (double v : kl_block) out.kl += v;
        }
        for (size_t c = 0; c < un * D; ++c) {
            const double g = 4.0 * (exaggeration * attract[c] - repel[c] / z);
            gains[c] = (update[c] * g < 0.0) ? gains[c] + 0.2 : std::max(gains[c] * 0.8, 0.01);
            update[c] = momentum * update[c] - out.learning_rate * gains[c] * g;
            y[c] += update[c];
        }
    }
    out.y = std::move(y);
    return out;
}

/// t-SNE of the points whose neighbours are `nn`, started from `init` ([n, dims], scaled by the caller).
inline TsneOutput tsne(const Neighbours& nn, std::vector<double> init, const TsneOptions& o,
                       const ParallelFor& parallel_for) {
    const SparseRows p = tsne_affinities(nn, o.perplexity, parallel_for);
    if (o.dims == 3) return tsne_optimize<3>(p, std::move(init), o, parallel_for);
    return tsne_optimize<2>(p, std::move(init), o, parallel_for);
}

}  // namespace nscope::embed

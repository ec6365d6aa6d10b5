// k nearest neighbours (Euclidean) of every row of a point matrix, for the `embed` analyzer: exact (blocked
// distance computation with Eigen) or approximate (HNSW, Malkov & Yashunin 2018, from Debian's header-only
// libhnswlib-dev).
//
// Contract: `knn(x, k, method, seed, parallel_for)` returns for each row i its k nearest other rows (i itself
// excluded, even when duplicates of i exist), nearest first, ties by index, with their Euclidean distances.
// Deterministic for a given input and seed, whatever the thread count: the exact search splits the rows into
// fixed blocks; the HNSW graph is built on one thread (parallel insertion would make the graph depend on
// thread timing) and only the read-only queries run in parallel.
//
// Cost: exact O(n² d) multiply-adds (a float32 GEMM per block of 128 rows) plus O(n²) selection, memory
// 128 × n floats per running block; HNSW ~O(n log n · d) with M = 16, ef_construction = 200, queries with
// ef = max(3k, 64).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>
// hnswlib's SSE path (searchBaseLayer) prefetches the id one past the end of a full neighbour list
// (upstream nmslib/hnswlib#107, open; Debian's 0.6.2 has it). The 4 bytes lie inside malloc's usable size
// and only feed a prefetch, which never faults, but AddressSanitizer reports the read: sanitized builds
// use hnswlib's scalar path instead, normal builds keep the SIMD distances.
#if defined(__SANITIZE_ADDRESS__) && !defined(NO_MANUAL_VECTORIZATION)
#define NO_MANUAL_VECTORIZATION
#endif
#include <hnswlib/hnswlib.h>

#include <nscope/eigen.h>
#include <nscope/sdk.h>

namespace nscope::embed {

/// Runs fn(begin, end) over [0, n) cut into fixed blocks of `block` (the cut does not depend on threads).
inline void for_blocks(const ParallelFor& parallel_for, size_t n, size_t block,
                       const std::function<void(size_t, size_t)>& fn) {
    const size_t blocks = (n + block - 1) / block;
    run_tasks(parallel_for, blocks, [&](size_t b) { fn(b * block, std::min(n, (b + 1) * block)); });
}

struct Neighbours {
    int64_t n = 0, k = 0;
    std::vector<int32_t> index;     ///< [n, k], nearest first
    std::vector<double> distance;   ///< [n, k], Euclidean (not squared)
    int32_t at(int64_t i, int64_t j) const { return index[static_cast<size_t>(i * k + j)]; }
    double dist(int64_t i, int64_t j) const { return distance[static_cast<size_t>(i * k + j)]; }
};

/// Squared Euclidean distance of two rows, in double.
inline double squared_distance(const float* a, const float* b, int64_t d) {
    double s = 0;
    for (int64_t j = 0; j < d; ++j) {
        const double t = static_cast<double>(a[j]) - static_cast<double>(b[j]);
        s += t * t;
    }
    return s;
}

/// Keeps the k best of `cand` (squared distance, index) in `out_*` at row i: sorted by distance, ties by index.
inline void keep_best(std::vector<std::pair<double, int32_t>>& cand, int64_t k, int64_t i, Neighbours& out) {
    std::sort(cand.begin(), cand.end());
    for (int64_t j = 0; j < k; ++j) {
        out.index[static_cast<size_t>(i * k + j)] = cand[static_cast<size_t>(j)].second;
        out.distance[static_cast<size_t>(i * k + j)] = std::sqrt(std::max(0.0, cand[static_cast<size_t>(j)].first));
    }
}

/// Exact: per block of rows, squared distances |x|² + |y|² − 2 x·y from a float32 GEMM select the k + 16
/// closest candidates, whose distances are then recomputed exactly in double and sorted (so float rounding
/// of the GEMM cannot reorder the reported neighbours).
inline Neighbours exact_knn(const RowMatrixXf& x, int64_t k, const ParallelFor& parallel_for) {
    const int64_t n = x.rows(), d = x.cols();
    Neighbours out;
    out.n = n, out.k = k;
    out.index.resize(static_cast<size_t>(n * k));
    out.distance.resize(static_cast<size_t>(n * k));
    const Eigen::VectorXf sq = x.rowwise().squaredNorm();
    const int64_t keep = std::min(n - 1, k + 16);
    for_blocks(parallel_for, static_cast<size_t>(n), 128, [&](size_t b, size_t e) {
        const auto rows = static_cast<Eigen::Index>(e - b);
        RowMatrixXf dot(rows, n);
        dot.noalias() = x.middleRows(static_cast<Eigen::Index>(b), rows) * x.transpose();
        std::vector<std::pair<float, int32_t>> heap;  // max-heap of the `keep` closest so far
        heap.reserve(static_cast<size_t>(keep));
        std::vector<std::pair<double, int32_t>> best(static_cast<size_t>(keep));
        for (Eigen::Index r = 0; r < rows; ++r) {
            const int64_t i = static_cast<int64_t>(b) + r;
            heap.clear();
            const float* dr = dot.row(r).data();
            for (int64_t j = 0; j < n; ++j) {
                if (j == i) continue;
                const std::pair<float, int32_t> c{sq(i) + sq(j) - 2.0f * dr[j], static_cast<int32_t>(j)};
                if (static_cast<int64_t>(heap.size()) < keep) {
                    heap.push_back(c);
                    std::push_heap(heap.begin(), heap.end());
                } else if (c < heap.front()) {
                    std::pop_heap(heap.begin(), heap.end());
                    heap.back() = c;
                    std::push_heap(heap.begin(), heap.end());
                }
            }
            for (int64_t j = 0; j < keep; ++j) {
                const int32_t other = heap[static_cast<size_t>(j)].second;
                best[static_cast<size_t>(j)] = {squared_distance(x.row(i).data(), x.row(other).data(), d), other};
            }
            keep_best(best, k, i, out);
        }
    });
    return out;
}

/// Approximate: an HNSW graph (M = 16, ef_construction = 200, level generator seeded with `seed`) built on one
/// thread, queried in parallel for k + 1 neighbours (the row itself is dropped; if the search missed it, the
/// farthest is dropped instead), whose distances are recomputed in double.
inline Neighbours hnsw_knn(const RowMatrixXf& x, int64_t k, uint64_t seed, const ParallelFor& parallel_for) {
    const int64_t n = x.rows(), d = x.cols();
    Neighbours out;
    out.n = n, out.k = k;
    out.index.resize(static_cast<size_t>(n * k));
    out.distance.resize(static_cast<size_t>(n * k));
    hnswlib::L2Space space(static_cast<size_t>(d));
    hnswlib::HierarchicalNSW<float> index(&space, static_cast<size_t>(n), 16, 200, static_cast<size_t>(seed));
    for (int64_t i = 0; i < n; ++i) index.addPoint(x.row(i).data(), static_cast<hnswlib::labeltype>(i));
    index.setEf(static_cast<size_t>(std::max<int64_t>(3 * k, 64)));
    for_blocks(parallel_for, static_cast<size_t>(n), 256, [&](size_t b, size_t e) {
        std::vector<std::pair<double, int32_t>> best;
        for (size_t i = b; i < e; ++i) {
            auto found = index.searchKnn(x.row(static_cast<Eigen::Index>(i)).data(), static_cast<size_t>(k + 1));
            best.clear();
            while (!found.empty()) {
                const auto j = static_cast<int32_t>(found.top().second);
                found.pop();
                if (j != static_cast<int32_t>(i))
                    best.emplace_back(squared_distance(x.row(static_cast<Eigen::Index>(i)).data(), x.row(j).data(), d), j);
            }
            if (static_cast<int64_t>(best.size()) < k)
                throw RuntimeError("embed: the HNSW search returned " + std::to_string(best.size()) + " of " +
                                   std::to_string(k) + " neighbours; use knn: exact");
            std::sort(best.begin(), best.end());
            best.resize(static_cast<size_t>(k));
            keep_best(best, k, static_cast<int64_t>(i), out);
        }
    });
    return out;
}

}  // namespace nscope::embed

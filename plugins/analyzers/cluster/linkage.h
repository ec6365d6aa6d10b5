// Average-linkage (UPGMA) agglomerative clustering of a dissimilarity matrix by the nearest-neighbour-chain
// algorithm (Murtagh 1983; Müllner 2011, "Modern hierarchical, agglomerative clustering algorithms"), and
// the flat clusters of a cut of its dendrogram.
//
// Written here because Debian packages no C++ library for it: fastcluster ships only its Python / R
// bindings, and ALGLIB's clusterizer is O(n³). Average linkage is reducible, so the NN-chain finds the same
// dendrogram as the naive "merge the closest pair" loop in O(n²) time and with the n×n matrix as the only
// O(n²) memory (it is overwritten with the Lance–Williams update d(a∪b, c) = (|a| d(a,c) + |b| d(b,c)) /
// (|a| + |b|)). Deterministic: ties go to the previous chain element, then to the lower index.
#pragma once

#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include <Eigen/Core>

namespace nscope::cluster {

struct Merge {
    int64_t a = 0, b = 0;  ///< representatives (the smallest original index) of the two merged clusters
    double height = 0;     ///< their average dissimilarity
};

/// The n − 1 merges of the average-linkage dendrogram of the symmetric matrix `d` (consumed: overwritten).
inline std::vector<Merge> average_linkage(Eigen::MatrixXd& d) {
    const Eigen::Index n = d.rows();
    std::vector<Merge> merges;
    if (n < 2) return merges;
    std::vector<char> active(static_cast<size_t>(n), 1);
    std::vector<double> size(static_cast<size_t>(n), 1.0);
    std::vector<Eigen::Index> chain;
    Eigen::Index first_active = 0;
    for (Eigen::Index left = n; left > 1;) {
        if (chain.empty()) {
            while (!active[static_cast<size_t>(first_active)]) ++first_active;
            chain.push_back(first_active);
        }
        const Eigen::Index a = chain.back();
        const Eigen::Index prev = chain.size() >= 2 ? chain[chain.size() - 2] : -1;
        Eigen::Index b = prev;
        double best = prev >= 0 ? d(a, prev) : std::numeric_limits<double>::infinity();
        for (Eigen::Index c = 0; c < n; ++c)
            if (active[static_cast<size_t>(c)] && c != a && d(a, c) < best) best = d(a, c), b = c;
        if (b != prev) {
            chain.push_back(b);
            continue;
        }
        // a and b are reciprocal nearest neighbours: merge b into the lower slot.
        chain.pop_back();
        chain.pop_back();
        const Eigen::Index keep = std::min(a, b), drop = std::max(a, b);
        merges.push_back({keep, drop, best});
        const double sk = size[static_cast<size_t>(keep)], sd = size[static_cast<size_t>(drop)];
        for (Eigen::Index c = 0; c < n; ++c) {
            if (!active[static_cast<size_t>(c)] || c == keep || c == drop) continue;
            const double v = (sk * d(keep, c) + sd * d(drop, c)) / (sk + sd);
            d(keep, c) = d(c, keep) = v;
        }
        size[static_cast<size_t>(keep)] = sk + sd;
        active[static_cast<size_t>(drop)] = 0;
        --left;
    }
    return merges;
}

/// Flat clusters of the dendrogram cut at `threshold`: items joined by merges of height ≤ threshold (the
/// heights of average linkage are monotone, so these merges are closed under "child of"). Returns, per
/// item, the smallest item index of its cluster.
inline std::vector<int64_t> cut(const std::vector<Merge>& merges, int64_t n, double threshold) {
    std::vector<int64_t> parent(static_cast<size_t>(n));
    std::iota(parent.begin(), parent.end(), int64_t{0});
    auto up = [&](int64_t x) -> int64_t& { return parent[static_cast<size_t>(x)]; };
    auto find = [&](int64_t x) {
        while (up(x) != x) x = up(x) = up(up(x));  // path halving
        return x;
    };
    for (const auto& m : merges) {
        if (!(m.height <= threshold)) continue;
        const int64_t ra = find(m.a), rb = find(m.b);
        parent[static_cast<size_t>(std::max(ra, rb))] = std::min(ra, rb);
    }
    std::vector<int64_t> root(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) root[static_cast<size_t>(i)] = find(i);
    return root;
}

}  // namespace nscope::cluster

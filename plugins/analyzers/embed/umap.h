// UMAP (McInnes, Healy & Melville 2018), written for the `embed` analyzer from the paper (Debian packages no
// C++ UMAP; umap-learn is not in Debian 12). Defaults and schedule as umap-learn's, so results are comparable:
//
//   graph    for each point i its n_neighbors − 1 nearest other points (n_neighbors counts i itself, as in
//            umap-learn), ρ_i = the distance to the nearest one, σ_i by bisection so that
//            Σ_j exp(−max(0, d_ij − ρ_i) / σ_i) = log2(n_neighbors) (at least 1e-3 × the mean neighbour
//            distance); memberships a_ij = exp(−max(0, d_ij − ρ_i) / σ_i), symmetrised by the fuzzy union
//            w_ij = a_ij + a_ji − a_ij a_ji. Edges below max(w) / n_epochs are dropped.
//   curve    low-dimensional similarity 1 / (1 + a d^(2b)), (a, b) fitted by least squares (Levenberg-Marquardt)
//            to 1 for d < min_dist and exp(−(d − min_dist) / spread) beyond, on 300 points of [0, 3·spread].
//   init     the top principal components of the input, each axis scaled to [0, 10]. (umap-learn's default
//            is a spectral layout of the graph; this implementation uses the PCA initialisation instead.)
//   SGD      n_epochs epochs; edge (i, j) is sampled every max(w) / w_ij epochs: attraction
//            −2ab d^(2(b−1)) / (1 + a d^(2b)) · (y_i − y_j) moves both ends, then `negative_samples` uniformly
//            drawn points k repel y_i with 2b / ((0.001 + d²)(1 + a d^(2b))) · (y_i − y_k); each gradient
//            coordinate clipped to [−4, 4]; learning rate α (1) decaying linearly to 0.
//
// Determinism: the SGD is sequential (umap-learn's parallel mode races on shared coordinates) with one
// xoshiro256** stream seeded from the seed, so the layout is bit-identical for a given seed whatever the
// thread count; the graph construction runs in parallel over fixed blocks of points.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include <nscope/sdk.h>

#include "plugins/analyzers/embed/knn.h"
#include "plugins/analyzers/embed/tsne.h"

namespace nscope::embed {

/// The fuzzy simplicial set of UMAP from each point's k = n_neighbors − 1 nearest other points.
inline SparseRows umap_graph(const Neighbours& nn, const ParallelFor& parallel_for) {
    const int64_t n = nn.n, k = nn.k;
    const double target = std::log2(static_cast<double>(k + 1));
    double mean_all = 0;
    for (double d : nn.distance) mean_all += d;
    mean_all /= static_cast<double>(std::max<size_t>(1, nn.distance.size()));
    std::vector<double> member(static_cast<size_t>(n * k));
    for_blocks(parallel_for, static_cast<size_t>(n), 256, [&](size_t b, size_t e) {
        for (size_t ui = b; ui < e; ++ui) {
            const auto i = static_cast<int64_t>(ui);
            double rho = 0, mean = 0;
            for (int64_t j = 0; j < k; ++j) {
                mean += nn.dist(i, j);
                if (rho == 0 && nn.dist(i, j) > 0) rho = nn.dist(i, j);
            }
            mean /= static_cast<double>(k);
            double lo = 0, hi = std::numeric_limits<double>::infinity(), sigma = 1;
            for (int step = 0; step < 64; ++step) {
                double sum = 0;
                for (int64_t j = 0; j < k; ++j) {
                    const double d = nn.dist(i, j) - rho;
                    sum += d > 0 ? std::exp(-d / sigma) : 1.0;
                }
                if (std::abs(sum - target) < 1e-5) break;
                if (sum > target) {
                    hi = sigma;
                    sigma = (lo + hi) / 2;
                } else {
                    lo = sigma;
                    sigma = std::isinf(hi) ? sigma * 2 : (lo + hi) / 2;
                }
            }
            sigma = std::max(sigma, 1e-3 * (rho > 0 ? mean : mean_all));
            for (int64_t j = 0; j < k; ++j) {
                const double d = nn.dist(i, j) - rho;
                member[static_cast<size_t>(i * k + j)] = d <= 0 || sigma == 0 ? 1.0 : std::exp(-d / sigma);
            }
        }
    });
    // Fuzzy union: a + aᵀ − a∘aᵀ. Collect a_ij and a_ji for each unordered pair, then combine.
    std::vector<Entry> directed;
    directed.reserve(static_cast<size_t>(2 * n * k));
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < k; ++j) directed.push_back({static_cast<int32_t>(i), nn.at(i, j), member[static_cast<size_t>(i * k + j)]});
    SparseRows a = to_rows(n, directed);  // a_ij (no duplicates: neighbours are distinct)
    std::vector<Entry> sym;
    sym.reserve(2 * a.val.size());
    for (int64_t i = 0; i < n; ++i)
        for (int64_t e = a.start[static_cast<size_t>(i)]; e < a.start[static_cast<size_t>(i + 1)]; ++e) {
            const int32_t j = a.col[static_cast<size_t>(e)];
            const double v = a.val[static_cast<size_t>(e)];
            // Look up a_ji (columns of row j are sorted).
            const auto first = a.col.begin() + a.start[static_cast<size_t>(j)], last = a.col.begin() + a.start[static_cast<size_t>(j) + 1];
            const auto it = std::lower_bound(first, last, static_cast<int32_t>(i));
            const double t = it != last && *it == i ? a.val[static_cast<size_t>(it - a.col.begin())] : 0.0;
            const double w = v + t - v * t;
            sym.push_back({static_cast<int32_t>(i), j, w});
            if (t == 0.0) sym.push_back({j, static_cast<int32_t>(i), w});  // j does not list i: add the mirror
        }
    return to_rows(n, sym);
}

/// (a, b) of the curve 1 / (1 + a x^(2b)) fitted to the UMAP target (see the header comment).
inline std::pair<double, double> fit_ab(double spread, double min_dist) {
    constexpr int m = 300;
    std::vector<double> xs(m), ys(m);
    for (int i = 0; i < m; ++i) {
        xs[i] = 3.0 * spread * i / (m - 1);
        ys[i] = xs[i] < min_dist ? 1.0 : std::exp(-(xs[i] - min_dist) / spread);
    }
    auto cost = [&](double a, double b) {
        double c = 0;
        for (int i = 0; i < m; ++i) {
            const double r = 1.0 / (1.0 + a * std::pow(xs[i], 2 * b)) - ys[i];
            c += r * r;
        }
        return c;
    };
    double a = 1, b = 1, lambda = 1e-3, current = cost(a, b);
    for (int it = 0; it < 500; ++it) {
        // J^T J and J^T r of the residuals f(x; a, b) − y.
        double jaa = 0, jab = 0, jbb = 0, ga = 0, gb = 0;
        for (int i = 0; i < m; ++i) {
            if (xs[i] <= 0) continue;  // f = 1 at x = 0 for any (a, b > 0): no gradient
            const double p = std::pow(xs[i], 2 * b), den = 1.0 + a * p, f = 1.0 / den, r = f - ys[i];
            const double da = -p / (den * den), db = -a * p * 2.0 * std::log(xs[i]) / (den * den);
            jaa += da * da, jab += da * db, jbb += db * db, ga += da * r, gb += db * r;
        }
        bool improved = false;
        for (int tries = 0; tries < 30 && !improved; ++tries) {
            const double maa = jaa * (1 + lambda), mbb = jbb * (1 + lambda), det = maa * mbb - jab * jab;
            if (det == 0) break;
            const double step_a = -(mbb * ga - jab * gb) / det, step_b = -(maa * gb - jab * ga) / det;
            const double na = a + step_a, nb = b + step_b;
            const double next = na > 0 && nb > 0 ? cost(na, nb) : std::numeric_limits<double>::infinity();
            if (next < current) {
                const double change = current - next;
                a = na, b = nb, current = next, lambda = std::max(lambda / 10, 1e-12), improved = true;
                if (change <= 1e-15 * std::max(current, 1e-30)) return {a, b};
            } else {
                lambda *= 10;
            }
        }
        if (!improved) break;
    }
    return {a, b};
}

/// xoshiro256** (Blackman & Vigna), seeded through splitmix64.
class Xoshiro {
public:
    explicit Xoshiro(uint64_t seed) {
        for (auto& w : s_) {
            seed += 0x9E3779B97F4A7C15ull;
            uint64_t z = seed;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            w = z ^ (z >> 31);
        }
    }
    uint64_t next() {
        const uint64_t result = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
        s_[2] ^= s_[0], s_[3] ^= s_[1], s_[1] ^= s_[2], s_[0] ^= s_[3], s_[2] ^= t, s_[3] = rotl(s_[3], 45);
        return result;
    }
    /// Uniform in [0, n) (Lemire's multiply-shift; the bias is below 2^-32 for n < 2^32).
    uint64_t below(uint64_t n) { return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64); }

private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t s_[4];
};

struct UmapOptions {
    int dims = 2;
    int64_t neighbors = 15, epochs = 0, negative_samples = 5;  // epochs 0: 500 for n ≤ 10,000, else 200
    double min_dist = 0.1, spread = 1.0, learning_rate = 1.0;
    uint64_t seed = 0;
};

struct UmapOutput {
    std::vector<double> y;  ///< [n, dims]
    double a = 0, b = 0;
    int64_t epochs = 0, edges = 0;
};

/// UMAP of the points whose n_neighbors − 1 nearest others are `nn`, started from `init` ([n, dims]).
inline UmapOutput umap(const Neighbours& nn, std::vector<double> init, const UmapOptions& o,
                       const ParallelFor& parallel_for) {
    const int64_t n = nn.n;
    const int dims = o.dims;
    UmapOutput out;
    out.epochs = o.epochs > 0 ? o.epochs : (n <= 10000 ? 500 : 200);
    std::tie(out.a, out.b) = fit_ab(o.spread, o.min_dist);
    const SparseRows g = umap_graph(nn, parallel_for);
    double wmax = 0;
    for (double v : g.val) wmax = std::max(wmax, v);
    struct Edge {
        int32_t head, tail;
        double every, next, every_negative, next_negative;
    };
    std::vector<Edge> edges;
    for (int64_t i = 0; i < n; ++i)
        for (int64_t e = g.start[static_cast<size_t>(i)]; e < g.start[static_cast<size_t>(i + 1)]; ++e) {
            const double w = g.val[static_cast<size_t>(e)];
            if (w < wmax / static_cast<double>(out.epochs)) continue;
            const double every = wmax / w, neg = every / static_cast<double>(o.negative_samples);
            edges.push_back({static_cast<int32_t>(i), g.col[static_cast<size_t>(e)], every, every, neg, neg});
        }
    out.edges = static_cast<int64_t>(edges.size());
    // The layout in float32, as umap-learn keeps it (half the memory traffic of double; the clipped, decaying
    // SGD steps are far coarser than float rounding).
    std::vector<float> y(init.begin(), init.end());
    const auto a = static_cast<float>(out.a), b = static_cast<float>(out.b);
    auto clip = [](float v) { return std::clamp(v, -4.0f, 4.0f); };
    Xoshiro rng(o.seed ^ 0x5DEECE66Dull);
    for (int64_t epoch = 0; epoch < out.epochs; ++epoch) {
        const auto alpha = static_cast<float>(o.learning_rate * (1.0 - static_cast<double>(epoch) / static_cast<double>(out.epochs)));
        const auto now = static_cast<double>(epoch);
        for (Edge& e : edges) {
            if (e.next > now) continue;
            float* yi = &y[static_cast<size_t>(e.head) * dims];
            float* yj = &y[static_cast<size_t>(e.tail) * dims];
            float d2 = 0;
            for (int d = 0; d < dims; ++d) d2 += (yi[d] - yj[d]) * (yi[d] - yj[d]);
            if (d2 > 0) {
                const float pb = std::pow(d2, b);  // d^(2b); d^(2(b−1)) = pb / d²
                const float coef = -2.0f * a * b * (pb / d2) / (1.0f + a * pb);
                for (int d = 0; d < dims; ++d) {
                    const float step = clip(coef * (yi[d] - yj[d])) * alpha;
                    yi[d] += step;
                    yj[d] -= step;
                }
            }
            e.next += e.every;
            const auto negatives = static_cast<int64_t>((now - e.next_negative) / e.every_negative);
            for (int64_t s = 0; s < negatives; ++s) {
                const auto k = static_cast<int32_t>(rng.below(static_cast<uint64_t>(n)));
                if (k == e.head) continue;
                const float* yk = &y[static_cast<size_t>(k) * dims];
                float dk = 0;
                for (int d = 0; d < dims; ++d) dk += (yi[d] - yk[d]) * (yi[d] - yk[d]);
                const float coef = dk > 0 ? 2.0f * b / ((0.001f + dk) * (1.0f + a * std::pow(dk, b))) : 0.0f;
                for (int d = 0; d < dims; ++d) yi[d] += (coef > 0 ? clip(coef * (yi[d] - yk[d])) : 4.0f) * alpha;
            }
            e.next_negative += static_cast<double>(negatives) * e.every_negative;
        }
    }
    out.y.assign(y.begin(), y.end());
    return out;
}

}  // namespace nscope::embed

// The analyzers' hot kernels against plain loops: every code path (AVX2 where the CPU has it, and the
// portable one), block tails, NaN, ties.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "nscope_common/kernels.h"
#include "nscope_common/moments.h"
#include "nscope_common/topk.h"

using namespace nscope::common;

namespace {

std::vector<uint32_t> expected_at_least(const std::vector<float>& v, const std::vector<float>& floor) {
    std::vector<uint32_t> out;
    for (size_t i = 0; i < v.size(); ++i)
        if (v[i] >= floor[i]) out.push_back(static_cast<uint32_t>(i));
    return out;
}

struct Item {
    Occurrence occ;
};

}  // namespace

TEST_CASE("kernels: collect_at_least finds exactly the values at or above their floor", "[analyzers][kernels]") {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (size_t n : {0, 1, 31, 32, 33, 64, 100, 3072}) {
        for (double hit_rate : {0.0, 0.01, 0.5, 1.0}) {
            std::vector<float> v(n), floor(n);
            std::bernoulli_distribution hit(hit_rate);
            for (size_t i = 0; i < n; ++i) {
                floor[i] = normal(rng);
                v[i] = hit(rng) ? floor[i] + std::abs(normal(rng)) * (i % 3 == 0 ? 0.0f : 1.0f)  // ties too
                                : floor[i] - 0.5f - std::abs(normal(rng));
                if (i % 17 == 5) v[i] = std::numeric_limits<float>::quiet_NaN();  // never a hit
                if (i % 23 == 7) floor[i] = -std::numeric_limits<float>::infinity();
            }
            INFO("n " << n << " hit rate " << hit_rate);
            const auto want = expected_at_least(v, floor);
            std::vector<uint32_t> out(n + 1);
            out.resize(kernels::collect_at_least_generic(v.data(), floor.data(), n, out.data()));
            CHECK(out == want);
#if defined(__x86_64__) && defined(__GNUC__)
            if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi")) {
                std::vector<uint32_t> fast(n + 1);
                fast.resize(kernels::collect_at_least_avx2(v.data(), floor.data(), n, fast.data()));
                CHECK(fast == want);
            }
#endif
        }
    }
}

TEST_CASE("kernels: TopKLists keeps the k best of each list, ties to the earlier occurrence", "[analyzers][kernels]") {
    std::mt19937 rng(11);
    std::uniform_int_distribution<int> coarse(0, 6);  // few distinct values: many ties
    const size_t lists = 5, k = 4;
    TopKLists<Item> top;
    top.init(lists, k);
    std::vector<std::vector<Occurrence>> all(lists);
    for (uint32_t t = 0; t < 300; ++t)
        for (size_t l = 0; l < lists; ++l) {
            // In corpus order, and sometimes out of it (as a merge offers them).
            const Occurrence o{static_cast<float>(coarse(rng)), t % 7 == 3 ? 0u : 1u, t};
            all[l].push_back(o);
            const bool fits = top.size(l) < k || better(o, top.item(top.ranked(l).back()).occ);
            CHECK((top.take(l, o) >= 0) == fits);
        }
    for (size_t l = 0; l < lists; ++l) {
        std::sort(all[l].begin(), all[l].end(), better);
        const auto ranked = top.ranked(l);
        REQUIRE(ranked.size() == k);
        for (size_t j = 0; j < k; ++j) {
            CHECK(top.item(ranked[j]).occ.value == all[l][j].value);
            CHECK(top.item(ranked[j]).occ.prompt == all[l][j].prompt);
            CHECK(top.item(ranked[j]).occ.position == all[l][j].position);
        }
        CHECK(top.floor(l) == all[l][k - 1].value);
    }
}

TEST_CASE("kernels: NeuronMoments matches a double two-pass computation, offsets and thresholds included",
          "[analyzers][kernels]") {
    // Neurons far from zero relative to their spread (the case where sums about zero would cancel), a
    // skewed one, and values right at a threshold that float cannot represent (0.1).
    std::mt19937 rng(3);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const size_t neurons = 43, batches = 3, per_batch = 150;
    std::vector<std::vector<float>> data(batches * per_batch, std::vector<float>(neurons));
    for (auto& row : data)
        for (size_t j = 0; j < neurons; ++j) {
            const float z = normal(rng);
            switch (j % 4) {
                case 0: row[j] = 1000.0f + 0.05f * z; break;
                case 1: row[j] = -3.0f + 2.0f * z * z * z; break;
                case 2: row[j] = z > 0.5f ? 0.1f : (z > 0.0f ? std::nextafter(0.1f, 1.0f) : std::nextafter(0.1f, 0.0f)); break;
                default: row[j] = 1e-3f * z; break;
            }
        }
    NeuronMoments m;
    m.init(static_cast<int64_t>(neurons), true, 0.1);
    for (size_t b = 0; b < batches; ++b) {
        std::vector<const float*> rows;
        for (size_t r = b * per_batch; r < (b + 1) * per_batch; ++r) rows.push_back(data[r].data());
        m.add(rows);
    }
    const double n = static_cast<double>(data.size());
    REQUIRE(m.count == data.size());
    for (size_t j = 0; j < neurons; ++j) {
        INFO("neuron " << j);
        double mean = 0, mn = INFINITY, mx = -INFINITY;
        uint64_t above = 0;
        for (const auto& row : data) {
            mean += row[j] / n;
            mn = std::min<double>(mn, row[j]);
            mx = std::max<double>(mx, row[j]);
            above += row[j] > 0.1 ? 1 : 0;
        }
        double m2 = 0, m3 = 0, m4 = 0;
        for (const auto& row : data) {
            const double d = row[j] - mean;
            m2 += d * d, m3 += d * d * d, m4 += d * d * d * d;
        }
        // Float partial sums: the mean is good to ~1e-7 of the values' scale (its size plus its spread).
        CHECK(std::abs(m.mean[j] - mean) <= 1e-7 * (std::abs(mean) + std::sqrt(m2 / n)));
        CHECK(m.m2[j] == Approx(m2).epsilon(1e-5));
        CHECK(m.skewness(j) == Approx(std::sqrt(n) * m3 / std::pow(m2, 1.5)).epsilon(1e-4).margin(1e-5));
        CHECK(m.kurtosis(j) == Approx(n * m4 / (m2 * m2) - 3.0).epsilon(1e-4).margin(1e-5));
        CHECK(m.min[j] == mn);
        CHECK(m.max[j] == mx);
        CHECK(m.above[j] == above);
    }
}

// The analyzers' hot kernels against plain loops: every code path (AVX2 where the CPU has it, and the
// portable one), block tails, NaN, ties.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "plugins/common/nscope_common/kernels.h"
#include "plugins/common/nscope_common/topk.h"

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

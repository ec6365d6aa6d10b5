// The host's fork-join helpers (RunContext::parallel_for for plugins).
#include <catch2/catch.hpp>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "core/util/concurrency.h"

using namespace nscope;

TEST_CASE("parallel_for runs every index exactly once, on any thread count", "[host][concurrency]") {
    for (int threads : {1, 2, 3, 8})
        for (size_t n : {0, 1, 2, 5, 100}) {
            std::vector<std::atomic<int>> seen(n);
            parallel_for(threads, n, [&](size_t i) { seen[i]++; });
            for (size_t i = 0; i < n; ++i) CHECK(seen[i] == 1);
        }
}

TEST_CASE("parallel_for rethrows a task's failure after the others stopped", "[host][concurrency]") {
    std::atomic<int> ran{0};
    CHECK_THROWS_WITH(parallel_for(2, 50,
                                   [&](size_t i) {
                                       ++ran;
                                       if (i == 3) throw std::runtime_error("task 3 failed");
                                   }),
                      "task 3 failed");
    CHECK(ran >= 4);
    CHECK(ran <= 50);
}

// The host's fork-join helpers (RunContext::parallel_for for plugins).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
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
    // Two threads: one holds task 0 until task 3 has failed, then keeps working a little; the other runs
    // tasks 1, 2, 3. After the failure nobody takes task 4 or later, and parallel_for returns only after
    // task 0 has finished.
    std::atomic<int> ran{0};
    std::atomic<bool> three_failed{false}, zero_done{false};
    CHECK_THROWS_WITH(parallel_for(2, 50,
                                   [&](size_t i) {
                                       ++ran;
                                       if (i == 0) {
                                           const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
                                           while (!three_failed && std::chrono::steady_clock::now() < until)
                                               std::this_thread::sleep_for(std::chrono::milliseconds(1));
                                           std::this_thread::sleep_for(std::chrono::milliseconds(50));
                                           zero_done = true;
                                       }
                                       if (i == 3) {
                                           three_failed = true;
                                           throw std::runtime_error("task 3 failed");
                                       }
                                   }),
                      "task 3 failed");
    CHECK(three_failed);
    CHECK(zero_done);  // not returned while task 0 was still running
    CHECK(ran == 4);   // tasks 0..3, none after the failure
}

#include "core/util/concurrency.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <future>

namespace nscope {

void run_concurrently(const std::vector<std::function<void()>>& tasks) {
    if (tasks.empty()) return;
    std::vector<std::future<void>> others;
    for (size_t i = 1; i < tasks.size(); ++i) others.push_back(std::async(std::launch::async, tasks[i]));
    std::exception_ptr failure;
    try {
        tasks[0]();
    } catch (...) {
        failure = std::current_exception();
    }
    for (auto& f : others) {
        try {
            f.get();
        } catch (...) {
            if (!failure) failure = std::current_exception();
        }
    }
    if (failure) std::rethrow_exception(failure);
}

void parallel_for(int threads, size_t n, const std::function<void(size_t)>& task) {
    const size_t workers = std::min(n, static_cast<size_t>(std::max(1, threads)));
    if (workers <= 1) {
        for (size_t i = 0; i < n; ++i) task(i);
        return;
    }
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    const std::function<void()> worker = [&] {
        // After a failure the others stop taking work; the failure itself is rethrown by run_concurrently.
        for (size_t i; !failed && (i = next++) < n;) {
            try {
                task(i);
            } catch (...) {
                failed = true;
                throw;
            }
        }
    };
    run_concurrently(std::vector<std::function<void()>>(workers, worker));
}

ParallelFor parallel_for_on(int threads) {
    return [threads](size_t n, const std::function<void(size_t)>& task) { parallel_for(threads, n, task); };
}

}  // namespace nscope

// Small fork-join helpers for the host's CPU work outside LibTorch (analyzers and exporters consuming a
// batch while the model's threads are idle).
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

#include "nscope/analyzer.h"

namespace nscope {

/// Run every task, all but the first on their own threads; rethrows the first failure after all finished.
void run_concurrently(const std::vector<std::function<void()>>& tasks);

/// Run task(i) for every i in [0, n) on up to `threads` threads (this one included), each taking the next
/// index when it is free; rethrows the first failure after all finished. What RunContext::parallel_for
/// gives plugins.
void parallel_for(int threads, size_t n, const std::function<void(size_t)>& task);

/// parallel_for on `threads` threads, as a RunContext::parallel_for.
ParallelFor parallel_for_on(int threads);

}  // namespace nscope

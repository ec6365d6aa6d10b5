// Hot loops of the streaming analyzers, written so the compiler vectorizes them, and compiled twice
// (AVX2 and baseline x86-64, chosen at load time by the dynamic linker) because the project builds for the
// baseline ISA. Every analyzer touches each captured value at least once: these loops are their cost.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NSCOPE_VECTORIZED __attribute__((target_clones("avx2", "default")))
#else
#define NSCOPE_VECTORIZED
#endif

namespace nscope::common::kernels {

/// The first index i in [from, n) with v[i] >= floor[i], or n. Scans blocks with a branch-free test so the
/// common case (nothing reaches its floor) runs at vector speed. NaN never reaches a floor.
NSCOPE_VECTORIZED inline size_t first_at_least(const float* v, const float* floor, size_t from, size_t n) {
    constexpr size_t kBlock = 32;
    size_t i = from;
    for (; i + kBlock <= n; i += kBlock) {
        int any = 0;
        for (size_t j = 0; j < kBlock; ++j) any |= v[i + j] >= floor[i + j];
        if (any) break;
    }
    for (; i < n; ++i)
        if (v[i] >= floor[i]) return i;
    return n;
}

/// dst[i] += src[i] in double.
NSCOPE_VECTORIZED inline void accumulate(double* __restrict dst, const float* __restrict src, size_t n) {
    for (size_t i = 0; i < n; ++i) dst[i] += src[i];
}

/// One row of the first moments pass: sum, min, max, count above `threshold`, count above 0.
NSCOPE_VECTORIZED inline void moments_first_pass(const float* __restrict row, size_t n, double threshold,
                                                 double* __restrict sum, double* __restrict min,
                                                 double* __restrict max, uint64_t* __restrict above,
                                                 uint64_t* __restrict positive) {
    for (size_t i = 0; i < n; ++i) {
        const double x = row[i];
        sum[i] += x;
        min[i] = x < min[i] ? x : min[i];
        max[i] = x > max[i] ? x : max[i];
        above[i] += x > threshold ? 1u : 0u;
        positive[i] += x > 0.0 ? 1u : 0u;
    }
}

/// One row of the second moments pass: central sums of powers 2..4 around `mean` (m3, m4 may be null).
NSCOPE_VECTORIZED inline void moments_second_pass(const float* __restrict row, size_t n, const double* __restrict mean,
                                                  double* __restrict m2, double* __restrict m3,
                                                  double* __restrict m4) {
    if (m3 && m4) {
        for (size_t i = 0; i < n; ++i) {
            const double d = row[i] - mean[i], d2 = d * d;
            m2[i] += d2;
            m3[i] += d2 * d;
            m4[i] += d2 * d2;
        }
    } else {
        for (size_t i = 0; i < n; ++i) {
            const double d = row[i] - mean[i];
            m2[i] += d * d;
        }
    }
}

}  // namespace nscope::common::kernels

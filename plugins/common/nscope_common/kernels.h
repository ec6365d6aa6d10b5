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

/// dst[i] = src[i] in double.
NSCOPE_VECTORIZED inline void widen(double* __restrict dst, const float* __restrict src, size_t n) {
    for (size_t i = 0; i < n; ++i) dst[i] = src[i];
}

/// dst[i] += src[i] in double.
NSCOPE_VECTORIZED inline void accumulate(double* __restrict dst, const float* __restrict src, size_t n) {
    for (size_t i = 0; i < n; ++i) dst[i] += src[i];
}

/// One row of the moments pass: with d = x - shift, the power sums of d (orders 1..4; s3, s4 may be null),
/// min, max, count above `threshold` and count above 0.
NSCOPE_VECTORIZED inline void shifted_moments(const float* __restrict row, size_t n, const double* __restrict shift,
                                              double threshold, double* __restrict s1, double* __restrict s2,
                                              double* __restrict s3, double* __restrict s4, double* __restrict min,
                                              double* __restrict max, uint64_t* __restrict above,
                                              uint64_t* __restrict positive) {
    const bool higher = s3 && s4;
    for (size_t i = 0; i < n; ++i) {
        const double x = row[i], d = x - shift[i], d2 = d * d;
        s1[i] += d;
        s2[i] += d2;
        if (higher) {
            s3[i] += d2 * d;
            s4[i] += d2 * d2;
        }
        min[i] = x < min[i] ? x : min[i];
        max[i] = x > max[i] ? x : max[i];
        above[i] += x > threshold ? 1u : 0u;
        positive[i] += x > 0.0 ? 1u : 0u;
    }
}

}  // namespace nscope::common::kernels

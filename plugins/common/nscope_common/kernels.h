// Hot loops of the streaming analyzers. The project builds for the baseline x86-64 ISA, so each loop exists
// twice: an AVX2 version (compiler clones via NSCOPE_VECTORIZED, chosen at load time by the dynamic linker,
// or intrinsics behind a CPU check) and a portable one. Every analyzer touches each captured value at least
// once: these loops are their cost (bench: nscope_bench_analyzers, docs/performance.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NSCOPE_VECTORIZED __attribute__((target_clones("avx2", "default")))
#else
#define NSCOPE_VECTORIZED
#endif

namespace nscope::common::kernels {

/// Writes to `out` every index i < n with v[i] >= floor[i], in increasing order, and returns how many.
/// `out` has room for n. NaN never reaches a floor. Most values are below their floor: blocks of 32 are
/// tested at vector speed, and only blocks with a hit are compacted.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,bmi"))) inline size_t collect_at_least_avx2(const float* v, const float* floor, size_t n,
                                                                        uint32_t* out) {
    size_t count = 0, i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256 c0 = _mm256_cmp_ps(_mm256_loadu_ps(v + i), _mm256_loadu_ps(floor + i), _CMP_GE_OQ);
        const __m256 c1 = _mm256_cmp_ps(_mm256_loadu_ps(v + i + 8), _mm256_loadu_ps(floor + i + 8), _CMP_GE_OQ);
        const __m256 c2 = _mm256_cmp_ps(_mm256_loadu_ps(v + i + 16), _mm256_loadu_ps(floor + i + 16), _CMP_GE_OQ);
        const __m256 c3 = _mm256_cmp_ps(_mm256_loadu_ps(v + i + 24), _mm256_loadu_ps(floor + i + 24), _CMP_GE_OQ);
        if (_mm256_testz_ps(_mm256_or_ps(_mm256_or_ps(c0, c1), _mm256_or_ps(c2, c3)),
                            _mm256_castsi256_ps(_mm256_set1_epi32(-1))))
            continue;
        uint32_t mask = static_cast<uint32_t>(_mm256_movemask_ps(c0)) |
                        static_cast<uint32_t>(_mm256_movemask_ps(c1)) << 8 |
                        static_cast<uint32_t>(_mm256_movemask_ps(c2)) << 16 |
                        static_cast<uint32_t>(_mm256_movemask_ps(c3)) << 24;
        for (; mask; mask &= mask - 1) out[count++] = static_cast<uint32_t>(i + static_cast<size_t>(__builtin_ctz(mask)));
    }
    for (; i < n; ++i)
        if (v[i] >= floor[i]) out[count++] = static_cast<uint32_t>(i);
    return count;
}
#endif

inline size_t collect_at_least_generic(const float* v, const float* floor, size_t n, uint32_t* out) {
    size_t count = 0, i = 0;
    for (; i + 32 <= n; i += 32) {
        int any = 0;
        for (size_t j = 0; j < 32; ++j) any |= v[i + j] >= floor[i + j];
        if (!any) continue;
        for (size_t j = i; j < i + 32; ++j) {  // branch-free compaction
            out[count] = static_cast<uint32_t>(j);
            count += v[j] >= floor[j] ? 1 : 0;
        }
    }
    for (; i < n; ++i)
        if (v[i] >= floor[i]) out[count++] = static_cast<uint32_t>(i);
    return count;
}

inline size_t collect_at_least(const float* v, const float* floor, size_t n, uint32_t* out) {
#if defined(__x86_64__) && defined(__GNUC__)
    static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi");
    if (avx2) return collect_at_least_avx2(v, floor, n, out);
#endif
    return collect_at_least_generic(v, floor, n, out);
}

/// dst[i] = src[i] in double.
NSCOPE_VECTORIZED inline void widen(double* __restrict dst, const float* __restrict src, size_t n) {
    for (size_t i = 0; i < n; ++i) dst[i] = src[i];
}

/// dst[i] += src[i] in double.
NSCOPE_VECTORIZED inline void accumulate(double* __restrict dst, const float* __restrict src, size_t n) {
    for (size_t i = 0; i < n; ++i) dst[i] += src[i];
}

/// Partial moments of a batch over channels [0, n): with d = x - shift, the power sums of d (orders 1..4,
/// added to s1..s4 in double), the running min / max (float, updated in place) and the counts of values
/// above `threshold` and above 0 (added to `above`, `positive`). `rows[r]` points at row r's n floats.
///
/// Register tiles: 8 channels at a time keep all eight accumulators in vector registers while up to
/// kChunk rows stream past; float partial sums over so few rows lose nothing that matters (the shift keeps
/// d small) before they are added into the double totals. Rows are taken in chunks so that a chunk's cache
/// lines, fetched once, serve every tile. `Higher`: also orders 3 and 4.
template <bool Higher>
NSCOPE_VECTORIZED inline void batch_moments(const float* const* rows, size_t n_rows, size_t n,
                                            const float* __restrict shift, float threshold, double* __restrict s1,
                                            double* __restrict s2, double* __restrict s3, double* __restrict s4,
                                            float* __restrict min, float* __restrict max,
                                            uint32_t* __restrict above, uint32_t* __restrict positive) {
    using f8 = float __attribute__((vector_size(32)));
    using i8 = int32_t __attribute__((vector_size(32)));
    constexpr size_t kChunk = 32, kLanes = 8;
    const f8 thr = f8{} + threshold, zero = f8{};
    for (size_t r0 = 0; r0 < n_rows; r0 += kChunk) {
        const size_t r1 = r0 + kChunk < n_rows ? r0 + kChunk : n_rows;
        size_t c = 0;
        for (; c + kLanes <= n; c += kLanes) {
            f8 sh, lo, hi, a1{}, a2{}, a3{}, a4{};  // (memcpy: unaligned vector loads and stores)
            std::memcpy(&sh, shift + c, sizeof sh);
            std::memcpy(&lo, min + c, sizeof lo);
            std::memcpy(&hi, max + c, sizeof hi);
            i8 ab{}, po{};
            for (size_t r = r0; r < r1; ++r) {
                f8 x;
                std::memcpy(&x, rows[r] + c, sizeof x);
                const f8 d = x - sh, d2 = d * d;
                a1 += d;
                a2 += d2;
                if constexpr (Higher) {
                    a3 += d2 * d;
                    a4 += d2 * d2;
                }
                lo = x < lo ? x : lo;
                hi = x > hi ? x : hi;
                ab -= x > thr;  // a true comparison is -1
                po -= x > zero;
            }
            std::memcpy(min + c, &lo, sizeof lo);
            std::memcpy(max + c, &hi, sizeof hi);
            for (size_t l = 0; l < kLanes; ++l) {
                s1[c + l] += a1[l];
                s2[c + l] += a2[l];
                if constexpr (Higher) {
                    s3[c + l] += a3[l];
                    s4[c + l] += a4[l];
                }
                above[c + l] += static_cast<uint32_t>(ab[l]);
                positive[c + l] += static_cast<uint32_t>(po[l]);
            }
        }
        for (; c < n; ++c)  // the last n % 8 channels
            for (size_t r = r0; r < r1; ++r) {
                const float x = rows[r][c];
                const double d = static_cast<double>(x) - shift[c], d2 = d * d;
                s1[c] += d;
                s2[c] += d2;
                if constexpr (Higher) {
                    s3[c] += d2 * d;
                    s4[c] += d2 * d2;
                }
                min[c] = x < min[c] ? x : min[c];
                max[c] = x > max[c] ? x : max[c];
                above[c] += x > threshold ? 1u : 0u;
                positive[c] += x > 0.0f ? 1u : 0u;
            }
    }
}

/// z[i·r + c] = Σ_j x[i·d + j] · w[c·d + j] for the `rows` rows of the row-major x [rows, d] and the r
/// vectors w [r, d]: a tall matrix times a few columns. Each row of x is read once (BLAS would pack the tall
/// operand on every call, which costs more than the product when r is small); columns go four at a time, with
/// 8-lane accumulators over d.
template <size_t NC>
NSCOPE_VECTORIZED inline void rows_dot_block(const float* __restrict x, size_t rows, size_t d, const float* __restrict w,
                                             size_t r, size_t c0, float* __restrict z) {
    using f8 = float __attribute__((vector_size(32)));
    for (size_t i = 0; i < rows; ++i) {
        const float* xi = x + i * d;
        f8 acc[NC] = {};
        size_t j = 0;
        for (; j + 8 <= d; j += 8) {
            f8 xv;
            std::memcpy(&xv, xi + j, sizeof xv);
            for (size_t c = 0; c < NC; ++c) {
                f8 wv;
                std::memcpy(&wv, w + (c0 + c) * d + j, sizeof wv);
                acc[c] += xv * wv;
            }
        }
        for (size_t c = 0; c < NC; ++c) {
            float s = 0;
            for (size_t l = 0; l < 8; ++l) s += acc[c][l];
            for (size_t t = j; t < d; ++t) s += xi[t] * w[(c0 + c) * d + t];
            z[i * r + c0 + c] = s;
        }
    }
}

inline void rows_dot(const float* x, size_t rows, size_t d, const float* w, size_t r, float* z) {
    size_t c0 = 0;
    for (; c0 + 4 <= r; c0 += 4) rows_dot_block<4>(x, rows, d, w, r, c0, z);
    switch (r - c0) {
        case 3: rows_dot_block<3>(x, rows, d, w, r, c0, z); break;
        case 2: rows_dot_block<2>(x, rows, d, w, r, c0, z); break;
        case 1: rows_dot_block<1>(x, rows, d, w, r, c0, z); break;
        default: break;
    }
}

/// out[c·d + j] += Σ_i g[i·r + c] · x[i·d + j]: the transpose of rows_dot, accumulated (float) into out [r, d].
NSCOPE_VECTORIZED inline void rows_axpy(const float* __restrict x, size_t rows, size_t d, const float* __restrict g,
                                        size_t r, float* __restrict out) {
    for (size_t i = 0; i < rows; ++i) {
        const float* xi = x + i * d;
        for (size_t c = 0; c < r; ++c) {
            const float a = g[i * r + c];
            if (a == 0.0f) continue;
            float* o = out + c * d;
            for (size_t j = 0; j < d; ++j) o[j] += a * xi[j];
        }
    }
}

}  // namespace nscope::common::kernels

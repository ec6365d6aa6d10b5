// int8 weights of the linear layers (ModelOptions::int8_weights): per-output-channel symmetric quantization,
// and the float32 product with an int8 weight, dequantised on the fly one block of rows at a time.
//
// Why not LibTorch's quantized linear: Debian's LibTorch 1.13 is built without FBGEMM (every at::fbgemm_* op
// throws "not built with FBGEMM operators"), and its QNNPACK / oneDNN dynamic linear quantizes the
// activations to 8 bits as well. Here only the weight is rounded; activations stay float32 end to end.
#pragma once

#include <algorithm>
#include <cstdint>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "plugins/common/nscope_common/kernels.h"  // NSCOPE_VECTORIZED

namespace nscope::models {

/// Per-output-channel symmetric int8 of a weight [out, in]: scale_o = max_i |w_oi| / 127 (1 for an all-zero
/// row), q_oi = round(w_oi / scale_o), so q is in [-127, 127] and |w - scale·q| <= scale / 2. Returns a
/// per-channel quantized tensor (at::kQInt8, axis 0, zero points 0): out·in bytes of int8 plus one scale per
/// row. The float32 input is a temporary of this one weight.
inline at::Tensor quantize_int8(const at::Tensor& w) {
    TORCH_CHECK(w.dim() == 2, "quantize_int8: a 2-D weight [out, in] expected");
    const at::Tensor wf = w.detach().to(at::kFloat).contiguous();
    const at::Tensor amax = wf.abs().amax(1);
    const at::Tensor scale = at::where(amax > 0, amax / 127.0, at::ones_like(amax)).to(at::kDouble);
    return at::quantize_per_channel(wf, scale, at::zeros({w.size(0)}, at::kLong), 0, at::kQInt8);
}

namespace detail {

#if defined(__x86_64__) && defined(__GNUC__)
#define NSCOPE_INT8_DIRECT 1
__attribute__((target("avx2,fma"))) inline float hsum(__m256 a) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_hadd_ps(h, h);
    h = _mm_hadd_ps(h, h);
    return _mm_cvtss_f32(h);
}

/// 8 int8 values widened to floats.
__attribute__((target("avx2,fma"))) inline __m256 widen(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

/// y[t, o] = scale[o] · Σ_i x[t, i] · q[o, i] for the weight rows [o0, o1) and all n tokens, straight from the
/// int8 values: 8 weights at a time are widened to float once and multiplied into 4 tokens' accumulators.
/// For few tokens the product is bound by reading the weights, and this reads them as int8.
__attribute__((target("avx2,fma"))) inline void int8_rows_avx2(const float* x, int64_t n, int64_t in,
                                                               const int8_t* q, const float* scale, int64_t o0,
                                                               int64_t o1, float* y, int64_t out) {
    for (int64_t o = o0; o < o1; ++o) {
        const int8_t* w = q + o * in;
        int64_t t = 0;
        for (; t + 4 <= n; t += 4) {
            const float *x0 = x + t * in, *x1 = x0 + in, *x2 = x1 + in, *x3 = x2 + in;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
            int64_t i = 0;
            for (; i + 8 <= in; i += 8) {
                const __m256 wv = widen(w + i);
                a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0 + i), a0);
                a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1 + i), a1);
                a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x2 + i), a2);
                a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x3 + i), a3);
            }
            float r[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
            for (; i < in; ++i) {
                const float wi = static_cast<float>(w[i]);
                r[0] += wi * x0[i], r[1] += wi * x1[i], r[2] += wi * x2[i], r[3] += wi * x3[i];
            }
            for (int64_t k = 0; k < 4; ++k) y[(t + k) * out + o] = scale[o] * r[k];
        }
        for (; t < n; ++t) {
            const float* xt = x + t * in;
            __m256 a = _mm256_setzero_ps();
            int64_t i = 0;
            for (; i + 8 <= in; i += 8) a = _mm256_fmadd_ps(widen(w + i), _mm256_loadu_ps(xt + i), a);
            float r = hsum(a);
            for (; i < in; ++i) r += static_cast<float>(w[i]) * xt[i];
            y[t * out + o] = scale[o] * r;
        }
    }
}

inline bool has_avx2_fma() {
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return ok;
}
#endif

/// dst[r, i] = scale[r] · src[r, i] for `rows` rows of `n` values (AVX2 clone where the CPU has it).
NSCOPE_VECTORIZED inline void dequantize_rows(const int8_t* __restrict src, const float* __restrict scale,
                                              int64_t rows, int64_t n, float* __restrict dst) {
    for (int64_t r = 0; r < rows; ++r) {
        const float s = scale[r];
        const int8_t* a = src + r * n;
        float* d = dst + r * n;
        for (int64_t i = 0; i < n; ++i) d[i] = s * static_cast<float>(a[i]);
    }
}
}  // namespace detail

/// Token rows up to which int8_linear multiplies straight from the int8 values (measured: up to ~16 tokens
/// this beats float32's GEMM, which must read 4 bytes per weight; at 64 the GEMM wins).
constexpr int64_t kInt8DirectRows = 24;

/// x [..., in] (float32) @ dequant(q)^T + b for an int8 weight q [out, in] from quantize_int8; b may be
/// undefined. Few tokens (<= kInt8DirectRows, AVX2 + FMA CPUs): products straight from the int8 values,
/// output rows spread over LibTorch's threads. Otherwise the weight is converted to float32 on the fly (scale
/// folded in, rows spread over the threads) and multiplied at once, so the model's weights exist in float32
/// one matrix at a time, never all together; a weight larger than `chunk_values` floats is converted and
/// multiplied in blocks of rows of that size, so the temporary is bounded for any model.
inline at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& b,
                              int64_t chunk_values = int64_t{1} << 24) {
    TORCH_CHECK(q.is_quantized() && q.qscheme() == at::kPerChannelAffine && q.q_per_channel_axis() == 0 &&
                    q.scalar_type() == at::kQInt8 && q.dim() == 2 && q.is_contiguous(),
                "int8_linear: a contiguous per-channel int8 weight [out, in] from quantize_int8 expected");
    const int64_t out = q.size(0), in = q.size(1);
    TORCH_CHECK(x.size(-1) == in, "int8_linear: input has ", x.size(-1), " features, the weight ", in);
    const auto* src = static_cast<const int8_t*>(q.data_ptr());
    const at::Tensor scale = q.q_per_channel_scales().to(at::kFloat).contiguous();
    const float* sc = scale.data_ptr<float>();
#ifdef NSCOPE_INT8_DIRECT
    const int64_t tokens = in > 0 ? x.numel() / in : 0;
    if (tokens <= kInt8DirectRows && detail::has_avx2_fma()) {
        const at::Tensor x2 = x.reshape({tokens, in}).to(at::kFloat).contiguous();
        auto sizes = x.sizes().vec();
        sizes.back() = out;
        at::Tensor y = at::empty({tokens, out}, at::kFloat);
        const float* xp = x2.data_ptr<float>();
        float* yp = y.data_ptr<float>();
        at::parallel_for(0, out, std::max<int64_t>(16, 16384 / std::max<int64_t>(1, in)), [&](int64_t o0, int64_t o1) {
            detail::int8_rows_avx2(xp, tokens, in, src, sc, o0, o1, yp, out);
        });
        if (b.defined()) y.add_(b);
        return y.view(sizes);
    }
#endif
    const int64_t rows = std::min(out, std::max<int64_t>(8, chunk_values / in));
    at::Tensor buf = at::empty({rows, in}, at::kFloat);
    auto convert = [&](int64_t r0, int64_t nr) {
        float* dst = buf.data_ptr<float>();
        at::parallel_for(0, nr, std::max<int64_t>(1, 32768 / in), [&](int64_t a, int64_t e) {
            detail::dequantize_rows(src + (r0 + a) * in, sc + r0 + a, e - a, in, dst + a * in);
        });
        return buf.narrow(0, 0, nr);
    };
    const c10::optional<at::Tensor> bias = b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt;
    if (rows == out) return at::linear(x.to(at::kFloat), convert(0, out), bias);
    // Blocks of rows: y^T [out, n], each block of weight rows fills a contiguous block of its rows.
    auto sizes = x.sizes().vec();
    sizes.back() = out;
    const at::Tensor xt = x.reshape({-1, in}).to(at::kFloat).t();
    at::Tensor yt = at::empty({out, xt.size(1)}, at::kFloat);
    for (int64_t r0 = 0; r0 < out; r0 += rows) {
        const int64_t nr = std::min(rows, out - r0);
        at::Tensor y_rows = yt.narrow(0, r0, nr);
        at::mm_out(y_rows, convert(r0, nr), xt);
    }
    at::Tensor y = at::empty({xt.size(1), out}, at::kFloat);
    if (b.defined())
        at::add_out(y, yt.t(), b);
    else
        y.copy_(yt.t());
    return y.view(sizes);
}

}  // namespace nscope::models

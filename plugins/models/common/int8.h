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

/// x [..., in] (float32) @ dequant(q)^T + b for an int8 weight q [out, in] from quantize_int8; b may be
/// undefined. The weight is converted to float32 on the fly (scale folded in, rows spread over LibTorch's
/// threads) and multiplied at once, so the model's weights exist in float32 one matrix at a time, never all
/// together; a weight larger than `chunk_values` floats is converted and multiplied in blocks of rows of that
/// size, so the temporary is bounded for any model.
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

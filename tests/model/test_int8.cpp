// int8 weights (ModelOptions::int8_weights, recipe `dtype: int8`): the quantization and the product with a
// dequantised weight, agreement with float32 on the bundled KJV model, memory of the weights, interventions
// and batching on int8 models, and the combinations that are refused.
#include "tests/model/model_support.h"

#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <string>

#include "core/model/hook_match.h"
#include "core/model/interventions.h"
#include "core/tokenizer/tokenizer.h"
#include "nscope/error.h"
#include "plugins/models/common/int8.h"
#include "tests/support/cli.h"

using namespace nscope;
using namespace nscope::test;

namespace {

const std::string kSource = NSCOPE_SOURCE_DIR;

double maxdiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

/// The first `n` verses of the KJV sample (tests/fixtures/text/genesis.txt), tokenized for kjv-tiny and cut
/// to `max_tokens`.
std::vector<std::vector<int64_t>> kjv_rows(size_t n, size_t max_tokens) {
    const Tokenizer tok = Tokenizer::from_file(kSource + "/models/kjv-tiny/tokenizer.json");
    std::ifstream in(kSource + "/tests/fixtures/text/genesis.txt");
    std::vector<std::vector<int64_t>> rows;
    for (std::string line; rows.size() < n && std::getline(in, line);) {
        auto ids = tok.encode(line, true).ids;
        if (ids.size() > max_tokens) ids.resize(max_tokens);
        if (ids.size() >= 2) rows.push_back(std::move(ids));
    }
    return rows;
}

/// Bytes of a parameter as stored: int8 values plus per-row scale and zero point for a quantized tensor.
uint64_t stored_bytes(const at::Tensor& t) {
    if (!t.is_quantized()) return t.nbytes();
    return static_cast<uint64_t>(t.numel()) + t.q_per_channel_scales().nbytes() + t.q_per_channel_zero_points().nbytes();
}

}  // namespace

TEST_CASE("quantize_int8: per-row symmetric scales, values within half a step, zero rows stay zero", "[model][int8]") {
    at::manual_seed(3);
    at::Tensor w = at::randn({37, 53}) * at::linspace(0.01, 3.0, 37).unsqueeze(1);
    w[5].zero_();
    w[7][11] = 40.0;  // an outlier sets its row's scale, not the others'
    const at::Tensor q = models::quantize_int8(w);
    REQUIRE(q.is_quantized());
    CHECK(q.scalar_type() == at::kQInt8);
    CHECK(q.q_per_channel_axis() == 0);
    const at::Tensor s = q.q_per_channel_scales().to(at::kFloat);
    const at::Tensor amax = w.abs().amax(1);
    for (int64_t r = 0; r < 37; ++r) {
        if (r == 5) continue;
        INFO("row " << r);
        CHECK(std::abs(s[r].item<float>() - amax[r].item<float>() / 127.0f) <= 1e-6f * amax[r].item<float>());
    }
    const at::Tensor i8 = at::from_blob(q.data_ptr(), q.sizes(), at::kChar).to(at::kInt);
    CHECK(i8.abs().max().item<int>() == 127);  // each row's largest magnitude maps to ±127 exactly
    CHECK(i8[5].abs().max().item<int>() == 0);
    const at::Tensor back = q.dequantize();
    // |w - s q| <= s / 2 per element (round to nearest), with float slack.
    CHECK(((back - w).abs() - s.unsqueeze(1) * 0.5001).max().item<float>() <= 0.0f);
    CHECK(back[5].abs().max().item<float>() == 0.0f);
    // The outlier row is coarse; a small row keeps its own fine scale.
    CHECK(s[7].item<float>() > 0.3f);
    CHECK(s[0].item<float>() < 0.001f);
}

TEST_CASE("int8_linear equals the product with the dequantised weight: few tokens straight from int8, more in one piece or in blocks of rows",
          "[model][int8]") {
    at::manual_seed(4);
    // Few tokens, odd sizes (the direct kernel's 8-wide and 4-token remainders).
    for (const auto& [tokens, in] : std::vector<std::pair<int64_t, int64_t>>{{1, 53}, {7, 53}, {24, 64}, {3, 5}}) {
        const at::Tensor w = at::randn({37, in}) * 0.05, b = at::randn({37});
        const at::Tensor q = models::quantize_int8(w);
        const at::Tensor x = at::randn({1, tokens, in});
        INFO(tokens << " tokens x " << in);
        CHECK(models::int8_linear(x, q, b).sizes() == at::IntArrayRef({1, tokens, 37}));
        CHECK(maxdiff(models::int8_linear(x, q, b), at::linear(x, q.dequantize(), b)) < 1e-5);
        CHECK(maxdiff(models::int8_linear(x, q, {}), at::linear(x, q.dequantize())) < 1e-5);
    }
    const at::Tensor w = at::randn({300, 96}) * 0.05, b = at::randn({300});
    const at::Tensor q = models::quantize_int8(w);
    const at::Tensor x = at::randn({5, 8, 96});  // 40 tokens: converted to float32, then one GEMM
    const at::Tensor want = at::linear(x, q.dequantize(), b);
    const at::Tensor whole = models::int8_linear(x, q, b);
    CHECK(whole.sizes() == at::IntArrayRef({5, 8, 300}));
    CHECK(maxdiff(whole, want) < 1e-5);
    // A small chunk forces the row-block path (4 blocks of 96 rows, the last one partial).
    const at::Tensor blocked = models::int8_linear(x, q, b, 96 * 96);
    CHECK(blocked.is_contiguous());
    CHECK(maxdiff(blocked, want) < 1e-5);
    CHECK(maxdiff(models::int8_linear(x, q, {}, 96 * 96), at::linear(x, q.dequantize())) < 1e-5);
    // And the whole thing is close to the float32 weight (the rounding is all that differs).
    CHECK(maxdiff(whole, at::linear(x, w, b)) < 0.02);
    CHECK(maxdiff(whole, at::linear(x, w, b)) > 0.0);
}

TEST_CASE("int8 weights on the bundled KJV model: top-1 agreement with float32, mlp.hook_post error, memory",
          "[model][int8]") {
    const std::string model = kSource + "/models/kjv-tiny";
    LoadedModel f32 = load_model(registry(), model, parse_model_dtype("float32"));
    LoadedModel i8 = load_model(registry(), model, parse_model_dtype("int8"));
    REQUIRE(model_dtype_name(parse_model_dtype("int8")) == "int8");

    // Memory of the linear layers: every 2-D weight of the blocks is int8 (+ a scale and zero point per row).
    uint64_t linear_f32 = 0, linear_i8 = 0, other_f32 = 0, other_i8 = 0;
    int64_t linear_values = 0;
    for (const auto& [name, t] : i8.adapter->named_parameters()) {
        if (t.is_quantized()) {
            REQUIRE(name.rfind("h.", 0) == 0);  // only the blocks' linears
            linear_f32 += static_cast<uint64_t>(t.numel()) * 4;
            linear_i8 += stored_bytes(t);
            linear_values += t.numel();
        } else {
            CHECK(t.scalar_type() == at::kFloat);  // embeddings, norms, biases stay float32
            other_f32 += t.nbytes();
            other_i8 += t.nbytes();
        }
    }
    CHECK(linear_values == i8.handle.info.n_linear_params);
    CHECK(linear_values == 4 * (256 * 768 + 256 * 256 + 2 * 256 * 1024));
    const double ratio = static_cast<double>(linear_f32) / static_cast<double>(linear_i8);
    std::printf("int8 kjv-tiny: linears %.2f MB -> %.2f MB (%.2fx smaller); whole model %.2f MB -> %.2f MB\n",
                linear_f32 / 1e6, linear_i8 / 1e6, ratio, (linear_f32 + other_f32) / 1e6, (linear_i8 + other_i8) / 1e6);
    CHECK(ratio >= 3.5);

    // Top-1 next-token agreement and the relative error of every layer's neurons over the KJV sample.
    ModelSession sf(f32), si(i8);
    const auto rows = kjv_rows(96, 64);
    REQUIRE(rows.size() == 96);
    ForwardRequest req;
    for (int L = 0; L < 4; ++L) req.capture.push_back("blocks." + std::to_string(L) + ".mlp.hook_post");
    int64_t agree = 0, total = 0;
    std::vector<double> err2(4, 0.0), ref2(4, 0.0);
    for (size_t start = 0; start < rows.size(); start += 16) {
        const std::vector<std::vector<int64_t>> batch(rows.begin() + static_cast<long>(start),
                                                      rows.begin() + static_cast<long>(start + 16));
        std::vector<size_t> idx;
        for (size_t i = start; i < start + 16; ++i) idx.push_back(i);
        const auto a = sf.forward(batch, nullptr, idx, req), b = si.forward(batch, nullptr, idx, req);
        const at::Tensor valid = a.attention_mask.to(at::kBool);
        const at::Tensor top_a = a.logits.argmax(-1).masked_select(valid), top_b = b.logits.argmax(-1).masked_select(valid);
        agree += top_a.eq(top_b).sum().item<int64_t>();
        total += top_a.numel();
        for (int L = 0; L < 4; ++L) {
            const std::string h = "blocks." + std::to_string(L) + ".mlp.hook_post";
            err2[L] += (b.captures.at(h) - a.captures.at(h)).pow(2).sum().item<double>();  // padding is 0 in both
            ref2[L] += a.captures.at(h).pow(2).sum().item<double>();
        }
    }
    const double agreement = static_cast<double>(agree) / static_cast<double>(total);
    std::printf("int8 kjv-tiny: top-1 agreement with float32 %.2f%% (%lld of %lld tokens)\n", 100 * agreement,
                static_cast<long long>(agree), static_cast<long long>(total));
    CHECK(total > 2000);
    CHECK(agreement >= 0.98);
    CHECK(agreement < 1.0);  // the weights really are rounded
    for (int L = 0; L < 4; ++L) {
        const double rel = std::sqrt(err2[L] / ref2[L]);
        std::printf("int8 kjv-tiny: blocks.%d.mlp.hook_post relative error ||int8 - fp32|| / ||fp32|| = %.4f\n", L, rel);
        INFO("layer " << L);
        CHECK(rel < 0.03);
        CHECK(rel > 1e-4);
    }
}

TEST_CASE("int8 models: interventions edit exactly as in float32, batching matches one-at-a-time", "[model][int8]") {
    for (const std::string name : {"gpt2", "llama", "phi", "gemma", "gpt_neox", "bert"}) {
        INFO(name);
        LoadedModel m = load_model(registry(), fixture_model(name), parse_model_dtype("int8"));
        ModelSession s(m);
        const auto rows = oracle_rows(name);
        std::vector<std::vector<int64_t>> types;
        if (name == "bert") types = oracle_rows(name, "token_type_ids.npy");
        const std::string hook = "blocks.0.mlp.hook_post";
        ForwardRequest req;
        req.capture = {hook, "blocks.1.hook_resid_post"};
        const auto clean = s.forward(rows, name == "bert" ? &types : nullptr, {0, 1}, req);
        InterventionSpec z;
        z.hook = hook;
        z.op = "zero";
        z.neurons = {1, 4};
        req.interventions = {z};
        const auto edited = s.forward(rows, name == "bert" ? &types : nullptr, {0, 1}, req);
        const at::Tensor e = edited.captures.at(hook), c = clean.captures.at(hook);
        CHECK(e.select(2, 1).abs().max().item<double>() == 0.0);
        CHECK(e.select(2, 4).abs().max().item<double>() == 0.0);
        CHECK(c.select(2, 1).abs().max().item<double>() > 0.0);
        CHECK(maxdiff(e.select(2, 0), c.select(2, 0)) == 0.0);
        CHECK(maxdiff(edited.logits, clean.logits) > 1e-5);
        // Batching: row 1 alone gives its row of the padded batch.
        req.interventions.clear();
        std::vector<std::vector<int64_t>> one{rows[1]}, one_t;
        if (name == "bert") one_t = {types[1]};
        const auto alone = s.forward(one, name == "bert" ? &one_t : nullptr, {1}, req);
        const int64_t len = static_cast<int64_t>(rows[1].size());
        const at::Tensor batched = clean.captures.at("blocks.1.hook_resid_post")[1].narrow(0, 0, len);
        const at::Tensor single = alone.captures.at("blocks.1.hook_resid_post")[0];
        CHECK(maxdiff(batched, single) <= 1e-5 * std::max(1.0, single.abs().max().item<double>()));
    }
}

TEST_CASE("int8 weights: trainable, bfloat16 and unknown dtypes are refused", "[model][int8][errors]") {
    ModelOptions o = parse_model_dtype("int8");
    CHECK(o.int8_weights);
    CHECK(o.dtype == at::kFloat);
    o.trainable = true;
    CHECK_THROWS_WITH(load_model(registry(), fixture_model("gpt2"), o), Catch::Contains("inference only"));
    CHECK_THROWS_WITH(init_random_model(registry(), nlohmann::json::parse(read_file(fixture_model("llama") + "/config.json")), 1, o),
                      Catch::Contains("inference only"));
    o.trainable = false;
    o.dtype = at::kBFloat16;
    CHECK_THROWS_WITH(load_model(registry(), fixture_model("gpt2"), o), Catch::Contains("compute in float32"));
    CHECK_THROWS_AS(parse_model_dtype("int4"), InputError);
    CHECK_THROWS_WITH(parse_model_dtype("in8"), Catch::Contains("did you mean 'int8'"));
    // A randomly initialised model quantizes too (init_random honours int8_weights).
    LoadedModel r = init_random_model(registry(), nlohmann::json::parse(read_file(fixture_model("phi") + "/config.json")), 7,
                                      parse_model_dtype("int8"));
    size_t quantized = 0;
    for (const auto& [name, t] : r.adapter->named_parameters()) quantized += t.is_quantized();
    CHECK(quantized == 2 * 6);  // q, k, v, dense, fc1, fc2 per layer
}

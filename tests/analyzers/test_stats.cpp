// The `stats` analyzer against a brute-force computation on the same synthetic data.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "tests/analyzers/synthetic.h"

using namespace nscope;
using namespace nscope::test;

namespace {

struct Brute {
    double n = 0, mean = 0, sd = 0, mn = 0, mx = 0, active = 0, positive = 0, skew = 0, kurt = 0;
};

Brute brute(const SynthCorpus& c, const std::string& hook, int64_t j, double threshold) {
    std::vector<double> xs;
    for (size_t i = 0; i < c.prompts.size(); ++i)
        for (size_t t = 0; t < c.ids[i].size(); ++t) xs.push_back(c.at(hook, i, t, j));
    Brute b;
    b.n = static_cast<double>(xs.size());
    for (double x : xs) b.mean += x;
    b.mean /= b.n;
    double m2 = 0, m3 = 0, m4 = 0;
    for (double x : xs) {
        const double d = x - b.mean;
        m2 += d * d, m3 += d * d * d, m4 += d * d * d * d;
        b.active += x > threshold;
        b.positive += x > 0;
    }
    b.active /= b.n, b.positive /= b.n;
    b.sd = std::sqrt(m2 / b.n);
    b.mn = *std::min_element(xs.begin(), xs.end());
    b.mx = *std::max_element(xs.begin(), xs.end());
    if (m2 > 1e-12) {
        b.skew = std::sqrt(b.n) * m3 / std::pow(m2, 1.5);
        b.kurt = b.n * m4 / (m2 * m2) - 3.0;
    }
    return b;
}

SynthCorpus corpus() {
    return SynthCorpus({{"blocks.0.mlp.hook_post", {7}}, {"blocks.1.attn.hook_z", {2, 3}}}, 23, 9, 12, 1234);
}

float arr(const Result& r, const std::string& name, int64_t j) { return r.arrays.at(name).f32.at(j); }

}  // namespace

TEST_CASE("stats: every per-neuron statistic equals a brute-force double computation", "[analyzers][stats]") {
    const auto c = corpus();
    auto batches = c.batches(5);
    // An attention pattern in the first batch must be skipped with a note, not counted.
    std::vector<float> pattern(batches[0].rows * 2 * batches[0].positions * batches[0].positions, 0.25f);
    auto a = registry().create_analyzer("stats");
    a->configure({{"threshold", 0.5}, {"neuron_table", true}});
    const RunContext ctx = c.run_context();
    a->begin(ctx);
    for (size_t i = 0; i < batches.size(); ++i) {
        Batch b = batches[i].view();
        const auto P = static_cast<int64_t>(batches[i].positions), R = static_cast<int64_t>(batches[i].rows);
        if (i == 0) b.activations.push_back({"blocks.0.attn.hook_pattern", {pattern.data(), DType::Float32, {R, 2, P, P}}});
        a->consume(b);
    }
    const Result r = a->finish();

    for (const auto& h : c.hooks) {
        for (int64_t j = 0; j < h.width(); ++j) {
            INFO(h.name << " neuron " << j);
            const Brute b = brute(c, h.name, j, 0.5);
            CHECK(arr(r, h.name + ".mean", j) == Approx(b.mean).margin(1e-6));
            CHECK(arr(r, h.name + ".std", j) == Approx(b.sd).margin(1e-6));
            CHECK(arr(r, h.name + ".min", j) == Approx(b.mn));
            CHECK(arr(r, h.name + ".max", j) == Approx(b.mx));
            CHECK(arr(r, h.name + ".frac_active", j) == Approx(b.active));
            CHECK(arr(r, h.name + ".frac_positive", j) == Approx(b.positive));
            CHECK(arr(r, h.name + ".skewness", j) == Approx(b.skew).margin(1e-5));
            CHECK(arr(r, h.name + ".kurtosis", j) == Approx(b.kurt).margin(1e-5));
        }
    }
    // Layer table: one row per hook in model order; count = real tokens; mean = mean of neuron means.
    const auto& rows = r.data["tables"]["layers"]["rows"];
    REQUIRE(rows.size() == 2);
    CHECK(rows[0][0] == "blocks.0.mlp.hook_post");
    CHECK(rows[0][1] == 0);
    CHECK(rows[1][2] == 6);  // [2, 3] heads x d_head flattened
    size_t tokens = 0;
    for (const auto& ids : c.ids) tokens += ids.size();
    CHECK(rows[0][3] == tokens);
    double mean_of_means = 0;
    for (int64_t j = 0; j < 7; ++j) mean_of_means += brute(c, "blocks.0.mlp.hook_post", j, 0.5).mean / 7;
    CHECK(rows[0][4].get<double>() == Approx(mean_of_means).margin(1e-9));
    CHECK(r.data["tables"]["neurons"]["rows"].size() == 13);
    CHECK(r.data["summary"]["skipped"][0]["hook"] == "blocks.0.attn.hook_pattern");
    CHECK(r.arrays.count("blocks.0.attn.hook_pattern.mean") == 0);
}

TEST_CASE("stats: merging two shards gives the single-pass result", "[analyzers][stats][merge]") {
    const auto c = corpus();
    auto whole = run_analyzer("stats", {}, c, c.batches(4));
    auto left = run_analyzer("stats", {}, c, c.batches(3, 0, 10));
    auto right = run_analyzer("stats", {}, c, c.batches(6, 10));
    REQUIRE(left->mergeable());
    left->merge(*right);
    const Result a = whole->finish(), b = left->finish();
    REQUIRE(a.arrays.size() == b.arrays.size());
    for (const auto& [name, arr] : a.arrays) {
        INFO(name);
        const auto& other = b.arrays.at(name).f32;
        for (size_t j = 0; j < arr.f32.size(); ++j) CHECK(arr.f32[j] == Approx(other[j]).margin(1e-6));
    }
    CHECK(a.data["tables"]["layers"]["rows"][0][3] == b.data["tables"]["layers"]["rows"][0][3]);
}

TEST_CASE("stats: the hooks parameter selects hooks by glob", "[analyzers][stats]") {
    const auto c = corpus();
    auto a = run_analyzer("stats", {{"hooks", {"blocks.*.attn.*"}}}, c, c.batches(8));
    const Result r = a->finish();
    CHECK(r.arrays.count("blocks.1.attn.hook_z.mean") == 1);
    CHECK(r.arrays.count("blocks.0.mlp.hook_post.mean") == 0);
}

TEST_CASE("stats: unknown or mistyped parameters are refused with the key and a suggestion", "[analyzers][stats]") {
    auto a = registry().create_analyzer("stats");
    CHECK_THROWS_AS(a->configure({{"treshold", 1}}), InputError);
    CHECK_THROWS_WITH(a->configure({{"treshold", 1}}),
                      Catch::Contains("unknown parameter 'treshold'") && Catch::Contains("did you mean 'threshold'") &&
                          Catch::Contains("accepted parameters: hooks, threshold, neuron_table"));
    CHECK_THROWS_WITH(a->configure({{"threshold", "high"}}),
                      Catch::Contains("parameter 'threshold' must be a number") && Catch::Contains("high"));
    CHECK_THROWS_WITH(a->configure({{"hooks", 3}}), Catch::Contains("parameter 'hooks' must be a list of strings"));
}

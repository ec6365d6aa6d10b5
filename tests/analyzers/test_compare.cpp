// The `compare` analyzer: pairs by label and by index, cosine / MSE / top neurons computed by hand.
#include <catch2/catch.hpp>

#include <cmath>

#include "tests/analyzers/synthetic.h"

using namespace nscope;
using namespace nscope::test;

namespace {

const std::string kHook = "blocks.2.hook_resid_post";

SynthCorpus labelled() {
    SynthCorpus c({{kHook, {5}}, {"blocks.0.mlp.hook_post", {4}}}, 12, 7, 9, 31);
    const char* jobs[] = {"engineer", "nurse", "doctor"};
    for (size_t i = 0; i < 6; ++i)
        c.prompts[i]->labels = {{"job", jobs[i / 2]}, {"gender", i % 2 ? "woman" : "man"}};
    c.prompts[6]->labels = {{"job", "pilot"}, {"gender", "man"}};  // no partner: not paired
    return c;
}

/// The pooled vector of prompt i for `pool` ("mean" / "last"), or position t for aligned.
std::vector<double> pooled(const SynthCorpus& c, size_t i, const std::string& pool) {
    const size_t len = c.ids[i].size();
    std::vector<double> v(c.width(kHook), 0.0);
    for (size_t j = 0; j < v.size(); ++j) {
        if (pool == "last") {
            v[j] = c.at(kHook, i, len - 1, j);
        } else {
            for (size_t t = 0; t < len; ++t) v[j] += c.at(kHook, i, t, j) / static_cast<double>(len);
        }
    }
    return v;
}

double cosine(const std::vector<double>& x, const std::vector<double>& y) {
    double d = 0, a = 0, b = 0;
    for (size_t j = 0; j < x.size(); ++j) d += x[j] * y[j], a += x[j] * x[j], b += y[j] * y[j];
    return d / std::sqrt(a * b);
}
double mse(const std::vector<double>& x, const std::vector<double>& y) {
    double s = 0;
    for (size_t j = 0; j < x.size(); ++j) s += (x[j] - y[j]) * (x[j] - y[j]);
    return s / static_cast<double>(x.size());
}

nlohmann::json row_of(const Result& r, int64_t pair, const std::string& hook) {
    for (const auto& row : r.data["tables"]["pairs"]["rows"])
        if (row[0] == pair && row[5] == hook) return row;
    return nullptr;
}

}  // namespace

TEST_CASE("compare: by_label pairs prompts that share all other labels, mean and last pooling", "[analyzers][compare]") {
    const auto c = labelled();
    for (const std::string pool : {"mean", "last"}) {
        INFO(pool);
        auto a = run_analyzer("compare",
                              {{"pool", pool}, {"top_neurons", 2}, {"by_label", {{"key", "gender"}, {"values", {"man", "woman"}}}}},
                              c, c.batches(5));
        const Result r = a->finish();
        const auto& pairs = r.data["pairs"];
        REQUIRE(pairs.size() == 3);
        for (size_t q = 0; q < 3; ++q) {
            CHECK(pairs[q]["a"] == 2 * q);
            CHECK(pairs[q]["b"] == 2 * q + 1);
            CHECK(pairs[q]["shared_labels"].size() == 1);  // job
            const auto x = pooled(c, 2 * q, pool), y = pooled(c, 2 * q + 1, pool);
            const auto row = row_of(r, static_cast<int64_t>(q), kHook);
            REQUIRE(!row.is_null());
            CHECK(row[7].get<double>() == Approx(cosine(x, y)).epsilon(1e-9));
            CHECK(row[8].get<double>() == Approx(mse(x, y)).epsilon(1e-9));
            CHECK(r.arrays.at("cosine").f32[q * 2 + 1] == Approx(cosine(x, y)).epsilon(1e-6));  // hooks in model order
            // Most different neuron: the largest |b - a|.
            size_t best = 0;
            for (size_t j = 1; j < x.size(); ++j)
                if (std::abs(y[j] - x[j]) > std::abs(y[best] - x[best])) best = j;
            for (const auto& nrow : r.data["tables"]["top_neurons"]["rows"])
                if (nrow[0] == q && nrow[3] == kHook && nrow[5] == 1) {
                    CHECK(nrow[6] == best);
                    CHECK(nrow[9].get<double>() == Approx(y[best] - x[best]));
                }
        }
        CHECK(r.data["hooks"][0] == "blocks.0.mlp.hook_post");
        CHECK(r.data["figures"]["cosine_by_hook"]["series"].size() == 3);
    }
}

TEST_CASE("compare: explicit pairs with aligned pooling compare position-wise over the common length",
          "[analyzers][compare]") {
    const auto c = labelled();
    auto a = run_analyzer("compare", {{"pool", "aligned"}, {"pairs", {{8, 9}, {3, 10}}}}, c, c.batches(4));
    const Result r = a->finish();
    for (auto [pa, pb, q] : {std::tuple<size_t, size_t, int64_t>{8, 9, 0}, {3, 10, 1}}) {
        const size_t len = std::min(c.ids[pa].size(), c.ids[pb].size());
        std::vector<double> x, y;
        for (size_t t = 0; t < len; ++t)
            for (int64_t j = 0; j < 5; ++j) x.push_back(c.at(kHook, pa, t, j)), y.push_back(c.at(kHook, pb, t, j));
        const auto row = row_of(r, q, kHook);
        REQUIRE(!row.is_null());
        CHECK(row[7].get<double>() == Approx(cosine(x, y)).epsilon(1e-9));
        CHECK(row[8].get<double>() == Approx(mse(x, y)).epsilon(1e-9));
    }
}

TEST_CASE("compare: shards merge to the single-pass result", "[analyzers][compare][merge]") {
    const auto c = labelled();
    const Params p = {{"by_label", {{"key", "gender"}, {"values", {"man", "woman"}}}}};
    auto whole = run_analyzer("compare", p, c, c.batches(4));
    auto x = run_analyzer("compare", p, c, c.batches(3, 0, 3));
    auto y = run_analyzer("compare", p, c, c.batches(3, 3));
    x->merge(*y);
    CHECK(json_close(whole->finish().data, x->finish().data));
}

TEST_CASE("compare: missing or malformed pair parameters are refused", "[analyzers][compare]") {
    auto a = registry().create_analyzer("compare");
    CHECK_THROWS_WITH(a->configure({{"pool", "mean"}}), Catch::Contains("give the prompt pairs to compare"));
    CHECK_THROWS_WITH(a->configure({{"pairs", {{0, 1}}}, {"pool", "avg"}}),
                      Catch::Contains("parameter 'pool' must be one of mean, last, aligned"));
    CHECK_THROWS_WITH(a->configure({{"pairs", {{0, 1, 2}}}}), Catch::Contains("[a, b] prompt index pairs"));
    CHECK_THROWS_WITH(a->configure({{"by_label", {{"key", "g"}, {"valeus", {"a", "b"}}}}}),
                      Catch::Contains("parameter 'by_label' must be {key: <label>, values:"));
}

// The `heatmap` analyzer: kept matrices equal the inputs; top-variance neurons equal a brute-force pick.
#include <catch2/catch.hpp>

#include <algorithm>

#include "tests/analyzers/synthetic.h"

using namespace nscope;
using namespace nscope::test;

namespace {
const std::string kHook = "blocks.3.mlp.hook_post";
}

TEST_CASE("heatmap: top-variance neurons over the selected prompts, token x neuron figures", "[analyzers][heatmap]") {
    const SynthCorpus c({{kHook, {9}}}, 14, 6, 8, 17);
    auto a = run_analyzer("heatmap", {{"prompts", {1, 4, 12}}, {"top_n", 3}}, c, c.batches(5));
    const Result r = a->finish();
    // Brute force: population variance over the tokens of prompts 1, 4, 12.
    std::vector<std::pair<double, int64_t>> var;
    for (int64_t j = 0; j < 9; ++j) {
        std::vector<double> xs;
        for (size_t i : {1, 4, 12})
            for (size_t t = 0; t < c.ids[i].size(); ++t) xs.push_back(c.at(kHook, i, t, j));
        double m = 0, v = 0;
        for (double x : xs) m += x / xs.size();
        for (double x : xs) v += (x - m) * (x - m) / xs.size();
        var.emplace_back(-v, j);
    }
    std::sort(var.begin(), var.end());
    const std::vector<int64_t> expect{var[0].second, var[1].second, var[2].second};
    CHECK(r.arrays.at(kHook + ".neurons").i64 == expect);
    CHECK(r.arrays.at(kHook + ".variance").f32[0] == Approx(-var[0].first));
    const auto& fig = r.data["figures"][kHook + ".prompt4"];
    CHECK(fig["kind"] == "heatmap");
    CHECK(fig["x"][0] == "n" + std::to_string(expect[0]));
    CHECK(fig["y"].size() == c.ids[4].size());
    CHECK(fig["y"][0] == c.prompts[4]->tokens[0]);
    for (size_t t = 0; t < c.ids[4].size(); ++t)
        for (size_t q = 0; q < 3; ++q) CHECK(fig["z"][t][q].get<float>() == c.at(kHook, 4, t, expect[q]));
    CHECK(r.arrays.at(kHook + ".prompt12").shape == std::vector<int64_t>{static_cast<int64_t>(c.ids[12].size()), 3});
    CHECK(r.data["figures"].count(kHook + ".prompt0") == 0);
    CHECK(r.data["summary"]["prompts"] == nlohmann::json{1, 4, 12});
}

TEST_CASE("heatmap: chosen neurons, merge of shards, and bad parameters", "[analyzers][heatmap]") {
    const SynthCorpus c({{kHook, {9}}}, 10, 6, 8, 18);
    const Params p = {{"neurons", {8, 2}}};
    auto whole = run_analyzer("heatmap", p, c, c.batches(3));
    auto x = run_analyzer("heatmap", p, c, c.batches(3, 0, 4));
    auto y = run_analyzer("heatmap", p, c, c.batches(3, 4));
    x->merge(*y);
    const Result r = whole->finish();
    CHECK(r.arrays.at(kHook + ".neurons").i64 == std::vector<int64_t>{8, 2});
    CHECK(r.data["figures"].size() == 8);  // prompts 0..7 by default
    CHECK(json_close(r.data, x->finish().data));
    auto a = registry().create_analyzer("heatmap");
    CHECK_THROWS_WITH(a->configure({{"neurons", {1}}, {"top_n", 3}}), Catch::Contains("cannot be combined with 'neurons'"));
    CHECK_THROWS_WITH(a->configure({{"prompt", {1}}}), Catch::Contains("did you mean 'prompts'"));
    CHECK_THROWS_WITH(a->configure({{"prompts", {-1}}}), Catch::Contains("parameter 'prompts' must be in [0,"));
}

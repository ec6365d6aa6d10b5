// The `dead` analyzer against brute force on synthetic data with known dead / always-on / flat neurons.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "tests/analyzers/synthetic.h"

using namespace nscope;
using namespace nscope::test;

namespace {
SynthCorpus corpus() {
    return SynthCorpus({{"blocks.0.mlp.hook_post", {10}}, {"blocks.2.mlp.hook_post", {5}}}, 17, 8, 10, 77);
}

struct Expect {
    std::vector<int64_t> dead, on, flat;
};

Expect brute(const SynthCorpus& c, const std::string& hook, double eps, double on_fraction, double flat_std) {
    Expect e;
    for (int64_t j = 0; j < c.width(hook); ++j) {
        std::vector<double> xs;
        for (size_t i = 0; i < c.prompts.size(); ++i)
            for (size_t t = 0; t < c.ids[i].size(); ++t) xs.push_back(c.at(hook, i, t, j));
        double mean = 0, var = 0, active = 0, mx = -1e300;
        for (double x : xs) mean += x / xs.size(), mx = std::max(mx, x), active += x > eps;
        for (double x : xs) var += (x - mean) * (x - mean) / xs.size();
        if (mx <= eps) e.dead.push_back(j);
        if (active / xs.size() >= on_fraction) e.on.push_back(j);
        if (mx > eps && std::sqrt(var) < flat_std) e.flat.push_back(j);
    }
    return e;
}
}  // namespace

TEST_CASE("dead: dead, always-on and flat neurons match brute force", "[analyzers][dead]") {
    const auto c = corpus();
    const Params params = {{"epsilon", 0.01}, {"on_fraction", 0.9}, {"flat_std", 1e-4}};
    auto a = run_analyzer("dead", params, c, c.batches(4));
    const Result r = a->finish();
    for (const auto& h : c.hooks) {
        INFO(h.name);
        const Expect e = brute(c, h.name, 0.01, 0.9, 1e-4);
        CHECK(r.arrays.at(h.name + ".dead").i64 == e.dead);
        CHECK(r.arrays.at(h.name + ".always_on").i64 == e.on);
        CHECK(r.arrays.at(h.name + ".flat").i64 == e.flat);
        CHECK(r.data["hooks"][h.name]["dead"].get<std::vector<int64_t>>() == e.dead);
    }
    // The generator makes neurons j % 5 == 0 dead, 2 (mod 5) always on, and neuron 4 constant 1.5.
    CHECK(r.arrays.at("blocks.0.mlp.hook_post.dead").i64 == std::vector<int64_t>{0, 5});
    CHECK(r.arrays.at("blocks.0.mlp.hook_post.flat").i64 == std::vector<int64_t>{4});
    const auto& row = r.data["tables"]["layers"]["rows"][0];
    CHECK(row[0] == "blocks.0.mlp.hook_post");
    CHECK(row[4] == 2);
    CHECK(row[7].get<double>() == Approx(0.2));
    CHECK(r.data["summary"]["dead"] == 3);  // 0, 5 in layer 0; 0 in layer 2
}

TEST_CASE("dead: merging shards gives the single-pass result", "[analyzers][dead][merge]") {
    const auto c = corpus();
    auto whole = run_analyzer("dead", {}, c, c.batches(5));
    auto a = run_analyzer("dead", {}, c, c.batches(2, 0, 7));
    auto b = run_analyzer("dead", {}, c, c.batches(3, 7));
    a->merge(*b);
    const Result x = whole->finish(), y = a->finish();
    // Shards and a single pass round their float32 partial sums differently: agreement to ~1e-7.
    CHECK(json_close(x.data, y.data, 1e-6));
    CHECK(x.data["hooks"] == y.data["hooks"]);
}

TEST_CASE("dead: a bad on_fraction is refused naming the key", "[analyzers][dead]") {
    auto a = registry().create_analyzer("dead");
    CHECK_THROWS_WITH(a->configure({{"on_fraction", 1.5}}), Catch::Contains("parameter 'on_fraction' must be in [0.0, 1.0], got 1.5"));
    CHECK_THROWS_WITH(a->configure({{"epsilom", 0.1}}), Catch::Contains("did you mean 'epsilon'"));
}

// The `polysemantic` analyzer on planted neurons: one driven equally by two concepts, one by two unequally,
// one by a single concept, one flat; and the token mode on a topk result.
#include <catch2/catch.hpp>

#include <cmath>

#include "tests/analyzers/synthetic.h"

using namespace nscope;
using namespace nscope::test;

namespace {

constexpr size_t kPrompts = 6, kLen = 3, kWidth = 4;

// Concept of prompt p: A A B B C C. Neuron values per concept (plus a little per-token spread):
//   n0: A 5, B 5, C 0   n1: A 0, B 0, C 5   n2: 0.1 everywhere   n3: A 6, B 4, C 0
float value(size_t p, size_t t, size_t j) {
    static const float base[3][4] = {{5, 0, 0.1f, 6}, {5, 0, 0.1f, 4}, {0, 5, 0.1f, 0}};
    return base[p / 2][j] + (j == 2 ? 0.0f : 0.05f * static_cast<float>(t));
}

double effective(const std::vector<double>& w) {
    double total = 0, h = 0;
    for (double x : w) total += x;
    for (double x : w) h -= x / total * std::log(x / total);
    return std::exp(h);
}

/// The score of neuron j by the definition, computed directly (effects of concepts >= min_effect).
double expected_score(size_t j, double min_effect) {
    double sum = 0, sum2 = 0, n = 0;
    double csum[3] = {}, cn[3] = {};
    for (size_t p = 0; p < kPrompts; ++p)
        for (size_t t = 0; t < kLen; ++t) {
            const double x = value(p, t, j);
            sum += x, sum2 += x * x, n += 1, csum[p / 2] += x, cn[p / 2] += 1;
        }
    const double mean = sum / n, sd = std::sqrt(sum2 / n - mean * mean);
    std::vector<double> effects;
    for (int c = 0; c < 3; ++c) {
        const double d = (csum[c] / cn[c] - (sum - csum[c]) / (n - cn[c])) / sd;
        if (d >= min_effect) effects.push_back(d);
    }
    return effects.empty() ? 0.0 : effective(effects);
}

}  // namespace

TEST_CASE("polysemantic: prompt-label concepts, two equal drivers score 2, unequal ones between 1 and 2",
          "[analyzers][polysemantic]") {
    std::vector<float> acts(kPrompts * kLen * kWidth);
    std::vector<PromptInfo> infos;
    int64_t ids[kPrompts * kLen] = {}, mask[kPrompts * kLen];
    std::fill(std::begin(mask), std::end(mask), 1);
    for (size_t p = 0; p < kPrompts; ++p) {
        PromptInfo info;
        info.index = p;
        info.labels = {{"topic", std::string(1, static_cast<char>('A' + p / 2))}};
        infos.push_back(info);
        for (size_t t = 0; t < kLen; ++t)
            for (size_t j = 0; j < kWidth; ++j) acts[(p * kLen + t) * kWidth + j] = value(p, t, j);
    }
    Batch b;
    b.rows = kPrompts;
    b.positions = kLen;
    b.input_ids = ids;
    b.attention_mask = mask;
    for (const auto& i : infos) b.prompts.push_back(&i);
    b.activations.push_back({"blocks.0.mlp.hook_post", {acts.data(), DType::Float32, {6, 3, 4}}});
    auto a = registry().create_analyzer("polysemantic");
    a->configure({{"label", "topic"}, {"min_effect", 0.3}});
    RunContext ctx;
    a->begin(ctx);
    a->consume(b);
    const Result r = a->finish();
    const auto& score = r.arrays.at("blocks.0.mlp.hook_post.score").f32;
    for (size_t j = 0; j < kWidth; ++j) {
        INFO("neuron " << j);
        CHECK(score[j] == Approx(expected_score(j, 0.3)).epsilon(1e-5));
    }
    CHECK(score[0] == Approx(2.0).epsilon(1e-3));   // A and B alike
    CHECK(score[1] == Approx(1.0));                 // C alone
    CHECK(score[2] == 0.0f);                        // flat: no driver
    CHECK((score[3] > 1.2f && score[3] < 1.9f));    // A strongly, B weakly
    const auto& rows = r.data["tables"]["neurons"]["rows"];
    REQUIRE(rows.size() == 3);
    CHECK(rows[0][3] == 0);  // ranked: n0, n3, n1
    CHECK(rows[1][3] == 3);
    CHECK(rows[2][3] == 1);
    CHECK(rows[0][5].get<std::string>().find("\"concept\":\"B\"") != std::string::npos);
}

TEST_CASE("polysemantic: without labels, the distinct tokens of a topk input's top examples", "[analyzers][polysemantic]") {
    Result top;
    Table t;
    t.columns = {"source", "layer", "neuron", "rank", "value", "prompt", "position", "token_id", "token", "before", "after"};
    const char* n0[] = {" bank", "bank", " river", " money"};
    for (int i = 0; i < 4; ++i) t.add_row({"blocks.1.mlp.hook_post", 1, 0, i + 1, 1.0, 0, i, 7, n0[i], "", ""});
    for (int i = 0; i < 4; ++i) t.add_row({"blocks.1.mlp.hook_post", 1, 5, i + 1, 1.0, 1, i, 8, " the", "", ""});
    t.add_row({"group:g", -1, -1, 1, 1.0, 0, 0, 7, "x", "", ""});
    top.set_table("top_activations", t);
    auto a = registry().create_analyzer("polysemantic");
    a->configure(nlohmann::json::object());
    RunContext ctx;
    ctx.inputs["top"] = &top;
    a->begin(ctx);
    const Result r = a->finish();
    const auto& score = r.arrays.at("blocks.1.mlp.hook_post.score").f32;
    REQUIRE(score.size() == 6);
    CHECK(score[0] == Approx(effective({2, 1, 1})));  // bank twice (with and without the space), river, money
    CHECK(score[5] == Approx(1.0));
    CHECK(score[3] == 0.0f);  // no top examples
    auto bad = registry().create_analyzer("polysemantic");
    bad->configure(nlohmann::json::object());
    CHECK_THROWS_WITH(bad->begin(RunContext{}), Catch::Contains("give `label: KEY`"));
}

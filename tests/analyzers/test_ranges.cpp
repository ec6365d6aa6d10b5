// NeuronLens ranges: the `ranges` analyzer on planted concept neurons against brute force, its merge, its bad
// input, and the round trip into a later run (interventions `from:` a ranges result, op mask_ranges).
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/util/npy.h"
#include "tests/analyzers/synthetic.h"
#include "tests/support/cli.h"

using namespace nscope;
using namespace nscope::test;
namespace fs = std::filesystem;

namespace {

// 4 prompts of 3 tokens, one hook of 4 neurons. Concept A (prompts 0, 1) drives neuron 0, concept B (2, 3)
// neuron 1; neurons 2 and 3 carry small noise.
struct Planted {
    static constexpr size_t kPrompts = 4, kLen = 3, kWidth = 4;
    std::vector<float> acts = std::vector<float>(kPrompts * kLen * kWidth, 0.0f);
    std::vector<PromptInfo> infos;
    int64_t ids[kPrompts * kLen] = {};
    int64_t mask[kPrompts * kLen];

    Planted() {
        std::fill(std::begin(mask), std::end(mask), 1);
        const float a0[2][3] = {{5, 6, 7}, {4, 5, 6}}, b1[2][3] = {{-2, 3, 8}, {2, 2, 2}};
        for (size_t p = 0; p < kPrompts; ++p) {
            PromptInfo info;
            info.index = p;
            info.text = std::to_string(p);
            info.labels = {{"topic", p < 2 ? "A" : "B"}};
            info.tokens = {"a", "b", "c"};
            infos.push_back(std::move(info));
            for (size_t t = 0; t < kLen; ++t) {
                float* x = &acts[(p * kLen + t) * kWidth];
                x[0] = p < 2 ? a0[p][t] : 0.1f * static_cast<float>(t);
                x[1] = p >= 2 ? b1[p - 2][t] : -0.2f;
                x[2] = 0.01f * static_cast<float>(p + t);
                x[3] = -0.03f * static_cast<float>(t);
            }
        }
    }
    /// Prompts [first, last) as one batch.
    Batch batch(size_t first, size_t last) const {
        Batch b;
        b.rows = last - first;
        b.positions = kLen;
        b.input_ids = ids + first * kLen;
        b.attention_mask = mask + first * kLen;
        for (size_t p = first; p < last; ++p) b.prompts.push_back(&infos[p]);
        b.activations.push_back({"blocks.0.mlp.hook_post",
                                 {acts.data() + first * kLen * kWidth, DType::Float32,
                                  {static_cast<int64_t>(b.rows), static_cast<int64_t>(kLen), static_cast<int64_t>(kWidth)}}});
        return b;
    }
    /// mean and population std of neuron j over the tokens of prompts [first, last).
    std::pair<double, double> moments(size_t first, size_t last, size_t j) const {
        double s = 0, ss = 0, n = 0;
        for (size_t p = first; p < last; ++p)
            for (size_t t = 0; t < kLen; ++t) s += acts[(p * kLen + t) * kWidth + j], n += 1;
        const double mean = s / n;
        for (size_t p = first; p < last; ++p)
            for (size_t t = 0; t < kLen; ++t) ss += std::pow(acts[(p * kLen + t) * kWidth + j] - mean, 2);
        return {mean, std::sqrt(ss / n)};
    }
};

Result run_ranges(const Planted& d, const Params& params, bool in_halves) {
    auto a = registry().create_analyzer("ranges");
    a->configure(params);
    RunContext ctx;
    a->begin(ctx);
    if (!in_halves) {
        a->consume(d.batch(0, 4));
        return a->finish();
    }
    auto b = registry().create_analyzer("ranges");
    b->configure(params);
    b->begin(ctx);
    a->consume(d.batch(0, 1));
    a->consume(d.batch(2, 3));
    b->consume(d.batch(1, 2));
    b->consume(d.batch(3, 4));
    a->merge(*b);
    return a->finish();
}

}  // namespace

TEST_CASE("ranges: each concept's salient neuron and its range [mu - tau sigma, mu + tau sigma] match brute force",
          "[analyzers][ranges]") {
    const Planted d;
    const Params params = {{"label", "topic"}, {"salient", 0.25}, {"tau", 1.5}};
    for (bool halves : {false, true}) {
        INFO((halves ? "merged from two shards" : "one pass"));
        const Result r = run_ranges(d, params, halves);
        const auto& concepts = r.data["concepts"];
        REQUIRE(concepts.size() == 2);
        const std::pair<std::string, size_t> expect[] = {{"A", 0}, {"B", 1}};
        for (const auto& [name, neuron] : expect) {
            const size_t first = name == "A" ? 0 : 2;
            const auto& h = concepts[name]["hooks"]["blocks.0.mlp.hook_post"];
            REQUIRE(h["neurons"] == nlohmann::json({neuron}));
            const auto [mu, sigma] = d.moments(first, first + 2, neuron);
            CHECK(h["mu"][0].get<double>() == Approx(mu).epsilon(1e-9));
            CHECK(h["sigma"][0].get<double>() == Approx(sigma).epsilon(1e-9));
            CHECK(h["lo"][0].get<double>() == Approx(mu - 1.5 * sigma).epsilon(1e-9));
            CHECK(h["hi"][0].get<double>() == Approx(mu + 1.5 * sigma).epsilon(1e-9));
            CHECK(concepts[name]["prompts"] == 2);
            CHECK(concepts[name]["tokens"] == 6);
        }
        CHECK(r.data["tables"]["ranges"]["rows"].size() == 2);
    }
}

TEST_CASE("ranges: bad input is named (no label, too few prompts, an absent concept)", "[analyzers][ranges][errors]") {
    const Planted d;
    auto a = registry().create_analyzer("ranges");
    CHECK_THROWS_WITH(a->configure(nlohmann::json::object()), Catch::Contains("'label'") && Catch::Contains("required"));
    CHECK_THROWS_WITH(run_ranges(d, {{"label", "topic"}, {"min_prompts", 3}}, false),
                      Catch::Contains("concept 'A' has 2 prompt(s), fewer than min_prompts 3"));
    CHECK_THROWS_WITH(run_ranges(d, {{"label", "topic"}, {"concepts", {"A", "C"}}}, false),
                      Catch::Contains("concept 'C'") && Catch::Contains("has no prompt"));
    CHECK_THROWS_AS(run_ranges(d, {{"label", "genre"}}, false), InputError);
}

TEST_CASE("ranges round trip: a later run masks a concept's ranges (mask_ranges) or whole neurons, from the result file",
          "[analyzers][ranges][interventions]") {
    const std::string dir = temp_dir("ranges-run");
    const std::string model = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/models/gpt2";
    const std::string prompts = "prompts:\n"
                                "  - { ids: [[1, 17, 923, 345], [1, 17, 99, 345]], labels: { topic: a } }\n"
                                "  - { ids: [[5, 404, 7, 8], [5, 404, 9, 8]], labels: { topic: b } }\n";
    auto run = [&](const std::string& name, const std::string& rest) {
        const std::string recipe = dir + "/" + name + ".yaml";
        std::ofstream(recipe) << "name: " << name << "\nmodel: { path: " << model << " }\n" << prompts
                              << "hooks: [ \"blocks.*.mlp.hook_post\" ]\n" << rest;
        const auto r = run_nscope({"run", recipe, "--out", dir + "/runs"});
        INFO(r.err);
        REQUIRE(r.exit_code == 0);
        fs::path out;
        for (const auto& e : fs::directory_iterator(dir + "/runs/" + name)) out = e.path();
        return out;
    };
    const fs::path lens = run("lens", "analyses: [ { id: lens, use: ranges, label: topic, salient: 0.05, tau: 1 } ]\n"
                                      "exports: [ json, activations ]\n");
    const fs::path file = lens / "results/lens.json";
    const auto res = nlohmann::json::parse(std::ifstream(file))["data"];
    const fs::path masked = run("masked", "interventions: [ { from: " + file.string() + ", concept: a } ]\n"
                                          "exports: [ json, activations ]\n");
    const fs::path zeroed = run("zeroed", "interventions: [ { from: " + file.string() + ", concept: a, mode: neurons } ]\n"
                                          "exports: [ activations ]\n");
    const auto manifest = nlohmann::json::parse(std::ifstream(masked / "manifest.json"));
    REQUIRE(manifest["interventions"].size() == 2);  // one per hook
    CHECK(manifest["interventions"][0]["op"] == "mask_ranges");
    // Layer 0 sees clean inputs: each salient value inside its range becomes 0 (mask_ranges) or every salient
    // value becomes 0 (mode: neurons); the rest is untouched. Layer 1's inputs already carry layer 0's edit, so
    // there only the rule itself is checked: no salient value is left inside its range unless it is the 0 written.
    for (const char* hook : {"blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"}) {
        const bool first = std::string(hook) == "blocks.0.mlp.hook_post";
        const std::string file_name = std::string(hook) + ".npy";
        const auto clean = read_npy(lens / "activations" / file_name).to_f32();
        const auto edited = read_npy(masked / "activations" / file_name).to_f32();
        const auto zero = read_npy(zeroed / "activations" / file_name).to_f32();
        const auto& h = res["concepts"]["a"]["hooks"][hook];
        const auto neurons = h["neurons"].get<std::vector<int64_t>>();
        REQUIRE(neurons.size() == 13);  // ceil(0.05 x 256)
        size_t inside = 0;
        for (size_t i = 0; i < clean.size(); ++i) {
            const auto j = static_cast<int64_t>(i % 256);
            const auto k = std::find(neurons.begin(), neurons.end(), j);
            INFO(hook << " value " << i << " neuron " << j);
            if (k == neurons.end()) {
                if (first) CHECK(edited[i] == clean[i]);
                if (first) CHECK(zero[i] == clean[i]);
                continue;
            }
            const size_t n = static_cast<size_t>(k - neurons.begin());
            const float lo = h["lo"][n].get<float>(), hi = h["hi"][n].get<float>();
            CHECK(zero[i] == 0.0f);
            if (first) {
                const bool in_range = clean[i] >= lo && clean[i] <= hi;
                inside += in_range;
                CHECK(edited[i] == (in_range ? 0.0f : clean[i]));
            } else {
                CHECK((edited[i] == 0.0f || edited[i] < lo || edited[i] > hi));
            }
        }
        if (first) CHECK(inside > 0);
    }
}

TEST_CASE("interventions from a ranges result: a missing concept or a file that is no ranges result is bad input",
          "[recipe][ranges][errors]") {
    const std::string dir = temp_dir("ranges-bad");
    const std::string model = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/models/gpt2";
    std::ofstream(dir + "/lens.json") << R"({"data": {"concepts": {"river": {"hooks": {}}, "money": {"hooks": {}}}}})";
    std::ofstream(dir + "/other.json") << R"({"data": {"tables": {}}})";
    auto attempt = [&](const std::string& entry) {
        const std::string recipe = dir + "/r.yaml";
        std::ofstream(recipe) << "name: r\nmodel: { path: " << model << " }\nprompts: [ { ids: [[1, 2]] } ]\n"
                              << "interventions:\n  - " << entry << "\n";
        return run_nscope({"run", recipe, "--out", dir + "/runs", "--dry-run"});
    };
    auto r = attempt("{ from: lens.json, concept: rivr }");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("r.yaml:5:") && Catch::Contains("concept 'rivr' is not in") &&
                          Catch::Contains("did you mean 'river'"));
    r = attempt("{ from: other.json, concept: river }");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("is not a `ranges` result"));
    r = attempt("{ from: lens.json, concept: river, mode: all }");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("'mode' must be 'ranges'"));
    CHECK_FALSE(fs::exists(dir + "/runs"));
}

// The example recipes in configs/ and Lua scripts in scripts/lua/ run on the bundled model (models/kjv-tiny)
// and produce the results their documentation (docs/examples.md) describes.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "tests/support/cli.h"

namespace fs = std::filesystem;
using nscope::test::run_nscope;

namespace {
const std::string kSource = NSCOPE_SOURCE_DIR;

fs::path run_example(const std::string& recipe, const std::string& name) {
    const std::string out = nscope::test::temp_dir("example");
    const auto r = run_nscope({"run", kSource + "/configs/" + recipe, "--out", out});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::vector<fs::path> runs;
    for (const auto& e : fs::directory_iterator(fs::path(out) / name)) runs.push_back(e.path());
    REQUIRE(runs.size() == 1);
    std::ifstream in(runs[0] / "manifest.json");
    REQUIRE(nlohmann::json::parse(in)["status"] == "complete");
    return runs[0];
}

nlohmann::json result(const fs::path& run, const std::string& id) {
    std::ifstream in(run / "results" / (id + ".json"));
    return nlohmann::json::parse(in)["data"];
}
}  // namespace

TEST_CASE("example: quickstart finds live neurons with top contexts and writes the report and database",
          "[example]") {
    const fs::path run = run_example("quickstart.yaml", "quickstart");
    CHECK(fs::exists(run / "report.html"));
    CHECK(fs::exists(run / "results/neurons.sqlite"));
    const auto stats = result(run, "stats");
    CHECK(stats["summary"]["tokens"].get<int64_t>() > 40000);
    const auto top = result(run, "top");
    CHECK(top["tables"]["top_activations"]["rows"].size() > 1000);
    const auto dead = result(run, "dead");
    CHECK(dead["tables"]["layers"]["rows"].size() == 4);
}

TEST_CASE("example: bank-polysemy compares the three senses of 'bank' at that token, layer by layer",
          "[example]") {
    const fs::path run = run_example("bank-polysemy.yaml", "bank-polysemy");
    const auto senses = result(run, "senses");
    const auto& pairs = senses["tables"]["pairs"];
    // 4 river x 2 siege + 4 river x 2 money + 2 siege x 2 money = 20 cross-sense pairs, for 8 hooks
    CHECK(pairs["rows"].size() == 20 * 8);
    for (const auto& row : pairs["rows"]) {
        const double cos = row[7].get<double>();
        CHECK(cos <= 1.0 + 1e-6);
        CHECK(cos >= -1.0 - 1e-6);
    }
}

TEST_CASE("example: engineer-pairs pairs each occupation's man / woman sentences", "[example]") {
    const fs::path run = run_example("engineer-pairs.yaml", "engineer-pairs");
    const auto pairs = result(run, "pairs");
    CHECK(pairs["summary"]["pairs"] == 5);
    CHECK(pairs["tables"]["pairs"]["rows"].size() == 5 * 8);
}

TEST_CASE("example: neuron-ablation changes the next-token distribution of every ablated copy", "[example]") {
    const fs::path run = run_example("neuron-ablation.yaml", "neuron-ablation");
    const auto effect = result(run, "effect");
    const auto& rows = effect["tables"]["pair_effects"]["rows"];
    REQUIRE(rows.size() == 3);
    for (const auto& row : rows) CHECK(row[5].get<double>() > 0.01);  // KL(clean || ablated)
}

TEST_CASE("example Lua scripts run on the bundled model", "[example][lua]") {
    for (const std::string script : {"ablate_neuron.lua", "compare_prompts.lua", "neuron_search.lua"}) {
        DYNAMIC_SECTION(script) {
            const std::string out = nscope::test::temp_dir("example-lua");
            const auto r = run_nscope({"script", kSource + "/scripts/lua/" + script, "--out", out, "--",
                                       kSource + "/models/kjv-tiny"});
            INFO(r.out);
            INFO(r.err);
            CHECK(r.exit_code == 0);
        }
    }
}

TEST_CASE("example: a fine-tuning series of the bundled model and the drift script", "[example][lua][drift]") {
    const std::string out = nscope::test::temp_dir("finetune");
    auto r = run_nscope({"--threads", "2", "finetune", kSource + "/models/kjv-tiny", "--data",
                         kSource + "/tests/fixtures/text/genesis.txt", "--out", out, "--steps", "6",
                         "--checkpoint-every", "3", "--batch-size", "4", "--context", "64", "--lr", "1e-3",
                         "--warmup", "2"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    REQUIRE(fs::exists(fs::path(out) / "checkpoint-3/model.safetensors"));
    const std::string runs = nscope::test::temp_dir("drift");
    r = run_nscope({"script", kSource + "/scripts/lua/drift.lua", "--out", runs, "--", kSource + "/models/kjv-tiny",
                    out + "/checkpoint-3", out});
    INFO(r.out);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("DRIFT_OK") && Catch::Contains("blocks.3.mlp.hook_post   cosine"));
}

// End-to-end runs through the CLI: the run directory, oracle-exact captures, statistics that agree with
// the exported activations, bit-identical reruns, interruption, JSON logs.
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include "core/util/npy.h"
#include "core/util/files.h"
#include "nscope/io.h"
#include "tests/support/cli.h"

namespace fs = std::filesystem;
using namespace nscope;
using nscope::test::run_nscope;

namespace {

const std::string kGpt2 = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/models/gpt2";

// Write a recipe into a fresh folder; returns its path.
std::string recipe_file(const std::string& dir, const std::string& body) {
    const std::string p = dir + "/recipe.yaml";
    std::ofstream(p) << body;
    return p;
}

// The single run folder under out/<name>/.
fs::path only_run(const std::string& out, const std::string& name) {
    std::vector<fs::path> runs;
    for (const auto& e : fs::directory_iterator(fs::path(out) / name)) runs.push_back(e.path());
    REQUIRE(runs.size() == 1);
    return runs[0];
}

nlohmann::json read_json(const fs::path& p) {
    std::ifstream in(p);
    return nlohmann::json::parse(in);
}

std::string oracle_recipe(const std::string& name, const std::string& extra) {
    return "name: " + name + "\nmodel: { path: " + kGpt2 + " }\nprompts:\n  - { ids_file: " + kGpt2 +
           "/input_ids.npy, mask_file: " + kGpt2 + "/attention_mask.npy }\nbatch_size: 2\n" + extra;
}

}  // namespace

TEST_CASE("a recipe with ids_file / mask_file captures oracle-exact activations into the run directory", "[run]") {
    const std::string dir = nscope::test::temp_dir("run-oracle");
    const auto r = run_nscope({"run", recipe_file(dir, oracle_recipe("oracle", R"(
hooks: [ "blocks.*.hook_resid_post", "blocks.0.attn.hook_pattern", hook_logits ]
exports: [ activations, json ]
)")), "--out", dir + "/runs"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const fs::path run = only_run(dir + "/runs", "oracle");
    CHECK(r.out == run.string() + "\n");  // stdout: just the run directory

    const auto mask = read_npy(run / "activations/attention_mask.npy").to_i64();
    CHECK(mask == read_npy(kGpt2 + "/attention_mask.npy").to_i64());
    CHECK(read_npy(run / "activations/input_ids.npy").shape == std::vector<int64_t>{2, 7});
    const std::pair<const char*, const char*> pairs[] = {{"blocks.0.hook_resid_post", "layer0_output.npy"},
                                                         {"blocks.1.hook_resid_post", "layer1_output.npy"},
                                                         {"hook_logits", "logits.npy"}};
    for (const auto& [hook, oracle] : pairs) {
        INFO(hook);
        const NpyArray got = read_npy(run / "activations" / (std::string(hook) + ".npy"));
        const NpyArray want = read_npy(kGpt2 + "/" + oracle);
        REQUIRE(got.shape == want.shape);
        const auto g = got.to_f32(), w = want.to_f32();
        const int64_t inner = got.shape.back();
        double worst = 0;
        for (int64_t i = 0; i < got.numel(); ++i) {
            const int64_t pos = i / inner;  // [b*p] index
            if (mask[static_cast<size_t>(pos)]) worst = std::max(worst, std::abs(double(g[i]) - w[i]));
            else CHECK(g[i] == 0.0f);  // zero beyond the mask
        }
        CHECK(worst < 1e-4);
    }
    const auto manifest = read_json(run / "manifest.json");
    CHECK(manifest["status"] == "complete");
    CHECK(manifest["exit_status"] == 0);
    CHECK(manifest["models"][0]["files"][1]["sha256"].get<std::string>().size() == 64);
    CHECK(manifest["recipe"]["name"] == "oracle");
    const auto index = read_json(run / "activations/index.json");
    CHECK(index.dump().find("blocks.0.attn.hook_pattern") != std::string::npos);
}

TEST_CASE("stats and topk results agree with an independent computation on the exported activations", "[run]") {
    const std::string dir = nscope::test::temp_dir("run-stats");
    const auto r = run_nscope({"run", recipe_file(dir, oracle_recipe("stats", R"(
hooks: [ blocks.1.mlp.hook_post ]
analyses:
  - { id: stats, use: stats }
  - { id: top, use: topk, k: 3 }
exports: [ json, activations ]
)")), "--out", dir + "/runs"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const fs::path run = only_run(dir + "/runs", "stats");
    const NpyArray act = read_npy(run / "activations/blocks.1.mlp.hook_post.npy");
    const auto a = act.to_f32();
    const auto mask = read_npy(run / "activations/attention_mask.npy").to_i64();
    const int64_t n = act.shape[2];
    const auto mean = read_npy(run / "results/stats.blocks.1.mlp.hook_post.mean.npy").to_f32();
    const auto mx = read_npy(run / "results/stats.blocks.1.mlp.hook_post.max.npy").to_f32();
    const auto top = read_npy(run / "results/top.blocks.1.mlp.hook_post.top_values.npy").to_f32();
    REQUIRE(mean.size() == static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) {
        std::vector<double> vals;
        for (size_t pos = 0; pos < mask.size(); ++pos)
            if (mask[pos]) vals.push_back(a[pos * n + j]);
        double sum = 0;
        for (double v : vals) sum += v;
        std::sort(vals.rbegin(), vals.rend());
        CHECK(std::abs(mean[j] - sum / vals.size()) < 1e-5);
        CHECK(mx[j] == Approx(vals[0]).margin(1e-6));
        for (int k = 0; k < 3; ++k) CHECK(top[j * 3 + k] == Approx(vals[k]).margin(1e-6));
    }
}

TEST_CASE("nscope rerun reproduces every result bit for bit", "[run]") {
    const std::string dir = nscope::test::temp_dir("rerun");
    const auto r = run_nscope({"run", recipe_file(dir, oracle_recipe("rerun", R"(
hooks: [ "blocks.*.mlp.hook_post" ]
interventions: [ { hook: blocks.0.mlp.hook_post, neurons: [1, 2], op: scale, factor: 3 } ]
analyses: [ { id: stats, use: stats }, { id: top, use: topk, k: 2 } ]
exports: [ json, csv, activations ]
)")), "--out", dir + "/runs"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const fs::path run = only_run(dir + "/runs", "rerun");
    const auto again = run_nscope({"rerun", run.string()});
    INFO(again.err);
    CHECK(again.exit_code == 0);
    CHECK_THAT(again.out, Catch::Contains("0 different, 0 missing, 0 extra") && Catch::Contains("bit-identical: yes"));
    // Independently of rerun's own comparison: the second run folder holds the same files, byte for byte.
    std::vector<fs::path> runs;
    for (const auto& e : fs::directory_iterator(dir + "/runs/rerun")) runs.push_back(e.path());
    REQUIRE(runs.size() == 2);
    const fs::path other = runs[0] == run ? runs[1] : runs[0];
    auto files = [](const fs::path& root) {
        std::map<std::string, std::string> out;  // relative path -> bytes
        for (const char* sub : {"results", "activations"})
            for (const auto& e : fs::recursive_directory_iterator(root / sub))
                if (e.is_regular_file()) out[fs::relative(e.path(), root).string()] = nscope::test::read_file(e.path().string());
        return out;
    };
    const auto a = files(run), b = files(other);
    CHECK(a.size() >= 10);  // stats + topk json / npy / csv, captures, ids, mask, index
    REQUIRE(a.size() == b.size());
    for (const auto& [name, bytes] : a) {
        INFO(name);
        REQUIRE(b.count(name) == 1);
        CHECK(b.at(name) == bytes);
    }
}

TEST_CASE("SIGINT stops a run cleanly: manifest marked interrupted, no results, exit 3", "[run][interrupt]") {
    const std::string dir = nscope::test::temp_dir("interrupt");
    // 20000 one-token-batches of the tiny model: long enough to interrupt.
    std::vector<int64_t> ids(20000 * 4);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i % 997);
    write_file_atomic(dir + "/ids.npy", npy_encode(ids.data(), true, {20000, 4}));
    const std::string recipe = recipe_file(dir, "name: long\nmodel: { path: " + kGpt2 +
                                                    " }\nprompts: [ { ids_file: ids.npy } ]\nbatch_size: 1\n"
                                                    "hooks: [ blocks.0.mlp.hook_post ]\n"
                                                    "analyses: [ { id: stats, use: stats } ]\nexports: [ json ]\n");
    const auto proc = nscope::test::start_nscope({"run", recipe, "--out", dir + "/runs"});
    // Wait until the run folder exists and the forward has started.
    fs::path manifest;
    for (int i = 0; i < 600 && manifest.empty(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        if (fs::exists(dir + "/runs/long"))
            for (const auto& e : fs::directory_iterator(dir + "/runs/long"))
                if (fs::exists(e.path() / "log.jsonl") &&
                    nscope::test::read_file((e.path() / "log.jsonl").string()).find("model_loaded") != std::string::npos)
                    manifest = e.path() / "manifest.json";
    }
    REQUIRE_FALSE(manifest.empty());
    ::kill(proc.pid, SIGINT);
    const auto r = nscope::test::wait_nscope(proc);
    INFO(r.err);
    CHECK(r.exit_code == 3);
    const auto m = read_json(manifest);
    CHECK(m["status"] == "interrupted");
    CHECK_FALSE(fs::exists(manifest.parent_path() / "results"));
    CHECK_THAT(r.err, Catch::Contains("interrupted"));
}

TEST_CASE("nscope run --log-format json writes one JSON object per stderr line", "[run]") {
    const std::string dir = nscope::test::temp_dir("jsonlog");
    const auto r = run_nscope({"run", recipe_file(dir, oracle_recipe("jsonlog", "hooks: [ hook_embed ]\nexports: [ activations ]\n")),
                               "--out", dir + "/runs", "--log-format", "json"});
    REQUIRE(r.exit_code == 0);
    std::istringstream lines(r.err);
    size_t count = 0, progress = 0;
    for (std::string line; std::getline(lines, line);) {
        const auto j = nlohmann::json::parse(line);  // throws (fails the test) on a non-JSON line
        ++count;
        if (j.value("event", "") == "progress") ++progress;
    }
    CHECK(count >= 2);
    CHECK(progress >= 1);  // at least the final progress event
}

TEST_CASE("nscope run --dry-run validates and prints the plan without writing anything", "[run]") {
    const std::string dir = nscope::test::temp_dir("dry");
    const auto r = run_nscope({"run", recipe_file(dir, oracle_recipe("dry", R"(
hooks: [ "blocks.{0..1}.mlp.hook_post" ]
analyses: [ { id: s, use: stats }, { id: d, use: dead, input: s } ]
exports: [ json ]
)")), "--out", dir + "/runs", "--dry-run"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("prompts: 2 in 1 batches") && Catch::Contains("hooks captured: 2") &&
                          Catch::Contains("pass 1: s (stats)") && Catch::Contains("pass 2: d (dead)"));
    CHECK_FALSE(fs::exists(dir + "/runs"));
}

TEST_CASE("an ablation limited to one copy of a prompt shows up in next_token's KL, an untouched copy gives 0",
          "[run][next_token]") {
    const std::string dir = nscope::test::temp_dir("ablation");
    const auto r = run_nscope({"run", recipe_file(dir, "name: ablate\nmodel: { path: " + kGpt2 + R"( }
prompts:
  - ids: [[1, 17, 923, 345, 62], [1, 17, 923, 345, 62], [1, 17, 923, 345, 62]]
hooks: [ hook_logits ]   # next_token captures the logits for itself; the activations export needs them named
interventions:
  - { hook: "blocks.*.mlp.hook_post", op: zero, prompts: [1] }
analyses:
  - { id: next, use: next_token, k: 3, pairs: [[0, 1], [0, 2]] }
exports: [ json, activations ]
)"), "--out", dir + "/runs"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const fs::path run = only_run(dir + "/runs", "ablate");
    const auto res = read_json(run / "results/next.json")["data"];
    const auto& rows = res["tables"]["pair_effects"]["rows"];
    REQUIRE(rows.size() == 2);
    CHECK(rows[0][5].get<double>() > 1e-3);  // KL(clean || ablated)
    CHECK(rows[1][5].get<double>() == Approx(0.0).margin(1e-6));
    // Top-token probabilities equal the softmax of the captured logits at the last position.
    const NpyArray logits = read_npy(run / "activations/hook_logits.npy");
    const auto l = logits.to_f32();
    const int64_t vocab = logits.shape[2];
    const float* last = l.data() + 4 * vocab;  // prompt 0, position 4
    double mx = *std::max_element(last, last + vocab), z = 0;
    for (int64_t v = 0; v < vocab; ++v) z += std::exp(last[v] - mx);
    const auto& top = res["tables"]["top_tokens"]["rows"][0];  // prompt 0, rank 1
    const int64_t id = top[3];
    CHECK(top[5].get<double>() == Approx(std::exp(last[id] - mx) / z).epsilon(1e-5));
    CHECK(last[id] == mx);
}

TEST_CASE("an analyzer's required hooks reach only that analyzer, never the others or the exporters", "[run][hooks]") {
    const std::string dir = nscope::test::temp_dir("required");
    const auto r = run_nscope({"run", recipe_file(dir, "name: req\nmodel: { path: " + kGpt2 + R"( }
prompts: [ { ids: [[1, 17, 923, 345, 62], [1, 17, 923]] } ]
hooks: [ blocks.0.mlp.hook_post ]
analyses:
  - { id: s, use: stats }
  - { id: next, use: next_token, k: 3 }
exports: [ json, activations ]
)"), "--out", dir + "/runs"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const fs::path run = only_run(dir + "/runs", "req");
    const auto stats = read_json(run / "results/s.json")["data"];
    REQUIRE(stats["tables"]["layers"]["rows"].size() == 1);  // not hook_logits' 1000 "neurons" too
    CHECK(stats["tables"]["layers"]["rows"][0][0] == "blocks.0.mlp.hook_post");
    CHECK(stats["summary"]["neurons"] == 256);
    const auto next = read_json(run / "results/next.json")["data"];
    CHECK(next["tables"]["top_tokens"]["rows"].size() == 2 * 3);  // next_token still got its logits
    const auto index = read_json(run / "activations/index.json");
    CHECK(index["hooks"].size() == 1);
    CHECK(index["hooks"].contains("blocks.0.mlp.hook_post"));
    CHECK_FALSE(fs::exists(run / "activations/hook_logits.npy"));
}

TEST_CASE("a recipe with several models runs each into its own labelled subfolder", "[run][models]") {
    const std::string dir = nscope::test::temp_dir("models");
    const std::string llama = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/models/llama";
    const auto r = run_nscope({"run", recipe_file(dir, "name: two\nmodels:\n  - { path: " + kGpt2 +
                                                           ", label: gpt2 }\n  - { path: " + llama + R"(, label: llama }
prompts: [ { ids: [[1, 17, 923, 345], [1, 404, 7]] } ]
hooks: [ "blocks.*.mlp.hook_post" ]
analyses: [ { id: stats, use: stats } ]
exports: [ json, { use: sqlite, path: )" + dir + R"(/neurons.sqlite } ]
)"), "--out", dir + "/runs"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const fs::path run = only_run(dir + "/runs", "two");
    // One database row per model, each with its label (the first model's export already knows both).
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2((dir + "/neurons.sqlite").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "SELECT label FROM runs ORDER BY run_id", -1, &st, nullptr) == SQLITE_OK);
    std::vector<std::string> labels;
    while (sqlite3_step(st) == SQLITE_ROW) labels.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
    sqlite3_finalize(st);
    sqlite3_close(db);
    CHECK(labels == std::vector<std::string>{"gpt2", "llama"});
    const auto m = read_json(run / "manifest.json");
    REQUIRE(m["models"].size() == 2);
    CHECK(m["models"][0]["architecture"] == "GPT2LMHeadModel");
    CHECK(m["models"][1]["architecture"] == "LlamaForCausalLM");
    for (const char* label : {"gpt2", "llama"}) {
        const auto stats = read_json(run / label / "results/stats.json");
        CHECK(stats["data"]["summary"]["tokens"] == 7);
    }
}

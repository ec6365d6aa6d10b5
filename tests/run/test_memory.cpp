// Memory you can see: peak RSS per phase in the manifest, the estimate of `nscope info` per dtype and of a
// recipe's plan (--dry-run), the refusal of a recipe above --max-memory before any weight loads, and int8
// recipes and scripts end to end.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/util/memory.h"
#include "nscope/error.h"
#include "tests/support/cli.h"

namespace fs = std::filesystem;
using namespace nscope;
using nscope::test::run_nscope;

namespace {

const std::string kSource = NSCOPE_SOURCE_DIR;
const std::string kKjv = kSource + "/models/kjv-tiny";

std::string recipe_file(const std::string& dir, const std::string& body) {
    const std::string p = dir + "/recipe.yaml";
    std::ofstream(p) << body;
    return p;
}

std::string kjv_recipe(const std::string& name, const std::string& extra) {
    return "name: " + name + "\nmodel: { path: " + kKjv + " }\nprompts:\n  - file: " + kSource +
           "/tests/fixtures/text/genesis.txt\nmax_tokens: 32\nbatch_size: 16\n" + extra;
}

nlohmann::json manifest_of(const std::string& out, const std::string& name) {
    std::vector<fs::path> runs;
    for (const auto& e : fs::directory_iterator(fs::path(out) / name)) runs.push_back(e.path());
    REQUIRE(runs.size() == 1);
    std::ifstream in(runs[0] / "manifest.json");
    return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("byte sizes: plain bytes and K/M/G/T suffixes (powers of 1024), bad sizes are input errors", "[memory]") {
    CHECK(parse_byte_size("1048576", "--max-memory") == 1048576);
    CHECK(parse_byte_size("1MB", "--max-memory") == 1048576);
    CHECK(parse_byte_size("512k", "--max-memory") == 512 * 1024);
    CHECK(parse_byte_size("1.5GiB", "--max-memory") == 1610612736);
    CHECK(parse_byte_size("2 G", "--max-memory") == 2147483648);
    CHECK(parse_byte_size("3T", "x") == 3298534883328);
    CHECK_THROWS_WITH(parse_byte_size("lots", "--max-memory"), Catch::Contains("--max-memory: 'lots' is not a size"));
    CHECK_THROWS_AS(parse_byte_size("5Q", "x"), InputError);
    CHECK_THROWS_AS(parse_byte_size("1MBB", "x"), InputError);
    CHECK_THROWS_AS(parse_byte_size("0", "x"), InputError);
    CHECK_THROWS_AS(parse_byte_size("1.2.3M", "x"), InputError);
    CHECK(human_bytes(1536) == "1.5 KiB");
}

TEST_CASE("peak RSS: the kernel's high-water mark, resettable per phase", "[memory]") {
    const uint64_t before = peak_rss_bytes();
    CHECK(before > 0);
    CHECK(current_rss_bytes() > 0);
    CHECK(mem_available_bytes() > 0);
    {
        std::vector<char> big(96u << 20, 1);  // touched: resident
        CHECK(peak_rss_bytes() >= current_rss_bytes());
        CHECK(peak_rss_bytes() >= (96u << 20));
    }
    if (reset_peak_rss()) {  // allowed on this kernel: the peak forgets the freed 96 MiB
#ifndef __SANITIZE_ADDRESS__
        CHECK(peak_rss_bytes() + (48u << 20) < before + (96u << 20));
#else
        // ASan keeps freed blocks in its quarantine, still resident: only the reset itself is checked.
        CHECK(peak_rss_bytes() >= current_rss_bytes());
#endif
    } else {
        WARN("/proc/self/clear_refs is not writable here: the manifest records running maxima");
    }
}

TEST_CASE("nscope info estimates weights + forward + captures per dtype at --batch x --tokens", "[memory][cli]") {
    auto r = run_nscope({"info", kKjv, "--json", "--batch", "4", "--tokens", "32", "--hooks", "blocks.*.mlp.hook_post"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const auto j = nlohmann::json::parse(r.out);
    const auto& est = j["memory_estimate"];
    CHECK(est["batch"] == 4);
    CHECK(est["tokens"] == 32);
    const int64_t params = j["n_params"], linear = j["n_linear_params"];
    CHECK(linear == 4 * (256 * 768 + 256 * 256 + 2 * 256 * 1024));
    CHECK(est["float32"]["weights_bytes"] == params * 4);
    CHECK(est["bfloat16"]["weights_bytes"] == params * 2);
    // int8: one byte per linear weight, float32 for the rest, plus one matrix's float32 temporary.
    CHECK(est["int8"]["weights_bytes"] == linear + (params - linear) * 4 + 256 * 1024 * 4);
    // 4 layers x [4, 32, 1024] float32 captures, the same in every dtype.
    for (const char* d : {"float32", "bfloat16", "int8"}) {
        INFO(d);
        CHECK(est[d]["captures_bytes"] == 4 * 4 * 32 * 1024 * 4);
        CHECK(est[d]["hooks"] == 4);
        CHECK(est[d]["total_bytes"].get<uint64_t>() ==
              est[d]["weights_bytes"].get<uint64_t>() + est[d]["forward_bytes"].get<uint64_t>() +
                  est[d]["captures_bytes"].get<uint64_t>() + est[d]["runtime_bytes"].get<uint64_t>());
    }
    CHECK(est["bfloat16"]["forward_bytes"].get<uint64_t>() * 2 == est["float32"]["forward_bytes"].get<uint64_t>());
    // The forward grows with the batch: twice the batch, more than 1.9x the working set.
    r = run_nscope({"info", kKjv, "--json", "--batch", "8", "--tokens", "32"});
    REQUIRE(r.exit_code == 0);
    const auto j8 = nlohmann::json::parse(r.out);
    CHECK(j8["memory_estimate"]["float32"]["forward_bytes"].get<double>() >
          1.9 * est["float32"]["forward_bytes"].get<double>());
    CHECK(j8["memory_estimate"]["hooks"] == "*");
    // The human table lists the three dtypes.
    r = run_nscope({"info", kKjv, "--dtype", "int8", "--batch", "2", "--tokens", "16"});
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("estimated peak at batch 2 x 16 tokens") && Catch::Contains("int8 linear weights") &&
                          Catch::Contains("float32") && Catch::Contains("bfloat16") && Catch::Contains("runtime"));
    r = run_nscope({"info", kKjv, "--hooks", "blocks.*.mlp.hook_psot"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("did you mean"));
}

TEST_CASE("a recipe above --max-memory is refused at plan time with the estimate and the knobs, and --dry-run prints it",
          "[memory][run]") {
    const std::string dir = nscope::test::temp_dir("mem-refuse");
    const std::string recipe = recipe_file(dir, kjv_recipe("refuse", "hooks: [ blocks.*.mlp.hook_post, blocks.*.attn.hook_pattern ]\n"));
    auto r = run_nscope({"run", recipe, "--out", dir + "/runs", "--max-memory", "1MB"});
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("is estimated at weights") && Catch::Contains("+ captures") &&
                          Catch::Contains("above the memory limit of 1.0 MiB (--max-memory)") &&
                          Catch::Contains("lower batch_size (now 16") && Catch::Contains("capture fewer hooks") &&
                          Catch::Contains("dtype: int8") && Catch::Contains("recipe.yaml:2"));
    CHECK_FALSE(fs::exists(dir + "/runs"));  // refused before the run directory (and any weight)
    // --dry-run prints the estimate (and refuses the same way under a tiny limit).
    r = run_nscope({"run", recipe, "--dry-run"});
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("memory estimate at 16 x 32 tokens: weights") && Catch::Contains("(8 hooks)"));
    r = run_nscope({"run", recipe, "--dry-run", "--max-memory", "64k"});
    CHECK(r.exit_code == 2);
    r = run_nscope({"run", recipe, "--max-memory", "a lot"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("--max-memory: 'a lot' is not a size"));
}

TEST_CASE("an int8 recipe runs and its manifest records dtype, the estimate and peak RSS per phase", "[memory][run][int8]") {
    const std::string dir = nscope::test::temp_dir("mem-int8");
    for (const std::string dtype : {"float32", "int8"}) {
        const std::string name = "kjv-" + dtype;
        const std::string recipe = recipe_file(dir, kjv_recipe(name, "dtype: " + dtype + R"(
hooks: [ blocks.*.mlp.hook_post ]
interventions:
  - { hook: blocks.1.mlp.hook_post, neurons: [3], op: zero }
analyses:
  - { use: stats }
exports: [ json ]
)"));
        const auto r = run_nscope({"--threads", "2", "run", recipe, "--out", dir + "/runs"});
        INFO(dtype << ": " << r.err);
        REQUIRE(r.exit_code == 0);
        const auto m = manifest_of(dir + "/runs", name);
        const auto& model = m["models"][0];
        CHECK(model["dtype"] == dtype);
        const auto& mem = model["memory"];
        for (const char* phase : {"load", "pass1", "finish1", "export"}) {
            INFO(phase);
            CHECK(mem[std::string(phase) + "_peak_rss_bytes"].get<uint64_t>() > (16u << 20));
        }
        CHECK((mem["peak_rss_scope"] == "phase" || mem["peak_rss_scope"] == "process"));
        CHECK(mem["estimate"]["batch"] == 16);
        CHECK(mem["estimate"]["tokens"] == 32);
        CHECK(mem["estimate"]["hooks"] == 4);
        // The estimate covers what was measured (it includes the process before loading).
        uint64_t peak = 0;
        for (const char* phase : {"load", "pass1", "finish1", "export"})
            peak = std::max(peak, mem[std::string(phase) + "_peak_rss_bytes"].get<uint64_t>());
        CHECK(mem["estimate"]["total_bytes"].get<uint64_t>() * 2 > peak);
    }
}

TEST_CASE("recipes and scripts take dtype int8, other dtypes are refused with a suggestion", "[memory][int8]") {
    const std::string dir = nscope::test::temp_dir("mem-dtype");
    auto r = run_nscope({"run", recipe_file(dir, kjv_recipe("bad", "dtype: int4\n")), "--dry-run"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("dtype must be float32, bfloat16 or int8") && Catch::Contains("did you mean 'int8'"));
    r = run_nscope({"run", recipe_file(dir, "name: m\nmodel: { path: " + kKjv + ", dtype: int8 }\nprompts: [ \"In the beginning\" ]\n"),
                    "--dry-run"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains(", int8, 4 layers"));
    const std::string script = dir + "/int8.lua";
    std::ofstream(script) << "local m = nscope.load('" << kKjv << "', {dtype = 'int8'})\n"
                          << "assert(m.info.dtype == 'int8', m.info.dtype)\n"
                          << "assert(m.info.n_linear_params == 3145728)\n"
                          << "print(tostring(m))\n";
    r = run_nscope({"script", script});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("GPT2LMHeadModel, int8)"));
}

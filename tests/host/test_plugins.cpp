// The plugin host: discovery, the built-ins, and refusal of foreign or mismatched files.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "core/plugin/call_plugin.h"
#include "core/plugin/registry.h"
#include "nscope/analyzer.h"
#include "nscope/version.h"
#include "tests/support/cli.h"

using namespace nscope;
using nscope::test::run_nscope;

namespace {
const std::string kBad = NSCOPE_BAD_PLUGIN_DIR;
}

TEST_CASE("nscope plugins lists the built-in plugins with kind, version and path", "[plugins]") {
    const auto r = run_nscope({"plugins"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("json") && Catch::Contains("exporter") && Catch::Contains("libnscope_export_json.so"));
}

TEST_CASE("nscope --version reports the build tag and the BLAS in use", "[plugins]") {
    const auto r = run_nscope({"--version"});
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("nscope 0.1.0") && Catch::Contains("cxx11abi=1;torch=") &&
                          Catch::Contains("BLAS: "));
}

TEST_CASE("a shared library without the entry point is refused with exit 2", "[plugins][refusal]") {
    const auto r = run_nscope({"plugins", "--plugin-path", kBad + "/not_a_plugin"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("libnscope_test_not_a_plugin.so") &&
                          Catch::Contains("not a NeuronScope plugin: it exports no `nscope_plugin_entry`"));
    CHECK_THAT(r.out, Catch::Contains("json"));  // the good plugins still load
}

TEST_CASE("a plugin built for another SDK ABI is refused and told to rebuild", "[plugins][refusal]") {
    const auto r = run_nscope({"plugins", "--plugin-path", kBad + "/wrong_abi"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("built for NeuronScope SDK ABI version 999") &&
                          Catch::Contains("uses ABI version " + std::to_string(NSCOPE_SDK_ABI_VERSION)) && Catch::Contains("Rebuild the plugin"));
    CHECK_THAT(r.out, !Catch::Contains("wrong-abi"));
}

TEST_CASE("a plugin built with another compiler or libstdc++ ABI is refused", "[plugins][refusal]") {
    const auto r = run_nscope({"plugins", "--plugin-path", kBad + "/wrong_tag"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("built with 'clang-9;cxx11abi=0'") && Catch::Contains("same compiler"));
}

TEST_CASE("a text file named .so is refused without a crash", "[plugins][refusal]") {
    const std::string dir = nscope::test::temp_dir("textso");
    std::ofstream(dir + "/libfake.so") << "this is not an ELF file\n";
    const auto r = run_nscope({"plugins", "--plugin-path", dir});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("libfake.so") && Catch::Contains("not a loadable shared library"));
}

TEST_CASE("two plugins with the same id: the second is refused naming the first", "[plugins][refusal]") {
    const auto r = run_nscope({"plugins", "--plugin-path", kBad + "/duplicate"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("duplicate plugin id 'json'") && Catch::Contains("already loaded from"));
}

TEST_CASE("NSCOPE_PLUGIN_PATH is searched like --plugin-path", "[plugins]") {
    const auto r = run_nscope({"plugins"}, {"NSCOPE_PLUGIN_PATH=" + kBad + "/wrong_abi"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("SDK ABI version 999"));
}

TEST_CASE("an unknown plugin id names the available ones and a near match", "[plugins]") {
    PluginRegistry reg;
    reg.scan(PluginRegistry::search_path({}));
    CHECK_THROWS_WITH(reg.create_exporter("jsn"), Catch::Contains("unknown exporter plugin 'jsn'") &&
                                                      Catch::Contains("did you mean 'json'"));
}

TEST_CASE("an out-of-tree plugin built against the installed SDK loads and runs", "[plugins][oot]") {
    const std::string dir = std::string(NSCOPE_OOT_DIR) + "/build";
    REQUIRE(std::filesystem::exists(dir + "/libtoken_count.so"));

    const auto r = run_nscope({"plugins", "--plugin-path", dir});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("token-count") && Catch::Contains("analyzer"));

    PluginRegistry reg;
    reg.scan({dir});
    auto a = reg.create_analyzer("token-count");
    auto b = reg.create_analyzer("token-count");
    a->configure({{"scale", 2.0}});
    b->configure({{"scale", 2.0}});
    RunContext ctx;
    a->begin(ctx);
    b->begin(ctx);
    // Two rows, three positions, the second row padded after two tokens; a [2,3,2] activation of ones.
    const int64_t ids[6] = {1, 2, 3, 4, 5, 0};
    const int64_t mask[6] = {1, 1, 1, 1, 1, 0};
    std::vector<float> ones(12, 1.0f);
    Batch batch;
    batch.rows = 2;
    batch.positions = 3;
    batch.input_ids = ids;
    batch.attention_mask = mask;
    batch.activations.push_back({"blocks.0.mlp.hook_post", {ones.data(), DType::Float32, {2, 3, 2}}});
    a->consume(batch);
    b->consume(batch);
    REQUIRE(a->mergeable());
    a->merge(*b);
    const Result res = a->finish();
    CHECK(res.data["tokens"].get<double>() == 20.0);  // (5 + 5) tokens x scale 2
    CHECK(res.data["sums"]["blocks.0.mlp.hook_post"].get<double>() == 24.0);
}

TEST_CASE("call_plugin keeps an error's kind and names the plugin instance and the stage", "[plugins][errors]") {
    const std::string role = analysis_role("top", "topk");
    CHECK(role == "analysis 'top' (topk)");
    CHECK(analysis_role("stats", "stats") == "analysis 'stats'");
    CHECK(call_plugin(role, "finish", [] { return 7; }) == 7);
    CHECK_THROWS_AS(call_plugin(role, "consume", []() -> int { throw InputError("k must be >= 1"); }), InputError);
    CHECK_THROWS_WITH(call_plugin(role, "consume", []() -> int { throw InputError("k must be >= 1"); }),
                      "analysis 'top' (topk) in consume: k must be >= 1");
    CHECK_THROWS_AS(call_plugin(export_role("report"), "write", [] { throw RuntimeError("disk full"); }), RuntimeError);
    CHECK_THROWS_WITH(call_plugin(export_role("report"), "write", [] { throw RuntimeError("disk full"); }),
                      "export 'report' in write: disk full");
    // A plain std::exception is a runtime failure (exit 3), not bad input.
    try {
        call_plugin(role, "begin", [] { throw std::out_of_range("vector::at"); });
        FAIL("no exception");
    } catch (const InputError&) {
        FAIL("became an InputError");
    } catch (const RuntimeError& e) {
        CHECK(std::string(e.what()) == "analysis 'top' (topk) in begin: vector::at");
        CHECK(e.exit_code() == 3);
    }
    CHECK_THROWS_WITH(call_plugin(role, "merge", [] { throw std::bad_alloc(); }), "analysis 'top' (topk) in merge: out of memory");
    CHECK_THROWS_WITH(call_plugin(role, "merge", [] { throw 42; }), Catch::Contains("not a std::exception"));
}

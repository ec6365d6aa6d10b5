// The `activations` exporter: streamed raw captures read back with read_npy equal the inputs, padded to
// the run's longest prompt with zeros beyond the mask.
#include <catch2/catch.hpp>

#include <filesystem>

#include "core/util/files.h"
#include "core/util/npy.h"
#include "tests/analyzers/synthetic.h"
#include "tests/support/cli.h"

using namespace nscope;
using namespace nscope::test;

namespace {

const std::string kMlp = "blocks.0.mlp.hook_post", kZ = "blocks.1.attn.hook_z", kPat = "blocks.1.attn.hook_pattern";

/// Pattern value of (prompt, head, q, k) for real positions.
float pattern_value(size_t prompt, int64_t h, size_t q, size_t k) {
    return static_cast<float>(prompt) + 0.5f * static_cast<float>(h) + 0.01f * static_cast<float>(q * 10 + k);
}

void export_run(const SynthCorpus& c, const std::string& dir, bool prompts_known) {
    auto e = registry().create_exporter("activations");
    e->configure(nullptr);
    REQUIRE(e->wants_activations());
    RunContext ctx = c.run_context(dir);
    if (!prompts_known) ctx.prompts.clear();
    e->begin(ctx);
    for (const auto& sb : c.batches(4)) {
        Batch b = sb.view();
        const size_t P = sb.positions;
        std::vector<float> pat(sb.rows * 2 * P * P, 0.0f);
        for (size_t r = 0; r < sb.rows; ++r)
            for (int64_t h = 0; h < 2; ++h)
                for (size_t q = 0; q < P; ++q)
                    for (size_t k = 0; k < P; ++k)
                        if (sb.view().valid(r, q) && sb.view().valid(r, k))
                            pat[((r * 2 + h) * P + q) * P + k] = pattern_value(sb.prompts[r]->index, h, q, k);
        b.activations.push_back({kPat, {pat.data(), DType::Float32, {static_cast<int64_t>(sb.rows), 2,
                                                                     static_cast<int64_t>(P), static_cast<int64_t>(P)}}});
        e->consume(b);
    }
    ExportContext ectx;
    ectx.run_dir = dir;
    ectx.run = &ctx;
    ectx.host = &host_services();
    e->write(ectx);
}

void check_run(const SynthCorpus& c, const std::string& dir) {
    const size_t n = c.prompts.size();
    int64_t P = 0;
    for (const auto& ids : c.ids) P = std::max<int64_t>(P, static_cast<int64_t>(ids.size()));
    const auto mlp = read_npy(dir + "/activations/" + kMlp + ".npy");
    CHECK(mlp.descr == "<f4");
    CHECK(mlp.shape == std::vector<int64_t>{static_cast<int64_t>(n), P, 5});
    const auto z = read_npy(dir + "/activations/" + kZ + ".npy");
    CHECK(z.shape == std::vector<int64_t>{static_cast<int64_t>(n), P, 2, 3});
    const auto pat = read_npy(dir + "/activations/" + kPat + ".npy");
    CHECK(pat.shape == std::vector<int64_t>{static_cast<int64_t>(n), 2, P, P});
    const auto ids = read_npy(dir + "/activations/input_ids.npy").to_i64();
    const auto mask = read_npy(dir + "/activations/attention_mask.npy").to_i64();
    const auto m = mlp.to_f32(), zz = z.to_f32(), pp = pat.to_f32();
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
        const size_t len = c.ids[i].size();
        for (int64_t t = 0; t < P; ++t) {
            const bool real = static_cast<size_t>(t) < len;
            bad += mask[i * P + t] != (real ? 1 : 0);
            bad += ids[i * P + t] != (real ? c.ids[i][t] : 0);
            for (int64_t j = 0; j < 5; ++j) bad += m[(i * P + t) * 5 + j] != (real ? c.at(kMlp, i, t, j) : 0.0f);
            for (int64_t j = 0; j < 6; ++j) bad += zz[(i * P + t) * 6 + j] != (real ? c.at(kZ, i, t, j) : 0.0f);
            for (int64_t h = 0; h < 2; ++h)
                for (int64_t k = 0; k < P; ++k) {
                    const bool both = real && static_cast<size_t>(k) < len;
                    bad += pp[((i * 2 + h) * P + t) * P + k] != (both ? pattern_value(i, h, t, k) : 0.0f);
                }
        }
    }
    CHECK(bad == 0);
    const auto index = nlohmann::json::parse(read_file(dir + "/activations/index.json"));
    CHECK(index["prompts"] == n);
    CHECK(index["positions"] == P);
    CHECK(index["hooks"][kMlp]["file"] == kMlp + ".npy");
    CHECK(index["hooks"][kZ]["shape"] == nlohmann::json{n, P, 2, 3});
    CHECK(index["hooks"][kMlp]["dtype"] == "float32");
    CHECK(index["input_ids"]["dtype"] == "int64");
    // Nothing half-written is left behind.
    for (const auto& f : std::filesystem::directory_iterator(dir + "/activations"))
        CHECK(f.path().filename().string().find("partial") == std::string::npos);
}

}  // namespace

TEST_CASE("activations exporter: streamed captures read back equal the inputs, zero beyond the mask",
          "[exporters][activations]") {
    const SynthCorpus c({{kMlp, {5}}, {kZ, {2, 3}}}, 11, 7, 20, 5);
    const std::string dir = temp_dir("act_known");
    export_run(c, dir, true);
    check_run(c, dir);
}

TEST_CASE("activations exporter: without prompt lengths up front it re-pads at write()", "[exporters][activations]") {
    const SynthCorpus c({{kMlp, {5}}, {kZ, {2, 3}}}, 9, 8, 20, 6);
    const std::string dir = temp_dir("act_unknown");
    export_run(c, dir, false);
    check_run(c, dir);
}

TEST_CASE("activations exporter: unknown parameters are refused", "[exporters][activations]") {
    auto e = registry().create_exporter("activations");
    CHECK_THROWS_WITH(e->configure({{"hook", {"*"}}}), Catch::Contains("unknown parameter 'hook'") &&
                                                           Catch::Contains("did you mean 'hooks'"));
}

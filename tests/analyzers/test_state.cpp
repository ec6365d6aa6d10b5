// Saved analyzer state (nscope/state.h, Analyzer::save_state / load_state): a saved and reloaded analyzer
// continues exactly where it stopped, saved shards merge like live ones, and a damaged, truncated or foreign
// state file is an InputError, never a crash or a silently wrong result.
#include <catch2/catch.hpp>

#include "core/run/study.h"
#include "nscope/state.h"
#include "tests/analyzers/synthetic.h"

using namespace nscope;
using namespace nscope::test;

namespace {

SynthCorpus corpus() {
    return SynthCorpus({{"blocks.0.mlp.hook_post", {6}}, {"blocks.0.attn.hook_z", {2, 2}}, {"blocks.2.mlp.hook_post", {33}}},
                       21, 8, 9, 777);
}

struct Case {
    std::string use;
    Params params;
};

std::vector<Case> cases() {
    return {{"stats", {{"neuron_table", true}}},
            {"dead", {{"epsilon", 0.1}}},
            // A small n-gram table so that evictions (and the inexact marks) are part of the saved state.
            {"topk", {{"k", 3}, {"context", 2}, {"ngram", 3}, {"max_ngrams", 24},
                      {"groups", {{"g", {"blocks.2.mlp.hook_post", {1, 5, 7}}}}}}},
            {"heatmap", {{"prompts", {1, 9, 17}}, {"top_n", 4}}},
            // The streaming parts of the geometry analyzers: covariances and point samples (a small cap, so
            // that the sample is full and merging has to choose).
            {"pca", {{"k", 2}, {"points", 40}}},
            {"cka", {}},
            {"cluster", {{"threshold", 0.6}}},
            {"cluster", {{"method", "kmeans"}, {"k", 2}, {"points", 30}, {"n_init", 2}}}};
}

std::unique_ptr<Analyzer> fresh(const Case& c, const SynthCorpus& corp) {
    auto a = registry().create_analyzer(c.use);
    a->configure(c.params);
    a->begin(corp.run_context());
    return a;
}

std::string payload(const Analyzer& a) {
    StateWriter w;
    a.save_state(w);
    return w.take();
}

void load(Analyzer& a, const std::string& bytes) {
    StateReader r(bytes, "test");
    a.load_state(r);
    r.expect_end();
}

void check_same(const Result& a, const Result& b) {
    CHECK(a.data == b.data);
    REQUIRE(a.arrays.size() == b.arrays.size());
    for (const auto& [name, arr] : a.arrays) {
        INFO(name);
        CHECK(arr.f32 == b.arrays.at(name).f32);
        CHECK(arr.i64 == b.arrays.at(name).i64);
    }
}

}  // namespace

TEST_CASE("saved state: an analyzer saved mid-run and reloaded into a fresh instance finishes bit-identically",
          "[analyzers][state]") {
    const auto corp = corpus();
    const auto all = corp.batches(4);
    for (const auto& c : cases()) {
        INFO(c.use);
        auto whole = run_analyzer(c.use, c.params, corp, all);
        REQUIRE(whole->state_version() > 0);
        auto first = fresh(c, corp);
        for (size_t b = 0; b < all.size() / 2; ++b) first->consume(all[b].view());
        auto resumed = fresh(c, corp);
        load(*resumed, payload(*first));
        for (size_t b = all.size() / 2; b < all.size(); ++b) resumed->consume(all[b].view());
        check_same(whole->finish(), resumed->finish());
    }
}

TEST_CASE("saved state: shards saved to bytes merge exactly as the live instances do", "[analyzers][state][merge]") {
    const auto corp = corpus();
    for (const auto& c : cases()) {
        INFO(c.use);
        auto left = run_analyzer(c.use, c.params, corp, corp.batches(4, 0, 12));
        auto right = run_analyzer(c.use, c.params, corp, corp.batches(4, 12));
        auto left_loaded = fresh(c, corp), right_loaded = fresh(c, corp);
        load(*left_loaded, payload(*left));
        load(*right_loaded, payload(*right));
        left->merge(*right);
        left_loaded->merge(*right_loaded);
        check_same(left->finish(), left_loaded->finish());
    }
}

TEST_CASE("saved state: every truncation of a payload is an InputError, never a crash", "[analyzers][state]") {
    const auto corp = corpus();
    for (const auto& c : cases()) {
        INFO(c.use);
        auto a = run_analyzer(c.use, c.params, corp, corp.batches(5));
        const std::string bytes = payload(*a);
        const size_t step = std::max<size_t>(1, bytes.size() / 400);
        for (size_t n = 0; n < bytes.size(); n += step) {
            INFO("first " << n << " of " << bytes.size() << " bytes");
            auto b = fresh(c, corp);
            CHECK_THROWS_AS(load(*b, bytes.substr(0, n)), InputError);
        }
        auto b = fresh(c, corp);
        CHECK_THROWS_WITH(load(*b, bytes + "x"), Catch::Contains("unread bytes"));
    }
}

TEST_CASE("saved state: the envelope refuses damage, another analyzer, version or configuration",
          "[analyzers][state]") {
    const auto corp = corpus();
    AnalysisSpec spec{"s", "stats", {}, {{"threshold", 0.5}}, {"recipe.yaml:3:5"}};
    auto a = run_analyzer("stats", spec.params, corp, corp.batches(4));
    const std::string blob = save_analysis_state(*a, spec, "stats@1.0.0");
    auto load_into_fresh = [&](const std::string& bytes, const AnalysisSpec& as, const std::string& plugin) {
        auto b = registry().create_analyzer("stats");
        b->configure(as.params);
        b->begin(corp.run_context());
        load_analysis_state(*b, as, plugin, bytes, "state/s.bin");
        return b;
    };
    CHECK_NOTHROW(load_into_fresh(blob, spec, "stats@1.0.0"));

    std::string flipped = blob;
    flipped[flipped.size() / 2] ^= 0x10;
    CHECK_THROWS_WITH(load_into_fresh(flipped, spec, "stats@1.0.0"),
                      Catch::Contains("state/s.bin") && Catch::Contains("checksum mismatch"));
    CHECK_THROWS_WITH(load_into_fresh(blob.substr(0, blob.size() - 9), spec, "stats@1.0.0"), Catch::Contains("truncated"));
    CHECK_THROWS_WITH(load_into_fresh("PK\3\4 a zip file", spec, "stats@1.0.0"), Catch::Contains("bad magic"));
    CHECK_THROWS_WITH(load_into_fresh(blob, spec, "stats@2.0.0"), Catch::Contains("a state of stats@1.0.0"));
    AnalysisSpec other = spec;
    other.params["threshold"] = 0.25;
    CHECK_THROWS_WITH(load_into_fresh(blob, other, "stats@1.0.0"), Catch::Contains("other parameters"));
    const std::string newer = seal_state("stats@1.0.0", 99, analysis_fingerprint(spec), "");
    CHECK_THROWS_WITH(load_into_fresh(newer, spec, "stats@1.0.0"), Catch::Contains("layout version 99"));
    for (size_t n = 0; n < blob.size(); n += 3) CHECK_THROWS_AS(open_state(blob.substr(0, n), "x"), InputError);
}

TEST_CASE("saved state: envelope format 1 (byte-wise checksum) is still read, other formats are refused",
          "[analyzers][state]") {
    const std::string payload = "some payload bytes, not a multiple of 32 long";
    auto envelope = [&](uint32_t format, uint64_t sum) {
        StateWriter w;
        for (char c : std::string("NSCOPEST")) w.pod(c);
        w.u32(format);
        w.str("stats@1.0.0");
        w.u32(1);
        w.str("fp");
        w.str(payload);
        w.u64(sum);
        return w.take();
    };
    const std::string v1_bytes = envelope(1, state_detail::checksum_v1(payload));  // the envelope views these
    const StateEnvelope v1 = open_state(v1_bytes, "v1.bin");
    CHECK(v1.payload == payload);
    CHECK(v1.analyzer == "stats@1.0.0");
    // Format 2's checksum under a format 1 header (and the reverse) is damage.
    CHECK_THROWS_WITH(open_state(envelope(1, state_detail::checksum(payload)), "x"), Catch::Contains("checksum mismatch"));
    CHECK_THROWS_WITH(open_state(envelope(2, state_detail::checksum_v1(payload)), "x"), Catch::Contains("checksum mismatch"));
    CHECK_THROWS_WITH(open_state(envelope(3, 0), "x"), Catch::Contains("envelope format 3"));
    // A swap of two 8-byte words changes format 2's checksum.
    std::string swapped = payload;
    std::swap_ranges(swapped.begin(), swapped.begin() + 8, swapped.begin() + 8);
    CHECK(state_detail::checksum(swapped) != state_detail::checksum(payload));
}

TEST_CASE("saved state: a topk state of layout version 1 (before the compact hit lists) is refused by name",
          "[analyzers][state]") {
    const auto corp = corpus();
    const AnalysisSpec spec{"top", "topk", {}, {{"k", 3}}, {"test"}};
    auto a = registry().create_analyzer("topk");
    a->configure(spec.params);
    a->begin(corp.run_context());
    CHECK(a->state_version() == 2);
    const std::string old = seal_state("topk@1.0.0", 1, analysis_fingerprint(spec), "whatever version 1 held");
    CHECK_THROWS_WITH(load_analysis_state(*a, spec, "topk@1.0.0", old, "state/top.bin"),
                      Catch::Contains("state/top.bin") && Catch::Contains("layout version 1") &&
                          Catch::Contains("reads version 2"));
}

TEST_CASE("saved state: StateReader bounds-checks counts before it allocates", "[analyzers][state]") {
    StateWriter w;
    w.u64(uint64_t{1} << 60);  // an array "of 2^60 doubles" in a 8-byte blob
    StateReader r(w.bytes(), "blob");
    CHECK_THROWS_WITH(r.array<double>(), Catch::Contains("longer than the blob"));
    StateWriter s;
    s.str("hook");
    s.boolean(true);
    s.array(std::vector<float>{1.5f, -2.0f});
    StateReader back(s.bytes(), "blob");
    CHECK(back.str() == "hook");
    CHECK(back.boolean());
    CHECK(back.array<float>() == std::vector<float>{1.5f, -2.0f});
    CHECK_NOTHROW(back.expect_end());
}

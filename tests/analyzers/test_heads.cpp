// The `heads` analyzer: planted attention patterns with known scores, and a real run on the tiny GPT-2 with
// repeated random prompts, checked against a direct computation from the exported patterns.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/run/recipe.h"
#include "core/util/npy.h"
#include "tests/analyzers/synthetic.h"
#include "tests/support/cli.h"

using namespace nscope;
using namespace nscope::test;
namespace fs = std::filesystem;

namespace {

double score(const Result& r, const std::string& name, int64_t layer_index, int64_t head) {
    const NdArray& a = r.arrays.at("scores." + name);
    return a.f32.at(static_cast<size_t>(layer_index * a.shape[1] + head));
}

}  // namespace

TEST_CASE("heads: planted previous-token and induction heads get their scores", "[analyzers][heads]") {
    // One prompt "5 6 7 5 6 7" (a sequence repeated) and one row of padding; two heads on layer 0:
    // head 0 attends to the previous token (the first token to itself), head 1 is an induction head on the
    // repeat (query q >= 3 attends to q - 2, the token after the previous occurrence) and uniform before.
    const size_t P = 6, H = 2;
    const int64_t ids[2 * P] = {5, 6, 7, 5, 6, 7, 9, 9, 0, 0, 0, 0};
    const int64_t mask[2 * P] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0};
    std::vector<float> pat(2 * H * P * P, 0.0f);
    auto at = [&](size_t r, size_t h, size_t q, size_t k) -> float& { return pat[((r * H + h) * P + q) * P + k]; };
    for (size_t q = 0; q < P; ++q) {
        at(0, 0, q, q == 0 ? 0 : q - 1) = 1;
        if (q >= 3) at(0, 1, q, q - 2) = 1;
        else
            for (size_t k = 0; k <= q; ++k) at(0, 1, q, k) = 1.0f / static_cast<float>(q + 1);
    }
    for (size_t h = 0; h < H; ++h) at(1, h, 0, 0) = 1, at(1, h, 1, 0) = 0.5f, at(1, h, 1, 1) = 0.5f;  // "9 9"
    Batch b;
    b.rows = 2;
    b.positions = P;
    b.input_ids = ids;
    b.attention_mask = mask;
    b.activations.push_back({"blocks.0.attn.hook_pattern", {pat.data(), DType::Float32, {2, 2, 6, 6}}});
    auto a = registry().create_analyzer("heads");
    a->configure(nlohmann::json::object());
    RunContext ctx;
    a->begin(ctx);
    a->consume(b);
    const Result r = a->finish();
    // head 0: prev_token 1 on the 7 queries that have a previous token (5 + 1), entropy 0 on the first row
    CHECK(score(r, "prev_token", 0, 0) == Approx((5.0 + 0.5) / 6.0));
    CHECK(score(r, "induction", 0, 1) == Approx((3.0 + 0.5) / 4.0));  // q = 3, 4, 5 of row 0; q = 1 of "9 9"
    CHECK(score(r, "induction", 0, 0) == Approx((0.0 + 0.5) / 4.0));  // a previous-token head is no induction head
    CHECK(score(r, "first_token", 0, 0) == Approx((1.0 + 1.0 + 1.0 + 0.5) / 8.0));  // q = 0 and 1 of row 0, row 1
    CHECK(score(r, "duplicate", 0, 0) == Approx((0.0 + 0.5) / 4.0));  // only "9 9" attends back to the same token
    const double row1_entropy = std::log(2.0);
    CHECK(score(r, "entropy", 0, 0) == Approx(row1_entropy / 8.0));
    CHECK(r.data["summary"]["best"]["induction"]["head"] == 1);
    // Uniform attention on the same tokens: p = 1 / (q + 1) to every real key.
    const auto& uniform = r.data["summary"]["uniform"];
    CHECK(uniform["prev_token"].get<double>() == Approx((1.0 / 2 + 1.0 / 3 + 1.0 / 4 + 1.0 / 5 + 1.0 / 6 + 1.0 / 2) / 6));
    CHECK(uniform["induction"].get<double>() == Approx((1.0 / 4 + 1.0 / 5 + 1.0 / 6 + 1.0 / 2) / 4));
    CHECK(uniform["entropy"].get<double>() ==
          Approx((std::log(1.0) + std::log(2.0) + std::log(3.0) + std::log(4.0) + std::log(5.0) + std::log(6.0) +
                  std::log(1.0) + std::log(2.0)) / 8));
    CHECK(r.data["summary"]["best"]["prev_token"]["head"] == 0);
}

TEST_CASE("heads: scores of a real run equal a direct computation from its exported attention patterns",
          "[analyzers][heads]") {
    const std::string dir = temp_dir("heads-run");
    const std::string model = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/models/gpt2";
    const std::string recipe = dir + "/r.yaml";
    std::ofstream(recipe) << "name: heads\nmodel: { path: " << model << " }\n"
                          << "prompts: [ { random: { count: 6, length: 8, repeat: 2, seed: 3 } } ]\n"
                          << "batch_size: 4\nhooks: [ \"blocks.*.attn.hook_pattern\" ]\n"
                          << "analyses: [ { id: heads, use: heads } ]\nexports: [ json, activations ]\n";
    const auto run = run_nscope({"run", recipe, "--out", dir + "/runs"});
    INFO(run.err);
    REQUIRE(run.exit_code == 0);
    fs::path run_dir;
    for (const auto& e : fs::directory_iterator(dir + "/runs/heads")) run_dir = e.path();
    std::ifstream in(run_dir / "results/heads.json");
    const auto res = nlohmann::json::parse(in)["data"];
    const NpyArray ids_npy = read_npy(run_dir / "activations/input_ids.npy");
    const auto ids = ids_npy.to_i64();
    REQUIRE(ids_npy.shape == std::vector<int64_t>{6, 16});
    for (int64_t p = 0; p < 6; ++p)  // each prompt is its 8 random ids twice
        for (int64_t t = 0; t < 8; ++t) CHECK(ids[static_cast<size_t>(p * 16 + t)] == ids[static_cast<size_t>(p * 16 + t + 8)]);
    const auto& rows = res["tables"]["heads"]["rows"];
    REQUIRE(rows.size() == 2 * 4);
    for (int layer = 0; layer < 2; ++layer) {
        const NpyArray pat = read_npy(run_dir / "activations" / ("blocks." + std::to_string(layer) + ".attn.hook_pattern.npy"));
        const auto p = pat.to_f32();
        const int64_t H = pat.shape[1], P = pat.shape[2];
        for (int64_t h = 0; h < H; ++h) {
            double prev = 0, ind = 0, ent = 0;
            int n_prev = 0, n_ind = 0, n_ent = 0;
            for (int64_t r = 0; r < 6; ++r)
                for (int64_t q = 0; q < P; ++q) {
                    const float* row = p.data() + ((r * H + h) * P + q) * P;
                    double e = 0, s = 0;
                    bool has = false;
                    for (int64_t k = 0; k < P; ++k) {
                        if (row[k] > 0) e -= row[k] * std::log(static_cast<double>(row[k]));
                        if (k >= 1 && k <= q && ids[static_cast<size_t>(r * P + k - 1)] == ids[static_cast<size_t>(r * P + q)])
                            s += row[k], has = true;
                    }
                    ent += e, ++n_ent;
                    if (q >= 1) prev += row[q - 1], ++n_prev;
                    if (has) ind += s, ++n_ind;
                }
            const auto& got = rows[static_cast<size_t>(layer * H + h)];
            INFO("layer " << layer << " head " << h);
            CHECK(got[0] == layer);
            CHECK(got[2].get<double>() == Approx(ent / n_ent).epsilon(1e-5));
            CHECK(got[4].get<double>() == Approx(prev / n_prev).epsilon(1e-5));
            CHECK(got[6].get<double>() == Approx(ind / n_ind).epsilon(1e-5));
        }
    }
}

TEST_CASE("random prompts: deterministic per seed, repeated, inside the range, and bad ranges are input errors",
          "[recipe][random]") {
    RandomTokens spec;
    spec.length = 10, spec.repeat = 3, spec.seed = 7, spec.lo = 100, spec.hi = 200, spec.index = 4;
    const auto a = random_prompt_ids(spec, 1000, nullptr), b = random_prompt_ids(spec, 1000, nullptr);
    CHECK(a == b);
    REQUIRE(a.size() == 30);
    for (size_t i = 0; i < 10; ++i) CHECK((a[i] == a[i + 10] && a[i] == a[i + 20]));
    for (int64_t id : a) CHECK((id >= 100 && id < 200));
    spec.index = 5;
    CHECK(random_prompt_ids(spec, 1000, nullptr) != a);
    const auto odd = random_prompt_ids(spec, 1000, [](int64_t id) { return id % 2 == 0; });  // skip even "special" ids
    for (int64_t id : odd) CHECK(id % 2 == 1);
    spec.hi = 2000;
    CHECK_THROWS_AS(random_prompt_ids(spec, 1000, nullptr), InputError);
}

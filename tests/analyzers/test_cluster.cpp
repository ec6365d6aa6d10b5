// The `cluster` analyzer on planted structure (known correlated neuron groups are recovered exactly, by average
// linkage and by k-means), its NN-chain average linkage against a naive O(n³) agglomeration, sharded merges,
// each cluster's typical tokens from a synthetic topk input, and its input errors.
#include <catch2/catch.hpp>

#include <random>
#include <set>

#include "plugins/analyzers/cluster/linkage.h"
#include "tests/analyzers/synthetic.h"

using namespace nscope;
using namespace nscope::test;

namespace {

const std::string kHook = "blocks.2.mlp.hook_post";
constexpr int64_t kWidth = 14;

/// Tokens of 14 neurons: {0, 3, 7, 12} follow factor f1 (neuron 7 with the opposite sign), {1, 4, 9} factor
/// f2, {2, 10} factor f3, each with its own scale and offset plus 30% noise; 5, 6, 8, 11 are independent
/// noise; 13 is constant.
std::vector<float> planted(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const std::map<int, std::pair<int, float>> factor = {{0, {0, 1.0f}},  {3, {0, 2.5f}}, {7, {0, -0.7f}},
                                                          {12, {0, 1.2f}}, {1, {1, 0.5f}}, {4, {1, 3.0f}},
                                                          {9, {1, 1.0f}},  {2, {2, 2.0f}}, {10, {2, 0.8f}}};
    std::vector<float> out;
    for (size_t t = 0; t < n; ++t) {
        const float f[3] = {normal(rng), normal(rng), normal(rng)};
        for (int j = 0; j < kWidth; ++j) {
            float v = normal(rng);
            if (j == 13) v = 2.0f;
            else if (auto it = factor.find(j); it != factor.end())
                v = it->second.second * (f[it->second.first] + 0.3f * v) + static_cast<float>(j);
            out.push_back(v);
        }
    }
    return out;
}

/// Tokens of 14 neurons in four positively correlated groups: {0, 3, 7, 12} follow factor f1, {5, 6, 8, 11}
/// f2, {1, 4, 9} f3, {2, 10} f4, each neuron with its own scale and offset plus 30% noise; 13 is constant.
std::vector<float> planted_positive(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int group[kWidth] = {0, 2, 3, 0, 2, 1, 1, 0, 1, 2, 3, 1, 0, -1};
    std::vector<float> out;
    for (size_t t = 0; t < n; ++t) {
        const float f[4] = {normal(rng), normal(rng), normal(rng), normal(rng)};
        for (int j = 0; j < kWidth; ++j) {
            const float noise = normal(rng);
            out.push_back(group[j] < 0 ? 2.0f : (0.5f + 0.3f * static_cast<float>(j)) * (f[group[j]] + 0.3f * noise) + j);
        }
    }
    return out;
}

std::unique_ptr<Analyzer> run_cluster(const std::vector<SynthBatch>& batches, const Params& params,
                                      const RunContext& ctx = RunContext{}) {
    auto a = registry().create_analyzer("cluster");
    a->configure(params);
    a->begin(ctx);
    for (const auto& b : batches) a->consume(b.view());
    return a;
}

/// Naive average linkage: repeatedly merge the two clusters with the smallest mean pairwise dissimilarity
/// (computed from the original matrix, no update formula). Returns the sorted merge heights.
std::vector<double> naive_heights(const Eigen::MatrixXd& d) {
    std::vector<std::vector<int64_t>> clusters;
    for (int64_t i = 0; i < d.rows(); ++i) clusters.push_back({i});
    std::vector<double> heights;
    while (clusters.size() > 1) {
        double best = 1e300;
        size_t ba = 0, bb = 0;
        for (size_t a = 0; a < clusters.size(); ++a)
            for (size_t b = a + 1; b < clusters.size(); ++b) {
                double s = 0;
                for (int64_t i : clusters[a])
                    for (int64_t j : clusters[b]) s += d(i, j);
                s /= static_cast<double>(clusters[a].size() * clusters[b].size());
                if (s < best) best = s, ba = a, bb = b;
            }
        heights.push_back(best);
        clusters[ba].insert(clusters[ba].end(), clusters[bb].begin(), clusters[bb].end());
        clusters.erase(clusters.begin() + static_cast<int64_t>(bb));
    }
    std::sort(heights.begin(), heights.end());
    return heights;
}

}  // namespace

TEST_CASE("cluster: planted correlated neuron groups are recovered exactly", "[analyzers][cluster]") {
    std::vector<std::unique_ptr<PromptInfo>> prompts;
    const auto batches = token_batches({{kHook, planted(900, 5)}}, {{kHook, kWidth}}, {6, 11, 2, 8}, 5, prompts, 9.0f);
    const Result r = run_cluster(batches, {{"threshold", 0.5}})->finish();
    // Labels by size: the group of 4 is 0, of 3 is 1, of 2 is 2; independent and constant neurons −1.
    const std::vector<int64_t> expected = {0, 1, 2, 0, 1, -1, -1, 0, -1, 1, 2, -1, 0, -1};
    CHECK(r.arrays.at(kHook + ".labels").i64 == expected);
    CHECK(r.arrays.at(kHook + ".labels").shape == std::vector<int64_t>{kWidth});
    const auto& layer = r.data["tables"]["layers"]["rows"][0];  // hook, layer, neurons, tokens, constant, ...
    CHECK(layer[2] == kWidth);
    CHECK(layer[3] == 900);
    CHECK(layer[4] == 1);  // neuron 13
    CHECK(layer[5] == 9);
    CHECK(layer[6] == 3);
    CHECK(layer[8].get<double>() > 0.8);  // well-separated groups
    const auto& clusters = r.data["tables"]["clusters"]["rows"];
    REQUIRE(clusters.size() == 3);
    CHECK(clusters[0][5] == "0 3 7 12");
    CHECK(clusters[0][4].get<double>() > 0.85);  // mean |corr| within: 1 / sqrt(1 + 0.3²) ≈ 0.92
    const auto& heat = r.data["figures"]["correlation." + kHook];
    REQUIRE(heat["z"].size() == 9);
    CHECK(heat["z"][0][2].get<double>() < -0.85);  // neurons 0 and 7: anti-correlated, same cluster

    // A stricter cut splits nothing planted apart at 0.5, but at 0.02 nothing is close enough to merge.
    const Result strict = run_cluster(batches, {{"threshold", 0.02}})->finish();
    CHECK(strict.arrays.at(kHook + ".labels").i64 == std::vector<int64_t>(kWidth, -1));
    // min_size 1 keeps singletons as clusters of their own.
    const Result all = run_cluster(batches, {{"min_size", 1}})->finish();
    CHECK(all.data["tables"]["layers"]["rows"][0][6] == 3 + 4);
}

TEST_CASE("cluster: two merged shards equal one pass", "[analyzers][cluster]") {
    std::vector<std::unique_ptr<PromptInfo>> prompts;
    const auto batches = token_batches({{kHook, planted(500, 8)}}, {{kHook, kWidth}}, {3, 9, 5}, 4, prompts);
    const Result whole = run_cluster(batches, {{"threshold", 0.6}})->finish();
    auto a = run_cluster({batches.begin(), batches.begin() + 7}, {{"threshold", 0.6}});
    auto b = run_cluster({batches.begin() + 7, batches.end()}, {{"threshold", 0.6}});
    REQUIRE(a->mergeable());
    a->merge(*b);
    const Result merged = a->finish();
    CHECK(merged.arrays.at(kHook + ".labels").i64 == whole.arrays.at(kHook + ".labels").i64);
    CHECK(json_close(merged.data["tables"], whole.data["tables"], 1e-9));
}

TEST_CASE("cluster: the NN-chain average linkage equals a naive agglomeration", "[analyzers][cluster]") {
    std::mt19937 rng(17);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (int trial = 0; trial < 5; ++trial) {
        const int64_t n = 6 + trial * 7;
        Eigen::MatrixXd d = Eigen::MatrixXd::Zero(n, n);
        for (int64_t i = 0; i < n; ++i)
            for (int64_t j = i + 1; j < n; ++j) d(i, j) = d(j, i) = u(rng);
        const auto naive = naive_heights(d);
        Eigen::MatrixXd work = d;
        const auto merges = nscope::cluster::average_linkage(work);
        REQUIRE(merges.size() == static_cast<size_t>(n - 1));
        std::vector<double> heights;
        for (const auto& m : merges) heights.push_back(m.height);
        std::sort(heights.begin(), heights.end());
        for (size_t i = 0; i < heights.size(); ++i) CHECK(heights[i] == Approx(naive[i]).margin(1e-12));
        // A cut joins exactly the items whose merges lie below it: the number of clusters is n − #heights ≤ t.
        const double t = naive[naive.size() / 2];
        const auto roots = nscope::cluster::cut(merges, n, t);
        const std::set<int64_t> distinct(roots.begin(), roots.end());
        const auto below = std::count_if(naive.begin(), naive.end(), [&](double h) { return h <= t; });
        CHECK(static_cast<int64_t>(distinct.size()) == n - below);
    }
}

TEST_CASE("cluster: bad parameters, unknown hooks and too few tokens are input errors", "[analyzers][cluster]") {
    CHECK_THAT(input_error([&] { registry().create_analyzer("cluster")->configure({{"threshold", 1.5}}); }), Catch::Contains("threshold"));
    CHECK_THROWS_AS(registry().create_analyzer("cluster")->configure({{"min_size", 0}}), InputError);
    RunContext ctx;
    ctx.hooks.push_back({kHook, {"batch", "pos", "neuron"}, {-1, -1, 30000}});
    auto a = registry().create_analyzer("cluster");
    a->configure({{"hooks", "blocks.3.*"}});
    CHECK_THAT(input_error([&] { a->begin(ctx); }), Catch::Contains("matches none"));
    a = registry().create_analyzer("cluster");
    a->configure(nlohmann::json::object());
    CHECK_THAT(input_error([&] { a->begin(ctx); }), Catch::Contains("max_memory_mb"));

    std::vector<std::unique_ptr<PromptInfo>> prompts;
    const auto batches = token_batches({{kHook, planted(2, 1)}}, {{kHook, kWidth}}, {2}, 1, prompts);
    CHECK_THAT(input_error([&] { run_cluster(batches, nlohmann::json::object())->finish(); }), Catch::Contains("too few tokens"));
}

TEST_CASE("cluster: k-means on activation profiles recovers planted groups exactly", "[analyzers][cluster][kmeans]") {
    std::vector<std::unique_ptr<PromptInfo>> prompts;
    const auto batches =
        token_batches({{kHook, planted_positive(1200, 6)}}, {{kHook, kWidth}}, {6, 11, 2, 8}, 5, prompts, 9.0f);
    const Params params = {{"method", "kmeans"}, {"k", 4}, {"points", 800}};
    const Result r = run_cluster(batches, params)->finish();
    // By size, then first neuron: {0, 3, 7, 12} is 0, {5, 6, 8, 11} 1, {1, 4, 9} 2, {2, 10} 3; constant −1.
    const std::vector<int64_t> expected = {0, 2, 3, 0, 2, 1, 1, 0, 1, 2, 3, 1, 0, -1};
    CHECK(r.arrays.at(kHook + ".labels").i64 == expected);
    // With fewer points than neurons, faiss clusters the profiles themselves (no embedding): the same groups.
    const Result few = run_cluster(batches, {{"method", "kmeans"}, {"k", 4}, {"points", 12}})->finish();
    CHECK(few.arrays.at(kHook + ".labels").i64 == expected);
    // A neuron that duplicates another (13 := 0) makes the profiles' Gram matrix singular: the embedding falls
    // back to the pivoted LDLᵀ, and the twin joins its original.
    {
        std::vector<float> twin = planted_positive(1200, 6);
        for (size_t t = 0; t < 1200; ++t) twin[t * kWidth + 13] = twin[t * kWidth];
        std::vector<std::unique_ptr<PromptInfo>> twin_prompts;
        const auto twin_batches = token_batches({{kHook, twin}}, {{kHook, kWidth}}, {6, 11, 2, 8}, 5, twin_prompts);
        std::vector<int64_t> with_twin = expected;
        with_twin[13] = 0;
        CHECK(run_cluster(twin_batches, params)->finish().arrays.at(kHook + ".labels").i64 == with_twin);
    }
    const auto& layer = r.data["tables"]["layers"]["rows"][0];
    CHECK(layer[3] == 1200);  // tokens seen (the profiles use a sample of 800)
    CHECK(layer[4] == 1);
    CHECK(layer[6] == 4);
    // Within a group corr ≈ 1 / (1 + 0.3²): unit profiles 0.41 apart; between groups sqrt(2) apart.
    CHECK(layer[8].get<double>() > 0.6);
    CHECK(layer[9].get<double>() > 0.0);                                // inertia
    CHECK(layer[9].get<double>() < 13 * 2 * (1 - 0.85));                // Σ ‖z − centroid‖² ≤ Σ 2 (1 − corr)
    const auto& clusters = r.data["tables"]["clusters"]["rows"];
    REQUIRE(clusters.size() == 4);
    CHECK(clusters[0][5] == "0 3 7 12");
    CHECK(clusters[0][4].get<double>() > 0.85);
    CHECK(clusters[0][6].is_null());  // no topk input: no typical tokens
    CHECK(r.data["summary"]["method"] == "kmeans");
    CHECK(r.data["figures"]["correlation." + kHook]["z"].size() == 13);
    // Deterministic, and a sharded run merges to one pass (the profile sample is a function of the seed).
    auto a = run_cluster({batches.begin(), batches.begin() + 20}, params);
    auto b = run_cluster({batches.begin() + 20, batches.end()}, params);
    a->merge(*b);
    const Result merged = a->finish();
    CHECK(merged.arrays.at(kHook + ".labels").i64 == expected);
    CHECK(json_close(merged.data["tables"], r.data["tables"], 1e-9));
    // Too many clusters for the live neurons, parameters of the other method, memory: input errors.
    CHECK_THAT(input_error([&] { run_cluster(batches, {{"method", "kmeans"}, {"k", 14}})->finish(); }),
               Catch::Contains("'k' = 14 is more than the 13 non-constant neurons"));
    CHECK_THAT(input_error([&] { run_cluster(batches, {{"method", "kmeans"}, {"threshold", 0.3}}); }),
               Catch::Contains("does not apply to method kmeans"));
    CHECK_THAT(input_error([&] { run_cluster(batches, {{"k", 3}}); }), Catch::Contains("does not apply to method linkage"));
    RunContext wide;
    wide.hooks.push_back({kHook, {"batch", "pos", "neuron"}, {-1, -1, 20000}});
    CHECK_THAT(input_error([&] { run_cluster({}, {{"method", "kmeans"}, {"points", 20000}}, wide); }),
               Catch::Contains("neurons x points") && Catch::Contains("lower 'points'"));
}

TEST_CASE("cluster: each cluster's typical tokens, from a topk input's top examples", "[analyzers][cluster]") {
    // A topk result whose top examples say: neurons 0, 3, 7, 12 fire on " river" (all four) and "bank" (two
    // of them, one twice); neurons 1, 4, 9 on " money" (two) and "coin" (one: not shared, not typical).
    Result topk;
    Table t;
    t.columns = {"source", "layer", "neuron", "rank", "value", "token"};
    auto add = [&](int64_t neuron, const std::string& token) { t.add_row({kHook, 2, neuron, 1, 1.0, token}); };
    for (int64_t j : {0, 3, 7, 12}) add(j, " river");
    add(0, "bank"), add(0, " bank"), add(7, "bank");
    add(1, " money"), add(4, "money "), add(9, "coin");
    t.add_row({"group:g", 2, -1, 1, 1.0, " river"});  // group rows are not neurons
    topk.set_table("top_activations", t);
    RunContext ctx;
    ctx.inputs["top"] = &topk;

    std::vector<std::unique_ptr<PromptInfo>> prompts;
    for (const bool km : {false, true}) {
        INFO((km ? "kmeans" : "linkage"));
        const auto batches = token_batches({{kHook, km ? planted_positive(600, 2) : planted(600, 2)}}, {{kHook, kWidth}},
                                           {5, 7}, 4, prompts);
        const Params params = km ? Params{{"method", "kmeans"}, {"k", 4}} : Params{{"threshold", 0.5}};
        const Result r = run_cluster(batches, params, ctx)->finish();
        const auto& rows = r.data["tables"]["clusters"]["rows"];
        REQUIRE(rows.size() >= 3);
        CHECK(rows[0][5] == "0 3 7 12");
        CHECK(rows[0][6] == "river (4/4), bank (2/4)");
        const auto& money = km ? rows[2] : rows[1];  // {1, 4, 9}
        CHECK(money[5] == "1 4 9");
        CHECK(money[6] == "money (2/3)");
        CHECK(r.data["typical_tokens"][kHook][0][1] ==
              nlohmann::json({{"token", "bank"}, {"members", 2}, {"occurrences", 3.0}}));
        CHECK(r.data["summary"]["typical_tokens"] == true);
    }
    // An input that is not a topk analysis.
    Result other;
    RunContext bad;
    bad.inputs["pca"] = &other;
    CHECK_THAT(input_error([&] { run_cluster({}, nlohmann::json::object(), bad); }),
               Catch::Contains("input pca is not a topk analysis"));
}

// The `topk` analyzer against brute-force sorts of every occurrence on synthetic data.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <tuple>

#include "tests/analyzers/synthetic.h"

using namespace nscope;
using namespace nscope::test;

namespace {

const std::string kMlp = "blocks.1.mlp.hook_post";

// The 77-wide hook takes the vector paths of the scan (blocks of 32) and their tail.
SynthCorpus corpus() {
    return SynthCorpus({{kMlp, {6}}, {"blocks.0.attn.hook_z", {2, 2}}, {"blocks.2.mlp.hook_post", {77}}}, 19, 8, 6, 4242);
}

struct Occ {
    double value;
    int64_t prompt, position, token;
};
bool before(const Occ& a, const Occ& b) {
    return std::tie(b.value, a.prompt, a.position) < std::tie(a.value, b.prompt, b.position);
}

/// Every occurrence of a per-token value function, best first.
template <typename F>
std::vector<Occ> ranked(const SynthCorpus& c, F value) {
    std::vector<Occ> all;
    for (size_t i = 0; i < c.prompts.size(); ++i)
        for (size_t t = 0; t < c.ids[i].size(); ++t)
            all.push_back({value(i, t), static_cast<int64_t>(i), static_cast<int64_t>(t), c.ids[i][t]});
    std::sort(all.begin(), all.end(), before);
    return all;
}

std::string ngram_ids(const SynthCorpus& c, size_t i, size_t t, int n) {
    std::string s;
    for (int j = n - 1; j >= 0; --j) s += (s.empty() ? "" : " ") + std::to_string(c.ids[i][t - j]);
    return s;
}

/// Rows of a table whose first three columns are (source, layer, neuron) and column `ncol` is n (or -1).
std::vector<nlohmann::json> rows_for(const Result& r, const std::string& table, const std::string& source,
                                     int64_t neuron, int n = -1) {
    std::vector<nlohmann::json> out;
    for (const auto& row : r.data["tables"][table]["rows"])
        if (row[0] == source && row[2] == neuron && (n < 0 || row[3] == n)) out.push_back(row);
    return out;
}

}  // namespace

TEST_CASE("topk: top activations per neuron equal a brute-force sort, with context", "[analyzers][topk]") {
    const auto c = corpus();
    auto a = run_analyzer("topk", {{"k", 4}, {"context", 2}, {"ngram", 0}}, c, c.batches(4));
    const Result r = a->finish();
    for (const auto& h : c.hooks) {
        for (int64_t j = 0; j < h.width(); ++j) {
            INFO(h.name << " neuron " << j);
            const auto all = ranked(c, [&](size_t i, size_t t) { return c.at(h.name, i, t, j); });
            for (size_t q = 0; q < 4; ++q) {
                CHECK(r.arrays.at(h.name + ".top_values").f32[j * 4 + q] == Approx(all[q].value));
                CHECK(r.arrays.at(h.name + ".top_prompts").i64[j * 4 + q] == all[q].prompt);
                CHECK(r.arrays.at(h.name + ".top_positions").i64[j * 4 + q] == all[q].position);
                CHECK(r.arrays.at(h.name + ".top_tokens").i64[j * 4 + q] == all[q].token);
            }
            // Context: up to 2 tokens each side, as token text, from the same prompt.
            const auto rows = rows_for(r, "top_activations", h.name, j);
            REQUIRE(rows.size() == 4);
            const auto& best = all[0];
            std::string bef, aft;
            const auto& toks = c.prompts[best.prompt]->tokens;
            for (int64_t p = std::max<int64_t>(0, best.position - 2); p < best.position; ++p) bef += toks[p];
            for (int64_t p = best.position + 1; p < std::min<int64_t>(toks.size(), best.position + 3); ++p) aft += toks[p];
            CHECK(rows[0][3] == 1);
            CHECK(rows[0][8] == toks[best.position]);
            CHECK(rows[0][9] == bef);
            CHECK(rows[0][10] == aft);
        }
    }
    CHECK(r.data["tables"].count("top_ngrams_max") == 0);
}

TEST_CASE("topk: n-grams with the highest max and mean activation equal brute force", "[analyzers][topk]") {
    const auto c = corpus();
    auto a = run_analyzer("topk", {{"k", 3}, {"ngram", 3}, {"min_count", 2}, {"max_ngrams", 100000},
                                   {"hooks", {kMlp}}},
                          c, c.batches(5));
    const Result r = a->finish();
    CHECK(r.data["summary"]["ngram_table"]["evictions"] == 0);
    CHECK(r.data["summary"]["ngram_table"]["exact"] == true);
    for (int64_t j = 0; j < 6; ++j) {
        for (int n = 1; n <= 3; ++n) {
            INFO("neuron " << j << " n " << n);
            std::map<std::string, Occ> best;                  // ids -> best occurrence
            std::map<std::string, std::pair<double, int>> sum;  // ids -> (sum, count)
            for (const auto& o : ranked(c, [&](size_t i, size_t t) { return c.at(kMlp, i, t, j); })) {
                if (o.position + 1 < n) continue;
                const auto ids = ngram_ids(c, o.prompt, o.position, n);
                best.emplace(ids, o);  // ranked order: the first seen is the best
                sum[ids].first += o.value;
                sum[ids].second += 1;
            }
            std::vector<std::pair<std::string, Occ>> maxes(best.begin(), best.end());
            std::sort(maxes.begin(), maxes.end(), [](const auto& x, const auto& y) { return before(x.second, y.second); });
            const auto rows = rows_for(r, "top_ngrams_max", kMlp, j, n);
            REQUIRE(rows.size() == std::min<size_t>(3, maxes.size()));
            for (size_t q = 0; q < rows.size(); ++q) {
                CHECK(rows[q][6] == maxes[q].first);
                CHECK(rows[q][7].get<double>() == Approx(maxes[q].second.value));
                CHECK(rows[q][8] == maxes[q].second.prompt);
            }
            std::vector<std::pair<double, std::string>> means;
            for (const auto& [ids, sc] : sum)
                if (sc.second >= 2) means.emplace_back(sc.first / sc.second, ids);
            std::sort(means.begin(), means.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
            const auto mrows = rows_for(r, "top_ngrams_mean", kMlp, j, n);
            REQUIRE(mrows.size() == std::min<size_t>(3, means.size()));
            for (size_t q = 0; q < mrows.size(); ++q) {
                CHECK(mrows[q][7].get<double>() == Approx(means[q].first));
                CHECK(mrows[q][9] == true);
            }
            if (!mrows.empty() && means.size() > 1 && means[0].first != means[1].first) CHECK(mrows[0][6] == means[0].second);
        }
    }
}

TEST_CASE("topk: neuron groups rank tokens by the group's mean activation", "[analyzers][topk]") {
    const auto c = corpus();
    const Params params = {{"k", 5}, {"ngram", 1}, {"hooks", nlohmann::json::array()},
                           {"groups", {{"pair", {kMlp, {1, 3}}}, {"z", {"blocks.0.attn.hook_z", {0, 2, 3}}}}}};
    auto a = registry().create_analyzer("topk");
    a->configure(params);
    CHECK(a->required_hooks() == std::vector<std::string>{kMlp, "blocks.0.attn.hook_z"});
    const RunContext ctx = c.run_context();
    a->begin(ctx);
    for (const auto& b : c.batches(6)) a->consume(b.view());
    const Result r = a->finish();
    const auto all = ranked(c, [&](size_t i, size_t t) {
        return static_cast<double>(static_cast<float>((static_cast<double>(c.at(kMlp, i, t, 1)) + c.at(kMlp, i, t, 3)) / 2));
    });
    for (size_t q = 0; q < 5; ++q) {
        CHECK(r.arrays.at("groups.top_values").f32[q] == Approx(all[q].value));
        CHECK(r.arrays.at("groups.top_prompts").i64[q] == all[q].prompt);
        CHECK(r.arrays.at("groups.top_positions").i64[q] == all[q].position);
    }
    CHECK(rows_for(r, "top_activations", "group:pair", -1).size() == 5);
    CHECK(r.data["groups"][1]["name"] == "z");
}

TEST_CASE("topk: merging two shards gives the single-pass top lists", "[analyzers][topk][merge]") {
    const auto c = corpus();
    const Params params = {{"k", 4}, {"ngram", 2}, {"context", 1}, {"groups", {{"g", {kMlp, {0, 1, 2}}}}}};
    auto whole = run_analyzer("topk", params, c, c.batches(4));
    auto left = run_analyzer("topk", params, c, c.batches(3, 0, 8));
    auto right = run_analyzer("topk", params, c, c.batches(5, 8));
    left->merge(*right);
    const Result x = whole->finish(), y = left->finish();
    CHECK(x.data["tables"]["top_activations"] == y.data["tables"]["top_activations"]);
    CHECK(x.data["tables"]["top_ngrams_max"] == y.data["tables"]["top_ngrams_max"]);
    CHECK(json_close(x.data["tables"]["top_ngrams_mean"], y.data["tables"]["top_ngrams_mean"]));
    CHECK(x.data["summary"] == y.data["summary"]);
    for (const auto& [name, arr] : x.arrays) {
        INFO(name);
        CHECK(arr.i64 == y.arrays.at(name).i64);
        for (size_t q = 0; q < arr.f32.size(); ++q) CHECK(arr.f32[q] == y.arrays.at(name).f32[q]);
    }
}

TEST_CASE("topk: the n-gram table stays within max_ngrams and flags inexact means", "[analyzers][topk]") {
    const SynthCorpus c({{kMlp, {3}}}, 40, 12, 50, 9);  // many distinct trigrams
    auto a = run_analyzer("topk", {{"k", 2}, {"ngram", 3}, {"max_ngrams", 32}, {"min_count", 1}}, c, c.batches(8));
    const Result r = a->finish();
    const auto& t = r.data["summary"]["ngram_table"];
    CHECK(t["capacity"] == 32);
    CHECK(t["used"].get<int>() <= 32);
    CHECK(t["evictions"].get<int>() > 0);
    CHECK(t["exact"] == false);
    // The top activations themselves are unaffected by n-gram eviction.
    const auto all = ranked(c, [&](size_t i, size_t tt) { return c.at(kMlp, i, tt, 1); });
    CHECK(r.arrays.at(kMlp + ".top_values").f32[2] == Approx(all[0].value));
}

TEST_CASE("topk: malformed parameters are refused naming the key", "[analyzers][topk]") {
    auto a = registry().create_analyzer("topk");
    CHECK_THROWS_WITH(a->configure({{"k", "ten"}}), Catch::Contains("parameter 'k' must be an integer"));
    CHECK_THROWS_WITH(a->configure({{"ngrams", 2}}), Catch::Contains("did you mean 'ngram'"));
    CHECK_THROWS_WITH(a->configure({{"groups", {{"g", {kMlp}}}}}),
                      Catch::Contains("parameter 'groups' must map group names to [hook, [neuron indices]]"));
    CHECK_THROWS_WITH(a->configure({{"ngram", 9}}), Catch::Contains("parameter 'ngram' must be in [0, 6]"));
    // A group index beyond the hook's width is caught when the data arrives.
    const auto c = corpus();
    a->configure({{"groups", {{"g", {kMlp, {2, 60}}}}}});
    const RunContext ctx = c.run_context();
    a->begin(ctx);
    CHECK_THROWS_WITH(a->consume(c.batches(4)[0].view()),
                      Catch::Contains("group 'g' names neuron 60") && Catch::Contains("has 6 neurons"));
}

// The example recipes in configs/ and Lua scripts in scripts/lua/ run on the bundled model (models/kjv-tiny)
// and produce the results their documentation (docs/examples.md) describes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <fstream>

#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "core/util/npy.h"
#include "tests/support/cli.h"

namespace fs = std::filesystem;
using nscope::test::run_nscope;

namespace {
const std::string kSource = NSCOPE_SOURCE_DIR;

fs::path run_example(const std::string& recipe, const std::string& name, const std::vector<std::string>& sets = {}) {
    const std::string out = nscope::test::temp_dir("example");
    std::vector<std::string> args = {"run", kSource + "/configs/" + recipe, "--out", out};
    for (const auto& s : sets) args.insert(args.end(), {"--set", s});
    const auto r = run_nscope(args);
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

/// Column `name` of a result table's row.
const nlohmann::json& cell(const nlohmann::json& table, const nlohmann::json& row, const std::string& name) {
    const auto& cols = table["columns"];
    for (size_t i = 0; i < cols.size(); ++i)
        if (cols[i] == name) return row[i];
    FAIL("no column " << name);
    static const nlohmann::json none;
    return none;
}

/// The activation vector of prompt `prompt` at its last real token (`from_end` 1) or the one before (2), ...,
/// from an `activations` export.
std::vector<double> last_token_vector(const fs::path& run, const std::string& hook, int64_t prompt, int64_t from_end = 1) {
    const nscope::NpyArray a = nscope::read_npy(run / "activations" / (hook + ".npy"));
    const nscope::NpyArray mask = nscope::read_npy(run / "activations/attention_mask.npy");
    const auto v = a.to_f32();
    const auto m = mask.to_i64();
    const int64_t P = a.shape[1], D = a.shape[2];
    int64_t last = -1;
    for (int64_t p = 0; p < P; ++p)
        if (m[static_cast<size_t>(prompt * P + p)]) last = p;
    REQUIRE(last + 1 >= from_end);
    const float* x = v.data() + (prompt * P + last + 1 - from_end) * D;
    return std::vector<double>(x, x + D);
}

/// For points `x` ([n, d] row-major) with classes `cls`: the fraction of each point's 10 nearest others that
/// share its class, and the same fraction expected by chance (Σ share²).
std::pair<double, double> knn_purity(const std::vector<float>& x, int d, const std::vector<std::string>& cls) {
    const size_t n = cls.size(), k = 10;
    double same = 0;
    for (size_t i = 0; i < n; ++i) {
        std::vector<std::pair<double, size_t>> dist;
        for (size_t j = 0; j < n; ++j) {
            if (j == i) continue;
            double s = 0;
            for (int c = 0; c < d; ++c) s += std::pow(x[i * d + c] - x[j * d + c], 2);
            dist.emplace_back(s, j);
        }
        std::partial_sort(dist.begin(), dist.begin() + k, dist.end());
        for (size_t m = 0; m < k; ++m) same += cls[dist[m].second] == cls[i] ? 1 : 0;
    }
    std::map<std::string, double> share;
    for (const auto& c : cls) share[c] += 1.0 / static_cast<double>(n);
    double chance = 0;
    for (const auto& [c, p] : share) chance += p * p;
    return {same / static_cast<double>(n * k), chance};
}

double cosine(const std::vector<double>& a, const std::vector<double>& b) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < a.size(); ++i) ab += a[i] * b[i], aa += a[i] * a[i], bb += b[i] * b[i];
    return ab / std::sqrt(aa * bb);
}
}  // namespace

TEST_CASE("example: quickstart finds live neurons with top contexts and writes the report and database",
          "[example]") {
    const fs::path run = run_example("quickstart.yaml", "quickstart");
    CHECK(fs::exists(run / "report.html"));
    CHECK(fs::exists(run / "results/neurons.sqlite"));
    const auto stats = result(run, "stats");
    CHECK(stats["summary"]["tokens"].get<int64_t>() > 40000);
    // Live neurons: in every layer most neurons are not dead, and their top contexts are real activations.
    const auto dead = result(run, "dead");
    const auto& layers = dead["tables"]["layers"];
    REQUIRE(layers["rows"].size() == 4);
    for (const auto& row : layers["rows"]) {
        const int64_t neurons = cell(layers, row, "neurons"), dead_n = cell(layers, row, "dead");
        INFO(cell(layers, row, "hook") << ": " << dead_n << " dead of " << neurons);
        CHECK(neurons == 1024);  // 4 x d_model 256
        CHECK(dead_n < neurons / 2);
    }
    const auto top = result(run, "top");
    const auto& acts = top["tables"]["top_activations"];
    REQUIRE(acts["rows"].size() > 1000);
    size_t strong = 0;
    for (const auto& row : acts["rows"]) {
        const double value = cell(acts, row, "value");
        strong += value > 0.1 ? 1 : 0;  // the stats threshold of this recipe
        CHECK_FALSE(cell(acts, row, "token").get<std::string>().empty());
    }
    CHECK(strong > acts["rows"].size() / 2);
}

TEST_CASE("example: bank-polysemy compares the three senses of 'bank' at that token, layer by layer",
          "[example]") {
    const fs::path run = run_example("bank-polysemy.yaml", "bank-polysemy", {"exports=[json, activations]"});
    const auto senses = result(run, "senses");
    const auto& pairs = senses["tables"]["pairs"];
    // 4 river x 2 siege + 4 river x 2 money + 2 siege x 2 money = 20 cross-sense pairs, for 8 hooks
    REQUIRE(pairs["rows"].size() == 20 * 8);
    // Each cosine is that of the two prompts' vectors at their last token ("bank"), recomputed from the
    // exported activations.
    for (const auto& row : pairs["rows"]) {
        const std::string hook = cell(pairs, row, "hook");
        const int64_t a = cell(pairs, row, "a"), b = cell(pairs, row, "b");
        INFO(hook << " prompts " << a << ", " << b);
        const double expected = cosine(last_token_vector(run, hook, a), last_token_vector(run, hook, b));
        CHECK(cell(pairs, row, "cosine").get<double>() == Approx(expected).epsilon(1e-4));
    }
}

TEST_CASE("example: engineer-pairs pairs each occupation's man / woman sentences", "[example]") {
    const fs::path run = run_example("engineer-pairs.yaml", "engineer-pairs", {"exports=[json, activations]"});
    const auto pairs = result(run, "pairs");
    CHECK(pairs["summary"]["pairs"] == 5);
    const auto& table = pairs["tables"]["pairs"];
    REQUIRE(table["rows"].size() == 5 * 8);
    std::set<std::string> jobs;
    for (const auto& row : table["rows"]) {
        // The two sentences of a pair differ only in man / woman: same occupation.
        const std::string a = cell(table, row, "a_text"), b = cell(table, row, "b_text");
        INFO(a << " | " << b);
        REQUIRE(a.size() > 5);
        REQUIRE(b.size() > 7);
        CHECK(a.substr(a.size() - 5) == " man,");
        CHECK(b.substr(b.size() - 7) == " woman,");
        CHECK(a.substr(0, a.size() - 5) == b.substr(0, b.size() - 7));
        jobs.insert(a.substr(0, a.size() - 5));
    }
    CHECK(jobs.size() == 5);
    // The `word` analysis pools at " man" / " woman" (the token before the trailing comma), not at the comma.
    const auto word = result(run, "word");
    const auto& wt = word["tables"]["pairs"];
    REQUIRE(wt["rows"].size() == 5 * 8);
    for (const auto& row : wt["rows"]) {
        const std::string hook = cell(wt, row, "hook");
        const int64_t a = cell(wt, row, "a"), b = cell(wt, row, "b");
        INFO(hook << " prompts " << a << ", " << b);
        const double at_word = cosine(last_token_vector(run, hook, a, 2), last_token_vector(run, hook, b, 2));
        CHECK(cell(wt, row, "cosine").get<double>() == Approx(at_word).epsilon(1e-4));
    }
}

TEST_CASE("example: neuron-ablation changes the next-token distribution of every ablated copy", "[example]") {
    const fs::path run = run_example("neuron-ablation.yaml", "neuron-ablation");
    const auto effect = result(run, "effect");
    const auto& rows = effect["tables"]["pair_effects"]["rows"];
    REQUIRE(rows.size() == 3);
    for (const auto& row : rows) CHECK(row[5].get<double>() > 0.01);  // KL(clean || ablated)
}

TEST_CASE("example: heads scores every head against uniform attention on repeated random tokens", "[example]") {
    const fs::path run = run_example("heads.yaml", "heads");
    const auto heads = result(run, "heads");
    const auto& s = heads["summary"];
    CHECK(s["layers"] == 4);
    CHECK(s["heads"] == 4);
    // The previous-token head stands out from uniform attention; the reported best is the table's maximum.
    CHECK(s["best"]["prev_token"]["score"].get<double>() > 2 * s["uniform"]["prev_token"].get<double>());
    const auto& table = heads["tables"]["heads"];
    double top = 0;
    for (const auto& row : table["rows"]) top = std::max(top, cell(table, row, "prev_token").get<double>());
    CHECK(s["best"]["prev_token"]["score"].get<double>() == top);
}

TEST_CASE("example: structure projects, compares, clusters and maps the activation space of the bundled model",
          "[example][pca][cka][cluster][embed]") {
    const fs::path run = run_example("structure.yaml", "structure");
    CHECK(fs::exists(run / "report.html"));
    // pca: the sampled points' spread along each component is that component's variance over all 66k tokens
    // (a sample of 1500 estimates it to a few percent), and PC1 spreads them more than PC2.
    const auto pca = result(run, "pca");
    const auto& comps = pca["tables"]["components"];
    REQUIRE(comps["rows"].size() == 5 * 10);
    for (const std::string hook : {"hook_embed", "blocks.1.hook_resid_post", "blocks.3.hook_resid_post"}) {
        INFO(hook);
        const nscope::NpyArray proj = nscope::read_npy(run / "results" / ("pca." + hook + ".projection.npy"));
        REQUIRE(proj.shape == std::vector<int64_t>{1500, 10});
        const auto v = proj.to_f32();
        std::vector<double> var(2, 0.0), mean(2, 0.0);
        for (int64_t i = 0; i < 1500; ++i)
            for (int c = 0; c < 2; ++c) mean[c] += v[static_cast<size_t>(i * 10 + c)] / 1500.0;
        for (int64_t i = 0; i < 1500; ++i)
            for (int c = 0; c < 2; ++c) var[c] += std::pow(v[static_cast<size_t>(i * 10 + c)] - mean[c], 2) / 1500.0;
        for (const auto& row : comps["rows"])
            if (cell(comps, row, "hook") == hook && cell(comps, row, "component").get<int>() < 2) {
                const int c = cell(comps, row, "component");
                CHECK(var[c] == Approx(cell(comps, row, "explained_variance").get<double>()).epsilon(0.2));
            }
        CHECK(var[0] > var[1]);
    }
    // cka: 1 on the diagonal, symmetric; neighbouring blocks are far more alike than the embedding and the
    // last block.
    const auto cka = result(run, "cka");
    REQUIRE(cka["rows"].size() == 5);
    CHECK(cka["rows"][0] == "hook_embed");
    const auto& z = cka["figures"]["cka"]["z"];
    for (size_t i = 0; i < 5; ++i) {
        CHECK(z[i][i].get<double>() == Approx(1.0).margin(1e-5));
        for (size_t j = 0; j < 5; ++j) CHECK(z[i][j].get<double>() == Approx(z[j][i].get<double>()).margin(1e-6));
    }
    CHECK(z[2][3].get<double>() > z[0][4].get<double>() + 0.2);
    // rsa (cka with method: rsa): the same picture from rank-correlated RDMs of 600 sampled tokens.
    const auto rsa = result(run, "rsa");
    CHECK(rsa["summary"]["sampled"] == 600);
    const auto& zr = rsa["figures"]["cka"]["z"];
    for (size_t i = 0; i < 5; ++i) CHECK(zr[i][i].get<double>() == Approx(1.0).margin(1e-9));
    CHECK(zr[2][3].get<double>() > zr[0][4].get<double>() + 0.1);
    // cluster: both MLP layers have clusters that separate (silhouette > 0), and the labels array agrees with
    // the cluster table.
    const auto clusters = result(run, "clusters");
    const auto& layers = clusters["tables"]["layers"];
    REQUIRE(layers["rows"].size() == 2);
    for (const auto& row : layers["rows"]) {
        const std::string hook = cell(layers, row, "hook");
        INFO(hook);
        CHECK(cell(layers, row, "clusters").get<int64_t>() > 10);
        CHECK(cell(layers, row, "silhouette").get<double>() > 0.1);
        const auto labels = nscope::read_npy(run / "results" / ("clusters." + hook + ".labels.npy")).to_i64();
        REQUIRE(labels.size() == 1024);
        std::map<int64_t, int64_t> sizes;
        for (int64_t l : labels) ++sizes[l];
        const auto& table = clusters["tables"]["clusters"];
        for (const auto& c : table["rows"])
            if (cell(table, c, "hook") == hook)
                CHECK(sizes[cell(table, c, "cluster").get<int64_t>()] == cell(table, c, "size").get<int64_t>());
        CHECK(1024 - sizes[-1] == cell(layers, row, "clustered").get<int64_t>());
    }
    // embed: t-SNE of 1,500 token points after block 3 is trustworthy, and a point's map neighbours share its
    // token far more often than chance (the last residual stream is organised by the current token); the UMAP
    // of the 2,074 verses puts verses of the same testament together more often than chance.
    const std::string last = "blocks.3.hook_resid_post";
    const auto map = result(run, "map")["hooks"][last];
    CHECK(map["trustworthiness"].get<double>() > 0.9);
    CHECK(map["pca"]["components"] == 50);
    const auto tokens = map["tokens"].get<std::vector<std::string>>();
    const auto emb = nscope::read_npy(run / "results" / ("map." + last + ".embedding.npy"));
    REQUIRE(emb.shape == std::vector<int64_t>{1500, 2});
    const auto [token_purity, token_chance] = knn_purity(emb.to_f32(), 2, tokens);
    CHECK(token_purity > 0.3);
    CHECK(token_purity > 10 * token_chance);
    const auto verses = result(run, "verse_map")["hooks"][last];
    CHECK(verses["points"] == 2074);
    CHECK(verses["trustworthiness"].get<double>() > 0.85);
    const auto vemb = nscope::read_npy(run / "results" / ("verse_map." + last + ".embedding.npy"));
    const auto [testament_purity, testament_chance] =
        knn_purity(vemb.to_f32(), 2, verses["labels"].get<std::vector<std::string>>());
    CHECK(testament_purity > testament_chance + 0.1);
}

namespace {
/// Spearman rank correlation (average ranks for ties).
double spearman(const std::vector<float>& a, const std::vector<float>& b) {
    auto ranks = [](const std::vector<float>& v) {
        std::vector<size_t> idx(v.size());
        for (size_t i = 0; i < v.size(); ++i) idx[i] = i;
        std::sort(idx.begin(), idx.end(), [&](size_t x, size_t y) { return v[x] < v[y]; });
        std::vector<double> r(v.size());
        for (size_t i = 0; i < idx.size();) {
            size_t j = i;
            while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
            for (size_t k = i; k <= j; ++k) r[idx[k]] = (static_cast<double>(i + j) / 2.0) + 1.0;
            i = j + 1;
        }
        return r;
    };
    const auto ra = ranks(a), rb = ranks(b);
    const double n = static_cast<double>(a.size()), mean = (n + 1) / 2;
    double num = 0, da = 0, db = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        num += (ra[i] - mean) * (rb[i] - mean);
        da += (ra[i] - mean) * (ra[i] - mean);
        db += (rb[i] - mean) * (rb[i] - mean);
    }
    return num / std::sqrt(da * db);
}
}  // namespace

TEST_CASE("example: causal reads the layers through the unembedding and patches pairs, attribution agrees",
          "[example][causal]") {
    const fs::path run = run_example("causal.yaml", "causal");
    const auto lens = result(run, "lens");
    const auto& layers = lens["tables"]["layers"]["rows"];
    REQUIRE(layers.size() == 5);
    CHECK(layers[4][2].get<double>() < 1e-6);                          // the last layer is the output
    CHECK(layers[0][2].get<double>() > layers[2][2].get<double>());    // KL to the final shrinks with depth
    CHECK(layers[2][2].get<double>() > layers[3][2].get<double>());
    const auto patch = result(run, "patch");
    CHECK(patch["summary"]["pairs"] == 3);
    // The pairs differ in one word (position 7): patching it at the embedding restores the clean run.
    CHECK(std::abs(patch["figures"]["resid"]["z"][0][7].get<double>() - 1.0) < 1e-4);
    const auto heads = nscope::read_npy((run / "results" / "patch.heads.effect.npy").string()).to_f32();
    const auto est = nscope::read_npy((run / "results" / "attr.heads.effect.npy").string()).to_f32();
    REQUIRE(heads.size() == 16);
    REQUIRE(est.size() == 16);
    const double rho = spearman(heads, est);
    INFO("Spearman(attribution, patching) over heads = " << rho);
    CHECK(rho >= 0.7);
    const auto h = result(run, "heads");
    CHECK(h["tables"]["heads"]["columns"].size() == 9);  // with the two ablation columns
}

TEST_CASE("example: probes read the testament of a verse, and k-means groups MLP neurons with typical tokens",
          "[example][probe][cluster]") {
    const fs::path run = run_example("probes.yaml", "probes");
    CHECK(fs::exists(run / "report.html"));
    auto hooks_of = [](const nlohmann::json& res) {
        std::map<std::string, const nlohmann::json*> out;
        for (const auto& [hook, h] : res["hooks"].items()) out[hook] = &h;
        return out;
    };
    // Token points: every hook reads the testament above the majority baseline after block 0; the control task
    // (a random label per token type) is read at least as well: the residual stream is mostly token identity.
    const auto testament = result(run, "testament");
    const auto tokens = hooks_of(testament);
    REQUIRE(tokens.size() == 5);
    for (const auto& [hook, h] : tokens) {
        INFO(hook);
        const double acc = (*h)["accuracy"], majority = (*h)["majority"], control = (*h)["control_accuracy"];
        CHECK((*h)["converged"] == true);
        CHECK(control > majority + 0.05);
        CHECK((*h)["selectivity"].get<double>() == Approx(acc - control).margin(1e-12));
        if (hook != "hook_embed") CHECK(acc > majority + 0.04);
        CHECK((*h)["curve"].back()["accuracy"] == (*h)["accuracy"]);
        const auto ranking = nscope::read_npy(run / "results" / ("testament." + hook + ".ranking.npy")).to_i64();
        CHECK(std::set<int64_t>(ranking.begin(), ranking.end()).size() == 256);
        CHECK(ranking[0] == (*h)["top_neurons"][0]["neuron"].get<int64_t>());
        CHECK(nscope::read_npy(run / "results" / ("testament." + hook + ".weights.npy")).shape ==
              std::vector<int64_t>{2, 256});
    }
    // The verse's last token (nearly always "." or ":"): nothing in the embedding, the context after block 0.
    const auto last_result = result(run, "last");
    const auto last = hooks_of(last_result);
    CHECK((*last.at("hook_embed"))["accuracy"].get<double>() < (*last.at("hook_embed"))["majority"].get<double>() + 0.02);
    for (const std::string hook : {"blocks.1.hook_resid_post", "blocks.3.hook_resid_post"})
        CHECK((*last.at(hook))["accuracy"].get<double>() > (*last.at(hook))["majority"].get<double>() + 0.08);
    // Mean-pooled verses: a bag of embeddings already separates the testaments well.
    const auto verses = result(run, "verses");
    for (const auto& [hook, h] : hooks_of(verses))
        CHECK((*h)["accuracy"].get<double>() > (*h)["majority"].get<double>() + 0.08);
    // k-means: 40 groups covering all 1024 neurons, labels agree with the table, every group has typical tokens,
    // and some group's members nearly all share one (the "." group, the "-iah" names, ...).
    const auto groups = result(run, "groups");
    const auto& table = groups["tables"]["clusters"];
    REQUIRE(table["rows"].size() == 40);
    const auto labels = nscope::read_npy(run / "results/groups.blocks.3.mlp.hook_post.labels.npy").to_i64();
    std::map<int64_t, int64_t> sizes;
    for (int64_t l : labels) ++sizes[l];
    CHECK(sizes.count(-1) == 0);
    double best_share = 0;
    for (const auto& row : table["rows"]) {
        const int64_t size = cell(table, row, "size");
        CHECK(sizes[cell(table, row, "cluster").get<int64_t>()] == size);
        REQUIRE(cell(table, row, "typical_tokens").is_string());
        const auto& typical = groups["typical_tokens"]["blocks.3.mlp.hook_post"][cell(table, row, "cluster").get<size_t>()];
        if (!typical.empty() && size >= 10)
            best_share = std::max(best_share, typical[0]["members"].get<double>() / static_cast<double>(size));
    }
    CHECK(best_share > 0.75);
}

TEST_CASE("example Lua scripts run on the bundled model", "[example][lua]") {
    // Each script asserts its own comparisons before it prints its marker (a failed assert exits 2).
    const std::vector<std::pair<std::string, std::string>> scripts = {
        {"ablate_neuron.lua", "ABLATION_OK"}, {"compare_prompts.lua", "COMPARE_OK"}, {"neuron_search.lua", "NEURON_SEARCH_OK"}};
    for (const auto& [script, marker] : scripts) {
        DYNAMIC_SECTION(script) {
            const std::string out = nscope::test::temp_dir("example-lua");
            const auto r = run_nscope({"script", kSource + "/scripts/lua/" + script, "--out", out, "--",
                                       kSource + "/models/kjv-tiny"});
            INFO(r.out);
            INFO(r.err);
            CHECK(r.exit_code == 0);
            CHECK_THAT(r.out, Catch::Contains(marker));
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
    CHECK_THAT(r.out, Catch::Contains("DRIFT_OK") && Catch::Contains("blocks.3.mlp.hook_post   mean drift"));
    // The script exports the analyzer's result next to its own drift.npy.
    std::vector<fs::path> dirs;
    for (const auto& e : fs::directory_iterator(fs::path(runs) / "drift")) dirs.push_back(e.path());
    REQUIRE(dirs.size() == 1);
    CHECK(fs::exists(dirs[0] / "drift.npy"));
    CHECK(fs::exists(dirs[0] / "results/drift.json"));
}

TEST_CASE("example: the NeuronLens range study masks each concept's ranges and its whole neurons, held-out loss per concept",
          "[example][lua][ranges]") {
    const std::string out = nscope::test::temp_dir("ranges-study");
    const auto r = run_nscope({"script", kSource + "/scripts/lua/ranges_study.lua", "--out", out, "--",
                               kSource + "/models/kjv-tiny"});
    INFO(r.out);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("RANGES_STUDY_OK"));
    std::vector<fs::path> runs;
    for (const auto& e : fs::directory_iterator(fs::path(out) / "ranges_study")) runs.push_back(e.path());
    REQUIRE(runs.size() == 1);
    std::ifstream in(runs[0] / "ranges_study.json");
    const auto study = nlohmann::json::parse(in);
    CHECK(study["fit_prompts"] == 48);
    CHECK(study["eval_prompts"] == 48);
    const auto& rows = study["rows"];
    REQUIRE(rows.size() == 4 * 3);  // every concept x {none, ranges, neurons}
    std::map<std::string, std::map<std::string, nlohmann::json>> by;
    for (const auto& row : rows) by[row["concept"].get<std::string>()][row["mode"].get<std::string>()] = row;
    REQUIRE(by.size() == 4);
    for (const auto& [concept_name, modes] : by) {
        INFO(concept_name);
        REQUIRE(modes.size() == 3);
        const auto& none = modes.at("none");
        // The control: the unmasked evaluation again changes nothing.
        CHECK(std::abs(none["target_delta_loss"].get<double>()) < 1e-9);
        CHECK(std::abs(none["other_delta_loss"].get<double>()) < 1e-9);
        CHECK(none["neurons"] == 0);
        CHECK(modes.at("ranges")["neurons"] == modes.at("neurons")["neurons"]);
        CHECK(modes.at("ranges")["neurons"].get<int>() > 0);
        for (const std::string mode : {"ranges", "neurons"}) {
            INFO(mode);
            const auto& m = modes.at(mode);
            CHECK(m["target_loss"].get<double>() == none["target_loss"].get<double>());
            CHECK(m["target_loss_masked"].get<double>() ==
                  Approx(m["target_loss"].get<double>() + m["target_delta_loss"].get<double>()).margin(1e-9));
            // Masking moves the target concept's loss well beyond the no-op control.
            CHECK(m["target_delta_loss"].get<double>() > 0.01);
        }
    }
    // The CSV holds the same table: a header and one line per row.
    std::ifstream csv(runs[0] / "ranges_study.csv");
    std::string line;
    size_t lines = 0;
    while (std::getline(csv, line)) ++lines;
    CHECK(lines == 1 + rows.size());
}

TEST_CASE("example: drift and cka across a fine-tuning series, deeper layers drift more", "[example][drift][series]") {
    // The short series that the ctest fixture `finetune_series` makes (tests/CMakeLists.txt): kjv-tiny fine-tuned
    // 24 steps on a license text, checkpoints after 8 and 16 steps.
    const fs::path series = fs::path(NSCOPE_TEST_DATA_DIR) / "finetune-series";
    INFO("the fine-tuning series is made by the ctest fixture finetune_series (ctest -R series)");
    REQUIRE(fs::exists(series / "checkpoint-16/model.safetensors"));
    const std::string models = "models=[{path: " + kSource + "/models/kjv-tiny, label: base}, {path: " +
                               (series / "checkpoint-8").string() + ", label: step-8}, {path: " +
                               (series / "checkpoint-16").string() + ", label: step-16}, {path: " + series.string() +
                               ", label: final}]";
    const fs::path run = run_example("drift.yaml", "drift", {models});
    CHECK(fs::exists(run / "report.html"));
    CHECK(fs::exists(run / "results/drift.json"));
    CHECK(fs::exists(run / "step-8"));  // per-model outputs stay in their subfolders
    std::ifstream in(run / "manifest.json");
    const auto manifest = nlohmann::json::parse(in);
    REQUIRE(manifest["lockstep"]["analyses"].size() == 2);
    CHECK(manifest["lockstep"]["models"] == nlohmann::json({"base", "step-8", "step-16", "final"}));

    // Every checkpoint moved: its neurons' profiles decorrelate from the base and CKA falls below 1.
    const auto drift = result(run, "drift");
    const auto& cps = drift["summary"]["checkpoints"];
    REQUIRE(cps.size() == 3);
    for (const auto& c : cps) {
        INFO(c.dump());
        CHECK(c["mean_drift"].get<double>() > 0.1);
        CHECK(c["mean_cka"].get<double>() < 0.95);
        CHECK(c["mean_topk_overlap"].get<double>() < 0.9);
    }
    // Deeper layers drift more, in every checkpoint (table `layers`: one row per checkpoint and hook).
    const auto& layers = drift["tables"]["layers"];
    std::map<std::string, std::vector<double>> by_model;  // model -> mean drift per layer, in layer order
    for (const auto& row : layers["rows"]) by_model[cell(layers, row, "model")].push_back(cell(layers, row, "mean_drift"));
    REQUIRE(by_model.size() == 3);
    for (const auto& [model, d] : by_model) {
        INFO(model << ": " << d[0] << " " << d[1] << " " << d[2] << " " << d[3]);
        REQUIRE(d.size() == 4);
        CHECK(d[0] < d[1]);
        CHECK(d[1] < d[3]);
    }
    const nscope::NpyArray a = nscope::read_npy(run / "results/drift.blocks.3.mlp.hook_post.drift.npy");
    CHECK(a.shape == std::vector<int64_t>{3, 1024});

    // CKA of each residual stream with the same hook of the base falls with depth, in every checkpoint.
    const auto cka = result(run, "cka");
    const nscope::NpyArray same = nscope::read_npy(run / "results/cka.same_hook.npy");
    REQUIRE(same.shape == std::vector<int64_t>{3, 4});
    const auto v = same.to_f32();
    for (size_t c = 0; c < 3; ++c) {
        INFO("checkpoint " << c << ": " << v[c * 4] << " " << v[c * 4 + 1] << " " << v[c * 4 + 2] << " " << v[c * 4 + 3]);
        CHECK(v[c * 4] > v[c * 4 + 3]);
        CHECK(v[c * 4 + 3] < 0.95);
    }
    CHECK(cka["tables"]["pairs"]["rows"].size() == 3 * 16);
}

TEST_CASE("example: the base compared with itself in lockstep gives CKA 1 and no drift", "[example][drift]") {
    const std::string base = kSource + "/models/kjv-tiny";
    const std::string models = "models=[{path: " + base + ", label: base}, {path: " + base + ", label: again}]";
    const fs::path run = run_example("drift.yaml", "drift", {models, "exports=[json]"});
    const auto cka = result(run, "cka");
    const nscope::NpyArray m = nscope::read_npy(run / "results/cka.matrix.again.npy");
    REQUIRE(m.shape == std::vector<int64_t>{4, 4});
    const auto v = m.to_f32();
    for (size_t i = 0; i < 4; ++i) CHECK(v[i * 4 + i] == Approx(1.0).margin(1e-5));
    const auto drift = result(run, "drift");
    CHECK(drift["summary"]["checkpoints"][0]["mean_drift"].get<double>() == Approx(0.0).margin(1e-5));
    CHECK(drift["summary"]["checkpoints"][0]["mean_topk_overlap"].get<double>() == Approx(1.0));
}

TEST_CASE("example: sae.yaml analyses SAE features next to the neurons, and sae_features.py pairs them", "[example][sae]") {
    // The documented pipeline at CI size: a short train-sae, configs/sae.yaml on the 107 prompts of drift.jsonl
    // (docs/examples.md runs it on the 2,074 verses with a longer-trained SAE).
    const std::string dir = nscope::test::temp_dir("example-sae");
    const auto t = run_nscope({"--threads", "2", "train-sae", kSource + "/models/kjv-tiny", "--hook", "blocks.3.mlp.hook_post",
                               "--data", kSource + "/configs/prompts/kjv-sample.jsonl", "--out", dir + "/sae", "--latents",
                               "1024", "--k", "16", "--steps", "25", "--batch-tokens", "512"});
    INFO(t.err);
    REQUIRE(t.exit_code == 0);
    const fs::path run = run_example("sae.yaml", "sae",
                                     {"saes=[{hook: blocks.3.mlp.hook_post, path: " + dir + "/sae}]",
                                      "prompts=[{file: " + kSource + "/configs/prompts/drift.jsonl}]"});
    // topk and polysemantic ranked the neurons and the latents alike; the report has the SAE's section.
    const auto poly = result(run, "poly");
    std::map<std::string, size_t> ranked;
    const auto& table = poly["tables"]["neurons"];
    for (const auto& row : table["rows"]) ++ranked[cell(table, row, "hook").get<std::string>()];
    CHECK(ranked["blocks.3.mlp.hook_post"] > 900);
    CHECK(ranked["blocks.3.mlp.hook_post.sae"] > 100);
    CHECK(nscope::test::read_file((run / "report.html").string()).find("<h2>Sparse autoencoder: blocks.3.mlp.hook_post.sae</h2>") !=
          std::string::npos);

    // The script: live features are more monosemantic (lower median score) than live neurons.
    const std::string cmd = "python3 " + kSource + "/scripts/sae_features.py " + run.string() + " > " + dir + "/out 2> " + dir + "/err";
    REQUIRE(std::system(cmd.c_str()) == 0);
    const std::string out = nscope::test::read_file(dir + "/out");
    INFO(out);
    CHECK_THAT(out, Catch::Contains("SAE_FEATURES_OK"));
    CHECK_THAT(out, Catch::Contains("Most polysemantic neurons of blocks.3.mlp.hook_post"));
    double neurons = 0, features = 0;
    REQUIRE(std::sscanf(out.c_str(), "%*d live neurons of blocks.3.mlp.hook_post, median score %lf; %*d live features of "
                                     "blocks.3.mlp.hook_post.sae, median score %lf", &neurons, &features) == 2);
    CHECK(features < neurons);
    // A run without saes: exit 2 with a message.
    const std::string bad = "python3 " + kSource + "/scripts/sae_features.py " + dir + " > /dev/null 2> " + dir + "/err2";
    CHECK(WEXITSTATUS(std::system(bad.c_str())) == 2);
    CHECK_THAT(nscope::test::read_file(dir + "/err2"), Catch::Contains("sae_features.py: cannot read"));
}

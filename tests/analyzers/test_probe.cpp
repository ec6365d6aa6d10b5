// The `probe` analyzer: its solver against scikit-learn's elastic-net logistic regression (saga) on committed
// fixtures, planted structure (a label carried by 3 neurons among 200 noise neurons is found, and ranked
// first), the control task (high selectivity on that label, none on a label that is a function of the token
// alone), a sharded merge against one pass, and its input errors.
#include <catch2/catch.hpp>

#include <fstream>
#include <random>
#include <set>

#include "core/util/npy.h"
#include "plugins/analyzers/probe/logistic.h"
#include "tests/analyzers/synthetic.h"

using namespace nscope;
using namespace nscope::test;

namespace {

const std::string kHook = "blocks.1.mlp.hook_post";
const std::string kFixtures = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/probe/";

/// Prompt index of every token when `n` tokens are cut into prompts of `lengths` (cycled), as token_batches does.
std::vector<size_t> prompt_of_tokens(size_t n, const std::vector<size_t>& lengths) {
    std::vector<size_t> out;
    for (size_t t = 0, i = 0; t < n; ++i)
        for (size_t k = 0; k < lengths[i % lengths.size()] && t < n; ++k, ++t) out.push_back(i);
    return out;
}

struct Planted {
    std::vector<std::unique_ptr<PromptInfo>> prompts;
    std::vector<SynthBatch> batches;
};

/// `n` tokens of width 203 cut into prompts of lengths 3..9, each prompt labelled `sense` = "river" or
/// "money" at random. Neurons 17, 88 and 150 carry the label (+1 for money, −1 for river, with scales 1, 0.7
/// and 1.3, plus noise of 0.5 and an offset); the other 200 are independent Gaussian noise of various scales.
Planted planted(size_t n, uint32_t seed, size_t batch_size = 6) {
    constexpr int64_t w = 203;
    const std::vector<size_t> lengths = {3, 7, 5, 9, 4};
    const auto owner = prompt_of_tokens(n, lengths);
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<int> label(owner.back() + 1);
    for (auto& l : label) l = static_cast<int>(rng() % 2);
    std::vector<float> x(n * w);
    const std::map<int64_t, float> carriers = {{17, 1.0f}, {88, 0.7f}, {150, 1.3f}};
    for (size_t t = 0; t < n; ++t)
        for (int64_t j = 0; j < w; ++j) {
            const float noise = normal(rng);
            const auto c = carriers.find(j);
            const float sign = label[owner[t]] ? 1.0f : -1.0f;
            x[t * w + j] = c != carriers.end() ? c->second * (sign + 0.5f * noise) + 2.0f
                                               : (0.2f + static_cast<float>(j % 7)) * noise;
        }
    Planted p;
    p.batches = token_batches({{kHook, x}}, {{kHook, w}}, lengths, batch_size, p.prompts, 7.0f);
    for (size_t i = 0; i < p.prompts.size(); ++i)
        p.prompts[i]->labels = {{"sense", label[i] ? "money" : "river"}, {"book", "Ge"}};
    return p;
}

std::unique_ptr<Analyzer> run_probe(const std::vector<SynthBatch>& batches, const Params& params,
                                    const RunContext& ctx = RunContext{}) {
    auto a = registry().create_analyzer("probe");
    a->configure(params);
    a->begin(ctx);
    for (const auto& b : batches) a->consume(b.view());
    return a;
}

RowMatrixXf matrix(const NpyArray& a) {
    const auto v = a.to_f32();
    return Eigen::Map<const RowMatrixXf>(v.data(), a.shape[0], a.shape[1]);
}

}  // namespace

TEST_CASE("probe: the solver equals scikit-learn's elastic-net logistic regression (saga)", "[analyzers][probe]") {
    std::ifstream in(kFixtures + "expected.json");
    const auto expected = nlohmann::json::parse(in);
    for (const std::string name : {"binary", "multi"}) {
        INFO(name);
        const auto& e = expected[name];
        const RowMatrixXf x = matrix(read_npy(kFixtures + name + ".x.npy"));
        const auto labels = read_npy(kFixtures + name + ".y.npy").to_i64();
        const auto train_mask = read_npy(kFixtures + name + ".train.npy").to_i64();
        std::vector<int64_t> train, test;
        for (size_t i = 0; i < train_mask.size(); ++i) (train_mask[i] ? train : test).push_back(static_cast<int64_t>(i));
        REQUIRE(static_cast<int64_t>(train.size()) == e["train"].get<int64_t>());
        probe::Standardiser st;
        st.fit(x, train);
        const RowMatrixXf z = st.standardise(x);
        const RowMatrixXf ztrain = z(train, Eigen::all), ztest = z(test, Eigen::all);
        std::vector<int> ytrain, ytest;
        for (int64_t i : train) ytrain.push_back(static_cast<int>(labels[static_cast<size_t>(i)]));
        for (int64_t i : test) ytest.push_back(static_cast<int>(labels[static_cast<size_t>(i)]));

        probe::LogisticOptions opt;
        opt.alpha = 1.0 / (e["C"].get<double>() * static_cast<double>(train.size()));
        opt.l1_ratio = e["l1_ratio"];
        opt.tol = 1e-6;
        opt.max_iter = 100000;
        const int classes = e["classes"];
        const probe::LogisticModel m = probe::fit_logistic(ztrain, ytrain, classes, opt);
        CHECK(m.converged);
        CHECK(probe::accuracy(m, ztest, ytest) == Approx(e["test_accuracy"].get<double>()).margin(0.01));
        // The same optimum: scikit-learn's binary coef_ is w = row 1 − row 0 of the centred form.
        const auto& coef = e["coef"];
        double worst = 0, largest = 0;
        for (size_t r = 0; r < coef.size(); ++r)
            for (size_t j = 0; j < coef[r].size(); ++j) {
                const double mine = classes == 2 ? m.coef(1, j) - m.coef(0, j) : m.coef(r, j);
                worst = std::max(worst, std::abs(mine - coef[r][j].get<double>()));
                largest = std::max(largest, std::abs(coef[r][j].get<double>()));
                // The L1 part zeroes the same neurons (up to entries at the threshold's edge).
                if (coef[r][j].get<double>() == 0.0) CHECK(std::abs(mine) < 1e-3);
            }
        INFO("largest |coef| " << largest << ", largest difference " << worst);
        CHECK(worst < 2e-4 * std::max(1.0, largest));
        const double b = classes == 2 ? m.intercept(1) - m.intercept(0) : m.intercept(0);
        CHECK(b == Approx(e["intercept"][0].get<double>()).margin(2e-3));
    }
}

TEST_CASE("probe: a label carried by 3 of 203 neurons is found, ranked first, and selective", "[analyzers][probe]") {
    const Planted p = planted(6000, 11);
    const Result r = run_probe(p.batches, {{"label", "sense"}, {"top_neurons", nlohmann::json::array({1, 3, 10})}})->finish();
    const auto& h = r.data["hooks"][kHook];
    INFO(h.dump());
    CHECK(h["classes"] == nlohmann::json::array({"money", "river"}));
    CHECK(h["points"] == 6000);
    CHECK(h["accuracy"].get<double>() >= 0.95);
    // The control task (a random label per token type) has nothing to learn from noise neurons: chance level.
    CHECK(h["control_accuracy"].get<double>() < 0.62);
    CHECK(h["selectivity"].get<double>() > 0.33);
    const auto& ranking = r.arrays.at(kHook + ".ranking").i64;
    REQUIRE(ranking.size() == 203);
    CHECK(std::set<int64_t>(ranking.begin(), ranking.begin() + 3) == std::set<int64_t>{17, 88, 150});
    CHECK(std::set<int64_t>(ranking.begin(), ranking.end()).size() == 203);  // a permutation
    // Weights are [classes, neurons] (classes sorted: money, river); the carriers are high for money.
    const auto& w = r.arrays.at(kHook + ".weights");
    REQUIRE(w.shape == std::vector<int64_t>{2, 203});
    for (size_t j : {17, 88, 150}) {
        CHECK(w.f32[j] > 0.05f);
        CHECK(w.f32[203 + j] == -w.f32[j]);  // the centred form of the binary model
    }
    // Accuracy with only the top neurons: the three carriers suffice.
    const auto& curve = h["curve"];
    REQUIRE(curve.size() == 4);
    CHECK(curve[0]["neurons"] == 1);
    CHECK(curve[1]["neurons"] == 3);
    CHECK(curve[1]["accuracy"].get<double>() >= 0.95);
    CHECK(curve[0]["accuracy"].get<double>() < curve[1]["accuracy"].get<double>());
    CHECK(curve[3]["neurons"] == 203);
    // Every point is in the train / test split once, test prompts never in training.
    const auto& pts = r.arrays.at(kHook + ".points");
    REQUIRE(pts.shape == std::vector<int64_t>{6000, 3});
    std::map<int64_t, std::set<int64_t>> sides;
    int64_t tests = 0;
    for (int64_t i = 0; i < 6000; ++i) sides[pts.i64[3 * i]].insert(pts.i64[3 * i + 2]), tests += pts.i64[3 * i + 2];
    for (const auto& [prompt, s] : sides) CHECK(s.size() == 1);
    CHECK(tests == h["test_points"].get<int64_t>());
    CHECK(std::abs(static_cast<double>(tests) / 6000.0 - 0.2) < 0.05);
    // Figures the report renders generically.
    CHECK(r.data["figures"]["top_neurons." + kHook]["kind"] == "bar");
    CHECK(r.data["figures"]["accuracy_vs_neurons"]["series"][0]["x"] == nlohmann::json::array({1, 3, 10, 203}));
    CHECK(r.data["tables"]["hooks"]["rows"].size() == 1);
}

TEST_CASE("probe: a label that is a function of the token alone has no selectivity", "[analyzers][probe]") {
    // Each token id (0..49, token t of the corpus has id t % 50) has its own random 64-d activation; the label
    // of a prompt is its last token's id mod 3. The probe reads it off the token, and so does the control task
    // (a random label per token type): selectivity ~0.
    constexpr int64_t w = 64;
    const size_t n = 4000;
    const std::vector<size_t> lengths = {2, 5, 3, 6};
    std::mt19937 rng(3);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> embed(50 * w), x(n * w);
    for (auto& v : embed) v = normal(rng);
    for (size_t t = 0; t < n; ++t)
        for (int64_t j = 0; j < w; ++j) x[t * w + j] = embed[(t % 50) * w + j] + 0.1f * normal(rng);
    std::vector<std::unique_ptr<PromptInfo>> prompts;
    const auto batches = token_batches({{kHook, x}}, {{kHook, w}}, lengths, 8, prompts);
    const auto owner = prompt_of_tokens(n, lengths);
    for (size_t t = 0; t < n; ++t) prompts[owner[t]]->labels = {{"kind", std::to_string((t % 50) % 3)}};
    const Result r = run_probe(batches, {{"label", "kind"}, {"position", "last"}})->finish();
    const auto& h = r.data["hooks"][kHook];
    INFO(h.dump());
    CHECK(h["classes"].size() == 3);
    CHECK(h["points"] == static_cast<int64_t>(prompts.size()));  // one point per prompt: its last token
    CHECK(h["accuracy"].get<double>() > 0.95);
    CHECK(h["control_accuracy"].get<double>() > 0.9);
    CHECK(std::abs(h["selectivity"].get<double>()) < 0.08);
    CHECK(r.data["summary"]["position"] == "last");
    // The same label on pooled points (mean over the prompt): no token type per point, so no control task.
    const Result pooled = run_probe(batches, {{"label", "kind"}, {"points", "prompts"}, {"pool", "mean"}})->finish();
    CHECK(pooled.data["hooks"][kHook]["control_accuracy"].is_null());
    CHECK(pooled.data["summary"]["control"] == false);
}

TEST_CASE("probe: two merged shards equal one pass", "[analyzers][probe]") {
    const Planted p = planted(1500, 4);
    const Params params = {{"label", "sense"}, {"max_points", 900}, {"top_neurons", 3}};
    const Result whole = run_probe(p.batches, params)->finish();
    auto a = run_probe({p.batches.begin(), p.batches.begin() + 20}, params);
    auto b = run_probe({p.batches.begin() + 20, p.batches.end()}, params);
    REQUIRE(a->mergeable());
    a->merge(*b);
    const Result merged = a->finish();
    CHECK(merged.data["hooks"][kHook]["points"] == 900);
    CHECK(merged.arrays.at(kHook + ".points").i64 == whole.arrays.at(kHook + ".points").i64);
    CHECK(merged.arrays.at(kHook + ".ranking").i64 == whole.arrays.at(kHook + ".ranking").i64);
    CHECK(merged.arrays.at(kHook + ".weights").f32 == whole.arrays.at(kHook + ".weights").f32);
    CHECK(merged.data["hooks"] == whole.data["hooks"]);
}

TEST_CASE("probe: one class, missing labels and too few points are input errors", "[analyzers][probe]") {
    auto configure = [](const Params& params) { registry().create_analyzer("probe")->configure(params); };
    CHECK_THAT(input_error([&] { configure({{"points", "tokens"}}); }), Catch::Contains("'label' is required"));
    CHECK_THAT(input_error([&] { configure({{"label", "x"}, {"C", 1}, {"alpha", 0.1}}); }), Catch::Contains("give one"));
    CHECK_THAT(input_error([&] { configure({{"label", "x"}, {"pool", "mean"}}); }), Catch::Contains("points: prompts"));
    CHECK_THAT(input_error([&] { configure({{"label", "x"}, {"position", "first"}}); }), Catch::Contains("position"));
    CHECK_THAT(input_error([&] { configure({{"label", "x"}, {"classes", {"a"}}}); }), Catch::Contains("two values"));

    Planted p = planted(300, 2);
    // One class only.
    for (auto& info : p.prompts) info->labels["sense"] = "river";
    CHECK_THAT(input_error([&] { run_probe(p.batches, {{"label", "sense"}})->finish(); }),
               Catch::Contains("only one value ('river')") && Catch::Contains("at least two classes"));
    // The label key on no prompt: said before the first batch, with the keys the prompts do carry.
    RunContext ctx;
    for (const auto& info : p.prompts) ctx.prompts.push_back(info.get());
    CHECK_THAT(input_error([&] { run_probe(p.batches, {{"label", "sens"}}, ctx); }),
               Catch::Contains("no prompt has a label 'sens'") && Catch::Contains("book, sense") &&
                   Catch::Contains("did you mean 'sense'"));
    // Some prompts unlabelled: named (before the first batch when the prompts are known, else at finish).
    for (size_t i = 0; i < p.prompts.size(); ++i) p.prompts[i]->labels["sense"] = i % 2 ? "river" : "money";
    p.prompts[3]->labels.erase("sense");
    p.prompts[8]->labels.erase("sense");
    CHECK_THAT(input_error([&] { run_probe(p.batches, {{"label", "sense"}}, ctx); }),
               Catch::Contains("2 prompt(s) have no label 'sense': prompt(s) 3, 8") && Catch::Contains("missing: skip"));
    CHECK_THAT(input_error([&] { run_probe(p.batches, {{"label", "sense"}})->finish(); }), Catch::Contains("prompt(s) 3, 8"));
    const Result skipped = run_probe(p.batches, {{"label", "sense"}, {"missing", "skip"}}, ctx)->finish();
    CHECK(skipped.data["summary"]["unlabelled_prompts"] == 2);
    // Too few points for the split: two prompts, one per class; the test prompt takes a class away from training.
    std::vector<std::unique_ptr<PromptInfo>> two;
    const auto batches = token_batches({{kHook, std::vector<float>(6 * 4, 1.0f)}}, {{kHook, 4}}, {3}, 2, two);
    two[0]->labels = {{"sense", "river"}};
    two[1]->labels = {{"sense", "money"}};
    CHECK_THAT(input_error([&] { run_probe(batches, {{"label", "sense"}})->finish(); }),
               Catch::Contains("too few points for the split") && Catch::Contains("one class only"));
    // A run context that declares a wide hook: the sample would not fit.
    RunContext wide;
    wide.hooks.push_back({kHook, {"batch", "pos", "neuron"}, {-1, -1, 100000}});
    CHECK_THAT(input_error([&] { run_probe({}, {{"label", "sense"}, {"max_points", 100000}}, wide); }),
               Catch::Contains("max_memory_mb") && Catch::Contains("max_points"));
}

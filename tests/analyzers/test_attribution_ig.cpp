// Integrated gradients (`attribution`, method: integrated_gradients) against a model whose integral is known in
// closed form: a fake ModelAccess with one MLP hook whose activations are planted per token, a metric
// M = Σ_i c_i a_i³ at the last position, and `scale` interventions applied as the host applies them. The exact
// attribution of neuron i is c_i x_i³ (∫ 3α² dα = 1), so the Riemann sums' error is known; knowledge neurons are
// planted per concept.
#include <catch2/catch.hpp>

#include <cmath>

#include "tests/analyzers/synthetic.h"

using namespace nscope;
using namespace nscope::test;

namespace {

constexpr int64_t kWidth = 6;
const std::string kHook = "blocks.0.mlp.hook_post";
const double kC[kWidth] = {1.0, -0.5, 0.8, 0.3, 0.6, 0.1};

/// Activation of neuron i at a token: neuron 2 fires on token 7 (concept A), neuron 4 on token 9 (concept B),
/// the others carry a small token-dependent value.
double planted(int64_t token, int64_t i) {
    if (i == 2 && token == 7) return 3.0;
    if (i == 4 && token == 9) return 2.5;
    return 0.1 * static_cast<double>((token + i) % 5) - 0.2;
}

struct FakeModel {
    size_t calls = 0, rows = 0;
    ModelAccess access;
    FakeModel() {
        access.tokenize = [](const std::string&) { return std::vector<int64_t>{1}; };
        access.run = [this](const ModelCall& call) { return run(call); };
    }

    ModelOutput run(const ModelCall& call) {
        ++calls;
        rows += call.rows.size();
        const size_t R = call.rows.size();
        size_t Pn = 0;
        for (const auto& r : call.rows) Pn = std::max(Pn, r.size());
        std::vector<double> factor(R * Pn, 1.0);  // the scale applied at (row, position)
        for (const auto& e : call.interventions) {
            REQUIRE(e["hook"] == kHook);
            REQUIRE(e["op"] == "scale");
            for (const auto& r : e["prompts"]) {
                const auto row = r.get<size_t>();
                const size_t len = call.rows[row].size();
                if (e.contains("positions")) {
                    for (const auto& q : e["positions"]) {
                        const int64_t p = q.get<int64_t>();
                        factor[row * Pn + static_cast<size_t>(p < 0 ? static_cast<int64_t>(len) + p : p)] *= e["factor"].get<double>();
                    }
                } else {
                    for (size_t q = 0; q < len; ++q) factor[row * Pn + q] *= e["factor"].get<double>();
                }
            }
        }
        ModelOutput out;
        OwnedTensor acts, grads;
        acts.shape = grads.shape = {static_cast<int64_t>(R), static_cast<int64_t>(Pn), kWidth};
        acts.data.assign(R * Pn * kWidth, 0.0f);
        grads.data.assign(R * Pn * kWidth, 0.0f);
        for (size_t r = 0; r < R; ++r) {
            const size_t len = call.rows[r].size();
            out.lengths.push_back(static_cast<int64_t>(len));
            double m = 0;
            for (size_t q = 0; q < len; ++q)
                for (int64_t i = 0; i < kWidth; ++i) {
                    const double a = factor[r * Pn + q] * planted(call.rows[r][q], i);
                    acts.data[(r * Pn + q) * kWidth + i] = static_cast<float>(a);
                    if (q + 1 == len) {  // the metric reads the last position only
                        m += kC[i] * a * a * a;
                        grads.data[(r * Pn + q) * kWidth + i] = static_cast<float>(3 * kC[i] * a * a);
                    }
                }
            out.metric.push_back(m);
        }
        for (const auto& h : call.capture) out.captures[h] = acts;
        for (const auto& h : call.gradients) out.gradients[h] = grads;
        return out;
    }
};

struct Prompts {
    std::vector<std::vector<int64_t>> ids{{3, 4, 7}, {5, 7}, {2, 2, 4, 7}, {1, 9}, {6, 9}};
    std::vector<PromptInfo> infos;
    std::vector<int64_t> flat, mask;
    size_t positions = 4;
    Prompts() {
        for (size_t p = 0; p < ids.size(); ++p) {
            PromptInfo info;
            info.index = p;
            info.labels = {{"fact", ids[p].back() == 7 ? "A" : "B"}};
            infos.push_back(info);
            for (size_t q = 0; q < positions; ++q) {
                flat.push_back(q < ids[p].size() ? ids[p][q] : 0);
                mask.push_back(q < ids[p].size() ? 1 : 0);
            }
        }
    }
    Batch batch() const {
        Batch b;
        b.rows = ids.size();
        b.positions = positions;
        b.input_ids = flat.data();
        b.attention_mask = mask.data();
        for (const auto& i : infos) b.prompts.push_back(&i);
        return b;
    }
};

Result run_ig(FakeModel& model, const Params& params) {
    const Prompts prompts;
    auto a = registry().create_analyzer("attribution");
    a->configure(params);
    RunContext ctx;
    ctx.model_info = {{"n_layers", 1}};
    ctx.model = &model.access;
    a->begin(ctx);
    a->consume(prompts.batch());
    return a->finish();
}

Params ig_params(int steps, const std::string& rule) {
    return {{"method", "integrated_gradients"}, {"steps", steps}, {"rule", rule}, {"metric", "loss"},
            {"label", "fact"}, {"batch_size", 7}};
}

}  // namespace

TEST_CASE("integrated gradients: attributions converge to the closed-form integral, completeness error shrinks",
          "[analyzers][attribution][ig]") {
    const Prompts prompts;
    for (const std::string rule : {"midpoint", "right", "left", "trapezoid"}) {
        INFO("rule " << rule);
        double previous = INFINITY;
        for (int steps : {1, 4, 16, 64}) {
            INFO("steps " << steps);
            FakeModel model;
            const Result r = run_ig(model, ig_params(steps, rule));
            const auto& s = r.data["summary"];
            const double err = s["completeness"]["max_error"].get<double>();
            CHECK(err < previous);
            previous = err;
            // Every row was computed, batched 7 rows per forward.
            const size_t points = rule == "trapezoid" ? static_cast<size_t>(steps) - 1 + 1
                                                      : static_cast<size_t>(steps) + (rule == "left" ? 0 : 1) - (rule == "right" ? 1 : 0);
            CHECK(s["rows"] == model.rows);
            CHECK(model.rows == prompts.ids.size() * (1 + points));
            CHECK(model.calls == (model.rows + 6) / 7);
            const auto& eff = r.arrays.at(kHook + ".effect");
            REQUIRE(eff.shape == std::vector<int64_t>{5, kWidth});
            const auto v = eff.f32;
            const auto& rows = r.data["tables"]["completeness"]["rows"];
            for (size_t p = 0; p < prompts.ids.size(); ++p) {
                double exact_total = 0, sum = 0;
                for (int64_t i = 0; i < kWidth; ++i) {
                    const double x = planted(prompts.ids[p].back(), i);
                    exact_total += kC[i] * x * x * x;
                    sum += v[p * kWidth + static_cast<size_t>(i)];
                    if (steps == 64 && rule == "midpoint")  // midpoint error of ∫3α²: 1/(4 m²) relative
                        CHECK(v[p * kWidth + static_cast<size_t>(i)] == Approx(kC[i] * x * x * x).epsilon(1e-4).margin(1e-6));
                }
                CHECK(rows[p][2].get<double>() == Approx(exact_total).margin(1e-6));  // M(x); M(x') = 0
                CHECK(rows[p][3].get<double>() == Approx(0.0).margin(1e-12));
                CHECK(rows[p][4].get<double>() == Approx(sum).epsilon(1e-5).margin(1e-6));
            }
        }
    }
}

TEST_CASE("integrated gradients: planted knowledge neurons are found per concept, the threshold and share apply",
          "[analyzers][attribution][ig]") {
    FakeModel model;
    Params params = ig_params(32, "midpoint");
    const Result r = run_ig(model, params);
    const auto& kn = r.data["knowledge_neurons"];
    REQUIRE(kn.size() == 2);
    REQUIRE(kn["A"]["prompts"] == 3);
    REQUIRE(kn["A"]["neurons"].size() == 1);
    CHECK(kn["A"]["neurons"][0]["neuron"] == 2);
    CHECK(kn["A"]["neurons"][0]["fraction"] == 1.0);
    REQUIRE(kn["B"]["neurons"].size() == 1);
    CHECK(kn["B"]["neurons"][0]["neuron"] == 4);
    CHECK(r.data["tables"]["knowledge_neurons"]["rows"].size() == 2);
    // threshold 0: every neuron with a non-negative attribution in enough prompts; share 1: in all of them.
    params["threshold"] = 0.0;
    params["share"] = 1.0;
    FakeModel model2;
    const Result all = run_ig(model2, params);
    const auto v = all.arrays.at(kHook + ".effect").f32;
    for (const std::string concept_name : {"A", "B"}) {
        std::vector<size_t> members;
        for (size_t p = 0; p < 5; ++p)
            if ((p < 3) == (concept_name == "A")) members.push_back(p);
        size_t want = 0;
        for (int64_t i = 0; i < kWidth; ++i) {
            bool every = true;
            for (size_t p : members) every &= v[p * kWidth + static_cast<size_t>(i)] >= 0.0f;
            want += every;
        }
        CHECK(all.data["knowledge_neurons"][concept_name]["neurons"].size() == want);
    }
}

TEST_CASE("integrated gradients: bad parameters are refused (steps below 1, a hook that is not an MLP hook, pairs)",
          "[analyzers][attribution][ig][errors]") {
    auto a = registry().create_analyzer("attribution");
    Params p = ig_params(0, "midpoint");
    CHECK_THROWS_WITH(a->configure(p), Catch::Contains("'steps'") && Catch::Contains("[1, 100000]"));
    p = ig_params(10, "midpoint");
    p["hooks"] = {"blocks.0.hook_resid_post"};
    CHECK_THROWS_WITH(a->configure(p), Catch::Contains("not an MLP neuron hook"));
    p["hooks"] = {"blocks.*.mlp.hook_post"};
    CHECK_NOTHROW(a->configure(p));
    p["pairs"] = {{0, 1}};
    CHECK_THROWS_WITH(a->configure(p), Catch::Contains("belongs to method: patching"));
    p.erase("pairs");
    p["rule"] = "simpson";
    CHECK_THROWS_WITH(a->configure(p), Catch::Contains("'rule'"));
    p = {{"steps", 10}};  // an integrated-gradients key under the default method
    CHECK_THROWS_WITH(a->configure(p), Catch::Contains("belongs to method: integrated_gradients"));
    // A layer pattern that matches no layer of the model.
    p = ig_params(10, "midpoint");
    p["hooks"] = {"blocks.7.mlp.hook_post"};
    a->configure(p);
    FakeModel model;
    RunContext ctx;
    ctx.model_info = {{"n_layers", 1}};
    ctx.model = &model.access;
    CHECK_THROWS_WITH(a->begin(ctx), Catch::Contains("no MLP layer"));
    // Without the run's model.
    a->configure(ig_params(10, "midpoint"));
    CHECK_THROWS_WITH(a->begin(RunContext{}), Catch::Contains("needs the run's model"));
}

// Analyzers that span the models of a `models:` run, fed in lockstep as the runner does (model 0's batch, then
// model 1's, same prompts): `cka` with `across: models` and `drift`. Both equal a numpy computation on the
// committed fixture (tests/fixtures/cka_models/make_cka_models_fixture.py); CKA is invariant to orthogonal
// transforms and isotropic scaling; a model compared with itself gives CKA 1 and no drift; bad input is refused.
#include <catch2/catch.hpp>

#include <fstream>
#include <random>

#include <Eigen/QR>

#include <nscope/eigen.h>

#include "core/util/npy.h"
#include "tests/analyzers/synthetic.h"

using namespace nscope;
using namespace nscope::test;

namespace {

const std::string kFixtures = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/cka_models/";

using Tokens = std::map<std::string, std::vector<float>>;
using Widths = std::map<std::string, int64_t>;

struct Fixture {
    nlohmann::json expected;
    Tokens a, b;
    Widths widths;
    std::vector<size_t> lengths;
};

const Fixture& fixture() {
    static const Fixture f = [] {
        Fixture x;
        std::ifstream in(kFixtures + "expected.json");
        x.expected = nlohmann::json::parse(in);
        for (const auto& h : x.expected["hooks"]) {
            const std::string hook = h.get<std::string>();
            const NpyArray a = read_npy(kFixtures + "A." + hook + ".npy"), b = read_npy(kFixtures + "B." + hook + ".npy");
            x.a[hook] = a.to_f32();
            x.b[hook] = b.to_f32();
            x.widths[hook] = a.shape[1];
        }
        x.lengths = x.expected["lengths"].get<std::vector<size_t>>();
        return x;
    }();
    return f;
}

ModelContext model(const std::string& label, const Widths& widths, const std::string& tokenizer = "tok") {
    ModelContext m;
    m.label = label;
    m.ref = "models/" + label;
    for (const auto& [hook, w] : widths) m.hooks.push_back({hook, {"batch", "pos", "d_model"}, {-1, -1, w}});
    m.tokenizer_sha256 = tokenizer;
    return m;
}

RunContext context(const std::vector<ModelContext>& models) {
    RunContext ctx;
    ctx.models = models;
    ctx.hooks = models[0].hooks;
    return ctx;
}

/// configure + check + begin, then the models' batches in lockstep, then finish.
Result run_lockstep(const std::string& id, const Params& params, const std::vector<Tokens>& models, const Widths& widths,
                    const std::vector<size_t>& lengths, float pad = 0.0f) {
    std::vector<ModelContext> ctxs;
    for (size_t m = 0; m < models.size(); ++m) ctxs.push_back(model(m == 0 ? "base" : "ckpt-" + std::to_string(m), widths));
    auto a = registry().create_analyzer(id);
    a->configure(params);
    REQUIRE(a->spans_models());
    const RunContext ctx = context(ctxs);
    a->check(ctx);
    a->begin(ctx);
    std::vector<std::unique_ptr<PromptInfo>> prompts;
    std::vector<std::vector<SynthBatch>> batches;
    for (const auto& t : models) batches.push_back(token_batches(t, widths, lengths, 3, prompts, pad));
    for (size_t i = 0; i < batches[0].size(); ++i)
        for (size_t m = 0; m < models.size(); ++m) {
            Batch b = batches[m][i].view();
            b.model = m;
            a->consume(b);
        }
    return a->finish();
}

Eigen::MatrixXd matrix(const NdArray& m) {
    Eigen::MatrixXd out(m.shape[0], m.shape[1]);
    for (int64_t i = 0; i < m.shape[0]; ++i)
        for (int64_t j = 0; j < m.shape[1]; ++j) out(i, j) = m.f32[static_cast<size_t>(i * m.shape[1] + j)];
    return out;
}

/// Each token row of `v` ([n, w]) times the w×w matrix `m`.
std::vector<float> transform(const std::vector<float>& v, const Eigen::MatrixXd& m) {
    const auto w = m.rows();
    const auto n = static_cast<Eigen::Index>(v.size()) / w;
    Eigen::Map<const RowMatrixXf> x(v.data(), n, w);
    RowMatrixXf y = (x.cast<double>() * m).cast<float>();
    return std::vector<float>(y.data(), y.data() + y.size());
}

Eigen::MatrixXd random_orthogonal(int n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal;
    Eigen::MatrixXd g(n, n);
    for (int i = 0; i < n * n; ++i) g.data()[i] = normal(rng);
    return Eigen::HouseholderQR<Eigen::MatrixXd>(g).householderQ();
}

}  // namespace

TEST_CASE("cka across models: equals numpy token by token and on mean and last pooled points", "[analyzers][cka][across]") {
    const Fixture& f = fixture();
    for (const std::string pool : {"tokens", "mean", "last"}) {
        DYNAMIC_SECTION("pool " << pool) {
            // A loud padding value: a padded token in the sums would move every entry.
            const Result r = run_lockstep("cka", {{"across", "models"}, {"pool", pool}}, {f.a, f.b}, f.widths, f.lengths, 50.0f);
            const Eigen::MatrixXd m = matrix(r.arrays.at("matrix.ckpt-1"));
            const auto& want = f.expected["cka_" + pool];
            for (int i = 0; i < 2; ++i)
                for (int j = 0; j < 2; ++j) {
                    INFO(i << ", " << j);
                    CHECK(m(i, j) == Approx(want[i][j].get<double>()).margin(1e-5));
                }
            CHECK(r.data["rows"] == f.expected["hooks"]);
            CHECK(r.data["summary"]["points"] == (pool == "tokens" ? f.expected["tokens"] : f.expected["prompts"]));
            CHECK(r.data["tables"]["pairs"]["rows"].size() == 4);
            CHECK(r.arrays.at("same_hook").f32[1] == Approx(want[1][1].get<double>()).margin(1e-5));
        }
    }
}

TEST_CASE("cka across models: a model with itself gives 1 on the diagonal, invariant to rotation and scale",
          "[analyzers][cka][across]") {
    const Fixture& f = fixture();
    const Result self = run_lockstep("cka", {{"across", "models"}}, {f.a, f.a}, f.widths, f.lengths);
    const Eigen::MatrixXd s = matrix(self.arrays.at("matrix.ckpt-1"));
    CHECK(s.diagonal().isApprox(Eigen::VectorXd::Ones(2), 1e-6));
    CHECK(s(0, 1) < 0.99);  // different hooks are not identical: the diagonal is not 1 by construction

    const Eigen::MatrixXd base = matrix(run_lockstep("cka", {{"across", "models"}}, {f.a, f.b}, f.widths, f.lengths).arrays.at("matrix.ckpt-1"));
    Tokens rotated = f.b;
    rotated["blocks.0.hook_resid_post"] = transform(f.b.at("blocks.0.hook_resid_post"), 0.3 * random_orthogonal(6, 5));
    rotated["blocks.1.hook_resid_post"] = transform(f.b.at("blocks.1.hook_resid_post"), 12.0 * random_orthogonal(4, 9));
    const Eigen::MatrixXd m = matrix(run_lockstep("cka", {{"across", "models"}}, {f.a, rotated}, f.widths, f.lengths).arrays.at("matrix.ckpt-1"));
    CHECK((m - base).cwiseAbs().maxCoeff() < 1e-5);
    Tokens stretched = f.b;
    const Eigen::VectorXd axis = (Eigen::VectorXd(6) << 10, 1, 1, 1, 0.1, 1).finished();
    stretched["blocks.0.hook_resid_post"] = transform(f.b.at("blocks.0.hook_resid_post"), axis.asDiagonal());
    const Eigen::MatrixXd st = matrix(run_lockstep("cka", {{"across", "models"}}, {f.a, stretched}, f.widths, f.lengths).arrays.at("matrix.ckpt-1"));
    CHECK(std::abs(st(0, 0) - base(0, 0)) > 1e-2);
}

TEST_CASE("cka across models: other tokenizers without pooling, other tokens, one model and a state over max_memory_mb are input errors",
          "[analyzers][cka][across]") {
    const Widths w{{"blocks.0.hook_resid_post", 6}};
    auto a = registry().create_analyzer("cka");
    a->configure({{"across", "models"}});
    CHECK_THAT(input_error([&] { a->check(context({model("base", w), model("other", w, "another tokenizer")})); }),
               Catch::Contains("different tokenizer") && Catch::Contains("pool: mean"));
    CHECK_THAT(input_error([&] { a->check(context({model("base", w)})); }), Catch::Contains("models:"));
    a->configure({{"across", "models"}, {"pool", "mean"}});
    CHECK_NOTHROW(a->check(context({model("base", w), model("other", w, "another tokenizer")})));
    CHECK_THAT(input_error([&] { registry().create_analyzer("cka")->configure({{"pool", "mean"}}); }),
               Catch::Contains("across: models"));

    // Two models of 4 × 8192 features: the covariances and the cross-covariance are far above 2048 MB.
    Widths big;
    for (int l = 0; l < 4; ++l) big["blocks." + std::to_string(l) + ".mlp.hook_post"] = 8192;
    a = registry().create_analyzer("cka");
    a->configure({{"across", "models"}});
    CHECK_THAT(input_error([&] { a->check(context({model("base", big), model("ckpt", big)})); }),
               Catch::Contains("max_memory_mb") && Catch::Contains("'hooks'"));

    // The same tokenizer file but other token ids in a batch (e.g. truncation): refused at the batch.
    a = registry().create_analyzer("cka");
    a->configure({{"across", "models"}});
    const Fixture& f = fixture();
    a->begin(context({model("base", f.widths), model("ckpt", f.widths)}));
    std::vector<std::unique_ptr<PromptInfo>> prompts;
    auto ba = token_batches(f.a, f.widths, f.lengths, 3, prompts), bb = token_batches(f.b, f.widths, f.lengths, 3, prompts);
    bb[0].ids[0] += 1;
    a->consume(ba[0].view());
    Batch other = bb[0].view();
    other.model = 1;
    CHECK_THAT(input_error([&] { a->consume(other); }), Catch::Contains("other tokens") && Catch::Contains("pool"));
}

TEST_CASE("drift: correlation, mean shift, top-k overlap and CKA equal numpy on the fixture", "[analyzers][drift]") {
    const Fixture& f = fixture();
    const int64_t k = f.expected["k"];
    const Result r = run_lockstep("drift", {{"k", k}}, {f.a, f.b}, f.widths, f.lengths, 50.0f);
    for (const auto& hook : f.expected["hooks"]) {
        const std::string h = hook;
        const auto& want = f.expected["drift"][h];
        const auto& corr = r.arrays.at(h + ".correlation");
        const auto& drift = r.arrays.at(h + ".drift");
        const auto& shift = r.arrays.at(h + ".mean_shift");
        const auto& overlap = r.arrays.at(h + ".topk_overlap");
        REQUIRE(drift.shape == std::vector<int64_t>{1, f.widths.at(h)});
        for (size_t j = 0; j < static_cast<size_t>(f.widths.at(h)); ++j) {
            INFO(h << " neuron " << j);
            CHECK(corr.f32[j] == Approx(want["correlation"][j].get<double>()).margin(1e-5));
            CHECK(drift.f32[j] == Approx(1.0 - want["correlation"][j].get<double>()).margin(1e-5));
            CHECK(shift.f32[j] == Approx(want["mean_shift"][j].get<double>()).margin(1e-5));
            CHECK(overlap.f32[j] == Approx(want["topk_overlap"][j].get<double>()));
        }
    }
    const auto& layers = r.data["tables"]["layers"];
    REQUIRE(layers["rows"].size() == 2);
    for (size_t i = 0; i < 2; ++i) {
        const std::string h = layers["rows"][i][2];
        CHECK(layers["rows"][i][10].get<double>() == Approx(f.expected["drift"][h]["cka"].get<double>()).margin(1e-5));
    }
    CHECK(r.data["summary"]["tokens"] == f.expected["tokens"]);
    CHECK(r.data["figures"]["drift_by_hook"]["frames"].size() == 1);
}

TEST_CASE("drift: a model against itself has no drift, full top-k overlap and CKA 1, and drift grows with noise",
          "[analyzers][drift]") {
    const Fixture& f = fixture();
    // base, itself, then the base plus growing noise: a series whose drift must grow.
    std::vector<Tokens> series{f.a, f.a};
    std::mt19937 rng(4);
    std::normal_distribution<float> normal;
    for (float sigma : {0.3f, 1.0f, 3.0f}) {
        Tokens t = f.a;
        for (auto& [hook, v] : t)
            for (auto& x : v) x += sigma * normal(rng);
        series.push_back(std::move(t));
    }
    const Result r = run_lockstep("drift", {{"k", 3}}, series, f.widths, f.lengths);
    const auto& cps = r.data["summary"]["checkpoints"];
    REQUIRE(cps.size() == 4);
    CHECK(cps[0]["mean_drift"].get<double>() == Approx(0.0).margin(1e-6));
    CHECK(cps[0]["mean_topk_overlap"].get<double>() == Approx(1.0));
    CHECK(cps[0]["mean_cka"].get<double>() == Approx(1.0).margin(1e-6));
    CHECK(cps[0]["mean_abs_shift"].get<double>() == Approx(0.0).margin(1e-6));
    for (size_t c = 1; c + 1 < cps.size(); ++c) {
        INFO("checkpoint " << c);
        CHECK(cps[c]["mean_drift"].get<double>() < cps[c + 1]["mean_drift"].get<double>());
        CHECK(cps[c]["mean_cka"].get<double>() > cps[c + 1]["mean_cka"].get<double>());
    }
    CHECK(r.data["figures"]["drift"]["series"].size() == 2);
    CHECK(r.data["figures"]["drift"]["x"].size() == 4);
}

TEST_CASE("drift: one model, a hook missing in a checkpoint, other widths and other tokenizers are input errors",
          "[analyzers][drift]") {
    const Widths w{{"blocks.0.hook_resid_post", 6}, {"blocks.1.hook_resid_post", 4}};
    auto a = registry().create_analyzer("drift");
    a->configure(nlohmann::json::object());
    CHECK_THAT(input_error([&] { a->check(context({model("base", w)})); }), Catch::Contains("models:"));
    CHECK_THAT(input_error([&] { a->check(context({model("base", w), model("ckpt", {{"blocks.0.hook_resid_post", 6}})})); }),
               Catch::Contains("blocks.1.hook_resid_post") && Catch::Contains("not captured"));
    CHECK_THAT(input_error([&] {
                   a->check(context({model("base", w), model("ckpt", {{"blocks.0.hook_resid_post", 7}, {"blocks.1.hook_resid_post", 4}})}));
               }),
               Catch::Contains("7 in"));
    CHECK_THAT(input_error([&] { a->check(context({model("base", w), model("ckpt", w, "other")})); }),
               Catch::Contains("different tokenizer"));
    Widths big{{"blocks.0.mlp.hook_post", 16384}};
    CHECK_THAT(input_error([&] { a->check(context({model("base", big), model("ckpt", big)})); }),
               Catch::Contains("max_memory_mb") && Catch::Contains("cka: false"));
    a->configure({{"cka", false}});
    CHECK_NOTHROW(a->check(context({model("base", big), model("ckpt", big)})));
    CHECK_THROWS_AS(registry().create_analyzer("drift")->configure({{"topk", 3}}), InputError);
}

TEST_CASE("cka across models, method minibatch and rsa: equal the same measures between the hooks of one model",
          "[analyzers][cka][across][rsa]") {
    const Fixture& f = fixture();
    // The second model's hooks renamed as later layers of one model: the same points in the same order.
    Tokens joined = f.a;
    Widths joined_widths = f.widths;
    const std::vector<std::string> hooks = f.expected["hooks"];
    for (size_t i = 0; i < hooks.size(); ++i) {
        const std::string renamed = "blocks." + std::to_string(7 + i) + ".hook_resid_post";
        joined[renamed] = f.b.at(hooks[i]);
        joined_widths[renamed] = f.widths.at(hooks[i]);
    }
    for (const Params& params : {Params{{"method", "minibatch"}, {"minibatch", 8}}, Params{{"method", "rsa"}}}) {
        INFO(params.dump());
        Params across = params;
        across["across"] = "models";
        const Result r = run_lockstep("cka", across, {f.a, f.b}, f.widths, f.lengths);
        const Eigen::MatrixXd m = matrix(r.arrays.at("matrix.ckpt-1"));

        std::vector<std::unique_ptr<PromptInfo>> prompts;
        auto one = registry().create_analyzer("cka");
        one->configure(params);
        one->begin(RunContext{});
        for (const auto& b : token_batches(joined, joined_widths, f.lengths, 3, prompts)) one->consume(b.view());
        const Eigen::MatrixXd all = matrix(one->finish().arrays.at("matrix"));
        REQUIRE(all.rows() == 4);
        CHECK((m - all.block(0, 2, 2, 2)).cwiseAbs().maxCoeff() < 1e-9);

        const Result self = run_lockstep("cka", across, {f.a, f.a}, f.widths, f.lengths);
        CHECK(matrix(self.arrays.at("matrix.ckpt-1")).diagonal().isApprox(Eigen::VectorXd::Ones(2), 1e-9));
    }
    Params pooled{{"method", "rsa"}, {"across", "models"}, {"pool", "mean"}};
    const Result p = run_lockstep("cka", pooled, {f.a, f.b}, f.widths, f.lengths);
    CHECK(p.data["summary"]["sampled"] == f.expected["prompts"]);
}

// The `cka` analyzer: equal to a numpy computation (Gram-matrix form, tests/fixtures/cka/make_cka_fixture.py)
// on committed fixtures, invariant to orthogonal transforms and isotropic scaling (and not to anisotropic
// scaling), padding excluded, a sharded merge equal to one pass, and a refused matrix that would not fit.
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

const std::string kFixtures = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/cka/";

using Tokens = std::map<std::string, std::vector<float>>;
using Widths = std::map<std::string, int64_t>;

Result run_cka(const Tokens& tokens, const Widths& widths, const Params& params = nlohmann::json::object(),
               float pad = 0.0f) {
    std::vector<std::unique_ptr<PromptInfo>> prompts;
    const auto batches = token_batches(tokens, widths, {5, 1, 9, 3, 7}, 3, prompts, pad);
    auto a = registry().create_analyzer("cka");
    a->configure(params);
    a->begin(RunContext{});
    for (const auto& b : batches) a->consume(b.view());
    return a->finish();
}

Eigen::MatrixXd matrix_of(const Result& r) {
    const auto& m = r.arrays.at("matrix");
    Eigen::MatrixXd out(m.shape[0], m.shape[1]);
    for (int64_t i = 0; i < m.shape[0]; ++i)
        for (int64_t j = 0; j < m.shape[1]; ++j) out(i, j) = m.f32[static_cast<size_t>(i * m.shape[1] + j)];
    return out;
}

/// Random tokens for three hooks: x, a nonlinear function of x plus noise, and an unrelated one.
void random_hooks(size_t n, Tokens& tokens, Widths& widths, uint32_t seed = 7) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    widths = {{"blocks.0.hook_resid_post", 5}, {"blocks.1.hook_resid_post", 4}, {"blocks.2.hook_resid_post", 3}};
    auto& x = tokens["blocks.0.hook_resid_post"];
    auto& y = tokens["blocks.1.hook_resid_post"];
    auto& z = tokens["blocks.2.hook_resid_post"];
    for (size_t t = 0; t < n; ++t) {
        float xs[5];
        for (int j = 0; j < 5; ++j) xs[j] = normal(rng) * static_cast<float>(j + 1) + 2.0f, x.push_back(xs[j]);
        for (int j = 0; j < 4; ++j) y.push_back(std::tanh(0.3f * (xs[j] - xs[j + 1])) + 0.3f * normal(rng));
        for (int j = 0; j < 3; ++j) z.push_back(normal(rng) + (j == 0 ? 0.2f * xs[4] : 0.0f));
    }
}

/// Each token row of `v` ([n, w]) times the w×w matrix `m`.
std::vector<float> transform(const std::vector<float>& v, const Eigen::MatrixXd& m) {
    const auto w = m.rows();
    const auto n = static_cast<Eigen::Index>(v.size()) / w;
    Eigen::Map<const RowMatrixXf> x(v.data(), n, w);
    RowMatrixXf y = (x.cast<double>() * m).cast<float>();
    return std::vector<float>(y.data(), y.data() + y.size());
}

/// The committed fixture: each hook's tokens and width, and numpy's results (expected.json).
nlohmann::json read_fixture(Tokens& tokens, Widths& widths) {
    std::ifstream in(kFixtures + "expected.json");
    const auto expected = nlohmann::json::parse(in);
    for (const auto& hook : expected["hooks"]) {
        const NpyArray a = read_npy(kFixtures + hook.get<std::string>() + ".npy");
        REQUIRE(a.shape[0] == expected["tokens"].get<int64_t>());
        tokens[hook] = a.to_f32();
        widths[hook] = a.shape[1];
    }
    return expected;
}

}  // namespace

TEST_CASE("cka: equals the numpy Gram-matrix computation on the committed fixture, padding excluded", "[analyzers][cka]") {
    Tokens tokens;
    Widths widths;
    const nlohmann::json expected = read_fixture(tokens, widths);
    // A loud padding value: one padded token in the sums would move every entry.
    const Result r = run_cka(tokens, widths, nlohmann::json::object(), 50.0f);
    CHECK(r.data["rows"] == expected["hooks"]);
    CHECK(r.data["cols"] == expected["hooks"]);
    CHECK(r.data["summary"]["tokens"] == expected["tokens"]);
    const Eigen::MatrixXd m = matrix_of(r);
    for (size_t i = 0; i < 3; ++i)
        for (size_t j = 0; j < 3; ++j) {
            INFO(i << ", " << j);
            CHECK(m(i, j) == Approx(expected["matrix"][i][j].get<double>()).margin(1e-5));
            CHECK(r.data["figures"]["cka"]["z"][i][j].get<double>() ==
                  Approx(expected["matrix"][i][j].get<double>()).margin(1e-5));
        }
    CHECK(r.data["tables"]["pairs"]["rows"].size() == 3);
}

TEST_CASE("cka: invariant to an orthogonal transform and isotropic scaling of a hook, not to anisotropic scaling",
          "[analyzers][cka]") {
    Tokens tokens;
    Widths widths;
    random_hooks(400, tokens, widths);
    const Eigen::MatrixXd base = matrix_of(run_cka(tokens, widths));
    CHECK(base(0, 1) > 0.05);  // the pairs are related: the comparison below is not between zeros

    std::mt19937 rng(3);
    std::normal_distribution<double> normal;
    Eigen::MatrixXd g(5, 5);
    for (int i = 0; i < 25; ++i) g.data()[i] = normal(rng);
    const Eigen::MatrixXd q = Eigen::HouseholderQR<Eigen::MatrixXd>(g).householderQ();
    REQUIRE((q.transpose() * q - Eigen::MatrixXd::Identity(5, 5)).norm() < 1e-12);

    Tokens rotated = tokens;
    rotated["blocks.0.hook_resid_post"] = transform(tokens["blocks.0.hook_resid_post"], 3.7 * q);
    const Eigen::MatrixXd m = matrix_of(run_cka(rotated, widths));
    CHECK((m - base).cwiseAbs().maxCoeff() < 1e-5);
    CHECK(m.diagonal().isApprox(Eigen::VectorXd::Ones(3), 1e-6));

    Tokens stretched = tokens;
    const Eigen::VectorXd axis = (Eigen::VectorXd(5) << 10, 1, 1, 1, 0.1).finished();
    stretched["blocks.0.hook_resid_post"] = transform(tokens["blocks.0.hook_resid_post"], axis.asDiagonal());
    CHECK(std::abs(matrix_of(run_cka(stretched, widths))(0, 1) - base(0, 1)) > 1e-2);
}

TEST_CASE("cka: two shards merged equal one pass", "[analyzers][cka]") {
    Tokens tokens;
    Widths widths;
    random_hooks(300, tokens, widths, 11);
    const Eigen::MatrixXd whole = matrix_of(run_cka(tokens, widths));

    std::vector<std::unique_ptr<PromptInfo>> prompts;
    const auto batches = token_batches(tokens, widths, {4, 8, 2}, 4, prompts);
    auto a = registry().create_analyzer("cka"), b = registry().create_analyzer("cka");
    for (auto* x : {a.get(), b.get()}) x->configure(nlohmann::json::object()), x->begin(RunContext{});
    REQUIRE(a->mergeable());
    for (size_t i = 0; i < batches.size(); ++i) (i < batches.size() / 3 ? a : b)->consume(batches[i].view());
    a->merge(*b);
    CHECK((matrix_of(a->finish()) - whole).cwiseAbs().maxCoeff() < 1e-6);
}

TEST_CASE("cka: a joint covariance over max_memory_mb, unknown hooks and too few tokens are input errors",
          "[analyzers][cka]") {
    RunContext ctx;
    for (int l = 0; l < 4; ++l)
        ctx.hooks.push_back({"blocks." + std::to_string(l) + ".mlp.hook_post", {"batch", "pos", "neuron"}, {-1, -1, 8192}});
    auto a = registry().create_analyzer("cka");
    a->configure(nlohmann::json::object());
    // 4 × 8192 features: a 32768² double matrix is 8 GB.
    CHECK_THAT(input_error([&] { a->begin(ctx); }), Catch::Contains("max_memory_mb") && Catch::Contains("'hooks'"));
    a = registry().create_analyzer("cka");
    a->configure({{"hooks", "blocks.1.*"}});
    CHECK_NOTHROW(a->begin(ctx));
    a = registry().create_analyzer("cka");
    a->configure({{"hooks", "blocks.9.mlp.hook_post"}});
    CHECK_THAT(input_error([&] { a->begin(ctx); }), Catch::Contains("matches none"));
    CHECK_THROWS_AS(registry().create_analyzer("cka")->configure({{"max_memory", 10}}), InputError);

    Tokens tokens{{"blocks.0.hook_resid_post", {1.0f, 2.0f}}};
    CHECK_THAT(input_error([&] { run_cka(tokens, {{"blocks.0.hook_resid_post", 2}}, {{"min_tokens", 3}}); }), Catch::Contains("too few tokens"));
}

TEST_CASE("cka method minibatch and rsa: equal numpy's debiased-HSIC and RDM-Spearman computations on the fixture",
          "[analyzers][cka][rsa]") {
    Tokens tokens;
    Widths widths;
    const nlohmann::json expected = read_fixture(tokens, widths);
    // 73 tokens: four minibatches of 16 and a last one of 9, in the order the tokens arrive; padding excluded.
    const Result mb = run_cka(tokens, widths, {{"method", "minibatch"}, {"minibatch", 16}}, 50.0f);
    CHECK(mb.data["summary"]["method"] == "minibatch");
    CHECK(mb.data["summary"]["minibatches"] == 5);
    CHECK(mb.data["summary"]["dropped"] == 0);
    const Result rsa = run_cka(tokens, widths, {{"method", "rsa"}, {"max_points", 100}}, 50.0f);
    CHECK(rsa.data["summary"]["sampled"] == 73);
    CHECK(rsa.data["tables"]["pairs"]["columns"][4] == "rsa");
    const Eigen::MatrixXd m = matrix_of(mb), r = matrix_of(rsa);
    for (size_t i = 0; i < 3; ++i)
        for (size_t j = 0; j < 3; ++j) {
            INFO(i << ", " << j);
            CHECK(m(i, j) == Approx(expected["minibatch"][i][j].get<double>()).margin(1e-5));
            CHECK(r(i, j) == Approx(expected["rsa"][i][j].get<double>()).margin(1e-5));
        }
    // Different measures: the comparison is not vacuous.
    CHECK(std::abs(m(0, 1) - expected["matrix"][0][1].get<double>()) > 1e-3);
}

TEST_CASE("cka method minibatch: converges to linear CKA on many tokens, and a short tail is dropped",
          "[analyzers][cka][rsa]") {
    Tokens tokens;
    Widths widths;
    random_hooks(4003, tokens, widths, 5);
    const Eigen::MatrixXd linear = matrix_of(run_cka(tokens, widths));
    const Result r = run_cka(tokens, widths, {{"method", "minibatch"}, {"minibatch", 500}});
    CHECK(r.data["summary"]["minibatches"] == 8);
    CHECK(r.data["summary"]["dropped"] == 3);  // 4003 = 8 × 500 + 3, and 3 points are below the estimator's 4
    const Eigen::MatrixXd m = matrix_of(r);
    INFO("linear\n" << linear << "\nminibatch\n" << m);
    CHECK((m - linear).cwiseAbs().maxCoeff() < 0.03);
    CHECK(m.diagonal().isApprox(Eigen::VectorXd::Ones(3), 1e-9));
}

TEST_CASE("cka method rsa: the sample does not depend on batching, is capped, and isotropic scaling leaves RSA unchanged",
          "[analyzers][cka][rsa]") {
    Tokens tokens;
    Widths widths;
    random_hooks(400, tokens, widths, 13);
    const Params params{{"method", "rsa"}, {"max_points", 60}};
    const Result a = run_cka(tokens, widths, params);
    CHECK(a.data["summary"]["sampled"] == 60);
    std::vector<std::unique_ptr<PromptInfo>> prompts;
    auto other = registry().create_analyzer("cka");
    other->configure(params);
    other->begin(RunContext{});
    CHECK_FALSE(other->mergeable());
    for (const auto& b : token_batches(tokens, widths, {5, 1, 9, 3, 7}, 1, prompts)) other->consume(b.view());
    CHECK((matrix_of(other->finish()) - matrix_of(a)).cwiseAbs().maxCoeff() == 0.0);

    Tokens scaled = tokens;
    for (float& v : scaled["blocks.1.hook_resid_post"]) v = 4.0f * v;
    CHECK((matrix_of(run_cka(scaled, widths, params)) - matrix_of(a)).cwiseAbs().maxCoeff() < 1e-6);
    CHECK(matrix_of(a)(0, 1) > 0.05);
}

TEST_CASE("cka method minibatch and rsa: parameters of the other method, a minibatch below 4 and states over max_memory_mb are input errors",
          "[analyzers][cka][rsa]") {
    CHECK_THROWS_AS(registry().create_analyzer("cka")->configure({{"minibatch", 64}}), InputError);
    CHECK_THROWS_AS(registry().create_analyzer("cka")->configure({{"method", "rsa"}, {"minibatch", 64}}), InputError);
    CHECK_THROWS_AS(registry().create_analyzer("cka")->configure({{"method", "minibatch"}, {"max_points", 64}}), InputError);
    CHECK_THROWS_AS(registry().create_analyzer("cka")->configure({{"method", "minibatch"}, {"minibatch", 3}}), InputError);
    CHECK_THROWS_AS(registry().create_analyzer("cka")->configure({{"method", "cca"}}), InputError);
    RunContext ctx;
    for (int l = 0; l < 32; ++l)
        ctx.hooks.push_back({"blocks." + std::to_string(l) + ".mlp.hook_post", {"batch", "pos", "neuron"}, {-1, -1, 14336}});
    // 32 × 14336 features: the linear method's covariance would be 1.6 TB; 256-point minibatches fit in 0.5 GB.
    auto a = registry().create_analyzer("cka");
    a->configure(nlohmann::json::object());
    CHECK_THAT(input_error([&] { a->begin(ctx); }), Catch::Contains("max_memory_mb"));
    a = registry().create_analyzer("cka");
    a->configure({{"method", "minibatch"}});
    CHECK_NOTHROW(a->begin(ctx));
    a = registry().create_analyzer("cka");
    a->configure({{"method", "rsa"}, {"max_points", 20000}});
    CHECK_THAT(input_error([&] { a->begin(ctx); }), Catch::Contains("max_memory_mb") && Catch::Contains("20000 points"));
}

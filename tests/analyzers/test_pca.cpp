// The `pca` analyzer against a full SVD of the same (centred, double) data, its projection against a direct
// computation at the sampled points, a sharded merge against one pass, and its input errors.
#include <catch2/catch.hpp>

#include <Eigen/SVD>

#include "tests/analyzers/synthetic.h"

using namespace nscope;
using namespace nscope::test;

namespace {

const std::string kMlp = "blocks.0.mlp.hook_post", kZ = "blocks.1.attn.hook_z";

/// 23 prompts; neuron j scaled by 1 + 0.37 j so that no two eigenvalues coincide (components are then
/// unique up to sign, and the comparisons below are well posed).
SynthCorpus corpus() {
    SynthCorpus c({{kMlp, {12}}, {kZ, {2, 3}}}, 23, 9, 12, 4321);
    for (auto& [hook, per_prompt] : c.values) {
        const int64_t w = c.width(hook);
        for (auto& v : per_prompt)
            for (size_t i = 0; i < v.size(); ++i) v[i] *= 1.0f + 0.37f * static_cast<float>(i % w);
    }
    return c;
}

/// The points of `hook` as a [points, width] double matrix: every token, or the mean of each prompt.
Eigen::MatrixXd all_points(const SynthCorpus& c, const std::string& hook, bool mean) {
    const int64_t w = c.width(hook);
    std::vector<std::vector<double>> rows;
    for (size_t i = 0; i < c.prompts.size(); ++i) {
        std::vector<double> sum(w, 0.0);
        for (size_t t = 0; t < c.ids[i].size(); ++t) {
            std::vector<double> row(w);
            for (int64_t j = 0; j < w; ++j) row[j] = c.at(hook, i, t, j), sum[j] += row[j];
            if (!mean) rows.push_back(row);
        }
        if (mean) {
            for (auto& s : sum) s /= static_cast<double>(c.ids[i].size());
            rows.push_back(sum);
        }
    }
    Eigen::MatrixXd m(rows.size(), w);
    for (size_t r = 0; r < rows.size(); ++r)
        for (int64_t j = 0; j < w; ++j) m(r, j) = rows[r][j];
    return m;
}

Eigen::MatrixXd floats(const NdArray& a) {
    Eigen::MatrixXd m(a.shape[0], a.shape.size() > 1 ? a.shape[1] : 1);
    for (Eigen::Index i = 0; i < m.size(); ++i) m(i / m.cols(), i % m.cols()) = a.f32[static_cast<size_t>(i)];
    return m;
}

/// `unique`: how many leading components are determined (the rest span the null space of the covariance).
void check_against_svd(const Result& r, const SynthCorpus& c, const std::string& hook, bool mean, int64_t k,
                       int64_t unique) {
    INFO(hook << (mean ? " (mean-pooled)" : " (tokens)"));
    Eigen::MatrixXd x = all_points(c, hook, mean);
    const Eigen::RowVectorXd mu = x.colwise().mean();
    x.rowwise() -= mu;
    Eigen::BDCSVD<Eigen::MatrixXd> svd(x, Eigen::ComputeThinV);
    const Eigen::VectorXd s2 = svd.singularValues().array().square();
    const Eigen::MatrixXd evr = floats(r.arrays.at(hook + ".explained_variance_ratio"));
    const Eigen::MatrixXd comp = floats(r.arrays.at(hook + ".components"));
    REQUIRE(evr.rows() == k);
    REQUIRE(comp.rows() == k);
    for (int64_t i = 0; i < k; ++i) {
        CHECK(evr(i, 0) == Approx(s2(i) / s2.sum()).margin(1e-4));
        // The component is the SVD's right singular vector, up to sign.
        if (i < unique) CHECK(std::abs(comp.row(i).dot(svd.matrixV().col(i))) == Approx(1.0).margin(1e-4));
    }
    // Projection of each sampled point: (x - mean) · component, from the corpus values at (prompt, position).
    const auto& where = r.arrays.at(hook + ".points");
    const Eigen::MatrixXd proj = floats(r.arrays.at(hook + ".projection"));
    REQUIRE(where.shape[0] == proj.rows());
    for (Eigen::Index p = 0; p < proj.rows(); ++p) {
        const int64_t prompt = where.i64[2 * p], pos = where.i64[2 * p + 1];
        Eigen::RowVectorXd v(c.width(hook));
        for (int64_t j = 0; j < v.size(); ++j) {
            if (mean) {
                CHECK(pos == -1);
                double s = 0;
                for (size_t t = 0; t < c.ids[prompt].size(); ++t) s += c.at(hook, prompt, t, j);
                v(j) = s / static_cast<double>(c.ids[prompt].size());
            } else {
                v(j) = c.at(hook, prompt, pos, j);
            }
        }
        for (int64_t i = 0; i < k; ++i) CHECK(proj(p, i) == Approx((v - mu).dot(comp.row(i))).margin(1e-4));
    }
}

}  // namespace

TEST_CASE("pca: explained variance and components equal a full SVD of the same data, projections recomputed",
          "[analyzers][pca]") {
    const auto c = corpus();
    const auto batches = c.batches(4);
    const Result r = run_analyzer("pca", {{"k", 5}, {"points", 40}}, c, batches)->finish();
    check_against_svd(r, c, kMlp, false, 5, 5);
    check_against_svd(r, c, kZ, false, 5, 3);  // neurons 0, 4, 5 are constant
    CHECK(r.arrays.at(kMlp + ".projection").shape == std::vector<int64_t>{40, 5});
    CHECK(r.data["figures"]["scatter." + kMlp]["x"].size() == 40);
    CHECK(r.data["figures"]["scatter." + kMlp]["color"][0].is_number());  // position by default

    const Result pooled = run_analyzer("pca", {{"k", 3}, {"pool", "mean"}, {"color", "token"}}, c, batches)->finish();
    check_against_svd(pooled, c, kMlp, true, 3, 3);
    CHECK(pooled.arrays.at(kMlp + ".points").shape[0] == 23);  // every prompt: fewer than the 2000 cap
}

TEST_CASE("pca: the sample depends on the seed only, and two merged shards equal one pass", "[analyzers][pca]") {
    const auto c = corpus();
    const Params params = {{"k", 4}, {"points", 30}};
    const Result whole = run_analyzer("pca", params, c, c.batches(5))->finish();
    // Other batch sizes: the same sampled points.
    const Result rebatched = run_analyzer("pca", params, c, c.batches(2))->finish();
    CHECK(rebatched.arrays.at(kMlp + ".points").i64 == whole.arrays.at(kMlp + ".points").i64);

    auto a = run_analyzer("pca", params, c, c.batches(3, 0, 9));
    auto b = run_analyzer("pca", params, c, c.batches(4, 9, 23));
    REQUIRE(a->mergeable());
    a->merge(*b);
    const Result merged = a->finish();
    for (const auto& hook : {kMlp, kZ}) {
        INFO(hook);
        CHECK(merged.arrays.at(hook + ".points").i64 == whole.arrays.at(hook + ".points").i64);
        for (const std::string name : {".explained_variance_ratio", ".components", ".projection"})
            CHECK((floats(merged.arrays.at(hook + name)) - floats(whole.arrays.at(hook + name))).cwiseAbs().maxCoeff() <
                  1e-4);
    }
    CHECK(json_close(merged.data["tables"], whole.data["tables"], 1e-6));

    // Another seed samples other points.
    auto other = registry().create_analyzer("pca");
    other->configure(params);
    RunContext ctx = c.run_context();
    ctx.seed = 1;
    other->begin(ctx);
    for (const auto& batch : c.batches(5)) other->consume(batch.view());
    CHECK(other->finish().arrays.at(kMlp + ".points").i64 != whole.arrays.at(kMlp + ".points").i64);
}

TEST_CASE("pca: k wider than a hook, unknown hooks, too few points and bad colours are input errors",
          "[analyzers][pca]") {
    const auto c = corpus();
    auto a = registry().create_analyzer("pca");
    a->configure({{"k", 7}});
    CHECK_THAT(input_error([&] { a->begin(c.run_context()); }), Catch::Contains("'k' = 7") && Catch::Contains(kZ));
    a = registry().create_analyzer("pca");
    a->configure({{"hooks", "blocks.0.mlp.hook_pots"}});
    CHECK_THAT(input_error([&] { a->begin(c.run_context()); }), Catch::Contains("did you mean"));
    CHECK_THAT(input_error([&] { registry().create_analyzer("pca")->configure({{"color", "label"}}); }), Catch::Contains("'label'"));
    CHECK_THROWS_AS(registry().create_analyzer("pca")->configure({{"k", 0}}), InputError);
    CHECK_THROWS_AS(registry().create_analyzer("pca")->configure({{"pool", "max"}}), InputError);
    // Two prompts, mean-pooled: 2 points cannot carry 3 components.
    CHECK_THAT(input_error([&] { run_analyzer("pca", {{"k", 3}, {"pool", "mean"}}, c, c.batches(2, 0, 2))->finish(); }),
               Catch::Contains("too few points"));
}

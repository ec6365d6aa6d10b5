// The `embed` analyzer: planted clusters stay apart in t-SNE and UMAP maps of token, prompt and neuron points;
// trustworthiness equals sklearn's on a committed fixture (tests/fixtures/embed/make_embed_fixture.py) and the
// t-SNE map is as trustworthy as sklearn's TSNE there; UMAP's (a, b) equal scipy's fit; the Barnes-Hut tree, the
// neighbour searches and the PCA step against direct computations; bit-identical results for a seed whatever
// the thread count or sharding; input errors.
#include <catch2/catch.hpp>

#include <fstream>
#include <random>
#include <set>

#include <Eigen/SVD>

#include "core/util/concurrency.h"
#include "core/util/npy.h"
#include "plugins/analyzers/embed/knn.h"
#include "plugins/analyzers/embed/linear.h"
#include "plugins/analyzers/embed/quality.h"
#include "plugins/analyzers/embed/tsne.h"
#include "plugins/analyzers/embed/umap.h"
#include "tests/analyzers/synthetic.h"

using namespace nscope;
using namespace nscope::test;

namespace {

const std::string kHook = "blocks.1.hook_resid_post";
const std::string kFixtures = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/embed/";

/// Points of `width` dims: `clusters` Gaussian blobs (centres 6 apart per coordinate on average, unit noise),
/// `per` points each, blob-major. `blob[i]` receives each point's blob.
RowMatrixXf blobs(int clusters, int per, int width, uint32_t seed, std::vector<int>& blob) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    RowMatrixXf x(clusters * per, width);
    blob.clear();
    for (int c = 0; c < clusters; ++c) {
        Eigen::RowVectorXf centre(width);
        for (int j = 0; j < width; ++j) centre(j) = 2.0f * normal(rng);
        for (int i = 0; i < per; ++i) {
            for (int j = 0; j < width; ++j) x(c * per + i, j) = centre(j) + normal(rng);
            blob.push_back(c);
        }
    }
    return x;
}

/// A corpus whose token t of prompt p is row p * len + t of `x`, `len` tokens per prompt, each prompt labelled
/// {blob: <its first row's blob>}; batches of 4 prompts padded by one position.
struct Corpus {
    std::vector<std::unique_ptr<PromptInfo>> prompts;
    std::vector<SynthBatch> batches;
    int64_t width = 0;

    Corpus(const RowMatrixXf& x, const std::vector<int>& blob, size_t len, const std::string& hook = kHook,
           size_t first = 0, size_t last = SIZE_MAX) {
        width = x.cols();
        const size_t n_prompts = static_cast<size_t>(x.rows()) / len;
        for (size_t p = 0; p < n_prompts; ++p) {
            prompts.push_back(std::make_unique<PromptInfo>());
            prompts.back()->index = p;
            // Two labels: the blob, and a unique reference (never the default colour: too many values).
            prompts.back()->labels = {{"blob", std::string("b").append(std::to_string(blob[p * len]))},
                                      {"alias", std::string("p").append(std::to_string(p))}};
            prompts.back()->text = "prompt " + std::to_string(p);
            for (size_t t = 0; t < len; ++t) prompts.back()->tokens.push_back(SynthCorpus::token_text(static_cast<int64_t>(t)));
        }
        last = std::min(last, n_prompts);
        for (size_t start = first; start < last; start += 4) {
            SynthBatch b;
            b.rows = std::min<size_t>(4, last - start);
            b.positions = len + 1;
            b.ids.assign(b.rows * b.positions, 0);
            b.mask.assign(b.rows * b.positions, 0);
            auto& data = b.acts[hook];
            data.assign(b.rows * b.positions * static_cast<size_t>(width), 0.0f);
            for (size_t r = 0; r < b.rows; ++r) {
                b.prompts.push_back(prompts[start + r].get());
                for (size_t t = 0; t < len; ++t) {
                    b.mask[r * b.positions + t] = 1;
                    b.ids[r * b.positions + t] = static_cast<int64_t>(t);
                    const auto row = static_cast<Eigen::Index>((start + r) * len + t);
                    std::copy_n(x.row(row).data(), width, data.begin() + static_cast<int64_t>((r * b.positions + t) * width));
                }
            }
            b.shapes[hook] = {static_cast<int64_t>(b.rows), static_cast<int64_t>(b.positions), width};
            batches.push_back(std::move(b));
        }
    }

    RunContext context(const std::string& hook = kHook, int threads = 2, uint64_t seed = 0) const {
        RunContext ctx;
        for (const auto& p : prompts) ctx.prompts.push_back(p.get());
        ctx.token_text = [](int64_t id) { return SynthCorpus::token_text(id); };
        ctx.hooks.push_back({hook, {"batch", "pos", "d_model"}, {-1, -1, width}});
        ctx.parallel_for = parallel_for_on(threads);
        ctx.seed = seed;
        return ctx;
    }
};

std::unique_ptr<Analyzer> fed(const Corpus& c, const Params& params, int threads = 2, uint64_t seed = 0) {
    auto a = registry().create_analyzer("embed");
    a->configure(params);
    a->begin(c.context(kHook, threads, seed));
    for (const auto& b : c.batches) a->consume(b.view());
    return a;
}

Result run_embed(const Corpus& c, const Params& params, int threads = 2, uint64_t seed = 0) {
    return fed(c, params, threads, seed)->finish();
}

/// Fraction of each point's `k` nearest embedded neighbours that share its class (the kNN-label purity).
double purity(const NdArray& emb, const std::vector<int>& cls, int k = 10) {
    const int64_t n = emb.shape[0], d = emb.shape[1];
    double same = 0;
    for (int64_t i = 0; i < n; ++i) {
        std::vector<std::pair<double, int64_t>> dist;
        for (int64_t j = 0; j < n; ++j) {
            if (j == i) continue;
            double s = 0;
            for (int64_t c = 0; c < d; ++c) s += std::pow(emb.f32[static_cast<size_t>(i * d + c)] - emb.f32[static_cast<size_t>(j * d + c)], 2);
            dist.emplace_back(s, j);
        }
        std::partial_sort(dist.begin(), dist.begin() + k, dist.end());
        for (int m = 0; m < k; ++m) same += cls[static_cast<size_t>(dist[static_cast<size_t>(m)].second)] == cls[static_cast<size_t>(i)];
    }
    return same / static_cast<double>(n * k);
}

/// The class of each embedded token point, from its (prompt, position) and the corpus layout.
std::vector<int> token_classes(const Result& r, const std::vector<int>& blob, size_t len) {
    const auto& where = r.arrays.at(kHook + ".points");
    std::vector<int> out;
    for (int64_t i = 0; i < where.shape[0]; ++i)
        out.push_back(blob[static_cast<size_t>(where.i64[static_cast<size_t>(2 * i)]) * len +
                           static_cast<size_t>(where.i64[static_cast<size_t>(2 * i + 1)])]);
    return out;
}

RowMatrixXf load_matrix(const std::string& file) {
    const NpyArray a = read_npy(kFixtures + file);
    const auto v = a.to_f32();
    return Eigen::Map<const RowMatrixXf>(v.data(), a.shape[0], a.shape[1]);
}

nlohmann::json expected() {
    std::ifstream in(kFixtures + "expected.json");
    return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("embed: three Gaussian blobs in 50-D stay separated in t-SNE and UMAP maps of token points",
          "[analyzers][embed]") {
    std::vector<int> blob;
    const RowMatrixXf x = blobs(3, 100, 50, 11, blob);
    const Corpus c(x, blob, 10);
    for (const std::string method : {"tsne", "umap"})
        for (const int dims : {2, 3}) {
            INFO(method << " " << dims << "-D");
            Params params = {{"method", method}, {"dims", dims}, {"pca", 20}};
            if (method == "tsne") params["perplexity"] = 20;
            const Result r = run_embed(c, params);
            const auto& emb = r.arrays.at(kHook + ".embedding");
            REQUIRE(emb.shape == std::vector<int64_t>{300, dims});
            REQUIRE(r.arrays.at(kHook + ".points").shape == std::vector<int64_t>{300, 2});
            CHECK(purity(emb, token_classes(r, blob, 10)) >= 0.95);
            const auto& info = r.data["hooks"][kHook];
            CHECK(info["trustworthiness"].get<double>() > 0.9);
            CHECK(info["pca"]["components"] == 20);
            CHECK(info["points"] == 300);
            CHECK(info["knn"] == "exact");
            if (method == "tsne") {
                CHECK(info["kl_divergence"].get<double>() > 0);
                CHECK(info["params"]["learning_rate"].get<double>() == 50.0);  // max(300 / 12 / 4, 50)
            } else {
                CHECK(info["a"].get<double>() == Approx(1.577).margin(1e-3));
            }
            // The figure: one point per embedded point, coloured by the prompts' label, z only in 3-D.
            const auto& fig = r.data["figures"]["embedding." + kHook];
            CHECK(fig["kind"] == "scatter");
            CHECK(fig["x"].size() == 300);
            CHECK(fig.contains("z") == (dims == 3));
            CHECK(fig["color"][0].get<std::string>().substr(0, 1) == "b");
            CHECK_THAT(fig["text"][0].get<std::string>(), Catch::StartsWith("prompt 0 pos 0: w0"));
            CHECK(info["labels"].size() == 300);
            CHECK(r.data["summary"]["label"] == "blob");
            CHECK(r.data["summary"]["color"] == "label");
            CHECK(info["tokens"][0] == "w0 ");
        }
}

TEST_CASE("embed: prompt points (mean-pooled) and neuron points keep planted groups apart", "[analyzers][embed]") {
    SECTION("prompts") {
        // 60 prompts of 5 tokens; each prompt's tokens come from one blob; the prompt's mean lies near its centre.
        std::vector<int> blob;
        const RowMatrixXf x = blobs(3, 100, 50, 5, blob);
        const Corpus c(x, blob, 5);
        const Result r = run_embed(c, {{"method", "umap"}, {"points", "prompts"}, {"neighbors", 10}});
        const auto& where = r.arrays.at(kHook + ".points");
        REQUIRE(where.shape == std::vector<int64_t>{60});
        std::vector<int> cls;
        for (int64_t p : where.i64) cls.push_back(blob[static_cast<size_t>(p) * 5]);
        CHECK(purity(r.arrays.at(kHook + ".embedding"), cls, 5) >= 0.95);
        CHECK(r.data["hooks"][kHook]["trustworthiness"].get<double>() > 0.9);
        CHECK(r.data["figures"]["embedding." + kHook]["text"][0] == "prompt 0: prompt 0");
    }
    SECTION("neurons") {
        // 90 neurons in three groups, each group driven by its own signal over 400 tokens (different scales and
        // offsets per neuron, 50% noise): standardized profiles cluster by group.
        std::mt19937 rng(3);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        RowMatrixXf x(400, 90);
        for (int t = 0; t < 400; ++t) {
            const float f[3] = {normal(rng), normal(rng), normal(rng)};
            for (int j = 0; j < 90; ++j) x(t, j) = (1.0f + 0.1f * j) * (f[j % 3] + 0.5f * normal(rng)) + 0.05f * j;
        }
        const Corpus c(x, std::vector<int>(400, 0), 8);
        for (const std::string method : {"tsne", "umap"}) {
            INFO(method);
            Params params = {{"method", method}, {"points", "neurons"}, {"profile_tokens", 300}};
            if (method == "tsne") params["perplexity"] = 10;
            const Result r = run_embed(c, params);
            const auto& where = r.arrays.at(kHook + ".points");
            REQUIRE(where.shape == std::vector<int64_t>{90});
            std::vector<int> cls;
            for (int64_t j : where.i64) cls.push_back(static_cast<int>(j % 3));
            CHECK(purity(r.arrays.at(kHook + ".embedding"), cls) >= 0.95);
            CHECK(r.data["hooks"][kHook]["input_dims"] == 300);  // profiles over the 300 sampled tokens
            CHECK_THAT(r.data["figures"]["embedding." + kHook]["text"][0].get<std::string>(),
                       Catch::StartsWith("neuron 0: peak "));
        }
        // max_points caps the neurons with a seeded subset.
        const Result few = run_embed(c, {{"method", "umap"}, {"points", "neurons"}, {"max_points", 40}});
        const auto& where = few.arrays.at(kHook + ".points").i64;
        CHECK(where.size() == 40);
        CHECK(std::is_sorted(where.begin(), where.end()));
    }
}

TEST_CASE("embed: trustworthiness equals sklearn's on the committed fixture, and t-SNE is as trustworthy as sklearn's",
          "[analyzers][embed]") {
    const RowMatrixXf points = load_matrix("points.npy");
    const auto want = expected();
    for (const std::string name : {"tsne", "projection"}) {
        const RowMatrixXf y = load_matrix(name + ".npy");
        const std::vector<double> yv(y.data(), y.data() + y.size());
        INFO(name);
        for (int threads : {1, 2})
            CHECK(embed::trustworthiness(points, yv, 2, 15, parallel_for_on(threads)) ==
                  Approx(want["trustworthiness"][name].get<double>()).margin(1e-12));
    }
    // The analyzer on the same 400 points (no PCA step: 20 dims): its t-SNE map within 0.02 of sklearn's.
    std::vector<int> cls(400, 0);
    const Corpus c(points, cls, 8);
    const Result r = run_embed(c, {{"method", "tsne"}, {"trust_points", 400}});
    const auto& info = r.data["hooks"][kHook];
    CHECK(info["pca"].is_null());
    const double ours = info["trustworthiness"].get<double>();
    CHECK(ours >= want["trustworthiness"]["tsne"].get<double>() - 0.02);
    // The reported value is the trustworthiness of the returned embedding (recomputed at the sampled points).
    const auto& emb = r.arrays.at(kHook + ".embedding");
    const auto& where = r.arrays.at(kHook + ".points").i64;
    RowMatrixXf xs(400, 20);
    for (int64_t i = 0; i < 400; ++i) xs.row(i) = points.row(where[static_cast<size_t>(2 * i)] * 8 + where[static_cast<size_t>(2 * i + 1)]);
    CHECK(embed::trustworthiness(xs, std::vector<double>(emb.f32.begin(), emb.f32.end()), 2, 15, {}) ==
          Approx(ours).margin(1e-6));
    // UMAP on the same data: reported against the same measure.
    const Result u = run_embed(c, {{"method", "umap"}, {"trust_points", 400}});
    CHECK(u.data["hooks"][kHook]["trustworthiness"].get<double>() > 0.9);
}

TEST_CASE("embed: UMAP's curve parameters equal scipy's least-squares fit", "[analyzers][embed]") {
    const nlohmann::json cases = expected()["ab"];  // a copy: expected() returns a temporary
    for (const auto& e : cases) {
        INFO(e.dump());
        const auto [a, b] = embed::fit_ab(e["spread"].get<double>(), e["min_dist"].get<double>());
        CHECK(a == Approx(e["a"].get<double>()).epsilon(1e-4));
        CHECK(b == Approx(e["b"].get<double>()).epsilon(1e-4));
    }
}

TEST_CASE("embed: Barnes-Hut repulsion is exact at theta 0 and close at 0.5, neighbours and PCA step direct",
          "[analyzers][embed]") {
    std::mt19937 rng(1);
    std::normal_distribution<double> normal(0.0, 1.0);
    const int n = 500;
    for (const int dims : {2, 3}) {
        std::vector<double> y(static_cast<size_t>(n * dims));
        for (auto& v : y) v = normal(rng) * 5;
        for (int i = 0; i < 5; ++i)  // coincident points share a leaf
            for (int d = 0; d < dims; ++d) y[static_cast<size_t>((n - 1 - i) * dims + d)] = y[static_cast<size_t>(d)];
        double z_direct = 0, err = 0, scale = 0, z0 = 0, z5 = 0;
        for (const double theta : {0.0, 0.5}) {
            double z_total = 0;
            for (int i = 0; i < n; ++i) {
                double f[3] = {}, direct[3] = {}, z = 0, zd = 0;
                if (dims == 2) {
                    embed::SpaceTree<2> t;
                    t.build(y.data(), n);
                    t.repulsion(y.data(), i, theta * theta, f, z);
                } else {
                    embed::SpaceTree<3> t;
                    t.build(y.data(), n);
                    t.repulsion(y.data(), i, theta * theta, f, z);
                }
                for (int j = 0; j < n; ++j) {
                    if (j == i) continue;
                    double d2 = 0;
                    for (int d = 0; d < dims; ++d) d2 += std::pow(y[static_cast<size_t>(i * dims + d)] - y[static_cast<size_t>(j * dims + d)], 2);
                    const double w = 1 / (1 + d2);
                    zd += w;
                    for (int d = 0; d < dims; ++d) direct[d] += w * w * (y[static_cast<size_t>(i * dims + d)] - y[static_cast<size_t>(j * dims + d)]);
                }
                z_total += z;
                if (theta == 0) {
                    z_direct += zd;
                    CHECK(z == Approx(zd).epsilon(1e-12));
                    for (int d = 0; d < dims; ++d) CHECK(f[d] == Approx(direct[d]).margin(1e-12));
                } else {
                    for (int d = 0; d < dims; ++d) err += std::abs(f[d] - direct[d]), scale += std::abs(direct[d]);
                }
            }
            (theta == 0 ? z0 : z5) = z_total;
        }
        INFO(dims << "-D: mean relative force error " << err / scale);
        CHECK(err / scale < 0.05);
        CHECK(z5 == Approx(z_direct).epsilon(0.02));
        CHECK(z0 == Approx(z_direct).epsilon(1e-12));
    }

    // Exact neighbours against brute force (duplicates included: a point is never its own neighbour); HNSW's
    // recall against them.
    std::vector<int> blob;
    RowMatrixXf x = blobs(4, 150, 16, 2, blob);
    x.row(7) = x.row(3);
    const auto exact = embed::exact_knn(x, 10, parallel_for_on(2));
    for (int64_t i = 0; i < x.rows(); ++i) {
        std::vector<std::pair<double, int32_t>> all;
        for (int64_t j = 0; j < x.rows(); ++j)
            if (j != i) all.emplace_back(embed::squared_distance(x.row(i).data(), x.row(j).data(), 16), static_cast<int32_t>(j));
        std::sort(all.begin(), all.end());
        for (int m = 0; m < 10; ++m) {
            CHECK(exact.at(i, m) == all[static_cast<size_t>(m)].second);
            CHECK(exact.dist(i, m) == Approx(std::sqrt(all[static_cast<size_t>(m)].first)).epsilon(1e-12));
        }
    }
    CHECK(exact.at(3, 0) == 7);
    CHECK(exact.dist(3, 0) == 0.0);
    const auto approx = embed::hnsw_knn(x, 10, 5, parallel_for_on(2));
    size_t hits = 0;
    for (int64_t i = 0; i < x.rows(); ++i) {
        std::set<int32_t> truth;
        for (int m = 0; m < 10; ++m) truth.insert(exact.at(i, m));
        for (int m = 0; m < 10; ++m) hits += truth.count(approx.at(i, m));
        for (int m = 0; m < 10; ++m) CHECK(approx.at(i, m) != i);
    }
    CHECK(static_cast<double>(hits) / static_cast<double>(x.rows() * 10) > 0.98);

    // PCA step (Lanczos: 5 of 64 dims): variances and projections against a full SVD of the centred data.
    const RowMatrixXf wide = blobs(4, 150, 64, 4, blob);
    const auto proj = embed::principal_components(wide, 5);
    Eigen::MatrixXd xc = wide.cast<double>();
    xc.rowwise() -= xc.colwise().mean();
    Eigen::BDCSVD<Eigen::MatrixXd> svd(xc, Eigen::ComputeThinV);
    const Eigen::VectorXd var = svd.singularValues().array().square() / static_cast<double>(wide.rows());
    for (int c = 0; c < 5; ++c) {
        CHECK(proj.variance(c) == Approx(var(c)).epsilon(1e-5));
        const Eigen::VectorXd direct = xc * svd.matrixV().col(c);
        CHECK(std::abs(direct.dot(proj.y.col(c).cast<double>())) / (direct.norm() * proj.y.col(c).cast<double>().norm()) ==
              Approx(1.0).margin(1e-5));
    }
    CHECK(proj.kept() == Approx(var.head(5).sum() / var.sum()).epsilon(1e-5));
}

TEST_CASE("embed: bit-identical for a seed whatever the threads and shards, another seed samples other points",
          "[analyzers][embed]") {
    std::vector<int> blob;
    const RowMatrixXf x = blobs(3, 80, 30, 9, blob);
    const Corpus c(x, blob, 6);
    for (const std::string method : {"tsne", "umap"}) {
        INFO(method);
        const Params params = {{"method", method}, {"max_points", 150}, {"pca", 10}};
        const Result one = run_embed(c, params, 2);
        const Result again = run_embed(c, params, 2);
        const Result single = run_embed(c, params, 1);
        const auto& emb = one.arrays.at(kHook + ".embedding").f32;
        CHECK(again.arrays.at(kHook + ".embedding").f32 == emb);
        CHECK(single.arrays.at(kHook + ".embedding").f32 == emb);
        CHECK(single.data == one.data);
        // Two shards (prompts 0-17 and 18-39) merged: the same sample, so the same map.
        const Corpus first(x, blob, 6, kHook, 0, 18), second(x, blob, 6, kHook, 18, 40);
        auto a = fed(first, params), b = fed(second, params);
        REQUIRE(a->mergeable());
        a->merge(*b);
        const Result merged = a->finish();
        CHECK(merged.arrays.at(kHook + ".embedding").f32 == emb);
        CHECK(merged.arrays.at(kHook + ".points").i64 == one.arrays.at(kHook + ".points").i64);
        // The run's seed picks the sample; an explicit seed overrides it.
        const Result other = run_embed(c, params, 2, 7);
        CHECK(other.arrays.at(kHook + ".points").i64 != one.arrays.at(kHook + ".points").i64);
        Params seeded = params;
        seeded["seed"] = 7;
        CHECK(run_embed(c, seeded, 2, 0).arrays.at(kHook + ".embedding").f32 == other.arrays.at(kHook + ".embedding").f32);
    }
}

TEST_CASE("embed: bad parameters and too few points are input errors naming the key and the fix",
          "[analyzers][embed]") {
    auto configure = [](const Params& p) { return input_error([&] { registry().create_analyzer("embed")->configure(p); }); };
    CHECK_THAT(configure({{"method", "pca"}}), Catch::Contains("'method'") && Catch::Contains("tsne, umap"));
    CHECK_THAT(configure({{"dims", 4}}), Catch::Contains("'dims'") && Catch::Contains("[2, 3]"));
    CHECK_THAT(configure({{"points", "heads"}}), Catch::Contains("'points'") && Catch::Contains("tokens, prompts, neurons"));
    CHECK_THAT(configure({{"perplexity", 0.5}}), Catch::Contains("'perplexity'") && Catch::Contains("[1.0, "));
    CHECK_THAT(configure({{"theta", 1.5}}), Catch::Contains("'theta'"));
    CHECK_THAT(configure({{"iterations", 100}}), Catch::Contains("'iterations'") && Catch::Contains("[250, "));
    CHECK_THAT(configure({{"learning_rate", "fast"}}), Catch::Contains("'learning_rate'"));
    CHECK_THAT(configure({{"learning_rate", -1}}), Catch::Contains("'learning_rate'"));
    CHECK_THAT(configure({{"method", "umap"}, {"min_dist", 2}}), Catch::Contains("'min_dist'") && Catch::Contains("'spread'"));
    CHECK_THAT(configure({{"method", "umap"}, {"neighbors", 1}}), Catch::Contains("'neighbors'") && Catch::Contains("[2, "));
    CHECK_THAT(configure({{"method", "umap"}, {"perplexity", 30}}), Catch::Contains("'perplexity' applies to method: tsne"));
    CHECK_THAT(configure({{"neighbors", 30}}), Catch::Contains("'neighbors' applies to method: umap"));
    CHECK_THAT(configure({{"pool", "last"}}), Catch::Contains("'pool' applies to points: prompts"));
    CHECK_THAT(configure({{"standardize", false}}), Catch::Contains("'standardize' applies to points: neurons"));
    CHECK_THAT(configure({{"pca", 1}}), Catch::Contains("'pca'") && Catch::Contains("at least dims"));
    CHECK_THAT(configure({{"knn", "faiss"}}), Catch::Contains("'knn'") && Catch::Contains("auto, exact, hnsw"));
    CHECK_THAT(configure({{"points", "prompts"}, {"color", "token"}}), Catch::Contains("'color'"));
    CHECK_THAT(configure({{"perplexity", 30}, {"max_points", 50}}),
               Catch::Contains("'max_points' = 50") && Catch::Contains("91") && Catch::Contains("perplexity 30"));
    CHECK_THAT(configure({{"trust_point", 5}}), Catch::Contains("did you mean 'trust_points'"));

    std::vector<int> blob;
    const RowMatrixXf x = blobs(2, 20, 8, 1, blob);  // 40 tokens in 8 prompts of 5
    const Corpus c(x, blob, 5);
    // Known before the first batch: 40 tokens cannot carry perplexity 30 (91 points) ...
    auto a = registry().create_analyzer("embed");
    a->configure({{"perplexity", 30}});
    CHECK_THAT(input_error([&] { a->begin(c.context()); }),
               Catch::Contains("too few points") && Catch::Contains("40 token points") && Catch::Contains("lower 'perplexity'"));
    // ... nor 8 prompts 10 UMAP neighbours; neurons: 8 of them, 9 neighbours.
    a = registry().create_analyzer("embed");
    a->configure({{"method", "umap"}, {"points", "prompts"}, {"neighbors", 10}});
    CHECK_THAT(input_error([&] { a->begin(c.context()); }), Catch::Contains("8 prompt points") && Catch::Contains("neighbors = 10"));
    a = registry().create_analyzer("embed");
    a->configure({{"method", "umap"}, {"points", "neurons"}, {"neighbors", 9}});
    CHECK_THAT(input_error([&] { a->begin(c.context()); }), Catch::Contains("8 neurons"));
    // At finish, when the context did not know the count.
    a = registry().create_analyzer("embed");
    a->configure({{"perplexity", 20}});
    a->begin(RunContext{});
    for (const auto& b : c.batches) a->consume(b.view());
    CHECK_THAT(input_error([&] { a->finish(); }), Catch::Contains("40 token points (every real token)") &&
                                                      Catch::Contains("61"));
    // A hook pattern that matches nothing, and colour by label without labels.
    a = registry().create_analyzer("embed");
    a->configure({{"hooks", "blocks.1.hook_resid_pots"}});
    CHECK_THAT(input_error([&] { a->begin(c.context()); }), Catch::Contains("did you mean"));
    a = registry().create_analyzer("embed");
    a->configure({{"color", "label"}, {"perplexity", 5}});
    CHECK_THAT(input_error([&] { a->begin(RunContext{}); }), Catch::Contains("'color' = label"));
    // Memory estimated before the first batch, from the run's counts: 40 tokens of a 100,000-wide hook as
    // profiles of 2,000 neurons fit in 4 GB but not in 8 MB.
    RunContext wide = c.context();
    wide.hooks[0].shape = {-1, -1, 100000};
    a = registry().create_analyzer("embed");
    a->configure({{"points", "neurons"}});
    CHECK_NOTHROW(a->begin(wide));
    a = registry().create_analyzer("embed");
    a->configure({{"points", "neurons"}, {"max_memory_mb", 8}});
    CHECK_THAT(input_error([&] { a->begin(wide); }), Catch::Contains("max_memory_mb = 8") && Catch::Contains("'profile_tokens'"));
}

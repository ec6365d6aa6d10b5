// Gradients on request, metrics, the unembedding (logit lens) and the analyzers' model access: parity of
// d(metric)/d(mlp.hook_post) with a PyTorch autograd reference (tests/fixtures/gradients, made offline with
// python3-torch), hook_logits from the last residual stream, and the no-grad default.
#include "tests/model/model_support.h"

#include <catch2/catch.hpp>

#include <cmath>

#include "core/model/metric.h"
#include "core/run/model_access.h"
#include "nscope/error.h"

using namespace nscope;
using namespace nscope::test;

namespace {

std::vector<size_t> row_indices(size_t n) {
    std::vector<size_t> v;
    for (size_t i = 0; i < n; ++i) v.push_back(i);
    return v;
}

at::Tensor gradient_fixture(const std::string& file) {
    return oracle("../gradients", file);  // tests/fixtures/gradients/<file>
}

}  // namespace

TEST_CASE("gradients of loss and log-prob w.r.t. mlp.hook_post equal PyTorch autograd", "[model][gradients]") {
    for (const std::string model : {"gpt2", "llama"}) {
        LoadedModel m = load_model(registry(), fixture_model(model), {});
        ModelSession s(m);
        const auto rows = oracle_rows(model);
        const at::Tensor mask = oracle(model, "attention_mask.npy");
        for (const std::string kind : {"loss", "logprob"}) {
            ForwardRequest r;
            r.metric = Metric{kind, kind == "logprob" ? std::vector<int64_t>{5} : std::vector<int64_t>{}, {}, {}};
            r.gradients = {"blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"};
            r.keep_logits = false;
            const ForwardOutput out = s.forward(rows, nullptr, row_indices(rows.size()), r);
            REQUIRE(out.metric.sizes() == at::IntArrayRef({2}));
            for (int L = 0; L < 2; ++L) {
                const at::Tensor want = gradient_fixture(model + "_" + kind + "_layer" + std::to_string(L) + ".npy");
                const at::Tensor got = out.gradients.at("blocks." + std::to_string(L) + ".mlp.hook_post");
                INFO(model << " " << kind << " layer " << L);
                REQUIRE(got.sizes() == want.sizes());
                CHECK(max_abs_valid(got, want, mask, 1) < 1e-4);
                CHECK(want.abs().max().item<double>() > 1e-3);  // the reference is not trivially zero
                CHECK(got[1].narrow(0, 5, 2).abs().max().item<double>() == 0.0);  // padding
            }
        }
    }
}

TEST_CASE("metrics per row: loss and log-prob from the logits, kl zero without edits", "[model][gradients]") {
    LoadedModel m = load_model(registry(), fixture_model("gpt2"), {});
    ModelSession s(m);
    const auto rows = oracle_rows("gpt2");
    ForwardRequest r;
    r.metric = Metric{"loss", {}, {}, {}};
    const ForwardOutput out = s.forward(rows, nullptr, {0, 1}, r);
    for (int64_t row = 0; row < 2; ++row) {
        const int64_t n = out.lengths[static_cast<size_t>(row)];
        const at::Tensor lp = at::log_softmax(out.logits[row], -1);
        double ce = 0;
        for (int64_t p = 0; p + 1 < n; ++p) ce -= lp[p][rows[static_cast<size_t>(row)][static_cast<size_t>(p + 1)]].item<double>();
        CHECK(std::abs(out.metric[row].item<double>() - ce / static_cast<double>(n - 1)) < 1e-5);
    }
    CHECK_FALSE(out.logits.requires_grad());  // no gradient asked: the forward ran under no-grad

    r.metric = Metric{"logit_diff", {3, 4}, {}, -2};
    const ForwardOutput d = s.forward(rows, nullptr, {0, 1}, r);
    CHECK(std::abs(d.metric[1].item<double>() - (d.logits[1][3][3] - d.logits[1][3][4]).item<double>()) < 1e-5);

    r.metric = Metric{"kl", {}, {}, {}};
    const ForwardOutput same = s.forward(rows, nullptr, {0, 1}, r);
    CHECK(same.metric.abs().max().item<double>() < 1e-6);
    InterventionSpec zero;
    zero.hook = "blocks.0.mlp.hook_post";
    zero.op = "zero";
    r.interventions = {zero};
    r.gradients = {"blocks.1.mlp.hook_post"};
    const ForwardOutput ablated = s.forward(rows, nullptr, {0, 1}, r);
    CHECK(ablated.metric.min().item<double>() > 1e-4);
    CHECK(ablated.gradients.at("blocks.1.mlp.hook_post").abs().max().item<double>() > 0.0);
}

TEST_CASE("bad metric and gradient requests are InputErrors", "[model][gradients][errors]") {
    LoadedModel m = load_model(registry(), fixture_model("gpt2"), {});
    ModelSession s(m);
    const auto rows = oracle_rows("gpt2");
    auto fails = [&](ForwardRequest r, const std::string& what) {
        try {
            s.forward(rows, nullptr, {0, 1}, r);
            FAIL("accepted: " << what);
        } catch (const InputError& e) {
            CHECK_THAT(e.what(), Catch::Contains(what));
        }
    };
    ForwardRequest r;
    r.gradients = {"blocks.0.mlp.hook_post"};
    fails(r, "gradients need a metric");
    r.metric = Metric{"logprobb", {1}, {}, {}};
    fails(r, "did you mean 'logprob'");
    r.metric = Metric{"logprob", {1, 2}, {}, {}};
    fails(r, "needs one target token");
    r.metric = Metric{"logprob", {5000}, {}, {}};
    fails(r, "outside the vocabulary");
    r.metric = Metric{"logprob", {1}, {}, 9};
    fails(r, "position 9 is outside row");
    r.metric = Metric{"logprob", {1}, {}, {}};
    r.gradients = {"blocks.0.mlp.hook_pots"};
    fails(r, "unknown hook");

    LoadedModel bf = load_model(registry(), fixture_model("gpt2"), {at::kBFloat16});
    ModelSession sb(bf);
    ForwardRequest rb;
    rb.metric = Metric{"loss", {}, {}, {}};
    rb.gradients = {"blocks.0.mlp.hook_post"};
    try {
        sb.forward(rows, nullptr, {0, 1}, rb);
        FAIL("gradients on bfloat16 accepted");
    } catch (const InputError& e) {
        CHECK_THAT(e.what(), Catch::Contains("float32"));
    }
}

TEST_CASE("unembed of the last residual stream equals hook_logits for every adapter", "[model][lens]") {
    for (const std::string model : {"gpt2", "llama", "bert", "phi", "gemma", "gpt_neox"}) {
        LoadedModel m = load_model(registry(), fixture_model(model), {});
        ModelSession s(m);
        const auto rows = oracle_rows(model);
        const std::string last = "blocks." + std::to_string(m.handle.info.n_layers - 1) + ".hook_resid_post";
        ForwardRequest r;
        r.capture = {last};
        std::vector<std::vector<int64_t>> types;
        if (model == "bert") types = oracle_rows(model, "token_type_ids.npy");
        const ForwardOutput out = s.forward(rows, types.empty() ? nullptr : &types, {0, 1}, r);
        at::Tensor lens;
        {
            at::NoGradGuard ng;
            lens = m.adapter->unembed(out.captures.at(last));
        }
        INFO(model);
        CHECK(max_abs_valid(lens, out.logits, out.attention_mask, 1) < 1e-5);
    }
}

TEST_CASE("model access: analyzers run edited forwards with metrics, gradients and the unembedding", "[model][access]") {
    LoadedModel m = load_model(registry(), fixture_model("gpt2"), {});
    ModelSession s(m);
    SessionModelAccess access(s, nullptr);
    const ModelAccess& ma = *access.access();
    const auto rows = oracle_rows("gpt2");
    ModelCall call;
    call.rows = rows;
    call.capture = {"blocks.1.hook_resid_post"};
    call.metric = Metric{"logprob", {5}, {}, {}};
    call.gradients = {"blocks.0.mlp.hook_post"};
    const ModelOutput clean = ma.run(call);
    REQUIRE(clean.metric.size() == 2);
    CHECK(clean.lengths == std::vector<int64_t>{7, 5});
    CHECK(clean.gradients.at("blocks.0.mlp.hook_post").shape == std::vector<int64_t>{2, 7, 256});

    call.interventions = nlohmann::json::array({{{"hook", "blocks.0.attn.hook_z"}, {"op", "zero"}, {"heads", {1}}}});
    const ModelOutput ablated = ma.run(call);
    CHECK(std::abs(ablated.metric[0] - clean.metric[0]) > 1e-6);

    // The unembedding of the last residual stream gives the log-prob the metric measured.
    const OwnedTensor logits = ma.unembed(clean.captures.at("blocks.1.hook_resid_post").view());
    REQUIRE(logits.shape == std::vector<int64_t>{2, 7, 1000});
    const at::Tensor lp = at::log_softmax(at::from_blob(const_cast<float*>(logits.data.data()), {2, 7, 1000}), -1);
    CHECK(std::abs(lp[1][4][5].item<double>() - clean.metric[1]) < 1e-5);

    call.interventions = nlohmann::json::array({{{"hook", "blocks.0.attn.hook_z"}, {"op", "zap"}}});
    CHECK_THROWS_AS(ma.run(call), InputError);
    CHECK_THROWS_AS(ma.tokenize("hello"), InputError);  // no tokenizer given
    OwnedTensor wrong;
    wrong.shape = {3, 5};
    wrong.data.assign(15, 0.f);
    CHECK_THROWS_AS(ma.unembed(wrong.view()), InputError);
}

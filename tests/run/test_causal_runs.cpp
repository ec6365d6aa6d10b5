// Causal analyses from recipes and Lua, end to end through the nscope binary: the logit lens, recipe-level
// gradients (delivered to analyzers and checked against a finite difference), and their bad-input paths.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/util/npy.h"
#include "tests/support/cli.h"

namespace fs = std::filesystem;
using nscope::test::run_nscope;

namespace {

const std::string kSource = NSCOPE_SOURCE_DIR;
const std::string kGpt2 = kSource + "/tests/fixtures/models/gpt2";
const std::string kKjv = kSource + "/models/kjv-tiny";

std::string write_recipe(const std::string& dir, const std::string& text) {
    const std::string path = dir + "/recipe.yaml";
    std::ofstream(path) << text;
    return path;
}

/// Run a recipe; returns the run directory (REQUIREs success).
fs::path run_ok(const std::string& tag, const std::string& recipe) {
    const std::string dir = nscope::test::temp_dir(tag);
    const auto r = run_nscope({"run", write_recipe(dir, recipe), "--out", dir + "/runs"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    for (const auto& name : fs::directory_iterator(dir + "/runs"))
        for (const auto& run : fs::directory_iterator(name.path())) return run.path();
    FAIL("no run directory");
    return {};
}

nlohmann::json result(const fs::path& run, const std::string& id) {
    std::ifstream in(run / "results" / (id + ".json"));
    return nlohmann::json::parse(in)["data"];
}

}  // namespace

TEST_CASE("logit_lens: the last layer is the model's own output, earlier layers diverge", "[run][lens]") {
    const fs::path run = run_ok("lens", "name: lens\nmodel: { path: " + kGpt2 +
                                            " }\nprompts:\n  - { ids: [[1, 17, 923, 345, 62, 501], [1, 404, 7, 250]] }\n"
                                            "analyses:\n  - { id: lens, use: logit_lens, k: 3, target: 5 }\n"
                                            "exports: [json, report]\n");
    const auto d = result(run, "lens");
    const auto& rows = d["tables"]["layers"]["rows"];
    REQUIRE(rows.size() == 3);  // embed, L0, L1
    CHECK(rows[0][0] == "embed");
    CHECK(rows[2][1] == "blocks.1.hook_resid_post");
    CHECK(rows[2][2].get<double>() < 1e-6);   // KL(final || last layer) = 0
    CHECK(rows[2][3].get<double>() == 1.0);   // agreement
    CHECK(rows[2][4].get<double>() == 0.0);   // the final token is on top
    CHECK(rows[0][2].get<double>() > 1e-3);   // the embedding is not the output
    CHECK(d["summary"]["prompts"] == 2);
    CHECK(d["summary"]["positions"] == 10);
    CHECK(d["summary"]["target"]["id"] == 5);
    CHECK(d["figures"].contains("grid_prompt_0"));
    CHECK(d["figures"]["grid_prompt_0"]["text"].size() == 3);
    CHECK(d["figures"]["grid_prompt_0"]["text"][0].size() == 6);
    CHECK(d["tables"]["grid_cells"]["rows"].size() == 3 * (6 + 4));
    const auto kl = nscope::read_npy((run / "results" / "lens.blocks.1.hook_resid_post.kl_to_final.npy").string());
    CHECK(kl.shape == std::vector<int64_t>{2, 6});
    const auto v = kl.to_f32();
    CHECK(std::isnan(v[1 * 6 + 5]));  // beyond prompt 1's end
    CHECK(v[0] < 1e-6f);
    CHECK(fs::exists(run / "report.html"));
}

TEST_CASE("logit_lens: a target that is several tokens, or outside the vocabulary, is bad input", "[run][lens][errors]") {
    const std::string dir = nscope::test::temp_dir("lens-bad");
    auto recipe = [&](const std::string& model, const std::string& target) {
        return write_recipe(dir, "name: lens-bad\nmodel: { path: " + model +
                                     " }\nprompts: [\"In the beginning\"]\nanalyses:\n  - { use: logit_lens, target: " +
                                     target + " }\n");
    };
    auto r = run_nscope({"run", recipe(kKjv, "\" beginning of the end\""), "--out", dir + "/runs"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("tokens under this model's tokenizer") != std::string::npos);
    r = run_nscope({"run", recipe(kKjv, "99999999"), "--out", dir + "/runs"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("outside the vocabulary") != std::string::npos);
}

TEST_CASE("recipe gradient: analyzers receive d(metric)/d(activation), it matches a finite difference",
          "[run][gradients]") {
    // Through a Lua script (the same session code as recipes): the gradient against a finite difference of the
    // metric, the unembedding against the logits, and the logit_lens analyzer on a cache.
    const std::string dir = nscope::test::temp_dir("grad-lua");
    const std::string script = dir + "/grad.lua";
    std::ofstream(script) << R"(
local m = nscope.load(arg[1])
local prompts = { {ids = {1, 17, 923, 345, 62, 501}}, {ids = {1, 404, 7, 250}} }
local hook = "blocks.0.mlp.hook_post"
local c = m:run(prompts, { hooks = {hook}, gradient = {metric = "logprob", target = 5} })
local g = c.grad[hook]
-- Finite difference on neuron 7 at position 3 of prompt 1: add eps there and re-run.
local eps = 1e-2
local function metric_with(delta)
  local e = m:run(prompts, { hooks = { hook,
    [hook] = function(t, ctx) if ctx.prompts[1] == 1 then t[{1, 3, 8}] = t[{1, 3, 8}] + delta end end,
  }, gradient = {metric = "logprob", target = 5}, logits = false })
  return e.metric[1]
end
local fd = (metric_with(eps) - metric_with(-eps)) / (2 * eps)
local an = g[{1, 3, 8}]
print(string.format("fd=%.6f analytic=%.6f", fd, an))
assert(math.abs(fd - an) < 1e-3 * math.max(1, math.abs(an)), "finite difference disagrees")
assert(c.metric:size(1) == 2)
-- The logit lens from Lua: unembedding the last residual stream gives the logits.
local r = m:run(prompts, { hooks = {"blocks.1.hook_resid_post"} })
local lens = m:unembed(r["blocks.1.hook_resid_post"])
assert((lens[1] - r.logits[1]):abs():max() < 1e-4, "unembed differs from the logits")
assert((lens[{2, {1, 4}}] - r.logits[{2, {1, 4}}]):abs():max() < 1e-4, "unembed differs on the padded prompt")
-- ... and the logit_lens analyzer through nscope.analyze.
local lr = m:run(prompts, { hooks = {"blocks.0.hook_resid_pre", "blocks.*.hook_resid_post"} })
local res = nscope.analyze("logit_lens", lr, {k = 2})
assert(res.tables.layers.rows[3][3] < 1e-6)
print("ok")
)";
    const auto r = run_nscope({"script", script, "--out", dir + "/runs", "--", kGpt2});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("ok") != std::string::npos);
}

TEST_CASE("recipe gradient: bad metrics, bfloat16, no hooks, a multi-token target fail before weights load",
          "[run][gradients][errors]") {
    const std::string dir = nscope::test::temp_dir("grad-bad");
    auto run = [&](const std::string& model, const std::string& extra) {
        const std::string recipe = "name: grad-bad\nmodel: { path: " + model +
                                   " }\nprompts: [\"In the beginning God\"]\n" + extra;
        return run_nscope({"run", write_recipe(dir, recipe), "--out", dir + "/runs"});
    };
    struct Case {
        std::string extra, message;
    } cases[] = {
        {"hooks: [blocks.0.mlp.hook_post]\ngradient: { metric: logprobs, target: 5 }\n", "did you mean 'logprob'"},
        {"hooks: [blocks.0.mlp.hook_post]\ngradient: { metric: logprob }\n", "needs exactly one 'target'"},
        {"hooks: [blocks.0.mlp.hook_post]\ngradient: { metric: logit_diff, tokens: [5] }\n", "tokens: [A, B]"},
        {"gradient: { metric: loss }\n", "captures none"},
        {"dtype: bfloat16\nhooks: [blocks.0.mlp.hook_post]\ngradient: { metric: loss }\n", "need the model in float32"},
        {"hooks: [blocks.0.mlp.hook_post]\ngradient: { metric: logprob, target: \" beginning of the end\" }\n",
         "tokens under this model's tokenizer"},
        {"hooks: [blocks.0.mlp.hook_post]\ngradient: { metric: logprob, target: { label: answer } }\n",
         "has no such text label"},
    };
    for (const auto& c : cases) {
        const auto r = run(kKjv, c.extra);
        INFO(c.extra << "\n" << r.err);
        CHECK(r.exit_code == 2);
        CHECK(r.err.find(c.message) != std::string::npos);
    }
    // None of them left a run directory that looks complete.
    if (fs::exists(dir + "/runs/grad-bad"))
        for (const auto& e : fs::directory_iterator(dir + "/runs/grad-bad")) {
            std::ifstream in(e.path() / "manifest.json");
            CHECK(nlohmann::json::parse(in)["status"] != "complete");
        }
}

TEST_CASE("attribution: grad x act from a recipe's gradient, attribution patching equals (clean - corrupted) . grad",
          "[run][attribution]") {
    const fs::path run = run_ok("attr", "name: attr\nmodel: { path: " + kGpt2 +
                                            " }\nprompts:\n  - { ids: [[1, 17, 923, 345, 62, 501], [1, 404, 7, 250]] }\n"
                                            "hooks: [\"blocks.*.mlp.hook_post\"]\n"
                                            "gradient: { metric: logprob, target: 5 }\n"
                                            "analyses:\n  - { id: gxa, use: attribution, top: 10 }\n"
                                            "exports: [json]\n");
    const auto d = result(run, "gxa");
    CHECK(d["summary"]["method"] == "grad_x_act");
    CHECK(d["summary"]["by_hook"]["blocks.0.mlp.hook_post"]["tokens"] == 10);
    REQUIRE(d["tables"]["top_neurons"]["rows"].size() == 10);
    const double top = d["tables"]["top_neurons"]["rows"][0][3].get<double>();
    CHECK(top > 0.0);
    CHECK(top >= d["tables"]["top_neurons"]["rows"][9][3].get<double>());
    CHECK(fs::exists(run / "results" / "gxa.blocks.1.mlp.hook_post.attribution.npy"));

    // Without a recipe gradient grad_x_act has nothing to multiply: bad input, exit 2.
    const std::string dir = nscope::test::temp_dir("attr-bad");
    auto r = run_nscope({"run", write_recipe(dir, "name: attr-bad\nmodel: { path: " + kGpt2 +
                                                      " }\nprompts:\n  - { ids: [[1, 17, 923]] }\n"
                                                      "hooks: [\"blocks.*.mlp.hook_post\"]\n"
                                                      "analyses:\n  - { use: attribution }\n"),
                         "--out", dir + "/runs"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("needs gradients") != std::string::npos);
    r = run_nscope({"run", write_recipe(dir, "name: attr-bad\nmodel: { path: " + kGpt2 +
                                                 " }\nprompts:\n  - { ids: [[1, 17, 923], [1, 17]] }\n"
                                                 "analyses:\n  - { use: attribution, method: patching, pairs: [[0, 1]], "
                                                 "metric: logprob, tokens: [5] }\n"),
                    "--out", dir + "/runs"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("needs equal lengths") != std::string::npos);

    // Attribution patching, checked against the same quantity computed by hand in Lua.
    const std::string script = dir + "/attr.lua";
    std::ofstream(script) << R"(
local m = nscope.load(arg[1])
local clean, corrupt = {ids = {1, 17, 923, 345, 62, 501}}, {ids = {1, 17, 44, 345, 62, 501}}
local hook = "blocks.1.attn.hook_z"
local g = {metric = "logit_diff", tokens = {5, 9}}
local c = m:run({clean}, {hooks = {hook, "blocks.0.mlp.hook_post"}, gradient = g})
local k = m:run({corrupt}, {hooks = {hook, "blocks.0.mlp.hook_post"}, gradient = g})
local denom = c.metric[1] - k.metric[1]
local dz = (c[hook] - k[hook]) * k.grad[hook]
local want_head = dz[{1, {}, 3, {}}]:sum() / denom
local dm = (c["blocks.0.mlp.hook_post"] - k["blocks.0.mlp.hook_post"]) * k.grad["blocks.0.mlp.hook_post"]
local want_neuron = dm[{1, {}, 12}]:sum() / denom
local all = m:run({clean, corrupt}, {hooks = {"blocks.0.hook_resid_pre"}})
local res = nscope.analyze("attribution", all, {method = "patching", pairs = {{0, 1}}, metric = "logit_diff", tokens = {5, 9}})
local got_head = res.arrays["heads.effect"][{2, 3}]
local got_neuron = res.arrays["neurons.effect"][{1, 12}]
print(string.format("head %.6f vs %.6f, neuron %.6f vs %.6f", got_head, want_head, got_neuron, want_neuron))
assert(math.abs(got_head - want_head) < 1e-4 * math.max(1, math.abs(want_head)))
assert(math.abs(got_neuron - want_neuron) < 1e-4 * math.max(1, math.abs(want_neuron)))
assert(res.tables.pairs.rows[1][3] == c.metric[1] or math.abs(res.tables.pairs.rows[1][3] - c.metric[1]) < 1e-5)
print("ok")
)";
    r = run_nscope({"script", script, "--out", dir + "/lua-runs", "--", kGpt2});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("ok") != std::string::npos);
}

TEST_CASE("patching: patching the one differing position restores the clean run, bad pairs are refused",
          "[run][patching]") {
    // Prompts 0 and 1 differ only at position 2: patching blocks.0.hook_resid_pre there turns the corrupted run
    // into the clean one (effect exactly 1); patching any other position of layer 0 changes nothing (0).
    const fs::path run = run_ok("patch", "name: patch\nmodel: { path: " + kGpt2 +
                                             " }\nprompts:\n  - { ids: [[1, 17, 923, 345, 62, 501], [1, 17, 44, 345, 62, 501]] }\n"
                                             "analyses:\n  - { id: p, use: patching, pairs: [[0, 1]], metric: logit_diff, "
                                             "tokens: [5, 9], components: [resid, layers, heads, neurons], neurons: 5, "
                                             "batch_size: 7 }\n"
                                             "  - { id: a, use: attribution, method: patching, pairs: [[0, 1]], "
                                             "metric: logit_diff, tokens: [5, 9] }\n"
                                             "exports: [json]\n");
    const auto d = result(run, "p");
    const auto z = d["figures"]["resid"]["z"];
    REQUIRE(z.size() == 2);
    REQUIRE(z[0].size() == 6);
    CHECK(std::abs(z[0][2].get<double>() - 1.0) < 1e-4);
    for (int q : {0, 1, 3, 4, 5}) CHECK(std::abs(z[0][q].get<double>()) < 1e-4);
    CHECK(d["tables"]["neurons"]["rows"].size() == 5);
    CHECK(d["summary"]["forwards"].get<int>() >= 2);
    const auto heads = nscope::read_npy((run / "results" / "p.heads.effect.npy").string());
    CHECK(heads.shape == std::vector<int64_t>{2, 4});
    // Attribution patching estimates the same quantities from 2 forwards + 1 backward.
    const auto a = result(run, "a");
    CHECK(a["summary"]["pairs"] == 1);
    const auto est = nscope::read_npy((run / "results" / "a.heads.effect.npy").string());
    CHECK(est.shape == heads.shape);

    const std::string dir = nscope::test::temp_dir("patch-bad");
    auto run_bad = [&](const std::string& ids, const std::string& analysis) {
        return run_nscope({"run", write_recipe(dir, "name: patch-bad\nmodel: { path: " + kGpt2 + " }\nprompts:\n  - { ids: " +
                                                        ids + " }\nanalyses:\n  - " + analysis + "\n"),
                           "--out", dir + "/runs"});
    };
    const std::string same = "[[1, 17, 923], [1, 17, 923]]";
    const auto r = run_bad(same, "{ use: patching, pairs: [[0, 1]], metric: logprob, tokens: [5] }");
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("clean prompt 0 and corrupted prompt 1 are the same tokens") != std::string::npos);
    CHECK(r.err.find("nothing to restore") != std::string::npos);
    const auto ra = run_bad(same, "{ use: attribution, method: patching, pairs: [[0, 1]], metric: logprob, tokens: [5] }");
    CHECK(ra.exit_code == 2);
    CHECK(ra.err.find("attribution: clean prompt 0 and corrupted prompt 1 are the same tokens") != std::string::npos);
    const auto r2 = run_bad("[[1, 17, 923]]", "{ use: patching, pairs: [[0, 1]], metric: logit_diff, tokens: [5], "
                                              "components: [resids] }");
    CHECK(r2.exit_code == 2);
    CHECK(r2.err.find("needs 2 token(s)") != std::string::npos);
}

TEST_CASE("attribution: integrated gradients on a model, completeness error shrinks with the steps, bad input exits 2",
          "[run][attribution][ig]") {
    // Three prompts of the oracle GPT-2, every MLP layer scaled at the last position; the metric is log p(token 5).
    auto recipe = [](int steps, const std::string& extra) {
        return "name: ig\nmodel: { path: " + kGpt2 +
               " }\nprompts:\n  - { ids: [[1, 17, 923, 345, 62, 501], [1, 404, 7, 250], [3, 88, 12, 9, 70]] }\n"
               "analyses:\n  - { id: ig, use: attribution, method: integrated_gradients, metric: logprob, tokens: [5], "
               "steps: " + std::to_string(steps) + extra + " }\nexports: [json]\n";
    };
    std::vector<double> max_error;
    nlohmann::json last;
    fs::path last_run;
    for (int steps : {2, 8, 50}) {
        last_run = run_ok("ig" + std::to_string(steps), recipe(steps, ""));
        last = result(last_run, "ig");
        max_error.push_back(last["summary"]["completeness"]["max_error"].get<double>());
    }
    INFO("max completeness error at 2, 8, 50 steps: " << max_error[0] << " " << max_error[1] << " " << max_error[2]);
    CHECK(max_error[1] < max_error[0]);
    CHECK(max_error[2] < max_error[1]);
    CHECK(last["summary"]["completeness"]["max_relative_error"].get<double>() < 0.05);
    // The effect arrays: one row per prompt, their sums are the table's sums.
    const auto& comp = last["tables"]["completeness"]["rows"];
    REQUIRE(comp.size() == 3 * 2);
    for (int layer : {0, 1}) {
        const auto eff = nscope::read_npy((last_run / "results" / ("ig.blocks." + std::to_string(layer) + ".mlp.hook_post.effect.npy")).string());
        REQUIRE(eff.shape.size() == 2);
        REQUIRE(eff.shape[0] == 3);
        const auto v = eff.to_f32();
        for (size_t p = 0; p < 3; ++p) {
            double s = 0;
            for (int64_t i = 0; i < eff.shape[1]; ++i) s += v[p * static_cast<size_t>(eff.shape[1]) + static_cast<size_t>(i)];
            const auto& row = comp[p * 2 + static_cast<size_t>(layer)];
            CHECK(row[1] == layer);
            CHECK(row[4].get<double>() == Approx(s).epsilon(1e-4).margin(1e-5));
        }
    }
    CHECK(last["knowledge_neurons"].contains("all"));
    CHECK(last["knowledge_neurons"]["all"]["prompts"] == 3);

    // Bad input is refused at plan time (exit 2, no run directory): steps < 1, a hook that is not an MLP hook.
    const std::string dir = nscope::test::temp_dir("ig-bad");
    auto r = run_nscope({"run", write_recipe(dir, recipe(0, "")), "--out", dir + "/runs"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("'steps'") != std::string::npos);
    r = run_nscope({"run", write_recipe(dir, recipe(10, ", hooks: [\"blocks.*.hook_resid_post\"]")), "--out", dir + "/runs"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("not an MLP neuron hook") != std::string::npos);
    CHECK_FALSE(fs::exists(dir + "/runs"));
}

TEST_CASE("patching and attribution patching: pairs of different lengths or unknown prompts fail at plan time",
          "[run][patching][errors]") {
    const std::string dir = nscope::test::temp_dir("pairs-bad");
    auto run = [&](const std::string& analysis, const std::string& prompts) {
        return run_nscope({"run", write_recipe(dir, "name: pairs-bad\nmodel: { path: " + kKjv + " }\nprompts:\n" + prompts +
                                                        "analyses:\n  - " + analysis + "\n"),
                           "--out", dir + "/runs"});
    };
    const std::string by_label =
        "  - { text: \"And God said, Let there be light: and there was\", labels: { role: clean } }\n"
        "  - { text: \"And God said, Let there be a great darkness: and there was\", labels: { role: corrupt } }\n";
    for (const std::string use : {"patching", "attribution, method: patching"}) {
        INFO(use);
        auto r = run("{ use: " + use + ", by_label: { key: role, values: [clean, corrupt] }, metric: logprob, tokens: [\" light\"] }",
                     by_label);
        CHECK(r.exit_code == 2);
        CHECK(r.err.find("prompts 0 and 1 have") != std::string::npos);
        CHECK(r.err.find("needs equal lengths") != std::string::npos);
        r = run("{ use: " + use + ", pairs: [[0, 5]], metric: logprob, tokens: [\" light\"] }", by_label);
        CHECK(r.exit_code == 2);
        CHECK(r.err.find("names prompt 5, which the run does not have") != std::string::npos);
    }
    // Both fail at plan time (Analyzer::check sees the tokenized prompts): file:line, no run directory, and
    // --dry-run refuses them too.
    auto r = run("{ use: patching, by_label: { key: role, values: [clean, corrupt] }, metric: logprob, tokens: [\" light\"] }",
                 by_label);
    CHECK(r.err.find("recipe.yaml:") != std::string::npos);
    CHECK(r.err.find("in check:") != std::string::npos);
    CHECK_FALSE(fs::exists(dir + "/runs"));
    r = run_nscope({"run", dir + "/recipe.yaml", "--dry-run"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("needs equal lengths") != std::string::npos);
}

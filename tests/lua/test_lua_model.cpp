// `nscope script` with a model: Lua hook functions during the forward, caches, plugins from Lua, and the
// example scripts in scripts/lua/ (run on the tiny GPT-2 fixture, as CI does).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/cli.h"

namespace fs = std::filesystem;
using nscope::test::run_nscope;

namespace {

const std::string kSource = NSCOPE_SOURCE_DIR;
const std::string kModel = kSource + "/tests/fixtures/models/gpt2";

nscope::test::CliResult run_code(const std::string& name, const std::string& code, std::vector<std::string> extra = {}) {
    const std::string dir = nscope::test::temp_dir("lua-model");
    const std::string path = dir + "/" + name;
    std::ofstream(path) << "local MODEL = '" << kModel << "'\n" << code;
    std::vector<std::string> args{"script", path, "--out", dir + "/runs"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_nscope(args);
}

}  // namespace

TEST_CASE("lua hook: zeroing a neuron makes its captured value 0 and changes the logits", "[lua][model]") {
    const auto r = run_code("zero.lua", R"(
local m = nscope.load(MODEL)
local prompts = { { ids = { 11, 42, 7, 300 } }, { ids = { 5, 6 } } }
local hook = "blocks.1.mlp.hook_post"
local clean = m:run(prompts, { hooks = { hook } })
local seen = {}
local edited = m:run(prompts, { hooks = { hook, [hook] = function(t, ctx)
  seen[#seen + 1] = ctx.hook .. ":" .. table.concat(ctx.prompts, ",") .. ":" .. table.concat(t:shape(), "x")
  t[{ {}, {}, 13 }] = 0
end } })
print("seen", table.concat(seen, " "))
print("clean", clean[hook][{ 1, 4, 13 }] ~= 0)
print("edited", edited[hook][{ 1, 4, 13 }], edited[hook][{ 2, 2, 13 }])
print("other neuron unchanged", edited[hook][{ 1, 4, 14 }] == clean[hook][{ 1, 4, 14 }])
print("logits changed", (edited.logits[{ 1, 4 }] - clean.logits[{ 1, 4 }]):abs():max() > 1e-6)
print("kl", nscope.kl_div(clean.logits[{ 1, 4 }], edited.logits[{ 1, 4 }]) > 0)
-- returning a tensor replaces the activation
local repl = m:run(prompts, { batch_size = 1, hooks = { hook, [hook] = function(t) return t * 0 end } })
print("replaced", repl[hook]:abs():max())
-- the same edit as a built-in intervention gives the same logits
local iv = m:run(prompts, { interventions = { { hook = hook, op = "zero", neurons = { 12 } } } })
print("intervention matches", (iv.logits - edited.logits):abs():max() < 1e-5)
)");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("seen\tblocks.1.mlp.hook_post:1,2:2x4x256\n"));
    CHECK_THAT(r.out, Catch::Contains("clean\ttrue\n"));
    CHECK_THAT(r.out, Catch::Contains("edited\t0.0\t0.0\n"));
    CHECK_THAT(r.out, Catch::Contains("other neuron unchanged\ttrue\n"));
    CHECK_THAT(r.out, Catch::Contains("logits changed\ttrue\n"));
    CHECK_THAT(r.out, Catch::Contains("kl\ttrue\n"));
    CHECK_THAT(r.out, Catch::Contains("replaced\t0.0\n"));
    CHECK_THAT(r.out, Catch::Contains("intervention matches\ttrue\n"));
}

TEST_CASE("lua hook: an error deep inside a hook exits 2 with the hook's line and a traceback", "[lua][model][errors]") {
    const std::string script = kSource + "/tests/fixtures/scripts/bad/hook_error.lua";
    const std::string out = nscope::test::temp_dir("lua-hook-error");
    const auto r = run_nscope({"script", script, "--out", out, "--", kModel});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("script error: "));
    CHECK_THAT(r.err, Catch::Contains("hook_error.lua:5: attempt to index a nil value (local 'missing')"));
    CHECK_THAT(r.err, Catch::Contains("(in the hook function for blocks.1.mlp.hook_post)"));
    CHECK_THAT(r.err, Catch::Contains("stack traceback:"));
    CHECK_THAT(r.err, Catch::Contains("in method 'run'"));
    CHECK_THAT(r.err, Catch::Contains("hook_error.lua:10: in main chunk"));
    CHECK_THAT(r.out, !Catch::Contains("not reached"));
}

TEST_CASE("lua model: cache layout, padding and mistakes named clearly", "[lua][model]") {
    const auto r = run_code("cache.lua", R"(
local m = nscope.load(MODEL)
local c = m:run({ { ids = { 1, 2, 3 } }, { ids = { 4 }, labels = { kind = "short" } } },
                { hooks = { "blocks.0.mlp.hook_post", "blocks.0.attn.hook_pattern" } })
print("shape", table.concat(c["blocks.0.mlp.hook_post"]:shape(), "x"), table.concat(c.logits:shape(), "x"))
print("pattern", table.concat(c["blocks.0.attn.hook_pattern"]:shape(), "x"))
print("padding", c["blocks.0.mlp.hook_post"][{ 2, {2, 3} }]:abs():sum(), c.mask[2]:sum(), c.lengths[2])
print("labels", c.prompts[2].labels.kind, c.tokens[1][3])
print("info", m.info.n_layers, m.info.d_mlp, m.info.vocab_size)
print(pcall(function() return c["blocks.1.mlp.hook_post"] end))
)");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("shape\t2x3x256\t2x3x1000\n"));
    CHECK_THAT(r.out, Catch::Contains("pattern\t2x4x3x3\n"));
    CHECK_THAT(r.out, Catch::Contains("padding\t0.0\t1\t1\n"));
    CHECK_THAT(r.out, Catch::Contains("labels\tshort\t#3\n"));
    CHECK_THAT(r.out, Catch::Contains("info\t2\t256\t1000\n"));
    CHECK_THAT(r.out, Catch::Contains("hook 'blocks.1.mlp.hook_post' was not captured in this run"));
}

TEST_CASE("lua model: analyzer and exporter plugins and recipes from Lua", "[lua][model]") {
    const auto r = run_code("plugins.lua", R"(
local m = nscope.load(MODEL)
local c = m:run({ { ids = { 1, 2, 3 } }, { ids = { 4, 5 } } }, { hooks = { "blocks.0.mlp.hook_post" } })
local s = nscope.analyze("stats", c, { threshold = 0.1 })
local mine = c["blocks.0.mlp.hook_post"][{ {}, {}, 7 }]
local mean7 = (mine[1]:sum() + mine[2]:sum()) / 5
print("tokens", s.summary.tokens, s._plugin)
print("mean matches", math.abs(s.arrays["blocks.0.mlp.hook_post.mean"][7] - mean7) < 1e-5)
local dir = nscope.export("json", { st = s })
local f = assert(io.open(dir .. "/results/st.json")) local text = f:read("a") f:close()
print("exported", text:find('"analyzer"') ~= nil)
local run = nscope.recipe { name = "from-lua", model = { path = MODEL }, prompts = { { ids = { { 1, 2 } } } },
  hooks = { "blocks.0.mlp.hook_post" }, analyses = { { id = "s", use = "stats" } }, exports = { { use = "json" } } }
print("recipe inside run dir", run:sub(1, #nscope.run_dir) == nscope.run_dir)
local g = assert(io.open(run .. "/manifest.json")) local man = g:read("a") g:close()
print("recipe complete", man:find('"status": "complete"') ~= nil)
print(pcall(nscope.analyze, "nosuch", c))
print(pcall(nscope.analyze, "stats", c, { threshold = "high" }))
print(pcall(function() return m:run({ { ids = { 1, 2 } } }, { interventions = {
  { hook = "blocks.0.mlp.hook_post", op = "zero" }, { hook = "blocks.0.mlp.hook_post", op = "scale" } } }) end))
)");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("tokens\t5\tstats\n"));
    CHECK_THAT(r.out, Catch::Contains("mean matches\ttrue\n"));
    CHECK_THAT(r.out, Catch::Contains("exported\ttrue\n"));
    CHECK_THAT(r.out, Catch::Contains("recipe inside run dir\ttrue\n"));
    CHECK_THAT(r.out, Catch::Contains("recipe complete\ttrue\n"));
    CHECK_THAT(r.out, Catch::Contains("false\t"));
    CHECK_THAT(r.out, Catch::Contains("analysis 'stats' in configure: "));
    // Lua counts from 1: the second entry is interventions[2].
    CHECK_THAT(r.out, Catch::Contains("interventions[2]") && Catch::Contains("op 'scale' needs 'factor'"));
}

TEST_CASE("lua: nscope.analyze runs embed like a recipe does (same seed, same map) and reports its errors",
          "[lua][model][embed]") {
    // 12 prompts of 6 ids, labelled by half; UMAP of the 72 token points of one hook from Lua, and the same analysis
    // in a recipe with the same prompts and seed: the json exports of the two maps are the same bytes.
    const auto r = run_code("embed.lua", R"(
local m = nscope.load(MODEL)
local prompts, specs = {}, {}
for p = 1, 12 do
  local ids = {}
  for t = 1, 6 do ids[t] = (p * 37 + t * 11) % 200 + 1 end
  local half = p <= 6 and "first" or "second"
  prompts[p] = { ids = ids, labels = { half = half } }
  specs[p] = { ids = { ids }, labels = { half = half } }
end
local hook = "blocks.0.hook_resid_post"
local c = m:run(prompts, { hooks = { hook } })
local params = { method = "umap", neighbors = 8, epochs = 50, seed = 3 }
local e = nscope.analyze("embed", c, params)
local h = e.hooks[hook]
print("embed", h.method, h.points, h.point_kind, e.summary.label)
print("shape", table.concat(e.arrays[hook .. ".embedding"]:shape(), "x"), table.concat(e.arrays[hook .. ".points"]:shape(), "x"))
print("trust", h.trustworthiness > 0.5, #h.tokens, h.labels[1])
local dir = nscope.export("json", { map = e })
local analysis = { id = "map", use = "embed", hooks = { hook } }
for k, v in pairs(params) do analysis[k] = v end
local run = nscope.recipe { name = "embed-lua", model = { path = MODEL }, prompts = specs, hooks = { hook },
  analyses = { analysis }, exports = { { use = "json" } } }
local function bytes(path) local f = assert(io.open(path, "rb")) local s = f:read("a") f:close() return s end
local name = "/results/map." .. hook .. ".embedding.npy"
print("same map", bytes(dir .. name) == bytes(run .. name))
print(pcall(nscope.analyze, "embed", c, { method = "tsne", perplexity = 30 }))
print(pcall(nscope.analyze, "embed", c, { method = "umap", perplexity = 30 }))
)");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("embed\tumap\t72\ttokens\thalf\n"));
    CHECK_THAT(r.out, Catch::Contains("shape\t72x2\t72x2\n"));
    CHECK_THAT(r.out, Catch::Contains("trust\ttrue\t72\tfirst\n"));
    CHECK_THAT(r.out, Catch::Contains("same map\ttrue\n"));
    CHECK_THAT(r.out, Catch::Contains("too few points") && Catch::Contains("72 token points") &&
                          Catch::Contains("fewer than the 91"));
    CHECK_THAT(r.out, Catch::Contains("'perplexity' applies to method: tsne"));
}

TEST_CASE("lua: nscope.analyze compares models from a list of caches, in lockstep like a models: run",
          "[lua][model][drift]") {
    // The base, the base again, and the base with neuron 5 of block 0's MLP scaled by 3: drift is zero against
    // itself; the scaled neuron keeps its profile (drift 0) but its mean triples, and the later block drifts.
    const auto r = run_code("lockstep.lua", R"(
local m = nscope.load(MODEL)
local prompts = {}
for p = 1, 20 do
  local ids = {}
  for t = 1, 4 + p % 5 do ids[t] = (p * 31 + t * 7) % 300 + 1 end
  prompts[p] = { ids = ids }
end
local hooks = { "blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post" }
local base = m:run(prompts, { hooks = hooks })
local again = m:run(prompts, { hooks = hooks })
local scaled = m:run(prompts, { hooks = hooks, interventions = {
  { hook = "blocks.0.mlp.hook_post", op = "scale", factor = 3, neurons = { 5 } } } })
local same = nscope.analyze("drift", { base, again }, { k = 5 })
print("same", same.summary.checkpoints[1].mean_drift < 1e-6, same.summary.checkpoints[1].mean_topk_overlap, same.summary.models[1])
local d = nscope.analyze("drift", { base, again, scaled }, { k = 5, labels = { "base", "again", "scaled" } })
local h0 = "blocks.0.mlp.hook_post"
local drift0, shift0 = d.arrays[h0 .. ".drift"], d.arrays[h0 .. ".mean_shift"]
local mean5 = base[h0][{ {}, {}, 6 }]:sum() / base.mask:to("float32"):sum()
print("scaled neuron", math.abs(drift0[{ 2, 6 }]) < 1e-5, math.abs(shift0[{ 2, 6 }] - 2 * mean5) < 1e-4 * math.abs(mean5) + 1e-6)
print("other neurons of block 0", drift0[2]:abs():max() < 1e-5, math.abs(shift0[{ 2, 7 }]) < 1e-6)
print("block 1 drifts", d.arrays["blocks.1.mlp.hook_post.drift"][2]:abs():max() > 1e-3)
print("models", table.concat(d.summary.models, ","))
local cka = nscope.analyze("cka", { base, scaled }, { across = "models", method = "rsa" })
print("cka", cka.summary.across, cka.summary.method)
print(pcall(nscope.analyze, "stats", { base, again }))
print(pcall(nscope.analyze, "drift", base))
print(pcall(nscope.analyze, "drift", { base, m:run({ { ids = { 1, 2 } } }, { hooks = hooks }) }))
print(pcall(nscope.analyze, "drift", { base, again }, { labels = { "one" } }))
)");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    INFO(r.out);
    CHECK_THAT(r.out, Catch::Contains("same\ttrue\t1.0\t"));
    CHECK_THAT(r.out, Catch::Contains("scaled neuron\ttrue\ttrue\n"));
    CHECK_THAT(r.out, Catch::Contains("other neurons of block 0\ttrue\ttrue\n"));
    CHECK_THAT(r.out, Catch::Contains("block 1 drifts\ttrue\n"));
    CHECK_THAT(r.out, Catch::Contains("models\tbase,again,scaled\n"));
    CHECK_THAT(r.out, Catch::Contains("cka\tmodels\trsa\n"));
    CHECK_THAT(r.out, Catch::Contains("is for analyses that compare models"));
    CHECK_THAT(r.out, Catch::Contains("this analysis compares models; give a list of caches"));
    CHECK_THAT(r.out, Catch::Contains("cache 2 has 1 prompts and cache 1 has 20"));
    CHECK_THAT(r.out, Catch::Contains("'labels' must list one name per cache (2)"));
}

TEST_CASE("example scripts run on the tiny GPT-2 and print their markers", "[lua][model][examples]") {
    const std::vector<std::pair<std::string, std::string>> examples = {
        {"ablate_neuron.lua", "ABLATION_OK"}, {"compare_prompts.lua", "COMPARE_OK"}, {"neuron_search.lua", "NEURON_SEARCH_OK"}};
    for (const auto& [file, marker] : examples) {
        INFO(file);
        const std::string out = nscope::test::temp_dir("lua-example");
        const auto r = run_nscope({"script", kSource + "/scripts/lua/" + file, "--out", out, "--", kModel});
        INFO(r.err);
        CHECK(r.exit_code == 0);
        CHECK_THAT(r.out, Catch::Contains(marker));
    }
}

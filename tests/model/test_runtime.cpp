// The model runtime around the adapters: batching invariance, interventions, safetensors / model-folder
// validation, HF cache resolution, hook patterns, trainable and random-init models.
#include "tests/model/model_support.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/model/hook_match.h"
#include "core/model/interventions.h"
#include "core/model/safetensors.h"
#include "core/util/text.h"
#include "nscope/error.h"
#include "tests/support/cli.h"

using namespace nscope;
using namespace nscope::test;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> all_hooks(const LoadedModel& m) { return match_hooks(m.adapter->hook_points(), {"*"}); }

/// Copy a fixture model folder (config + weights) into a fresh temp dir.
std::string copy_model(const std::string& name, const std::string& tag) {
    const std::string dir = temp_dir(tag);
    fs::copy_file(fixture_model(name) + "/config.json", dir + "/config.json");
    fs::copy_file(fixture_model(name) + "/model.safetensors", dir + "/model.safetensors");
    fs::permissions(dir + "/model.safetensors", fs::perms::owner_write, fs::perm_options::add);
    fs::permissions(dir + "/config.json", fs::perms::owner_write, fs::perm_options::add);
    return dir;
}

/// The address ranges at which this process maps `file` (from /proc/self/maps).
std::vector<std::pair<uintptr_t, uintptr_t>> mappings_of(const std::string& file) {
    const std::string target = fs::canonical(file).string();
    std::vector<std::pair<uintptr_t, uintptr_t>> out;
    std::ifstream maps("/proc/self/maps");
    for (std::string line; std::getline(maps, line);) {
        if (line.size() < target.size() || line.compare(line.size() - target.size(), target.size(), target) != 0) continue;
        const size_t dash = line.find('-'), space = line.find(' ');
        out.emplace_back(std::stoull(line.substr(0, dash), nullptr, 16), std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16));
    }
    return out;
}

bool inside(const std::vector<std::pair<uintptr_t, uintptr_t>>& ranges, const void* p) {
    const auto a = reinterpret_cast<uintptr_t>(p);
    for (const auto& [lo, hi] : ranges)
        if (a >= lo && a < hi) return true;
    return false;
}

void write_bytes(const std::string& path, const std::string& header, size_t data_bytes) {
    std::ofstream out(path, std::ios::binary);
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
    out << header << std::string(data_bytes, '\0');
}

struct Gpt2 {
    LoadedModel m = load_model(registry(), fixture_model("gpt2"), {});
    ModelSession s{m};
    std::vector<std::vector<int64_t>> rows = oracle_rows("gpt2");
    ForwardOutput run(std::vector<InterventionSpec> iv, std::vector<std::string> cap) {
        ForwardRequest r;
        r.capture = std::move(cap);
        r.interventions = std::move(iv);
        return s.forward(rows, nullptr, {0, 1}, r);
    }
};

InterventionSpec spec(const std::string& hook, const std::string& op) {
    InterventionSpec s;
    s.hook = hook;
    s.op = op;
    return s;
}

int64_t count_params_of(LoadedModel& m) {
    int64_t n = 0;
    for (const auto& [name, t] : m.adapter->named_parameters()) n += t.numel();
    return n;
}

double maxdiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

}  // namespace

TEST_CASE("each prompt's activations in a padded batch equal its one-at-a-time run", "[model][batching]") {
    for (const std::string name : {"gpt2", "llama", "bert", "phi", "gemma", "gpt_neox"}) {
        LoadedModel m = load_model(registry(), fixture_model(name), {});
        ModelSession s(m);
        const auto rows = oracle_rows(name);
        std::vector<std::vector<int64_t>> types;
        if (name == "bert") types = oracle_rows(name, "token_type_ids.npy");
        ForwardRequest req;
        req.capture = all_hooks(m);
        const auto batch = s.forward(rows, name == "bert" ? &types : nullptr, {0, 1}, req);
        for (size_t r = 0; r < rows.size(); ++r) {
            std::vector<std::vector<int64_t>> one{rows[r]}, one_t;
            if (name == "bert") one_t = {types[r]};
            const auto single = s.forward(one, name == "bert" ? &one_t : nullptr, {r}, req);
            const int64_t len = static_cast<int64_t>(rows[r].size());
            double worst = 0;
            for (const auto& h : m.adapter->hook_points()) {
                at::Tensor b = batch.captures.at(h.name).narrow(0, static_cast<int64_t>(r), 1);
                for (size_t a = 0; a < h.dims.size(); ++a)
                    if (h.dims[a].find("pos") != std::string::npos) b = b.narrow(static_cast<int64_t>(a), 0, len);
                const at::Tensor one = single.captures.at(h.name);
                const double d = maxdiff(b, one);
                // 1e-5 absolute for values up to 1; relative beyond (BERT logits reach 15, where BLAS
                // blocking differences between batch shapes give ~1e-5).
                const double tol = 1e-5 * std::max(1.0, one.abs().max().item<double>());
                INFO(name << " row " << r << " " << h.name << " diff " << d);
                REQUIRE(d <= tol);
                worst = std::max(worst, d);
            }
            std::printf("batching %-8s row %zu: max |batched - alone| = %.3g\n", name.c_str(), r, worst);
        }
    }
}

TEST_CASE("captures are float32, contiguous and zero at padded positions", "[model][session]") {
    Gpt2 g;
    const auto out = g.run({}, {"blocks.0.mlp.hook_post", "blocks.1.attn.hook_pattern"});
    const at::Tensor post = out.captures.at("blocks.0.mlp.hook_post");
    CHECK(post.scalar_type() == at::kFloat);
    CHECK(post.is_contiguous());
    CHECK(post.sizes() == at::IntArrayRef({2, 7, 256}));
    CHECK(post[1].narrow(0, 5, 2).abs().max().item<double>() == 0.0);
    CHECK(post[1].narrow(0, 0, 5).abs().max().item<double>() > 0.0);
    const at::Tensor pat = out.captures.at("blocks.1.attn.hook_pattern");
    CHECK(pat[1].narrow(1, 5, 2).abs().max().item<double>() == 0.0);  // padded query rows
    CHECK(pat[1].narrow(2, 5, 2).abs().max().item<double>() == 0.0);  // padded keys
    // Each valid query row of the pattern sums to 1.
    CHECK(maxdiff(pat[0].sum(-1), at::ones({4, 7})) < 1e-5);
}

TEST_CASE("zero on a neuron makes the captured value 0 and changes the logits", "[model][interventions]") {
    Gpt2 g;
    const std::string hook = "blocks.0.mlp.hook_post";
    const auto clean = g.run({}, {hook});
    auto z = spec(hook, "zero");
    z.neurons = {5, 9};
    const auto out = g.run({z}, {hook});
    const at::Tensor c = clean.captures.at(hook), e = out.captures.at(hook);
    CHECK(e.select(2, 5).abs().max().item<double>() == 0.0);
    CHECK(e.select(2, 9).abs().max().item<double>() == 0.0);
    CHECK(c.select(2, 5).abs().max().item<double>() > 0.0);
    at::Tensor others = at::ones({256}, at::kBool);
    others[5] = false, others[9] = false;
    CHECK(maxdiff(e.index({at::indexing::Slice(), at::indexing::Slice(), others}),
                  c.index({at::indexing::Slice(), at::indexing::Slice(), others})) == 0.0);
    CHECK(maxdiff(out.logits, clean.logits) > 1e-4);
}

TEST_CASE("scale, set, add and mean edit exactly the selected values", "[model][interventions]") {
    Gpt2 g;
    const std::string hook = "blocks.1.hook_resid_post";
    const at::Tensor c = g.run({}, {hook}).captures.at(hook);

    auto sc = spec(hook, "scale");
    sc.neurons = {3};
    sc.factor = 2.5;
    at::Tensor e = g.run({sc}, {hook}).captures.at(hook);
    CHECK(maxdiff(e.select(2, 3), c.select(2, 3) * 2.5) < 1e-6);
    CHECK(maxdiff(e.narrow(2, 4, 60), c.narrow(2, 4, 60)) == 0.0);

    // set at position -1: each row's last real token (row 0: 6, row 1: 4).
    auto st = spec(hook, "set");
    st.neurons = {7};
    st.positions = {-1};
    st.value = 1.5;
    e = g.run({st}, {hook}).captures.at(hook);
    CHECK(e[0][6][7].item<float>() == 1.5f);
    CHECK(e[1][4][7].item<float>() == 1.5f);
    CHECK(e[0][5][7].item<float>() == c[0][5][7].item<float>());
    CHECK(e[1][5][7].item<float>() == 0.0f);  // padding stays zero in the capture

    auto ad = spec(hook, "add");
    ad.neurons = {1, 2};
    ad.vector = {0.5f, -1.0f};
    e = g.run({ad}, {hook}).captures.at(hook);
    const at::Tensor valid = g.run({}, {}).attention_mask.to(at::kFloat);
    CHECK(maxdiff(e.select(2, 1), c.select(2, 1) + 0.5 * valid) < 1e-6);
    CHECK(maxdiff(e.select(2, 2), c.select(2, 2) - 1.0 * valid) < 1e-6);

    auto mn = spec(hook, "mean");
    mn.neurons = {0};
    mn.means = {0.25f};
    mn.prompts = {1};  // only prompt 1
    e = g.run({mn}, {hook}).captures.at(hook);
    CHECK(maxdiff(e[1].select(1, 0).narrow(0, 0, 5), at::full({5}, 0.25)) < 1e-7);
    CHECK(maxdiff(e[0], c[0]) == 0.0);
}

TEST_CASE("mask_range replaces only values inside [lo, hi], clamp_range clamps", "[model][interventions]") {
    Gpt2 g;
    const std::string hook = "blocks.0.mlp.hook_post";
    const at::Tensor c = g.run({}, {hook}).captures.at(hook);
    auto mr = spec(hook, "mask_range");
    mr.lo = 0.1, mr.hi = 0.5, mr.value = -7.0;
    const at::Tensor e = g.run({mr}, {hook}).captures.at(hook);
    const at::Tensor inside = c.ge(0.1) & c.le(0.5);
    REQUIRE(inside.sum().item<int64_t>() > 0);
    CHECK(e.masked_select(inside).eq(-7.0).all().item<bool>());
    CHECK(maxdiff(e.masked_select(inside.logical_not()), c.masked_select(inside.logical_not())) == 0.0);

    auto cr = spec(hook, "clamp_range");
    cr.lo = -0.05, cr.hi = 0.2;
    cr.neurons = {0, 1, 2, 3, 4, 5, 6, 7};
    const at::Tensor k = g.run({cr}, {hook}).captures.at(hook);
    const at::Tensor sel = c.narrow(-1, 0, 8), rest = c.narrow(-1, 8, c.size(-1) - 8);
    REQUIRE((sel.gt(0.2) | sel.lt(-0.05)).sum().item<int64_t>() > 0);  // some values really are outside
    CHECK(maxdiff(k.narrow(-1, 0, 8), sel.clamp(-0.05, 0.2)) == 0.0);   // the selected neurons, clamped
    CHECK(maxdiff(k.narrow(-1, 8, c.size(-1) - 8), rest) == 0.0);       // the others untouched
}

TEST_CASE("heads select the head dimension of attention hooks", "[model][interventions]") {
    Gpt2 g;
    const std::string hook = "blocks.0.attn.hook_z";
    const at::Tensor c = g.run({}, {hook}).captures.at(hook);
    auto z = spec(hook, "zero");
    z.heads = {1};
    const at::Tensor e = g.run({z}, {hook}).captures.at(hook);
    CHECK(e.select(2, 1).abs().max().item<double>() == 0.0);
    CHECK(maxdiff(e.select(2, 0), c.select(2, 0)) == 0.0);
    CHECK(maxdiff(e.narrow(2, 2, 2), c.narrow(2, 2, 2)) == 0.0);
}

TEST_CASE("patch takes values from another prompt's clean run", "[model][interventions]") {
    Gpt2 g;
    const std::string hook = "blocks.0.hook_resid_post";
    const auto clean = g.run({}, {hook});
    // Same prompt as source: nothing changes.
    auto same = spec(hook, "patch");
    same.source_prompt = 0;
    same.prompts = {0};
    const auto o1 = g.run({same}, {hook});
    CHECK(maxdiff(o1.logits, clean.logits) < 1e-5);
    // Prompt 0's last token into prompt 1's last token.
    auto p = spec(hook, "patch");
    p.source_prompt = 0;
    p.prompts = {1};
    p.positions = {-1};
    const auto o2 = g.run({p}, {hook});
    const at::Tensor c = clean.captures.at(hook), e = o2.captures.at(hook);
    CHECK(maxdiff(e[1][4], c[0][6]) < 1e-5);
    CHECK(maxdiff(e[1].narrow(0, 0, 4), c[1].narrow(0, 0, 4)) == 0.0);
    CHECK(maxdiff(e[0], c[0]) == 0.0);
    CHECK(maxdiff(o2.logits[1][4], clean.logits[1][4]) > 1e-3);
    // A source prompt that is not in the batch must be registered.
    auto far = spec(hook, "patch");
    far.source_prompt = 9;
    far.positions = {0};
    CHECK_THROWS_WITH(g.run({far}, {}), Catch::Contains("source prompt 9"));
    g.s.register_prompt(9, g.rows[0]);
    CHECK_NOTHROW(g.run({far}, {}));
}

TEST_CASE("invalid intervention specs are rejected with InputError", "[model][interventions][errors]") {
    Gpt2 g;
    const auto& hooks = g.m.adapter->hook_points();
    auto bad_op = spec("blocks.0.mlp.hook_post", "zap");
    CHECK_THROWS_AS(validate_intervention(hooks, bad_op), InputError);
    CHECK_THROWS_WITH(validate_intervention(hooks, bad_op), Catch::Contains("unknown intervention op 'zap'"));
    auto bad_neuron = spec("blocks.0.mlp.hook_post", "zero");
    bad_neuron.neurons = {256};
    CHECK_THROWS_WITH(validate_intervention(hooks, bad_neuron),
                      Catch::Contains("neuron index 256 is out of range") && Catch::Contains("0..255"));
    auto bad_head = spec("blocks.0.attn.hook_pattern", "zero");
    bad_head.heads = {4};
    CHECK_THROWS_WITH(validate_intervention(hooks, bad_head), Catch::Contains("head index 4 is out of range"));
    auto no_heads = spec("blocks.0.hook_resid_post", "zero");
    no_heads.heads = {0};
    CHECK_THROWS_WITH(validate_intervention(hooks, no_heads), Catch::Contains("has no head dimension"));
    auto bad_vec = spec("blocks.0.hook_resid_post", "add");
    bad_vec.vector = {1.0f, 2.0f};
    CHECK_THROWS_WITH(validate_intervention(hooks, bad_vec), Catch::Contains("`vector` has 2 values"));
    auto bad_pos = spec("blocks.0.hook_resid_post", "zero");
    bad_pos.positions = {6};  // prompt 1 has 5 tokens
    CHECK_THROWS_WITH(g.run({bad_pos}, {}), Catch::Contains("position 6 is outside prompt 1"));
    auto bad_prompt = spec("blocks.0.hook_resid_post", "patch");
    bad_prompt.source_prompt = 2;
    CHECK_THROWS_WITH(validate_intervention(hooks, bad_prompt, 2),
                      Catch::Contains("source_prompt 2 is not a prompt of this run (2 prompts: 0..1)"));
    auto bad_range = spec("blocks.0.hook_resid_post", "clamp_range");
    bad_range.lo = 1, bad_range.hi = -1;
    CHECK_THROWS_WITH(validate_intervention(hooks, bad_range), Catch::Contains("lo (1) is greater than hi (-1)"));
}

TEST_CASE("hook patterns: exact, glob, range, no match suggests near names", "[model][hooks]") {
    const ModelHandle h = describe_model(registry(), fixture_model("gpt2"));
    CHECK(match_hooks(h.hooks, {"blocks.*.mlp.hook_post"}) ==
          std::vector<std::string>{"blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"});
    CHECK(match_hooks(h.hooks, {"blocks.{0..1}.hook_resid_post", "hook_embed"}) ==
          std::vector<std::string>{"hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"});
    CHECK(match_hooks(h.hooks, {"*"}).size() == h.hooks.size());
    CHECK(h.hooks.size() == 2 + 2 * 15 + 2);
    CHECK_THROWS_AS(match_hooks(h.hooks, {"blocks.0.mlp.hook_pots"}), InputError);
    CHECK_THROWS_WITH(match_hooks(h.hooks, {"blocks.0.mlp.hook_pots"}),
                      Catch::Contains("matches no hook point") && Catch::Contains("did you mean 'blocks.0.mlp.hook_post'"));
    CHECK_THROWS_WITH(match_hooks(h.hooks, {"blocks.7.mlp.hook_post"}), Catch::Contains("did you mean"));
}

TEST_CASE("safetensors: truncated file, corrupt header, overlapping offsets, bad byte length", "[model][safetensors][errors]") {
    const std::string dir = copy_model("gpt2", "trunc");
    fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") - 100);
    CHECK_THROWS_AS(load_model(registry(), dir, {}), InputError);
    CHECK_THROWS_WITH(load_model(registry(), dir, {}),
                      Catch::Contains("truncated safetensors file") && Catch::Contains("model.safetensors") &&
                          Catch::Contains("re-download"));
    const auto r = run_nscope({"info", dir});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("truncated"));

    const std::string d2 = temp_dir("badst");
    write_bytes(d2 + "/huge.safetensors", "", 0);
    {
        std::ofstream out(d2 + "/huge.safetensors", std::ios::binary);
        out << std::string("\xff\xff\xff\xff\x00\x00\x00\x00{}", 10);
    }
    CHECK_THROWS_WITH(SafetensorsFile(d2 + "/huge.safetensors"),
                      Catch::Contains("corrupt safetensors header") && Catch::Contains("header length"));
    write_bytes(d2 + "/json.safetensors", "{\"a\": {\"dtype\": ", 8);
    CHECK_THROWS_WITH(SafetensorsFile(d2 + "/json.safetensors"), Catch::Contains("does not parse"));
    write_bytes(d2 + "/overlap.safetensors",
                R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                12);
    CHECK_THROWS_WITH(SafetensorsFile(d2 + "/overlap.safetensors"),
                      Catch::Contains("'a'") && Catch::Contains("'b'") && Catch::Contains("overlap"));
    write_bytes(d2 + "/len.safetensors", R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", 8);
    CHECK_THROWS_WITH(SafetensorsFile(d2 + "/len.safetensors"),
                      Catch::Contains("tensor 'w'") && Catch::Contains("needs 6 bytes"));
    write_bytes(d2 + "/dtype.safetensors", R"({"w":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", 1);
    CHECK_THROWS_WITH(SafetensorsFile(d2 + "/dtype.safetensors"), Catch::Contains("unsupported dtype 'F8'"));
    // Shapes whose element count wraps around 2^64 must not pass as "0 bytes" (they reached at::empty).
    write_bytes(d2 + "/wrap.safetensors", R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0);
    CHECK_THROWS_WITH(SafetensorsFile(d2 + "/wrap.safetensors"),
                      Catch::Contains("tensor 'w'") && Catch::Contains("does not fit in 64 bits"));
    write_bytes(d2 + "/neg.safetensors", R"({"w":{"dtype":"U8","shape":[9223372036854775808,0],"data_offsets":[0,0]}})", 0);
    CHECK_THROWS_WITH(SafetensorsFile(d2 + "/neg.safetensors"), Catch::Contains("does not fit in 64 bits"));
}

TEST_CASE("safetensors: a tensor name that is not UTF-8 is bad input with a readable message, and the run's manifest stays valid JSON",
          "[model][safetensors][errors]") {
    const std::string dir = copy_model("gpt2", "utf8");
    {  // corrupt one byte of the first tensor name in the JSON header
        std::fstream f(dir + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
        std::string head(4096, '\0');
        f.read(head.data(), static_cast<std::streamsize>(head.size()));
        const size_t at = head.find("\"transformer.h.0.");
        REQUIRE(at != std::string::npos);
        f.clear();
        f.seekp(static_cast<std::streamoff>(at + 2));
        f.put('\xff');
    }
    const auto info = run_nscope({"info", dir});
    INFO(info.err);
    CHECK(info.exit_code == 2);
    CHECK_THAT(info.err, Catch::Contains("model.safetensors") && !Catch::Contains("internal error"));
    CHECK(valid_utf8(info.err) == info.err);

    const std::string out = temp_dir("utf8-run");
    const std::string recipe = out + "/r.yaml";
    std::ofstream(recipe) << "name: utf8\nmodel: { path: " << dir << " }\nprompts: [ { ids: [[1, 2, 3]] } ]\n"
                          << "hooks: [ blocks.0.mlp.hook_post ]\nanalyses: [ { id: s, use: stats } ]\n";
    const auto run = run_nscope({"run", recipe, "--out", out});
    INFO(run.err);
    CHECK(run.exit_code == 2);
    CHECK_THAT(run.err, !Catch::Contains("internal error"));
    size_t manifests = 0;
    for (const auto& e : fs::recursive_directory_iterator(out))
        if (e.path().filename() == "manifest.json") {
            const auto m = nlohmann::json::parse(read_file(e.path().string()));  // throws if not valid JSON
            CHECK(m["status"] == "failed");
            CHECK(m["exit_status"] == 2);
            ++manifests;
        }
    CHECK(manifests == 1);
}

TEST_CASE("safetensors tensors alias a copy-on-write mapping: in-place edits never reach the file", "[model][safetensors]") {
    const std::string dir = copy_model("gpt2", "cow");
    const WeightNaming naming = describe_model(registry(), dir).factory->weight_naming();  // the adapter's
    {
        SafetensorsWeights w({dir + "/model.safetensors"}, naming);
        CHECK(w.contains("wte.weight"));          // `transformer.` prefix stripped
        CHECK_FALSE(w.contains("h.0.attn.bias"));  // buffers ignored
        at::Tensor t = w.get("wte.weight");
        const auto maps = mappings_of(dir + "/model.safetensors");
        REQUIRE_FALSE(maps.empty());
        CHECK(inside(maps, t.data_ptr()));                          // no copy: the tensor is the mapping
        CHECK(w.get("wte.weight").data_ptr() == t.data_ptr());      // and every get aliases the same bytes
        t.add_(100.0);
        CHECK(w.get("wte.weight").abs().min().item<double>() > 50.0);  // the edit is visible in memory...
    }
    SafetensorsWeights again({dir + "/model.safetensors"}, naming);
    CHECK(again.get("wte.weight").abs().max().item<double>() < 50.0);  // ...but never reached the file
}

TEST_CASE("sharded checkpoints load through model.safetensors.index.json", "[model][safetensors]") {
    const std::string dir = temp_dir("sharded");
    fs::copy_file(fixture_model("llama") + "/config.json", dir + "/config.json");
    SafetensorsWeights w({fixture_model("llama") + "/model.safetensors"},
                         describe_model(registry(), fixture_model("llama")).factory->weight_naming());
    std::vector<std::pair<std::string, at::Tensor>> a, b;
    nlohmann::json map = nlohmann::json::object();
    for (const auto& n : w.names()) {
        const bool first = n.find("layers.1.") == std::string::npos;
        const std::string stored = n == "lm_head.weight" ? n : "model." + n;
        (first ? a : b).emplace_back(stored, w.get(n));
        map[stored] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    }
    write_safetensors(dir + "/model-00001-of-00002.safetensors", a);
    write_safetensors(dir + "/model-00002-of-00002.safetensors", b);
    std::ofstream(dir + "/model.safetensors.index.json") << nlohmann::json{{"weight_map", map}}.dump();
    LoadedModel sharded = load_model(registry(), dir, {});
    CHECK(sharded.handle.files.weight_files.size() == 2);
    LoadedModel plain = load_model(registry(), fixture_model("llama"), {});
    ModelSession s1(sharded), s2(plain);
    const auto rows = oracle_rows("llama");
    CHECK(maxdiff(s1.forward(rows, nullptr, {0, 1}, {}).logits, s2.forward(rows, nullptr, {0, 1}, {}).logits) == 0.0);
    fs::remove(dir + "/model-00002-of-00002.safetensors");
    CHECK_THROWS_WITH(resolve_model(dir), Catch::Contains("shard 'model-00002-of-00002.safetensors'") &&
                                              Catch::Contains("missing"));
    // An index cannot point outside the model folder (found by tests/fuzz/fuzz_model_index.cpp's check).
    for (const std::string shard : {"../sharded-elsewhere.safetensors", "/etc/passwd", ".."}) {
        map.begin().value() = shard;
        std::ofstream(dir + "/model.safetensors.index.json") << nlohmann::json{{"weight_map", map}}.dump();
        CHECK_THROWS_WITH(resolve_model(dir), Catch::Contains("is not a file name in the model folder"));
    }
}

TEST_CASE("config.json problems: missing field, unknown architecture", "[model][errors]") {
    const std::string dir = copy_model("gpt2", "cfg");
    nlohmann::json cfg = nlohmann::json::parse(read_file(dir + "/config.json"));
    cfg.erase("n_embd");
    std::ofstream(dir + "/config.json") << cfg.dump();
    CHECK_THROWS_AS(describe_model(registry(), dir), InputError);
    CHECK_THROWS_WITH(describe_model(registry(), dir), Catch::Contains("\"n_embd\" is missing"));

    cfg = nlohmann::json::parse(read_file(fixture_model("gpt2") + "/config.json"));
    cfg["architectures"] = {"FalconForCausalLM"};
    cfg["model_type"] = "falcon";
    std::ofstream(dir + "/config.json") << cfg.dump();
    CHECK_THROWS_WITH(describe_model(registry(), dir),
                      Catch::Contains("unknown architecture 'FalconForCausalLM'") &&
                          Catch::Contains("GPT2LMHeadModel (gpt2)") && Catch::Contains("LlamaForCausalLM (llama)") &&
                          Catch::Contains("BertForMaskedLM (bert)"));
    const auto r = run_nscope({"hooks", dir});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("Supported:") && Catch::Contains("Qwen2ForCausalLM"));
}

TEST_CASE("a missing model says every place it looked, HF cache layout honours refs/main", "[model][files]") {
    const std::string home = temp_dir("hfhome");
    auto r = run_nscope({"info", "acme/tiny-gpt"}, {"HF_HOME=" + home, "HF_HUB_CACHE="});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("model 'acme/tiny-gpt' not found") && Catch::Contains("Looked in") &&
                          Catch::Contains(home + "/hub/models--acme--tiny-gpt") && Catch::Contains("does not download"));

    const std::string snap = home + "/hub/models--acme--tiny-gpt/snapshots/0123abc";
    fs::create_directories(snap);
    fs::create_directories(home + "/hub/models--acme--tiny-gpt/refs");
    std::ofstream(home + "/hub/models--acme--tiny-gpt/refs/main") << "0123abc\n";
    fs::copy_file(fixture_model("gpt2") + "/config.json", snap + "/config.json");
    fs::copy_file(fixture_model("gpt2") + "/model.safetensors", snap + "/model.safetensors");
    r = run_nscope({"info", "acme/tiny-gpt", "--json"}, {"HF_HOME=" + home, "HF_HUB_CACHE="});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["dir"] == snap);
    CHECK(j["architecture"] == "GPT2LMHeadModel");

    CHECK_THROWS_WITH(resolve_model(home + "/nowhere"), Catch::Contains("does not exist"));
}

TEST_CASE("nscope hooks lists every hook with its shape, --json, --filter", "[model][cli]") {
    auto r = run_nscope({"hooks", fixture_model("gpt2")});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("blocks.0.mlp.hook_post [batch, pos, 256]\n") &&
                          Catch::Contains("blocks.1.attn.hook_pattern [batch, 4, query_pos, key_pos]\n") &&
                          Catch::Contains("hook_logits [batch, pos, 1000]\n") &&
                          Catch::StartsWith("hook_embed [batch, pos, 64]\nhook_pos_embed"));
    r = run_nscope({"hooks", fixture_model("llama"), "--json"});
    REQUIRE(r.exit_code == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["adapter"] == "llama");
    CHECK(j["hooks"].size() == 1 + 2 * 16 + 2);
    CHECK(j["hooks"][4]["name"] == "blocks.0.attn.hook_k");
    CHECK(j["hooks"][4]["shape"] == nlohmann::json({-1, -1, 2, 16}));
    r = run_nscope({"hooks", fixture_model("bert"), "--filter", "blocks.*.mlp.hook_post"});
    CHECK(r.out == "blocks.0.mlp.hook_post [batch, pos, 128]\nblocks.1.mlp.hook_post [batch, pos, 128]\n");
    r = run_nscope({"hooks", fixture_model("bert"), "--filter", "blocks.0.mlp.hook_psot"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("did you mean 'blocks.0.mlp.hook_post'"));
}

TEST_CASE("nscope info reports architecture, adapter, parameters, dims and memory", "[model][cli]") {
    auto r = run_nscope({"info", fixture_model("llama")});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    // 1000*64*2 (embed + untied lm_head) + 64 + 2 * (2*64 + 64*64*2 + 32*64*2 + 3*176*64) = 220480
    CHECK_THAT(r.out, Catch::Contains("LlamaForCausalLM") && Catch::Contains("adapter       llama") &&
                          Catch::Contains("220480") && Catch::Contains("kv heads 2") && Catch::Contains("rotary"));
    r = run_nscope({"info", fixture_model("gpt2"), "--json", "--dtype", "bfloat16"});
    REQUIRE(r.exit_code == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["n_params"] == 229632);
    CHECK(j["weight_memory_bytes"] == 229632 * 2);
    CHECK(j["compute_dtype"] == "bfloat16");
    CHECK(j["stored_dtype"] == "float32");
    r = run_nscope({"info", fixture_model("gpt2"), "--dtype", "fp8"});
    CHECK(r.exit_code == 2);
}

TEST_CASE("trainable models own their parameters and backpropagate, init_random is seeded", "[model][train]") {
    for (const std::string name : {"gpt2", "llama", "phi", "gemma", "gpt_neox"}) {
        // Positive control: a model loaded for inference aliases the file mapping (no copy of its weights).
        LoadedModel frozen = load_model(registry(), fixture_model(name), {at::kFloat, false});
        const auto maps = mappings_of(fixture_model(name) + "/model.safetensors");
        REQUIRE_FALSE(maps.empty());
        size_t aliased = 0;
        for (const auto& [n, t] : frozen.adapter->named_parameters()) aliased += inside(maps, t.data_ptr()) ? 1 : 0;
        CHECK(aliased > 0);
        LoadedModel m = load_model(registry(), fixture_model(name), {at::kFloat, true});
        auto params = m.adapter->named_parameters();
        REQUIRE(!params.empty());
        for (const auto& [n, t] : params) {
            CHECK(t.requires_grad());
            INFO(n);
            CHECK_FALSE(inside(maps, t.data_ptr()));  // owned: cloned out of the file mapping
        }
        const at::Tensor ids = at::tensor(std::vector<int64_t>{1, 17, 923}, at::kLong).view({1, 3});
        at::Tensor logits = m.adapter->forward({ids, at::ones({1, 3}, at::kLong), {}}, nullptr);
        logits.logsumexp(-1).sum().backward();
        CHECK(params[0].second.grad().defined());
        CHECK(count_params_of(m) == m.adapter->info().n_params);
    }
    const nlohmann::json cfg = nlohmann::json::parse(read_file(fixture_model("gpt2") + "/config.json"));
    LoadedModel a = init_random_model(registry(), cfg, 7, {at::kFloat, true});
    LoadedModel b = init_random_model(registry(), cfg, 7, {at::kFloat, true});
    LoadedModel c = init_random_model(registry(), cfg, 8, {at::kFloat, true});
    CHECK(a.adapter->named_parameters()[0].second.equal(b.adapter->named_parameters()[0].second));
    CHECK_FALSE(a.adapter->named_parameters()[0].second.equal(c.adapter->named_parameters()[0].second));
    ModelSession s(a);
    const auto out = s.forward({{1, 2, 3}}, nullptr, {0}, {});
    CHECK(out.logits.sizes() == at::IntArrayRef({1, 3, 1000}));
    // Near-uniform predictions from a fresh model.
    CHECK(std::abs(out.logits.logsumexp(-1).mean().item<double>() - std::log(1000.0)) < 0.5);
}

TEST_CASE("interventions act on phi, gemma and gpt_neox: a neuron, a head, the shared-LayerNorm copies",
          "[model][interventions]") {
    for (const std::string name : {"phi", "gemma", "gpt_neox"}) {
        DYNAMIC_SECTION(name) {
            LoadedModel m = load_model(registry(), fixture_model(name), {});
            ModelSession s(m);
            const auto rows = oracle_rows(name);
            auto run = [&](std::vector<InterventionSpec> iv, std::vector<std::string> cap) {
                ForwardRequest r;
                r.capture = std::move(cap);
                r.interventions = std::move(iv);
                return s.forward(rows, nullptr, {0, 1}, r);
            };
            const std::string post = "blocks.0.mlp.hook_post", z = "blocks.1.attn.hook_z";
            const auto clean = run({}, {post, z});
            auto zero = spec(post, "zero");
            zero.neurons = {3};
            auto head = spec(z, "zero");
            head.heads = {2};
            const auto out = run({zero, head}, {post, z});
            CHECK(out.captures.at(post).select(2, 3).abs().max().item<double>() == 0.0);
            CHECK(clean.captures.at(post).select(2, 3).abs().max().item<double>() > 0.0);
            CHECK(out.captures.at(z).select(2, 2).abs().max().item<double>() == 0.0);
            CHECK(maxdiff(out.captures.at(z).select(2, 0), clean.captures.at(z).select(2, 0)) > 0.0);  // via layer 0
            CHECK(maxdiff(out.logits, clean.logits) > 1e-4);
        }
    }
    // Phi's one LayerNorm feeds attention (ln1) and MLP (ln2): scaling the attention's copy leaves the MLP's
    // input as it was, and the other way round.
    LoadedModel m = load_model(registry(), fixture_model("phi"), {});
    ModelSession s(m);
    const auto rows = oracle_rows("phi");
    const std::vector<std::string> cap = {"blocks.0.ln2.hook_normalized", "blocks.0.mlp.hook_pre",
                                          "blocks.0.hook_attn_out"};
    ForwardRequest clean_req, ln1_req, ln2_req;
    clean_req.capture = ln1_req.capture = ln2_req.capture = cap;
    auto sc = spec("blocks.0.ln1.hook_normalized", "scale");
    sc.factor = 2.0;
    ln1_req.interventions = {sc};
    sc.hook = "blocks.0.ln2.hook_normalized";
    ln2_req.interventions = {sc};
    const auto clean = s.forward(rows, nullptr, {0, 1}, clean_req);
    const auto e1 = s.forward(rows, nullptr, {0, 1}, ln1_req);
    const auto e2 = s.forward(rows, nullptr, {0, 1}, ln2_req);
    CHECK(maxdiff(e1.captures.at("blocks.0.mlp.hook_pre"), clean.captures.at("blocks.0.mlp.hook_pre")) == 0.0);
    CHECK(maxdiff(e1.captures.at("blocks.0.hook_attn_out"), clean.captures.at("blocks.0.hook_attn_out")) > 1e-3);
    CHECK(maxdiff(e2.captures.at("blocks.0.hook_attn_out"), clean.captures.at("blocks.0.hook_attn_out")) == 0.0);
    CHECK(maxdiff(e2.captures.at("blocks.0.mlp.hook_pre"), clean.captures.at("blocks.0.mlp.hook_pre")) > 1e-3);
}

TEST_CASE("gpt_neox use_parallel_residual: the MLP's LayerNorm reads the block input or the residual after attention",
          "[model][gpt_neox]") {
    // The oracle covers the parallel form; the sequential one is checked by its wiring, from the captures:
    // ln2 = LayerNorm(resid_pre) (parallel) or LayerNorm(resid_mid) (sequential); both end in resid_mid + mlp_out.
    for (const bool parallel : {true, false}) {
        const std::string dir = copy_model("gpt_neox", "neox-resid");
        nlohmann::json cfg = nlohmann::json::parse(read_file(dir + "/config.json"));
        cfg["use_parallel_residual"] = parallel;
        std::ofstream(dir + "/config.json") << cfg.dump();
        LoadedModel m = load_model(registry(), dir, {});
        ModelSession s(m);
        ForwardRequest r;
        r.capture = {"blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.ln2.hook_normalized",
                     "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"};
        const auto out = s.forward({oracle_rows("gpt_neox")[0]}, nullptr, {0}, r);
        const auto& c = out.captures;
        SafetensorsWeights w({dir + "/model.safetensors"}, {{"gpt_neox."}, {}, {}});
        const at::Tensor ln_in = c.at(parallel ? "blocks.1.hook_resid_pre" : "blocks.1.hook_resid_mid");
        const at::Tensor ln2 = at::layer_norm(ln_in, {96}, w.get("layers.1.post_attention_layernorm.weight"),
                                              w.get("layers.1.post_attention_layernorm.bias"), 1e-5);
        INFO("parallel " << parallel);
        CHECK(maxdiff(c.at("blocks.1.ln2.hook_normalized"), ln2) < 1e-5);
        CHECK(maxdiff(c.at("blocks.1.hook_resid_post"), c.at("blocks.1.hook_resid_mid") + c.at("blocks.1.hook_mlp_out")) <
              1e-5);
        if (!parallel) {
            const at::Tensor logits = oracle("gpt_neox", "logits.npy")[0];
            CHECK(maxdiff(out.logits[0], logits) > 0.1);  // the other form really computes something else
        }
    }
}

TEST_CASE("each adapter refuses config options of its architecture it does not implement", "[model][errors]") {
    struct Case {
        std::string model, key;
        nlohmann::json value;
        std::string says;
    };
    const std::vector<Case> cases = {
        {"gemma", "final_logit_softcapping", 30.0, "\"final_logit_softcapping\" = 30.0 is not supported"},
        {"gemma", "attn_logit_softcapping", 50.0, "\"attn_logit_softcapping\" = 50.0 is not supported"},
        {"gemma", "query_pre_attn_scalar", 256, "\"query_pre_attn_scalar\" = 256 is not supported"},
        {"gemma", "rope_scaling", {{"type", "dynamic"}, {"factor", 2.0}}, "rope_scaling type 'dynamic'"},
        {"gemma", "hidden_activation", "gelu_fast", "unsupported activation 'gelu_fast'"},
        {"phi", "qk_layernorm", true, "\"qk_layernorm\" = true is not supported"},
        {"phi", "rope_scaling", {{"type", "dynamic"}, {"factor", 2.0}}, "rope_scaling type 'dynamic'"},
        {"phi", "partial_rotary_factor", 0.45, "\"partial_rotary_factor\" = 0.45"},
        {"gpt_neox", "rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}, "rope_scaling type 'yarn'"},
        {"gpt_neox", "rotary_pct", 0.3, "\"rotary_pct\" = 0.3"},
        {"gpt_neox", "hidden_act", "gelu_fast", "unsupported activation 'gelu_fast'"},
        {"llama", "mlp_bias", true, "\"mlp_bias\" = true is not supported"},
        {"llama", "rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}}, "rope_scaling type 'llama3'"},
        {"gpt2", "add_cross_attention", true, "\"add_cross_attention\" = true is not supported"},
        {"gpt2", "activation_function", "quick_gelu", "unsupported activation 'quick_gelu'"},
        {"bert", "is_decoder", true, "\"is_decoder\" = true is not supported"},
        {"bert", "position_embedding_type", "relative_key", "relative_key"},
    };
    for (const auto& c : cases) {
        const std::string dir = copy_model(c.model, "refuse");
        nlohmann::json cfg = nlohmann::json::parse(read_file(dir + "/config.json"));
        cfg[c.key] = c.value;
        std::ofstream(dir + "/config.json") << cfg.dump();
        const auto r = run_nscope({"hooks", dir});
        INFO(c.model << " " << c.key << ": " << r.err);
        CHECK(r.exit_code == 2);
        CHECK_THAT(r.err, Catch::Contains(c.says));
    }
}

// Recipe parsing: prompt sources, templates, labels, overrides and defaults (no model needed).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/run/recipe.h"
#include "nscope/error.h"
#include "core/util/files.h"
#include "nscope/io.h"
#include "tests/support/cli.h"

namespace fs = std::filesystem;
using namespace nscope;

namespace {
fs::path write_recipe(const std::string& dir, const std::string& text) {
    const fs::path p = fs::path(dir) / "recipe.yaml";
    std::ofstream(p) << text;
    return p;
}
}  // namespace

TEST_CASE("every prompt source expands in order with its labels", "[recipe]") {
    const std::string dir = nscope::test::temp_dir("recipe");
    std::ofstream(dir + "/lines.txt") << "first line\n\nsecond line\n";
    std::ofstream(dir + "/p.jsonl") << R"({"text": "river bank", "labels": {"sense": "river"}})" << "\n"
                                    << R"({"text": "money bank"})" << "\n";
    const std::vector<int64_t> ids = {1, 2, 3, 4, 5, 0};
    const std::vector<int64_t> mask = {1, 1, 1, 1, 0, 0};
    write_file_atomic(dir + "/ids.npy", npy_encode(ids.data(), true, {2, 3}));
    write_file_atomic(dir + "/mask.npy", npy_encode(mask.data(), true, {2, 3}));
    const auto r = load_recipe(write_recipe(dir, R"(
name: all-sources
seed: 7
model: { path: some/model, dtype: bfloat16 }
prompts:
  - "plain string"
  - { text: "She sat on the bank.", labels: { sense: river } }
  - file: lines.txt
  - file: p.jsonl
    labels: { corpus: demo }
  - template: "The {job} is a {who}."
    vars: { job: [engineer, nurse], who: [man, woman] }
  - ids: [[1, 17, 923], [1, 404]]
  - { ids_file: ids.npy, mask_file: mask.npy }
batch_size: 3
hooks: "blocks.*.mlp.hook_post"
)"));
    REQUIRE(r.prompts.size() == 1 + 1 + 2 + 2 + 4 + 2 + 2);
    CHECK(r.name == "all-sources");
    CHECK(r.seed == 7);
    CHECK(r.batch_size == 3);
    CHECK(r.max_tokens == 128);  // default
    CHECK(r.models.at(0).dtype == "bfloat16");
    CHECK(r.models.at(0).ref == (fs::path(dir) / "some/model").lexically_normal().string());
    CHECK(r.hooks == std::vector<std::string>{"blocks.*.mlp.hook_post"});
    CHECK(r.prompts[0].text == "plain string");
    CHECK(r.prompts[1].labels["sense"] == "river");
    CHECK(r.prompts[2].text == "first line");
    CHECK(r.prompts[3].text == "second line");
    CHECK(r.prompts[4].labels == nlohmann::json{{"corpus", "demo"}, {"sense", "river"}});
    CHECK(r.prompts[5].labels == nlohmann::json{{"corpus", "demo"}});
    // Cartesian product, first variable outermost, values recorded as labels.
    CHECK(r.prompts[6].text == "The engineer is a man.");
    CHECK(r.prompts[7].text == "The engineer is a woman.");
    CHECK(r.prompts[8].text == "The nurse is a man.");
    CHECK(r.prompts[9].labels == nlohmann::json{{"job", "nurse"}, {"who", "woman"}});
    CHECK(r.prompts[10].ids == std::vector<int64_t>{1, 17, 923});
    CHECK(r.prompts[11].ids == std::vector<int64_t>{1, 404});
    // The mask trims each row to its real tokens.
    CHECK(r.prompts[12].ids == std::vector<int64_t>{1, 2, 3});
    CHECK(r.prompts[13].ids == std::vector<int64_t>{4});
}

TEST_CASE("recipe overrides (--set) change scalars, nested keys and list entries before validation", "[recipe]") {
    const std::string dir = nscope::test::temp_dir("recipe-set");
    const auto path = write_recipe(dir, R"(
name: base
model: { path: m }
prompts: [ "a" ]
analyses:
  - { id: top, use: topk, k: 20 }
)");
    const auto r = load_recipe(path, {"batch_size=2", "model.dtype=bfloat16", "analyses.0.k=5", "name=changed"});
    CHECK(r.batch_size == 2);
    CHECK(r.models[0].dtype == "bfloat16");
    CHECK(r.analyses[0].params["k"] == 5);
    CHECK(r.name == "changed");
    CHECK(r.resolved["analyses"][0]["k"] == 5);  // the manifest records the resolved recipe
    CHECK_THROWS_WITH(load_recipe(path, {"batch_size=x"}), Catch::Contains("'batch_size' must be an integer"));
    CHECK_THROWS_WITH(load_recipe(path, {"analyses.3.k=1"}), Catch::Contains("index 3 is out of range"));
    CHECK_THROWS_WITH(load_recipe(path, {"novalue"}), Catch::Contains("expected key=value"));
}

TEST_CASE("a model given as a plain string is its path or hub id, with the recipe's dtype", "[recipe]") {
    // The short form `model: REF` (fuzz_recipe found it ending in an internal error).
    const auto r = parse_recipe_text("name: s\nmodel: some/model\ndtype: int8\nprompts: [ \"a\" ]\n", "s.yaml", ".");
    REQUIRE(r.models.size() == 1);
    CHECK(r.models[0].ref == "some/model");
    CHECK(r.models[0].label == "model");
    const auto both = parse_recipe_text("name: s\nmodels: [ a/one, { path: b/two, label: two } ]\nprompts: [ \"a\" ]\n",
                                        "s.yaml", ".");
    REQUIRE(both.models.size() == 2);
    CHECK(both.models[0].ref == "a/one");
    CHECK(both.models[1].label == "two");
    CHECK_THROWS_WITH(parse_recipe_text("name: s\nmodel: some/model\ndtype: int4\nprompts: [ \"a\" ]\n", "s.yaml", "."),
                      Catch::Contains("int4"));
}

TEST_CASE("analysis parameters pass through to the plugin, id defaults to use", "[recipe]") {
    const std::string dir = nscope::test::temp_dir("recipe-an");
    const auto r = load_recipe(write_recipe(dir, R"(
name: p
model: { id: gpt2 }
prompts: [ "a" ]
analyses:
  - { use: stats, threshold: 0.5, hooks: [ "blocks.0.*" ] }
  - { id: top, use: topk, input: stats, k: 3, label: "quoted" }
exports: [ json, { use: csv } ]
)"));
    REQUIRE(r.analyses.size() == 2);
    CHECK(r.analyses[0].id == "stats");
    CHECK(r.analyses[0].params == nlohmann::json{{"threshold", 0.5}, {"hooks", {"blocks.0.*"}}});
    CHECK(r.analyses[1].inputs == std::vector<std::string>{"stats"});
    CHECK(r.analyses[1].params["label"] == "quoted");
    CHECK(r.models[0].ref == "gpt2");
    REQUIRE(r.exports.size() == 2);
    CHECK(r.exports[0].use == "json");
    CHECK(r.exports[1].use == "csv");
}

TEST_CASE("a list or mapping used as a YAML key is bad input with its location, not an internal error", "[recipe][fuzz]") {
    // yaml-cpp's conversion error escaped as "internal error" (exit 3); found by tests/fuzz/fuzz_recipe.cpp.
    const std::string base = "name: t\nmodel: { path: m }\nprompts: [ { text: hi } ]\n";
    CHECK_THROWS_WITH(parse_recipe_text(base + "? [a, b]\n: 1\n", "k.yaml", "."),
                      Catch::StartsWith("k.yaml:4:3:") && Catch::Contains("a mapping key must be a plain name"));
    CHECK_THROWS_WITH(parse_recipe_text(base + "analyses: [ { use: stats, { x: 1 }: 2 } ]\n", "k.yaml", "."),
                      Catch::Contains("k.yaml:4:") && Catch::Contains("not a mapping"));
    CHECK_THROWS_AS(parse_recipe_text("prompts:\n? - file: x.jsonl\n", "k.yaml", "."), InputError);
    // The text form reports YAML syntax errors like load_recipe does.
    CHECK_THROWS_WITH(parse_recipe_text("name: [", "s.yaml", "."), Catch::Contains("s.yaml:") && Catch::Contains("YAML syntax error"));
}

TEST_CASE("parse_prompt_lines reads JSONL prompts with merged labels and file:line errors", "[recipe]") {
    std::istringstream ok("{\"text\": \"a\", \"labels\": {\"x\": 1}}\r\n\n{\"text\": \"b\"}\n");
    const auto p = parse_prompt_lines(ok, "p.jsonl", true, {{"set", "s"}});
    REQUIRE(p.size() == 2);
    CHECK(p[0].labels == nlohmann::json{{"set", "s"}, {"x", 1}});
    CHECK(p[1].loc.text == "p.jsonl:3");
    std::istringstream bad("{\"text\": \"a\"}\n{\"text\": 2}\n");
    CHECK_THROWS_WITH(parse_prompt_lines(bad, "p.jsonl", true, nullptr), Catch::StartsWith("p.jsonl:2:"));
}

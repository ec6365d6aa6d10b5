// The sqlite exporter: a real run on the fixture model written to the neuron database, read back with the
// sqlite3 C API and checked against the run's own results; the example queries of docs/sqlite.md; runs
// accumulating in a shared database; re-exports replacing (not duplicating) rows; bad parameters; failures
// that leave the database untouched; every other analyzer's tables and figures (an out-of-tree plugin,
// next_token) stored generically, value by value; the upgrade of a version-1 database.
#include <catch2/catch.hpp>

#include <sqlite3.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <variant>

#include <nlohmann/json.hpp>

#include "core/util/files.h"
#include "core/util/npy.h"
#include "nscope_common/tables.h"
#include "plugins/exporters/sqlite/schema.sql.h"
#include "tests/analyzers/synthetic.h"
#include "tests/support/cli.h"

namespace fs = std::filesystem;
using namespace nscope;
using nscope::test::run_nscope;
using nlohmann::json;

namespace {

const std::string kGpt2 = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/models/gpt2";

using Cell = std::variant<std::nullptr_t, int64_t, double, std::string>;
using Rows = std::vector<std::vector<Cell>>;

/// A read-only connection for the checks.
class Db {
public:
    explicit Db(const fs::path& p) {
        REQUIRE(fs::exists(p));
        REQUIRE(sqlite3_open_v2(p.c_str(), &db_, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    }
    ~Db() { sqlite3_close(db_); }
    Rows query(const std::string& sql, const std::vector<Cell>& params = {}) const {
        sqlite3_stmt* st = nullptr;
        INFO(sql);
        REQUIRE(sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
        for (size_t i = 0; i < params.size(); ++i) {
            const int k = static_cast<int>(i + 1);
            if (auto* v = std::get_if<int64_t>(&params[i])) sqlite3_bind_int64(st, k, *v);
            else if (auto* d = std::get_if<double>(&params[i])) sqlite3_bind_double(st, k, *d);
            else if (auto* s = std::get_if<std::string>(&params[i])) sqlite3_bind_text(st, k, s->c_str(), -1, SQLITE_TRANSIENT);
            else sqlite3_bind_null(st, k);
        }
        Rows rows;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            std::vector<Cell> row;
            for (int c = 0; c < sqlite3_column_count(st); ++c) {
                switch (sqlite3_column_type(st, c)) {
                    case SQLITE_INTEGER: row.emplace_back(static_cast<int64_t>(sqlite3_column_int64(st, c))); break;
                    case SQLITE_FLOAT: row.emplace_back(sqlite3_column_double(st, c)); break;
                    case SQLITE_NULL: row.emplace_back(nullptr); break;
                    default: row.emplace_back(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, c))));
                }
            }
            rows.push_back(std::move(row));
        }
        CHECK(rc == SQLITE_DONE);
        sqlite3_finalize(st);
        return rows;
    }
    int64_t count(const std::string& table) const { return i(query("SELECT count(*) FROM " + table).at(0).at(0)); }
    static int64_t i(const Cell& c) { return std::get<int64_t>(c); }
    static double d(const Cell& c) { return std::holds_alternative<int64_t>(c) ? double(std::get<int64_t>(c)) : std::get<double>(c); }
    static std::string s(const Cell& c) { return std::get<std::string>(c); }

private:
    sqlite3* db_ = nullptr;
};

/// The example queries of docs/sqlite.md, verbatim (the test keeps the documentation honest).
std::map<std::string, std::string> doc_queries() {
    const std::string doc = nscope::test::read_file(std::string(NSCOPE_SOURCE_DIR) + "/docs/sqlite.md");
    std::map<std::string, std::string> out;
    // Blocks: "<!-- query: NAME -->" followed by a ```sql fence.
    size_t at = 0;
    while ((at = doc.find("<!-- query: ", at)) != std::string::npos) {
        const size_t name_end = doc.find(" -->", at);
        const std::string name = doc.substr(at + 12, name_end - at - 12);
        const size_t start = doc.find("```sql\n", name_end) + 7;
        const size_t end = doc.find("```", start);
        out[name] = doc.substr(start, end - start);
        at = end;
    }
    return out;
}

std::string recipe_file(const std::string& dir, const std::string& body) {
    const std::string p = dir + "/recipe.yaml";
    std::ofstream(p) << body;
    return p;
}

fs::path run_dir_of(const nscope::test::CliResult& r) {
    std::string out = r.out;
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    return out;
}

nlohmann::json read_json(const fs::path& p) {
    std::ifstream in(p);
    return nlohmann::json::parse(in);
}

const std::vector<std::vector<int64_t>> kIds = {{5, 17, 923, 17, 44}, {404, 17, 8, 101}, {5, 17, 923, 61, 44, 3}};

/// kIds as a YAML flow list.
std::string ids_yaml() {
    std::string ids = "[";
    for (size_t i = 0; i < kIds.size(); ++i) {
        ids += i ? ", [" : "[";
        for (size_t j = 0; j < kIds[i].size(); ++j) ids += (j ? ", " : "") + std::to_string(kIds[i][j]);
        ids += "]";
    }
    return ids + "]";
}

std::string pipeline_recipe(const std::string& name, const std::string& sqlite_params, const std::string& extra = "") {
    return "name: " + name + "\nmodel: { path: " + kGpt2 + " }\nprompts:\n  - { ids: " + ids_yaml() +
           ", labels: { note: \"x\" } }\nbatch_size: 2\nhooks: [ \"blocks.*.mlp.hook_post\" ]\n" + extra +
           "analyses:\n"
           "  - { id: stats, use: stats }\n"
           "  - { id: dead, use: dead, epsilon: 0.5 }\n"
           "  - { id: top, use: topk, k: 3, context: 2 }\n"
           "  - { id: cmp, use: compare, pairs: [[0, 1], [0, 2]] }\n"
           "exports:\n  - json\n  - { use: sqlite" + sqlite_params + " }\n";
}

}  // namespace

TEST_CASE("sqlite exporter: a run's prompts, tokens, stats, flags, top examples and comparisons match its results",
          "[exporters][sqlite]") {
    const std::string dir = nscope::test::temp_dir("sqlite-run");
    const auto r = run_nscope({"run", recipe_file(dir, pipeline_recipe("db", "")), "--out", dir + "/runs"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const fs::path run = run_dir_of(r);
    const Db db(run / "results/neurons.sqlite");
    const auto manifest = read_json(run / "manifest.json");

    CHECK(Db::i(db.query("SELECT version FROM schema_version").at(0).at(0)) == 2);
    const auto runs = db.query("SELECT name, run_key, label, n_prompts, n_tokens, seed FROM runs");
    REQUIRE(runs.size() == 1);
    CHECK(Db::s(runs[0][0]) == "db");
    CHECK(Db::s(runs[0][1]) == manifest["run_id"].get<std::string>());
    CHECK(Db::s(runs[0][2]) == "");
    CHECK(Db::i(runs[0][3]) == 3);
    CHECK(Db::i(runs[0][4]) == 15);
    const auto model = db.query("SELECT name, architecture, n_layers, d_mlp, length(fingerprint) FROM models");
    REQUIRE(model.size() == 1);
    CHECK(Db::s(model[0][0]) == kGpt2);
    CHECK(Db::i(model[0][2]) == 2);
    CHECK(Db::i(model[0][4]) == 2 * 64 + 1);  // config.json + model.safetensors

    // Prompts and tokens: exact ids in order, token text as the run decoded it.
    CHECK(db.count("prompts") == 3);
    CHECK(Db::s(db.query("SELECT labels_json FROM prompts WHERE prompt = 1").at(0).at(0)) == R"({"note":"x"})");
    for (size_t p = 0; p < kIds.size(); ++p) {
        const auto toks = db.query("SELECT position, token_id, token FROM tokens WHERE prompt = ? ORDER BY position",
                                   {static_cast<int64_t>(p)});
        REQUIRE(toks.size() == kIds[p].size());
        for (size_t j = 0; j < toks.size(); ++j) {
            CHECK(Db::i(toks[j][0]) == static_cast<int64_t>(j));
            CHECK(Db::i(toks[j][1]) == kIds[p][j]);
            std::string want = "#";  // no tokenizer.json: token text is "#<id>"
            want += std::to_string(kIds[p][j]);
            CHECK(Db::s(toks[j][2]) == want);
        }
    }

    // Statistics: every neuron of both hooks, means equal to the .npy results.
    const int64_t d_mlp = Db::i(model[0][3]);
    CHECK(db.count("neuron_stats") == 2 * d_mlp);
    CHECK(db.count("neurons") == 2 * d_mlp);
    for (const std::string hook : {"blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"}) {
        const auto mean = read_npy(run / ("results/stats." + hook + ".mean.npy")).to_f32();
        const auto mx = read_npy(run / ("results/stats." + hook + ".max.npy")).to_f32();
        const auto rows = db.query(
            "SELECT n.neuron, s.mean, s.max, s.count, n.layer FROM neuron_stats s JOIN neurons n USING (neuron_id) "
            "WHERE n.hook = ? ORDER BY n.neuron",
            {hook});
        REQUIRE(rows.size() == mean.size());
        for (size_t j = 0; j < rows.size(); ++j) {
            CHECK(Db::d(rows[j][1]) == static_cast<double>(mean[j]));
            CHECK(Db::d(rows[j][2]) == static_cast<double>(mx[j]));
            CHECK(Db::i(rows[j][3]) == 15);
            CHECK(Db::i(rows[j][4]) == (hook[7] - '0'));
        }
    }

    // Dead / always-on / flat: counts per hook as the dead result's layers table, flags as its neurons table.
    const auto dead = read_json(run / "results/dead.json");
    const auto& layers = dead["data"]["tables"]["layers"]["rows"];
    REQUIRE(db.count("hook_health") == static_cast<int64_t>(layers.size()));
    CHECK(db.count("neuron_flags") == static_cast<int64_t>(dead["data"]["tables"]["neurons"]["rows"].size()));
    int64_t dead_total = 0;
    for (const auto& row : layers) dead_total += row[4].get<int64_t>();
    CHECK(Db::i(db.query("SELECT count(*) FROM neuron_flags WHERE category = 'dead'").at(0).at(0)) == dead_total);
    CHECK(dead_total > 0);  // epsilon 0.5 makes some neurons dead on this tiny corpus

    // Top examples: one row per table row, values and contexts as in the result.
    const auto top = read_json(run / "results/top.json");
    const auto& acts = top["data"]["tables"]["top_activations"]["rows"];
    REQUIRE(db.count("top_examples") == static_cast<int64_t>(acts.size()));
    const auto& first = acts[0];  // source, layer, neuron, rank, value, prompt, position, token_id, token, before, after
    const auto ex = db.query(
        "SELECT value, prompt, position, token_id, token, context FROM top_examples "
        "WHERE source = ? AND neuron = ? AND rank = ?",
        {first[0].get<std::string>(), first[2].get<int64_t>(), first[3].get<int64_t>()});
    REQUIRE(ex.size() == 1);
    CHECK(Db::d(ex[0][0]) == first[4].get<double>());
    CHECK(Db::i(ex[0][1]) == first[5].get<int64_t>());
    CHECK(Db::i(ex[0][3]) == first[7].get<int64_t>());
    CHECK(Db::s(ex[0][5]) == first[9].get<std::string>() + first[8].get<std::string>() + first[10].get<std::string>());
    CHECK(db.count("top_ngrams") == static_cast<int64_t>(top["data"]["tables"]["top_ngrams_max"]["rows"].size() +
                                                         top["data"]["tables"]["top_ngrams_mean"]["rows"].size()));

    // Comparisons: 2 pairs x 2 hooks, cosines as in the result.
    const auto cmp = read_json(run / "results/cmp.json");
    const auto& pairs = cmp["data"]["tables"]["pairs"]["rows"];
    REQUIRE(db.count("prompt_comparisons") == 4);
    for (const auto& row : pairs) {
        const auto got = db.query("SELECT cosine, mse FROM prompt_comparisons WHERE pair = ? AND hook = ?",
                                  {row[0].get<int64_t>(), row[5].get<std::string>()});
        REQUIRE(got.size() == 1);
        CHECK(Db::d(got[0][0]) == row[7].get<double>());
        CHECK(Db::d(got[0][1]) == row[8].get<double>());
    }
    CHECK(db.count("comparison_neurons") == static_cast<int64_t>(cmp["data"]["tables"]["top_neurons"]["rows"].size()));
    // Every table of these four analyzers has its bespoke table: none is written again generically. Their
    // figures are stored (generically) all the same.
    CHECK(db.count("result_tables") == 0);
    CHECK(db.count("result_rows") == 0);
    const auto figures = db.query("SELECT analysis, name, kind FROM result_figures ORDER BY analysis, name");
    REQUIRE(figures.size() == 2);
    CHECK(Db::s(figures[0][0]) == "cmp");
    CHECK(Db::s(figures[0][1]) == "cosine_by_hook");
    CHECK(Db::s(figures[0][2]) == "line");
    CHECK(Db::s(figures[1][0]) == "stats");
    CHECK(Db::s(figures[1][1]) == "frac_active_by_hook");
    CHECK(db.query("PRAGMA foreign_key_check").empty());
    CHECK(Db::s(db.query("PRAGMA integrity_check").at(0).at(0)) == "ok");
    CHECK(!fs::exists(run / "results/neurons.sqlite-journal"));

    // ---- the example queries of docs/sqlite.md ----
    const auto q = doc_queries();
    REQUIRE(q.count("top-examples-of-a-neuron") == 1);
    {  // top examples of neuron 12 in blocks.1.mlp.hook_post: k rows, best first, = topk's arrays
        const auto rows = db.query(q.at("top-examples-of-a-neuron"), {std::string("blocks.1.mlp.hook_post"), int64_t{12}});
        const auto vals = read_npy(run / "results/top.blocks.1.mlp.hook_post.top_values.npy");
        REQUIRE(rows.size() == 3);
        for (int k = 0; k < 3; ++k) {
            CHECK(Db::i(rows[k][0]) == k + 1);                                   // rank
            CHECK(Db::d(rows[k][1]) == static_cast<double>(vals.to_f32()[12 * 3 + k]));  // value
        }
    }
    REQUIRE(q.count("neurons-firing-for-a-token") == 1);
    {  // which neurons fire most for a token in layer 1: expected from the topk table
        const std::string token = first[8].get<std::string>();
        std::map<int64_t, double> best;
        for (const auto& row : acts)
            if (row[1].get<int64_t>() == 1 && row[8].get<std::string>() == token && !row[4].is_null())
                best[row[2].get<int64_t>()] = std::max(best.count(row[2].get<int64_t>()) ? best[row[2].get<int64_t>()] : -1e300,
                                                       row[4].get<double>());
        const auto rows = db.query(q.at("neurons-firing-for-a-token"), {token, int64_t{1}});
        REQUIRE(rows.size() == std::min<size_t>(best.size(), 20));
        double prev = 1e300;
        for (const auto& row : rows) {
            CHECK(Db::s(row[0]) == "blocks.1.mlp.hook_post");
            CHECK(Db::d(row[2]) == best.at(Db::i(row[1])));
            CHECK(Db::d(row[2]) <= prev);
            prev = Db::d(row[2]);
        }
    }
    REQUIRE(q.count("dead-per-layer") == 1);
    {  // dead neuron count per layer across runs
        const auto rows = db.query(q.at("dead-per-layer"));
        REQUIRE(rows.size() == layers.size());
        for (size_t i = 0; i < rows.size(); ++i) {
            CHECK(Db::s(rows[i][0]) == "db");
            CHECK(Db::i(rows[i][2]) == layers[i][1].get<int64_t>());  // layer
            CHECK(Db::i(rows[i][4]) == layers[i][4].get<int64_t>());  // dead
        }
    }
}

TEST_CASE("sqlite exporter: runs accumulate in a shared database and the drift query finds the edited neuron",
          "[exporters][sqlite]") {
    const std::string dir = nscope::test::temp_dir("sqlite-shared");
    const std::string db_path = dir + "/shared/neurons.sqlite";
    const auto r1 = run_nscope({"run", recipe_file(dir, pipeline_recipe("base", ", path: " + db_path)), "--out", dir + "/runs"});
    INFO(r1.err);
    REQUIRE(r1.exit_code == 0);
    CHECK(!fs::exists(run_dir_of(r1) / "results/neurons.sqlite"));
    // The "fine-tuned" model: the same weights with neuron 7 of layer 1 forced to 10.
    const auto r2 = run_nscope({"run",
                                recipe_file(dir, pipeline_recipe("tuned", ", path: " + db_path,
                                                                 "interventions:\n  - { hook: blocks.1.mlp.hook_post, "
                                                                 "neurons: [7], op: set, value: 10 }\n")),
                                "--out", dir + "/runs"});
    INFO(r2.err);
    REQUIRE(r2.exit_code == 0);
    const Db db(db_path);
    CHECK(db.count("runs") == 2);
    CHECK(db.count("models") == 1);  // same weights: one model row shared by both runs
    CHECK(db.count("prompts") == 6);
    CHECK(db.count("tokens") == 30);
    const int64_t d_mlp = Db::i(db.query("SELECT d_mlp FROM models").at(0).at(0));
    CHECK(db.count("neurons") == 2 * d_mlp);  // neurons are per model, shared by the runs
    CHECK(db.count("neuron_stats") == 2 * 2 * d_mlp);

    const auto q = doc_queries();
    REQUIRE(q.count("drift-between-runs") == 1);
    const auto ids = db.query("SELECT run_id FROM runs ORDER BY name");  // base, tuned
    const auto rows = db.query(q.at("drift-between-runs"), {Db::i(ids[0][0]), Db::i(ids[1][0])});
    REQUIRE(!rows.empty());
    CHECK(Db::s(rows[0][0]) == "blocks.1.mlp.hook_post");
    CHECK(Db::i(rows[0][1]) == 7);
    CHECK(Db::d(rows[0][3]) == Approx(10.0));
    CHECK(Db::d(rows[0][4]) == Approx(10.0 - Db::d(rows[0][2])));
    const auto dead = db.query(q.at("dead-per-layer"));
    CHECK(dead.size() == 4);  // 2 runs x 2 hooks
}

TEST_CASE("sqlite exporter: exporting the same run again replaces its rows instead of duplicating them",
          "[exporters][sqlite]") {
    const std::string dir = nscope::test::temp_dir("sqlite-again");
    PromptInfo p0{0, "the bank", nullptr, {"the", " bank"}};
    PromptInfo p1{1, "a river", {{"sense", "river"}}, {"a", " river"}};
    RunContext run;
    run.model_name = "tiny";
    run.model_info = {{"architecture", "GPT2LMHeadModel"}, {"n_layers", 1}, {"d_mlp", 4}};
    run.prompts = {&p0, &p1};
    Result stats;
    Table layers;
    layers.columns = {"hook", "layer", "neurons", "count", "mean"};
    layers.add_row({"blocks.0.mlp.hook_post", 0, 4, 4, 0.5});
    stats.set_table("layers", layers);
    stats.set_array("blocks.0.mlp.hook_post.mean", NdArray::floats({4}, {0.5f, -1.0f, 2.0f, std::nanf("")}));
    Result top;
    Table acts;
    acts.columns = {"source", "layer", "neuron", "rank", "value", "prompt", "position", "token_id", "token", "before", "after"};
    acts.add_row({"blocks.0.mlp.hook_post", 0, 2, 1, 3.5, 0, 1, 42, " bank", "the", ""});
    acts.add_row({"group:g", 0, -1, 1, 1.5, 1, 0, 7, "a", "", " river"});
    top.set_table("top_activations", acts);
    const nlohmann::json manifest = {{"name", "again"}, {"run_id", "20260101-000000"}};
    ExportContext ctx;
    ctx.host = &host_services();
    ctx.run_dir = dir + "/again/20260101-000000";
    ctx.manifest = &manifest;
    ctx.analysis_order = {"s", "t"};
    ctx.results = {{"s", &stats}, {"t", &top}};
    ctx.analysis_plugins = {{"s", "stats"}, {"t", "topk"}};
    ctx.run = &run;

    for (const std::string& path : {std::string("results/neurons.sqlite"), dir + "/shared.sqlite"}) {
        INFO(path);
        auto e = nscope::test::registry().create_exporter("sqlite");
        e->configure({{"path", path}});
        e->write(ctx);
        e->write(ctx);  // same run again
        auto e2 = nscope::test::registry().create_exporter("sqlite");
        e2->configure({{"path", path}});
        e2->write(ctx);  // and from a fresh exporter
        const fs::path file = path[0] == '/' ? fs::path(path) : fs::path(ctx.run_dir) / path;
        const Db db(file);
        CHECK(db.count("runs") == 1);
        CHECK(db.count("models") == 1);
        CHECK(db.count("prompts") == 2);
        CHECK(db.count("tokens") == 4);
        CHECK(db.count("neurons") == 4);
        CHECK(db.count("neuron_stats") == 4);
        CHECK(db.count("top_examples") == 2);
        CHECK(db.count("analyses") == 2);
        CHECK(db.query("SELECT mean FROM neuron_stats s JOIN neurons n USING (neuron_id) WHERE n.neuron = 3")
                  .at(0)
                  .at(0)
                  .index() == 0);  // NaN stored as NULL
        CHECK(db.query("SELECT neuron_id FROM top_examples WHERE source = 'group:g'").at(0).at(0).index() == 0);
        CHECK(Db::s(db.query("SELECT token FROM tokens WHERE prompt = 0 AND position = 1").at(0).at(0)) == " bank");
        CHECK(db.query("SELECT token_id FROM tokens").at(0).at(0).index() == 0);  // no batches seen: ids unknown
        // No temporary files are left next to the database.
        size_t files = 0;
        for ([[maybe_unused]] const auto& f : fs::directory_iterator(file.parent_path())) ++files;
        CHECK(files == (path[0] == '/' ? 2u : 1u));  // the shared one sits next to the run folder
    }
}

TEST_CASE("sqlite exporter: bad parameters are input errors, foreign databases are left untouched",
          "[exporters][sqlite]") {
    auto e = nscope::test::registry().create_exporter("sqlite");
    CHECK_THROWS_AS(e->configure({{"path", 3}}), InputError);
    CHECK_THROWS_AS(e->configure({{"path", ""}}), InputError);
    CHECK_THROWS_AS(e->configure({{"path", "results/"}}), InputError);
    CHECK_THROWS_WITH(e->configure({{"path", "../outside.sqlite"}}), Catch::Contains("leaves the run directory"));
    CHECK_THROWS_AS(e->configure({{"path", "~bob/x.sqlite"}}), InputError);
    CHECK_THROWS_WITH(e->configure({{"pth", "x.sqlite"}}), Catch::Contains("did you mean 'path'"));
    CHECK_NOTHROW(e->configure({{"path", "~/x.sqlite"}}));

    // Through the CLI: refused before the model is loaded, exit code 2.
    const std::string dir = nscope::test::temp_dir("sqlite-bad");
    const auto r = run_nscope({"run", recipe_file(dir, pipeline_recipe("bad", ", path: 42")), "--out", dir + "/runs"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("sqlite") != std::string::npos);

    // An SQLite file that is not a neuron database, one with a newer schema (the next version, and a far one)
    // and one with a nonsense version: InputError, bytes unchanged.
    const std::string other = dir + "/other.sqlite", newer = dir + "/newer.sqlite", newest = dir + "/newest.sqlite",
                      zero = dir + "/zero.sqlite";
    const std::string next = std::to_string(nscope_sqlite::kSchemaVersion + 1);
    const std::string version_table = "CREATE TABLE schema_version (version, created_at, nscope_version);";
    for (const auto& [path, sql, message] :
         {std::tuple{other, std::string("CREATE TABLE t (x); INSERT INTO t VALUES (1);"), std::string("other tables")},
          std::tuple{newer, version_table + "INSERT INTO schema_version VALUES (" + next + ", '', '');",
                     "has schema version " + next + ", written by a newer nscope"},
          std::tuple{newest, version_table + "INSERT INTO schema_version VALUES (99, '', '');",
                     std::string("upgrade nscope or use another 'path'")},
          std::tuple{zero, version_table, std::string("no valid schema version")}}) {
        INFO(path);
        sqlite3* h = nullptr;
        REQUIRE(sqlite3_open(path.c_str(), &h) == SQLITE_OK);
        REQUIRE(sqlite3_exec(h, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
        sqlite3_close(h);
        const std::string before = nscope::test::read_file(path);
        const nlohmann::json manifest = {{"name", "x"}, {"run_id", "1"}};
        ExportContext ctx;
        ctx.host = &host_services();
        ctx.run_dir = dir + "/x/1";
        ctx.manifest = &manifest;
        auto ex = nscope::test::registry().create_exporter("sqlite");
        ex->configure({{"path", path}});
        CHECK_THROWS_AS(ex->write(ctx), InputError);
        CHECK_THROWS_WITH(ex->write(ctx), Catch::Contains(message));
        CHECK(nscope::test::read_file(path) == before);
        // The in-run variant: the failure leaves neither a changed file nor a temporary copy.
        fs::create_directories(dir + "/x/1/results");
        fs::copy_file(path, dir + "/x/1/results/db.sqlite", fs::copy_options::overwrite_existing);
        auto ex2 = nscope::test::registry().create_exporter("sqlite");
        ex2->configure({{"path", "results/db.sqlite"}});
        CHECK_THROWS_AS(ex2->write(ctx), InputError);
        CHECK(nscope::test::read_file(dir + "/x/1/results/db.sqlite") == before);
        size_t files = 0;
        for ([[maybe_unused]] const auto& f : fs::directory_iterator(dir + "/x/1/results")) ++files;
        CHECK(files == 1);
    }
    // Through the CLI: the newer database is refused at export time with exit code 2, and left as it was.
    const std::string before = nscope::test::read_file(newer);
    const auto rn =
        run_nscope({"run", recipe_file(dir, pipeline_recipe("newer", ", path: " + newer)), "--out", dir + "/runs"});
    CHECK(rn.exit_code == 2);
    CHECK_THAT(rn.err, Catch::Contains("written by a newer nscope"));
    CHECK(nscope::test::read_file(newer) == before);
}

// ---- tables and figures of any analyzer (schema version 2) ---------------------------------------------------

namespace {

/// A cell read with json_extract equals the JSON results' cell (JSON booleans come back as 1 / 0).
void check_extracted(const Cell& got, const json& want) {
    INFO("want " << want.dump());
    if (want.is_null()) CHECK(got.index() == 0);
    else if (want.is_boolean()) CHECK(Db::i(got) == (want.get<bool>() ? 1 : 0));
    else if (want.is_number_integer()) CHECK(Db::i(got) == want.get<int64_t>());
    else if (want.is_number()) CHECK(Db::d(got) == want.get<double>());
    else CHECK(Db::s(got) == want.get<std::string>());
}

/// Every row of the table `name` of analysis `id` in the database equals the table in results/<id>.json, value
/// by value, read both as the stored JSON object and with json_extract. Returns the number of rows checked.
size_t check_generic_table(const Db& db, const std::string& id, const std::string& name, const json& table) {
    INFO(id << " / " << name);
    const auto meta = db.query("SELECT columns_json, n_rows, title FROM result_tables WHERE analysis = ? AND name = ?",
                               {id, name});
    REQUIRE(meta.size() == 1);
    CHECK(json::parse(Db::s(meta[0][0])) == table["columns"]);
    CHECK(Db::i(meta[0][1]) == static_cast<int64_t>(table["rows"].size()));
    if (table.contains("title")) CHECK(Db::s(meta[0][2]) == table["title"].get<std::string>());
    else CHECK(meta[0][2].index() == 0);
    const auto rows =
        db.query("SELECT row, values_json FROM result_rows WHERE analysis = ? AND name = ? ORDER BY row", {id, name});
    REQUIRE(rows.size() == table["rows"].size());
    const auto& columns = table["columns"];
    for (size_t r = 0; r < rows.size(); ++r) {
        INFO("row " << r);
        CHECK(Db::i(rows[r][0]) == static_cast<int64_t>(r));
        const json values = json::parse(Db::s(rows[r][1]));
        REQUIRE(values.size() == columns.size());
        for (size_t c = 0; c < columns.size(); ++c) {
            const std::string col = columns[c].get<std::string>();
            const json& want = table["rows"][r][c];
            CHECK(values.at(col) == want);
            const auto got = db.query(
                "SELECT json_extract(values_json, ?) FROM result_rows WHERE analysis = ? AND name = ? AND row = ?",
                {"$.\"" + col + "\"", id, name, static_cast<int64_t>(r)});
            check_extracted(got.at(0).at(0), want);
        }
    }
    return rows.size();
}

}  // namespace

TEST_CASE("sqlite exporter: an out-of-tree plugin's and next_token's tables and figures are stored generically, "
          "value by value",
          "[exporters][sqlite][oot]") {
    const std::string oot = std::string(NSCOPE_OOT_DIR) + "/build";
    REQUIRE(fs::exists(oot + "/libtoken_count.so"));
    const std::string dir = nscope::test::temp_dir("sqlite-generic");
    const std::string recipe =
        "name: generic\nmodel: { path: " + kGpt2 + " }\nprompts:\n  - { ids: " + ids_yaml() +
        " }\nbatch_size: 2\nhooks: [ \"blocks.*.mlp.hook_post\" ]\n"
        "analyses:\n"
        "  - { id: tc, use: token-count }\n"
        "  - { id: nt, use: next_token, k: 3, changed_tokens: 4, pairs: [[0, 1], [0, 2]] }\n"
        "  - { id: stats, use: stats, neuron_table: true }\n"
        "exports:\n  - json\n  - { use: sqlite }\n"
        "  - { use: sqlite }\n";  // the same run exported again: replaces its rows
    const auto r = run_nscope({"run", recipe_file(dir, recipe), "--out", dir + "/runs", "--plugin-path", oot});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const fs::path run = run_dir_of(r);
    const Db db(run / "results/neurons.sqlite");
    CHECK(db.count("runs") == 1);
    CHECK(db.count("analyses") == 3);
    CHECK(Db::s(db.query("SELECT plugin FROM analyses WHERE analysis = 'tc'").at(0).at(0)) == "token-count");

    // Which tables went the generic way: all of token-count's and next_token's, none of stats' (its layers and
    // neurons tables are neuron_stats, which is complete).
    const auto tables = db.query("SELECT analysis, name FROM result_tables ORDER BY analysis, name");
    std::vector<std::pair<std::string, std::string>> names;
    for (const auto& t : tables) names.emplace_back(Db::s(t[0]), Db::s(t[1]));
    CHECK(names == std::vector<std::pair<std::string, std::string>>{
                       {"nt", "changed_tokens"}, {"nt", "pair_effects"}, {"nt", "top_tokens"}, {"tc", "sums_by_hook"}});
    CHECK(db.count("result_rows WHERE analysis = 'stats'") == 0);
    // ... and neuron_stats has a row per row of stats' neurons table: the recipe's two MLP hooks only
    // (hook_logits, which next_token captures for itself, never reaches stats).
    const auto stats = read_json(run / "results/stats.json");
    const auto& stats_neurons = stats["data"]["tables"]["neurons"]["rows"];
    const int64_t d_mlp = Db::i(db.query("SELECT d_mlp FROM models").at(0).at(0));
    CHECK(stats_neurons.size() == static_cast<size_t>(2 * d_mlp));
    CHECK(db.count("neuron_stats") == static_cast<int64_t>(stats_neurons.size()));

    // Every generic table equals the JSON results, row by row and cell by cell.
    size_t rows = 0;
    for (const std::string id : {"tc", "nt"}) {
        const auto res = read_json(run / ("results/" + id + ".json"));
        REQUIRE(res["data"]["tables"].size() == (id == "tc" ? 1u : 3u));
        for (const auto& [name, table] : res["data"]["tables"].items()) {
            REQUIRE(!table["rows"].empty());
            rows += check_generic_table(db, id, name, table);
        }
    }
    CHECK(db.count("result_rows") == static_cast<int64_t>(rows));  // and nothing else (nor twice)
    const auto tc = read_json(run / "results/tc.json");  // one row per captured hook, as stats has
    CHECK(tc["data"]["tables"]["sums_by_hook"]["rows"].size() == stats["data"]["tables"]["layers"]["rows"].size());

    // The documented query over any analyzer's table: next_token's KL per pair.
    const auto q = doc_queries();
    REQUIRE(q.count("rows-of-a-table") == 1);
    {
        const auto nt = read_json(run / "results/nt.json");
        const nscope::common::TableView effects(nt["data"], "pair_effects");
        const auto got = db.query(q.at("rows-of-a-table"), {std::string("nt")});
        REQUIRE(got.size() == 2);
        for (size_t i = 0; i < got.size(); ++i) {
            CHECK(Db::i(got[i][1]) == static_cast<int64_t>(i));
            check_extracted(got[i][2], effects.cell(i, "a"));
            check_extracted(got[i][3], effects.cell(i, "b"));
            check_extracted(got[i][4], effects.cell(i, "kl"));
            check_extracted(got[i][5], effects.cell(i, "top_changed"));
        }
    }

    // Figures: every figure of every analysis (stats' too), the whole object, via the documented query.
    REQUIRE(q.count("figures-of-a-run") == 1);
    const auto figures = db.query(q.at("figures-of-a-run"), {Db::i(db.query("SELECT run_id FROM runs").at(0).at(0))});
    std::vector<std::string> figure_names;
    for (const auto& f : figures) {
        const std::string id = Db::s(f[0]), name = Db::s(f[2]);
        INFO(id << " / " << name);
        figure_names.push_back(id + "/" + name);
        const json want = read_json(run / ("results/" + id + ".json"))["data"]["figures"][name];
        CHECK(Db::s(f[3]) == want["kind"].get<std::string>());
        CHECK(Db::s(f[4]) == want["title"].get<std::string>());
        CHECK(json::parse(Db::s(f[5])) == want);
    }
    CHECK(figure_names == std::vector<std::string>{"nt/kl_by_pair", "stats/frac_active_by_hook", "tc/sum_by_hook"});
    CHECK(Db::s(figures[2][1]) == "token-count");
    CHECK(db.query("PRAGMA foreign_key_check").empty());
}

namespace {

/// A one-prompt run with one third-party analysis whose table holds every kind of cell (and some that
/// bend the conventions), plus a stats analysis (bespoke).
struct ThirdPartyRun {
    PromptInfo p0{0, "the bank", nullptr, {"the", " bank"}};
    RunContext run;
    Result mine, stats;
    json manifest;
    ExportContext ctx;

    ThirdPartyRun(const std::string& run_dir, const std::string& run_id)
        : manifest{{"name", "third"}, {"run_id", run_id}} {
        run.model_name = "tiny";
        run.model_info = {{"architecture", "GPT2LMHeadModel"}, {"n_layers", 1}, {"d_mlp", 2}};
        run.prompts = {&p0};
        ctx.host = &host_services();
        Table cells;
        cells.columns = {"name", "value", "flag", "none", "same", "same"};
        cells.add_row({"ok", 1.5, true, nullptr, 1, 2});
        cells.add_row({"bad \xff byte", std::nan(""), false});  // invalid UTF-8, NaN, a short row
        cells.add_row({"inf", std::numeric_limits<double>::infinity(), -3, "x", 4, 5});
        mine.set_table("cells", cells);
        mine.data["tables"]["cells"]["title"] = "every kind of cell";
        mine.data["tables"]["not_a_table"] = {{"columns", "x"}, {"rows", json::array()}};
        mine.set_figure("curve", {{"kind", "line"}, {"x", {1, 2}}, {"y", {0.5, std::nan("")}}});
        mine.set_figure("not_a_figure", 3);
        Table layers;
        layers.columns = {"hook", "layer", "neurons", "count"};
        layers.add_row({"blocks.0.mlp.hook_post", 0, 2, 2});
        stats.set_table("layers", layers);
        stats.set_array("blocks.0.mlp.hook_post.mean", NdArray::floats({2}, {0.5f, -1.0f}));
        ctx.run_dir = run_dir;
        ctx.manifest = &manifest;
        ctx.analysis_order = {"mine", "s"};
        ctx.results = {{"mine", &mine}, {"s", &stats}};
        ctx.analysis_plugins = {{"mine", "my-plugin"}, {"s", "stats"}};
        ctx.run = &run;
    }
};

void export_to(const std::string& path, const ExportContext& ctx) {
    auto e = nscope::test::registry().create_exporter("sqlite");
    e->configure({{"path", path}});
    e->write(ctx);
}

}  // namespace

TEST_CASE("sqlite exporter: a third-party table's cells become JSON objects (NaN, booleans, bad UTF-8, short rows)",
          "[exporters][sqlite]") {
    const std::string dir = nscope::test::temp_dir("sqlite-cells");
    const ThirdPartyRun third(dir + "/third/1", "1");
    export_to("results/neurons.sqlite", third.ctx);
    const Db db(fs::path(third.ctx.run_dir) / "results/neurons.sqlite");
    const auto meta = db.query("SELECT analysis, name, title, columns_json, n_rows FROM result_tables");
    REQUIRE(meta.size() == 1);  // not_a_table (columns not a list) and the stats layers table are left out
    CHECK(Db::s(meta[0][0]) == "mine");
    CHECK(Db::s(meta[0][1]) == "cells");
    CHECK(Db::s(meta[0][2]) == "every kind of cell");
    CHECK(Db::s(meta[0][3]) == R"(["name","value","flag","none","same","same"])");
    CHECK(Db::i(meta[0][4]) == 3);
    const auto rows = db.query("SELECT values_json FROM result_rows ORDER BY row");
    REQUIRE(rows.size() == 3);
    // Keys in column order, a repeated column once (with its last column's value), missing cells null.
    CHECK(Db::s(rows[0][0]) == R"({"name":"ok","value":1.5,"flag":true,"none":null,"same":2})");
    CHECK(Db::s(rows[1][0]) ==  // the bad byte became U+FFFD
          "{\"name\":\"bad \xEF\xBF\xBD byte\",\"value\":null,\"flag\":false,\"none\":null,\"same\":null}");
    CHECK(Db::s(rows[2][0]) == R"({"name":"inf","value":null,"flag":-3,"none":"x","same":5})");
    const auto flag = db.query("SELECT json_extract(values_json, '$.flag') FROM result_rows WHERE row = 0");
    CHECK(Db::i(flag.at(0).at(0)) == 1);  // JSON true
    CHECK(Db::s(db.query("SELECT json_valid(values_json) || json_valid(spec_json) FROM result_rows, result_figures "
                         "WHERE row = 1").at(0).at(0)) == "11");
    const auto fig = db.query("SELECT name, kind, title, spec_json FROM result_figures");
    REQUIRE(fig.size() == 1);  // not_a_figure (not an object) is left out
    CHECK(Db::s(fig[0][0]) == "curve");
    CHECK(Db::s(fig[0][1]) == "line");
    CHECK(fig[0][2].index() == 0);  // no title
    CHECK(Db::s(fig[0][3]) == R"({"kind":"line","x":[1,2],"y":[0.5,null]})");
    CHECK(db.count("neuron_stats") == 2);
}

TEST_CASE("sqlite exporter: a version-1 database is upgraded in place and keeps its runs", "[exporters][sqlite]") {
    const std::string dir = nscope::test::temp_dir("sqlite-upgrade");
    const std::string path = dir + "/shared.sqlite";
    const ThirdPartyRun old_run(dir + "/third/1", "1"), new_run(dir + "/third/2", "2");
    export_to(path, old_run.ctx);
    {  // Make it a version-1 database: version 2 only added the result_* tables, so drop them.
        sqlite3* h = nullptr;
        REQUIRE(sqlite3_open(path.c_str(), &h) == SQLITE_OK);
        REQUIRE(sqlite3_exec(h,
                             "DROP TABLE result_rows; DROP TABLE result_figures; DROP TABLE result_tables;"
                             "UPDATE schema_version SET version = 1;",
                             nullptr, nullptr, nullptr) == SQLITE_OK);
        sqlite3_close(h);
    }
    {
        const Db v1(path);
        std::set<std::string> names;
        for (const auto& t : v1.query("SELECT name FROM sqlite_master WHERE type = 'table'")) names.insert(Db::s(t[0]));
        CHECK(names == std::set<std::string>{"schema_version", "models", "runs", "analyses", "prompts", "tokens",
                                             "neurons", "neuron_stats", "neuron_flags", "hook_health", "top_examples",
                                             "top_ngrams", "prompt_comparisons", "comparison_neurons"});
    }

    export_to(path, new_run.ctx);
    const Db db(path);
    const auto versions = db.query("SELECT version FROM schema_version ORDER BY version");
    REQUIRE(versions.size() == 2);
    CHECK(Db::i(versions[0][0]) == 1);
    CHECK(Db::i(versions[1][0]) == 2);
    CHECK(db.count("runs") == 2);
    CHECK(db.count("neuron_stats") == 2 * 2);  // the version-1 run's rows are still there
    const auto generic = db.query("SELECT DISTINCT r.run_key FROM result_rows JOIN runs r USING (run_id)");
    REQUIRE(generic.size() == 1);
    CHECK(Db::s(generic[0][0]) == "2");  // the new run has generic rows, the old one never had
    CHECK(db.count("result_rows") == 3);
    CHECK(db.count("result_figures") == 1);
    CHECK(db.query("PRAGMA foreign_key_check").empty());
    CHECK(Db::s(db.query("PRAGMA integrity_check").at(0).at(0)) == "ok");

    // Re-exporting the old run into the upgraded database replaces its rows, generic ones included.
    export_to(path, old_run.ctx);
    export_to(path, old_run.ctx);
    const Db again(path);
    CHECK(again.count("runs") == 2);
    CHECK(again.count("result_tables") == 2);
    CHECK(again.count("result_rows") == 2 * 3);
    CHECK(again.count("result_figures") == 2);
    CHECK(again.count("schema_version") == 2);
}

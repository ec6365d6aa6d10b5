// `sqlite` exporter: a neuron database that accumulates runs (schema and queries: docs/sqlite.md).
//
//   exports: [ { use: sqlite } ]                                   # results/neurons.sqlite in the run dir
//   exports: [ { use: sqlite, path: ~/nscope/neurons.sqlite } ]    # one shared database for many runs
//
// Each run is written in one transaction; a run that is exported again (same recipe name, run id and model
// label) replaces its earlier rows. A database inside the run directory is built in a temporary copy that is
// renamed into place, so a crash leaves the previous file (or none). A shared database outside the run
// directory is written in place with BEGIN IMMEDIATE ... COMMIT (SQLite's journal makes that atomic).
#include <nscope/sdk.h>

#include <sqlite3.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <ctime>
#include <map>
#include <optional>
#include <set>

#include "nscope_common/hooks.h"
#include "nscope_common/params.h"
#include "nscope_common/tables.h"
#include "plugins/exporters/sqlite/schema.sql.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nscope::common::TableView;

// ---- a thin RAII layer over the sqlite3 C API ---------------------------------------------------------------

class Statement {
public:
    Statement(sqlite3* db, const char* sql) : db_(db) {
        if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK)
            throw nscope::RuntimeError(std::string("sqlite: cannot prepare statement: ") + sqlite3_errmsg(db));
    }
    ~Statement() { sqlite3_finalize(stmt_); }
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;

    void bind(int i, std::nullptr_t) { check(sqlite3_bind_null(stmt_, i)); }
    void bind(int i, int64_t v) { check(sqlite3_bind_int64(stmt_, i, v)); }
    void bind(int i, int v) { bind(i, static_cast<int64_t>(v)); }
    void bind(int i, size_t v) { bind(i, static_cast<int64_t>(v)); }
    void bind(int i, double v) {  // NaN / inf -> NULL ("undefined", as in the JSON results)
        check(std::isfinite(v) ? sqlite3_bind_double(stmt_, i, v) : sqlite3_bind_null(stmt_, i));
    }
    void bind(int i, const std::string& v) {
        check(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    }
    void bind(int i, const char* v) { bind(i, std::string(v)); }
    template <typename T>
    void bind(int i, const std::optional<T>& v) {
        if (v) bind(i, *v);
        else bind(i, nullptr);
    }

    /// Bind all arguments (1-based, in order), step once, reset. Returns true if a row came back.
    template <typename... Args>
    bool run(const Args&... args) {
        sqlite3_reset(stmt_);
        sqlite3_clear_bindings(stmt_);
        int i = 0;
        (bind(++i, args), ...);
        const int rc = sqlite3_step(stmt_);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            throw nscope::RuntimeError(std::string("sqlite: ") + sqlite3_errmsg(db_));
        return rc == SQLITE_ROW;
    }
    /// Run a query that returns one integer (column 0 of the first row), or nullopt without a row.
    template <typename... Args>
    std::optional<int64_t> scalar(const Args&... args) {
        std::optional<int64_t> out;
        if (run(args...)) out = sqlite3_column_int64(stmt_, 0);
        sqlite3_reset(stmt_);  // release the read so that DDL / COMMIT are not blocked
        return out;
    }

private:
    void check(int rc) const {
        if (rc != SQLITE_OK) throw nscope::RuntimeError(std::string("sqlite: cannot bind: ") + sqlite3_errmsg(db_));
    }
    sqlite3* db_;
    sqlite3_stmt* stmt_ = nullptr;
};

class Database {
public:
    explicit Database(const fs::path& path) {
        // SQLite keeps allocation statistics behind a global mutex by default: every row inserted locks it
        // several times. Switch them off once, before SQLite initializes (a no-op if it already has).
        static const bool memstatus_off = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK;
        (void)memstatus_off;
        // NOMUTEX: the connection is used by one thread only, so its calls need not lock.
        const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
        if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
            const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
            sqlite3_close(db_);
            throw nscope::RuntimeError("sqlite: cannot open " + path.string() + ": " + msg);
        }
        sqlite3_busy_timeout(db_, 60000);  // a shared database may be busy with another run's export
        exec("PRAGMA foreign_keys = ON");
        // An export inserts hundreds of thousands of rows into indexed tables in one transaction. A statement
        // that may need undoing halfway (INSERT OR REPLACE / IGNORE) keeps a statement journal: in a
        // temporary file by default (two small writes per page and row), in memory here. And with SQLite's
        // default 2 MB page cache, index pages would be written out and read back over and over: up to
        // 256 MB of cache (only what the database needs is allocated) keeps them in memory. The rows of one
        // run's top lists are unique by construction (and a re-export deletes the old run first), so they
        // go in with plain INSERTs, which need no statement journal.
        exec("PRAGMA temp_store = MEMORY");
        exec("PRAGMA cache_size = -262144");
    }
    ~Database() { sqlite3_close_v2(db_); }  // an open transaction is rolled back
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;

    void exec(const char* sql) {
        char* err = nullptr;
        if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
            const std::string msg = err ? err : sqlite3_errmsg(db_);
            sqlite3_free(err);
            throw nscope::RuntimeError("sqlite: " + msg);
        }
    }
    sqlite3* handle() const { return db_; }
    int64_t last_id() const { return sqlite3_last_insert_rowid(db_); }

private:
    sqlite3* db_ = nullptr;
};

// ---- helpers ------------------------------------------------------------------------------------------------

std::string now_utc() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::optional<int64_t> opt_int(const json& j, const char* key) {
    if (j.is_object() && j.contains(key) && j[key].is_number_integer()) return j[key].get<int64_t>();
    return std::nullopt;
}

/// `~` / `~/x` -> $HOME/x.
fs::path expand_home(const std::string& s) {
    if (s == "~" || s.rfind("~/", 0) == 0) {
        const char* home = std::getenv("HOME");
        if (!home || !*home) throw nscope::InputError("sqlite: parameter 'path' starts with '~' but HOME is not set");
        return fs::path(home) / s.substr(s.size() > 1 ? 2 : 1);
    }
    return s;
}

// ---- tables and figures of any analyzer ---------------------------------------------------------------------

/// Writes a result's tables and figures generically (result_tables, result_rows, result_figures): one row
/// per table row, stored as a JSON object keyed by column name. Prepared once per run, like the bespoke inserts.
class GenericWriter {
public:
    GenericWriter(Database& db, int64_t run_id)
        : run_id_(run_id),
          table_(db.handle(),
                 "INSERT INTO result_tables (run_id, analysis, name, title, columns_json, n_rows) "
                 "VALUES (?, ?, ?, ?, ?, ?)"),
          row_(db.handle(),
               "INSERT INTO result_rows (run_id, analysis, name, row, values_json) VALUES (?, ?, ?, ?, ?)"),
          figure_(db.handle(),
                  "INSERT INTO result_figures (run_id, analysis, name, kind, title, spec_json) "
                  "VALUES (?, ?, ?, ?, ?, ?)") {}

    /// Every table of `res` whose name is not in `skip` (those have bespoke tables), and every figure.
    void write(const std::string& analysis, const nscope::Result& res, const std::set<std::string>* skip) {
        const json& data = res.data;
        if (!data.is_object()) return;
        if (data.contains("tables") && data["tables"].is_object())
            for (const auto& [name, t] : data["tables"].items())
                if (!skip || !skip->count(name)) write_table(analysis, name, data, t);
        if (data.contains("figures") && data["figures"].is_object())
            for (const auto& [name, fig] : data["figures"].items())
                if (fig.is_object())
                    figure_.run(run_id_, analysis, name, text_field(fig, "kind"), text_field(fig, "title"), dump(fig));
    }

private:
    static std::optional<std::string> text_field(const json& obj, const char* key) {
        const auto it = obj.find(key);
        if (it == obj.end() || !it->is_string()) return std::nullopt;
        return it->get<std::string>();
    }

    void write_table(const std::string& analysis, const std::string& name, const json& data, const json& t) {
        // Not a {"columns": [...], "rows": [...]} table (TableView expects the columns to be a list): skipped.
        if (!t.is_object() || !t.contains("columns") || !t["columns"].is_array()) return;
        const TableView view(data, name);
        if (!view.present()) return;
        // The JSON text of each key, made once per table; a name given twice is one key (TableView reads
        // the cell of its last column), names that are not strings are not columns.
        std::vector<std::pair<std::string, std::string>> keys;  // (column, `"column":`)
        std::set<std::string> seen;
        for (const auto& c : t["columns"])
            if (c.is_string() && seen.insert(c.get<std::string>()).second)
                keys.emplace_back(c.get<std::string>(), (keys.empty() ? "" : ",") + dump(c) + ":");
        table_.run(run_id_, analysis, name, text_field(t, "title"), dump(t["columns"]), view.size());
        std::string values;
        for (size_t r = 0; r < view.size(); ++r) {
            values = "{";
            for (const auto& [column, key] : keys) {
                values += key;
                values += dump(view.cell(r, column));  // NaN / inf -> null, invalid UTF-8 replaced
            }
            values += "}";
            row_.run(run_id_, analysis, name, r, values);
        }
    }

    int64_t run_id_;
    Statement table_, row_, figure_;
};

// ---- the exporter -------------------------------------------------------------------------------------------

class SqliteExporter : public nscope::Exporter {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("sqlite", params, {"path"});
        if (p.has("path")) {
            const auto& v = p.raw("path");
            if (!v.is_string()) p.fail("path", "must be a file path (string), got " + nscope::common::describe(v));
            path_ = v.get<std::string>();
        }
        if (path_.empty()) p.fail("path", "must not be empty");
        if (path_.back() == '/') p.fail("path", "must name a file, not a folder: '" + path_ + "'");
        if (path_[0] == '~' && path_ != "~" && path_.rfind("~/", 0) != 0)
            p.fail("path", "'" + path_ + "': only '~/...' (your home) is expanded, not '~user'");
        const fs::path rel(path_);
        if (!rel.is_absolute() && path_[0] != '~') {
            for (const auto& part : rel.lexically_normal())
                if (part == "..")
                    p.fail("path", "'" + path_ + "' leaves the run directory; use an absolute path or ~/... for a "
                                   "database shared between runs");
        }
    }

    // Token ids are only visible in the batches: keep them until the export, 4 bytes per real token (vocabulary
    // ids fit in 32 bits; an exact-size vector per prompt, so a long corpus costs no growth slack).
    bool wants_activations() const override { return true; }

    void consume(const nscope::Batch& batch) override {
        for (size_t r = 0; r < batch.rows && r < batch.prompts.size(); ++r) {
            if (!batch.prompts[r]) continue;
            size_t n = 0;
            for (size_t p = 0; p < batch.positions; ++p) n += batch.valid(r, p) ? 1 : 0;
            std::vector<int32_t> ids;
            ids.reserve(n);
            for (size_t p = 0; p < batch.positions; ++p)
                if (batch.valid(r, p)) ids.push_back(static_cast<int32_t>(batch.input_ids[r * batch.positions + p]));
            ids_[batch.prompts[r]->index] = std::move(ids);
        }
    }

    void write(const nscope::ExportContext& ctx) override {
        const bool shared = fs::path(path_).is_absolute() || path_[0] == '~';
        const fs::path target = shared ? expand_home(path_) : (ctx.run_dir / path_).lexically_normal();
        if (target.has_parent_path()) fs::create_directories(target.parent_path());
        if (shared) {
            Database db(target);
            export_run(db, ctx);
            return;
        }
        // In the run directory: work on a copy, rename it over the target when the transaction committed.
        const fs::path tmp = target.string() + ".tmp." + std::to_string(::getpid());
        auto cleanup = [&] {
            std::error_code ec;
            fs::remove(tmp, ec);
            fs::remove(tmp.string() + "-journal", ec);
        };
        cleanup();
        try {
            if (fs::exists(target)) fs::copy_file(target, tmp);
            {
                Database db(tmp);
                export_run(db, ctx);
            }
            if (ctx.host == nullptr || ctx.host->commit_file == nullptr)
                throw nscope::RuntimeError("sqlite: the host gave no file services (ExportContext::host)");
            ctx.host->commit_file(tmp, target);  // fsync, rename over the target, fsync the folder
        } catch (...) {
            cleanup();
            throw;
        }
    }

private:
    /// The built-in analyzers with bespoke tables, by plugin id: the writer, and the result tables it stores in
    /// its own form, which the generic result_tables / result_rows then leave out (the topk tables alone run
    /// to hundreds of thousands of rows). Their other tables and all figures still go the generic way.
    using Writer = void (SqliteExporter::*)(Database&, const std::string&, const nscope::Result&);
    struct Bespoke {
        Writer write;
        std::set<std::string> tables;
    };
    static const std::map<std::string, Bespoke>& bespoke_writers() {
        static const std::map<std::string, Bespoke> writers = {
            // neuron_stats holds every neuron (= the `neurons` table); `layers` is its per-hook aggregate.
            {"stats", {&SqliteExporter::write_stats, {"layers", "neurons"}}},
            {"dead", {&SqliteExporter::write_dead, {"layers", "neurons"}}},
            {"topk", {&SqliteExporter::write_topk, {"top_activations", "top_ngrams_max", "top_ngrams_mean"}}},
            {"compare", {&SqliteExporter::write_compare, {"pairs", "top_neurons"}}},
        };
        return writers;
    }

    void prepare_schema(Database& db) {
        // Is this a NeuronScope database, and of which schema version?
        Statement has(db.handle(), "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'");
        const std::string file = sqlite3_db_filename(db.handle(), "main");
        if (has.scalar().value_or(0) == 1) {
            Statement v(db.handle(), "SELECT max(version) FROM schema_version");
            const int64_t version = v.scalar().value_or(0);
            if (version == nscope_sqlite::kSchemaVersion) return;
            if (version > nscope_sqlite::kSchemaVersion)
                throw nscope::InputError("sqlite: " + file + " has schema version " + std::to_string(version) +
                                         ", written by a newer nscope; this one writes version " +
                                         std::to_string(nscope_sqlite::kSchemaVersion) +
                                         " and cannot add to it: upgrade nscope or use another 'path'");
            if (version < 1)
                throw nscope::InputError("sqlite: " + file + " has no valid schema version (" +
                                         std::to_string(version) + "); choose another 'path'");
            // An older version: upgrade in place, inside this run's transaction (a failed export leaves the
            // old version). The versions so far only added tables, so the IF NOT EXISTS schema is the upgrade.
        } else {
            Statement tables(db.handle(), "SELECT count(*) FROM sqlite_master WHERE type = 'table'");
            if (tables.scalar().value_or(0) != 0)
                throw nscope::InputError("sqlite: " + file +
                                         " is an SQLite database with other tables, not a NeuronScope neuron database; "
                                         "choose another 'path'");
        }
        db.exec(nscope_sqlite::kSchema);
        // One row per version the database has had (created_at = when it got that version); max() is current.
        Statement ins(db.handle(), "INSERT INTO schema_version (version, created_at, nscope_version) VALUES (?, ?, ?)");
        ins.run(nscope_sqlite::kSchemaVersion, now_utc(), std::string(NSCOPE_VERSION_STRING));
    }

    void export_run(Database& db, const nscope::ExportContext& ctx) {
        db.exec("BEGIN IMMEDIATE");
        try {
            prepare_schema(db);
            write_run(db, ctx);
            db.exec("COMMIT");
        } catch (...) {
            sqlite3_exec(db.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
            throw;
        }
    }

    /// The model's id: (name, fingerprint) identifies it; fingerprint = the sha256 of its files in the manifest.
    int64_t model_row(Database& db, const nscope::ExportContext& ctx) {
        const nscope::RunContext* run = ctx.run;
        const std::string name = run ? run->model_name : "";
        const json info = run ? run->model_info : json::object();
        std::string fingerprint;
        if (ctx.manifest && ctx.manifest->contains("models") && (*ctx.manifest)["models"].is_array())
            for (const auto& m : (*ctx.manifest)["models"])
                if (m.value("ref", "") == name && m.contains("files")) {
                    fingerprint.clear();
                    for (const auto& f : m["files"]) {
                        if (!fingerprint.empty()) fingerprint += ',';
                        fingerprint += f.value("sha256", "");
                    }
                }
        Statement find(db.handle(), "SELECT model_id FROM models WHERE name = ? AND fingerprint = ?");
        if (auto id = find.scalar(name, fingerprint)) return *id;
        Statement ins(db.handle(),
                      "INSERT INTO models (name, fingerprint, architecture, n_layers, d_model, d_mlp, vocab_size, "
                      "info_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
        ins.run(name, fingerprint, info.is_object() ? info.value("architecture", "") : std::string(),
                opt_int(info, "n_layers"), opt_int(info, "d_model"), opt_int(info, "d_mlp"), opt_int(info, "vocab_size"),
                dump(info));
        return db.last_id();
    }

    int64_t neuron_row(const std::string& hook, int64_t index) {
        const auto key = std::make_pair(hook, index);
        if (auto it = neuron_ids_.find(key); it != neuron_ids_.end()) return it->second;
        insert_neuron_->run(model_id_, hook, nscope::common::hook_layer(hook), index);
        const int64_t id = find_neuron_->scalar(model_id_, hook, index).value();
        neuron_ids_.emplace(key, id);
        return id;
    }

    void ensure_prompt(Database& db, int64_t prompt) {
        if (prompt < 0 || prompts_.count(prompt)) return;
        Statement ins(db.handle(), "INSERT INTO prompts (run_id, prompt, text, labels_json, n_tokens) VALUES (?, ?, '', NULL, 0)");
        ins.run(run_id_, prompt);
        prompts_.insert(prompt);
    }

    void write_run(Database& db, const nscope::ExportContext& ctx) {
        static const json empty = json::object();
        const json& m = ctx.manifest && ctx.manifest->is_object() ? *ctx.manifest : empty;
        const nscope::RunContext* run = ctx.run;
        // A merged run is written in a temporary folder and moved to the one its manifest names.
        const fs::path run_dir =
            fs::absolute(m.contains("run_dir") ? fs::path(m.value("run_dir", "")) : ctx.run_dir).lexically_normal();
        // Identity of the run: recipe name, run directory id, model label (multi-model runs write one
        // subfolder per model, and each becomes its own row).
        const std::string name = m.value("name", run_dir.parent_path().filename().string());
        const std::string key = m.value("run_id", run_dir.string());
        std::string label;
        if (m.contains("models") && m["models"].is_array() && m["models"].size() > 1) label = run_dir.filename().string();

        model_id_ = model_row(db, ctx);
        Statement del(db.handle(), "DELETE FROM runs WHERE name = ? AND run_key = ? AND label = ?");
        del.run(name, key, label);  // re-export of the same run: replace (cascades to every per-run table)

        const size_t n_prompts = run ? run->prompts.size() : 0;
        int64_t n_tokens = 0;
        if (run)
            for (const auto* p : run->prompts) n_tokens += p ? static_cast<int64_t>(p->tokens.size()) : 0;
        Statement ins_run(db.handle(),
                          "INSERT INTO runs (name, run_key, label, model_id, run_dir, started, seed, nscope_version, "
                          "n_prompts, n_tokens, recipe_json, exported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        ins_run.run(name, key, label, model_id_, run_dir.string(),
                    m.contains("started") ? std::optional<std::string>(m.value("started", "")) : std::nullopt,
                    run ? std::optional<int64_t>(static_cast<int64_t>(run->seed)) : opt_int(m, "seed"),
                    m.value("nscope_version", std::string(NSCOPE_VERSION_STRING)), n_prompts, n_tokens,
                    m.contains("recipe") ? std::optional<std::string>(dump(m["recipe"])) : std::nullopt, now_utc());
        run_id_ = db.last_id();

        insert_neuron_ = std::make_unique<Statement>(
            db.handle(), "INSERT OR IGNORE INTO neurons (model_id, hook, layer, neuron) VALUES (?, ?, ?, ?)");
        find_neuron_ = std::make_unique<Statement>(
            db.handle(), "SELECT neuron_id FROM neurons WHERE model_id = ? AND hook = ? AND neuron = ?");
        neuron_ids_.clear();
        prompts_.clear();
        GenericWriter generic(db, run_id_);

        write_prompts(db, ctx);
        for (const auto& id : ctx.analysis_order) {
            const auto it = ctx.results.find(id);
            if (it == ctx.results.end() || !it->second) continue;
            const auto plugin_it = ctx.analysis_plugins.find(id);
            const std::string plugin = plugin_it == ctx.analysis_plugins.end() ? "" : plugin_it->second;
            const nscope::Result& res = *it->second;
            Statement ins(db.handle(), "INSERT INTO analyses (run_id, analysis, plugin, summary_json) VALUES (?, ?, ?, ?)");
            ins.run(run_id_, id, plugin,
                    res.data.contains("summary") ? std::optional<std::string>(dump(res.data["summary"])) : std::nullopt);
            const auto bespoke = bespoke_writers().find(plugin);
            if (bespoke != bespoke_writers().end()) (this->*bespoke->second.write)(db, id, res);
            generic.write(id, res, bespoke != bespoke_writers().end() ? &bespoke->second.tables : nullptr);
        }
        insert_neuron_.reset();
        find_neuron_.reset();
    }

    void write_prompts(Database& db, const nscope::ExportContext& ctx) {
        if (!ctx.run) return;
        Statement ins_p(db.handle(), "INSERT INTO prompts (run_id, prompt, text, labels_json, n_tokens) VALUES (?, ?, ?, ?, ?)");
        Statement ins_t(db.handle(), "INSERT INTO tokens (run_id, prompt, position, token_id, token) VALUES (?, ?, ?, ?, ?)");
        for (const auto* p : ctx.run->prompts) {
            if (!p) continue;
            const auto idx = static_cast<int64_t>(p->index);
            const auto ids_it = ids_.find(p->index);
            const std::vector<int32_t>* ids = ids_it == ids_.end() ? nullptr : &ids_it->second;
            const size_t n = std::max(p->tokens.size(), ids ? ids->size() : 0);
            ins_p.run(run_id_, idx, p->text,
                      p->labels.is_null() ? std::nullopt : std::optional<std::string>(dump(p->labels)), n);
            prompts_.insert(idx);
            for (size_t pos = 0; pos < n; ++pos) {
                std::optional<int64_t> id;
                if (ids && pos < ids->size()) id = (*ids)[pos];
                std::string text = pos < p->tokens.size() ? p->tokens[pos]
                                   : (id && ctx.run->token_text) ? ctx.run->token_text(*id)
                                                                  : "";
                ins_t.run(run_id_, idx, static_cast<int64_t>(pos), id, text);
            }
        }
    }

    void write_stats(Database& db, const std::string& id, const nscope::Result& res) {
        const TableView layers(res.data, "layers");
        const double threshold =
            res.data.contains("summary") && res.data["summary"].contains("threshold") && res.data["summary"]["threshold"].is_number()
                ? res.data["summary"]["threshold"].get<double>()
                : std::nan("");
        Statement ins(db.handle(),
                      "INSERT INTO neuron_stats (run_id, analysis, neuron_id, count, mean, std, min, max, frac_active, "
                      "frac_positive, skewness, kurtosis, threshold) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        for (size_t r = 0; r < layers.size(); ++r) {
            const std::string hook = layers.text(r, "hook");
            const int64_t count = layers.integer(r, "count", 0);
            auto arr = [&](const char* what) -> const nscope::NdArray* {
                const auto it = res.arrays.find(hook + "." + what);
                return it == res.arrays.end() || it->second.is_int64 ? nullptr : &it->second;
            };
            const nscope::NdArray* mean = arr("mean");
            if (!mean) continue;
            const nscope::NdArray *sd = arr("std"), *mn = arr("min"), *mx = arr("max"), *fa = arr("frac_active"),
                                  *fp = arr("frac_positive"), *sk = arr("skewness"), *ku = arr("kurtosis");
            auto at = [](const nscope::NdArray* a, size_t j) {
                return a && j < a->f32.size() ? static_cast<double>(a->f32[j]) : std::nan("");
            };
            for (size_t j = 0; j < mean->f32.size(); ++j)
                ins.run(run_id_, id, neuron_row(hook, static_cast<int64_t>(j)), count, at(mean, j), at(sd, j), at(mn, j),
                        at(mx, j), at(fa, j), at(fp, j), at(sk, j), at(ku, j), threshold);
        }
    }

    void write_dead(Database& db, const std::string& id, const nscope::Result& res) {
        const TableView layers(res.data, "layers"), neurons(res.data, "neurons");
        Statement ins_h(db.handle(),
                        "INSERT INTO hook_health (run_id, analysis, hook, layer, neurons, tokens, dead, always_on, flat) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
        for (size_t r = 0; r < layers.size(); ++r)
            ins_h.run(run_id_, id, layers.text(r, "hook"), layers.integer(r, "layer"), layers.integer(r, "neurons", 0),
                      layers.integer(r, "tokens", 0), layers.integer(r, "dead", 0), layers.integer(r, "always_on", 0),
                      layers.integer(r, "flat", 0));
        Statement ins(db.handle(),
                      "INSERT OR IGNORE INTO neuron_flags (run_id, analysis, neuron_id, category, max, frac_active, mean, "
                      "std) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
        for (size_t r = 0; r < neurons.size(); ++r) {
            const int64_t j = neurons.integer(r, "neuron");
            const std::string cat = neurons.text(r, "category");
            if (j < 0 || (cat != "dead" && cat != "always_on" && cat != "flat")) continue;
            ins.run(run_id_, id, neuron_row(neurons.text(r, "hook"), j), cat, neurons.number(r, "max"),
                    neurons.number(r, "frac_active"), neurons.number(r, "mean"), neurons.number(r, "std"));
        }
    }

    std::optional<int64_t> source_neuron(const std::string& source, int64_t neuron) {
        if (neuron < 0 || source.rfind("group:", 0) == 0) return std::nullopt;
        return neuron_row(source, neuron);
    }

    void write_topk(Database& db, const std::string& id, const nscope::Result& res) {
        const TableView acts(res.data, "top_activations");
        Statement ins(db.handle(),
                      "INSERT INTO top_examples (run_id, analysis, source, neuron, rank, neuron_id, value, "
                      "prompt, position, token_id, token, before, after, context) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        for (size_t r = 0; r < acts.size(); ++r) {
            const std::string source = acts.text(r, "source");
            const int64_t neuron = acts.integer(r, "neuron");
            const int64_t prompt = acts.integer(r, "prompt");
            if (prompt < 0) continue;
            ensure_prompt(db, prompt);
            const std::string before = acts.text(r, "before"), token = acts.text(r, "token"), after = acts.text(r, "after");
            const int64_t token_id = acts.integer(r, "token_id");
            ins.run(run_id_, id, source, neuron, acts.integer(r, "rank"), source_neuron(source, neuron),
                    acts.number(r, "value"), prompt, acts.integer(r, "position"),
                    token_id >= 0 ? std::optional<int64_t>(token_id) : std::nullopt, token, before, after,
                    before + token + after);
        }
        Statement ins_ng(db.handle(),
                         "INSERT INTO top_ngrams (run_id, analysis, source, neuron, kind, n, rank, neuron_id, "
                         "ngram, ids, value, count, exact, prompt, position) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        for (const char* kind : {"max", "mean"}) {
            const TableView t(res.data, std::string("top_ngrams_") + kind);
            const bool is_max = std::string(kind) == "max";
            for (size_t r = 0; r < t.size(); ++r) {
                const std::string source = t.text(r, "source");
                const int64_t neuron = t.integer(r, "neuron");
                const auto& exact = t.cell(r, "exact");
                ins_ng.run(run_id_, id, source, neuron, std::string(kind), t.integer(r, "n"), t.integer(r, "rank"),
                           source_neuron(source, neuron), t.text(r, "ngram"), t.text(r, "ids"),
                           t.number(r, is_max ? "max" : "mean"),
                           is_max ? std::nullopt : std::optional<int64_t>(t.integer(r, "count", 0)),
                           exact.is_boolean() ? std::optional<int64_t>(exact.get<bool>() ? 1 : 0) : std::nullopt,
                           is_max ? std::optional<int64_t>(t.integer(r, "prompt")) : std::nullopt,
                           is_max ? std::optional<int64_t>(t.integer(r, "position")) : std::nullopt);
            }
        }
    }

    void write_compare(Database& db, const std::string& id, const nscope::Result& res) {
        const TableView pairs(res.data, "pairs"), top(res.data, "top_neurons");
        Statement ins(db.handle(),
                      "INSERT OR REPLACE INTO prompt_comparisons (run_id, analysis, pair, a, b, hook, layer, cosine, mse) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
        std::set<std::pair<int64_t, std::string>> written;
        for (size_t r = 0; r < pairs.size(); ++r) {
            const int64_t a = pairs.integer(r, "a"), b = pairs.integer(r, "b");
            if (a < 0 || b < 0) continue;
            ensure_prompt(db, a);
            ensure_prompt(db, b);
            const std::string hook = pairs.text(r, "hook");
            ins.run(run_id_, id, pairs.integer(r, "pair"), a, b, hook, pairs.integer(r, "layer"),
                    pairs.number(r, "cosine"), pairs.number(r, "mse"));
            written.emplace(pairs.integer(r, "pair"), hook);
        }
        Statement ins_n(db.handle(),
                        "INSERT OR REPLACE INTO comparison_neurons (run_id, analysis, pair, hook, rank, neuron_id, "
                        "a_value, b_value, diff) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
        for (size_t r = 0; r < top.size(); ++r) {
            const std::string hook = top.text(r, "hook");
            const int64_t pair = top.integer(r, "pair"), neuron = top.integer(r, "neuron");
            if (neuron < 0 || !written.count({pair, hook})) continue;
            ins_n.run(run_id_, id, pair, hook, top.integer(r, "rank"), neuron_row(hook, neuron),
                      top.number(r, "a_value"), top.number(r, "b_value"), top.number(r, "diff"));
        }
    }

    std::string path_ = "results/neurons.sqlite";
    std::map<size_t, std::vector<int32_t>> ids_;  ///< prompt index -> token ids (real positions)
    // Per-export state.
    int64_t model_id_ = 0, run_id_ = 0;
    std::map<std::pair<std::string, int64_t>, int64_t> neuron_ids_;
    std::set<int64_t> prompts_;
    std::unique_ptr<Statement> insert_neuron_, find_neuron_;
};

}  // namespace

NSCOPE_EXPORTER_PLUGIN(SqliteExporter, "sqlite", "1.0.0",
                       "neuron database (SQLite): prompts, tokens, neuron stats, top examples, comparisons; runs accumulate")

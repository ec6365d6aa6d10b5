#include "core/serve/runs.h"

#include <algorithm>
#include <fstream>
#include <memory>
#include <vector>

#include <spdlog/spdlog.h>
#include <sqlite3.h>

namespace nscope::serve {

namespace fs = std::filesystem;
using json = nlohmann::json;

RunIndex::RunIndex(fs::path root) {
    if (root.empty()) return;
    std::error_code ec;
    root_ = fs::canonical(root, ec);
    if (ec || !fs::is_directory(root_)) throw std::invalid_argument("--runs: '" + root.string() + "' is not a directory");
}

namespace {

json read_manifest(const fs::path& dir) {
    std::ifstream in(dir / "manifest.json");
    json m = json::parse(in, nullptr, false);
    return m.is_object() ? m : json::object();
}

std::vector<fs::path> run_dirs(const fs::path& root) {
    std::vector<fs::path> out;
    std::error_code ec;
    if (fs::exists(root / "manifest.json")) out.push_back(root);
    for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (it.depth() >= 3) {
            it.disable_recursion_pending();
            continue;
        }
        if (it->is_directory(ec) && !it->is_symlink(ec) && fs::exists(it->path() / "manifest.json")) {
            out.push_back(it->path());
            it.disable_recursion_pending();  // a run's own subfolders are not runs
        }
    }
    return out;
}

std::vector<fs::path> databases(const fs::path& run) {
    std::vector<fs::path> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(run / "results", ec))
        if (e.is_regular_file(ec) && e.path().extension() == ".sqlite") out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
}

// ---- SQLite, read-only ----------------------------------------------------------------------------------------

struct Db {
    sqlite3* db = nullptr;
    explicit Db(const fs::path& p) {
        if (sqlite3_open_v2(p.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
            sqlite3_close(db);
            db = nullptr;
        } else {
            sqlite3_busy_timeout(db, 2000);
        }
    }
    ~Db() { sqlite3_close(db); }
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;

    /// Rows as objects keyed by column name; an SQL error (an older schema, a table missing) gives no rows.
    json query(const std::string& sql, const std::vector<json>& args) const {
        json rows = json::array();
        sqlite3_stmt* st = nullptr;
        if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) return rows;
        for (size_t i = 0; i < args.size(); ++i) {
            const int k = static_cast<int>(i + 1);
            if (args[i].is_number_integer()) sqlite3_bind_int64(st, k, args[i].get<int64_t>());
            else sqlite3_bind_text(st, k, args[i].get<std::string>().c_str(), -1, SQLITE_TRANSIENT);
        }
        while (sqlite3_step(st) == SQLITE_ROW) {
            json row = json::object();
            for (int c = 0; c < sqlite3_column_count(st); ++c) {
                const char* name = sqlite3_column_name(st, c);
                switch (sqlite3_column_type(st, c)) {
                    case SQLITE_INTEGER: row[name] = sqlite3_column_int64(st, c); break;
                    case SQLITE_FLOAT: row[name] = sqlite3_column_double(st, c); break;
                    case SQLITE_NULL: row[name] = nullptr; break;
                    default: row[name] = reinterpret_cast<const char*>(sqlite3_column_text(st, c));
                }
            }
            rows.push_back(std::move(row));
        }
        sqlite3_finalize(st);
        return rows;
    }
};

/// Does a generic result row name this neuron? `neuron` equal, or `neurons` listing it (array or text).
bool row_names_neuron(const json& row, int64_t neuron) {
    if (row.contains("neuron") && row["neuron"].is_number_integer()) return row["neuron"].get<int64_t>() == neuron;
    if (!row.contains("neurons")) return false;
    const json& ns = row["neurons"];
    if (ns.is_array())
        return std::any_of(ns.begin(), ns.end(), [&](const json& x) { return x.is_number_integer() && x.get<int64_t>() == neuron; });
    if (ns.is_string()) {  // "3, 17, 42"
        const std::string s = ns.get<std::string>(), n = std::to_string(neuron);
        for (size_t at = s.find(n); at != std::string::npos; at = s.find(n, at + 1)) {
            const bool left = at == 0 || !isdigit(static_cast<unsigned char>(s[at - 1]));
            const bool right = at + n.size() == s.size() || !isdigit(static_cast<unsigned char>(s[at + n.size()]));
            if (left && right) return true;
        }
    }
    return false;
}

json lookup(const fs::path& file, const json& info, const std::string& model_name, const std::string& hook,
            int64_t neuron, int limit) {
    Db db(file);
    if (db.db == nullptr) return nullptr;
    // The database's models of this architecture and size; one of the serve model's folder name first.
    const json models = db.query(
        "SELECT model_id, name FROM models WHERE architecture = ?1 AND n_layers = ?2 AND d_model = ?3 "
        "ORDER BY model_id DESC",
        {info.value("architecture", ""), info.value("n_layers", int64_t{0}), info.value("d_model", int64_t{0})});
    std::vector<json> ordered;
    for (const auto& m : models)
        if (fs::path(m["name"].get<std::string>()).filename() == model_name) ordered.push_back(m);
    for (const auto& m : models)
        if (fs::path(m["name"].get<std::string>()).filename() != model_name) ordered.push_back(m);
    for (const auto& m : ordered) {
        const json ids = db.query("SELECT neuron_id FROM neurons WHERE model_id = ?1 AND hook = ?2 AND neuron = ?3",
                                  {m["model_id"], hook, neuron});
        if (ids.empty()) continue;
        const json id = ids[0]["neuron_id"];
        const json lim = limit;
        json out = {{"database", file.string()}, {"model", m["name"]}};
        out["stats"] = db.query(
            "SELECT r.name AS run, r.run_key, s.analysis, s.count, s.mean, s.std, s.min, s.max, s.frac_active, "
            "s.frac_positive, s.skewness, s.kurtosis FROM neuron_stats s JOIN runs r USING (run_id) "
            "WHERE s.neuron_id = ?1 ORDER BY r.run_id DESC LIMIT 5", {id});
        out["flags"] = db.query(
            "SELECT r.name AS run, f.analysis, f.category FROM neuron_flags f JOIN runs r USING (run_id) "
            "WHERE f.neuron_id = ?1 ORDER BY r.run_id DESC", {id});
        out["top_examples"] = db.query(
            "SELECT e.rank, e.value, e.prompt, e.position, e.token, e.before, e.after, r.name AS run, r.run_key "
            "FROM top_examples e JOIN runs r USING (run_id) WHERE e.neuron_id = ?1 "
            "ORDER BY r.run_id DESC, e.rank LIMIT ?2", {id, lim});
        out["top_ngrams"] = db.query(
            "SELECT g.kind, g.n, g.rank, g.ngram, g.value, g.count FROM top_ngrams g "
            "WHERE g.neuron_id = ?1 ORDER BY g.run_id DESC, g.kind, g.n, g.rank LIMIT ?2", {id, json(limit * 4)});
        // Generic rows of the analyses that speak about neurons (cluster, polysemantic, drift, any plugin's).
        json entries = json::array();
        const json rows = db.query(
            "SELECT a.plugin, t.analysis, t.name AS table_name, t.values_json FROM result_rows t "
            "JOIN analyses a USING (run_id, analysis) JOIN runs r USING (run_id) "
            "WHERE r.model_id = ?1 AND json_extract(t.values_json, '$.hook') = ?2 ORDER BY t.run_id DESC, t.row",
            {m["model_id"], hook});
        for (const auto& r : rows) {
            const json v = json::parse(r["values_json"].get<std::string>(), nullptr, false);
            if (!v.is_object() || !row_names_neuron(v, neuron)) continue;
            entries.push_back({{"plugin", r["plugin"]}, {"analysis", r["analysis"]}, {"table", r["table_name"]}, {"row", v}});
            if (static_cast<int>(entries.size()) >= limit * 4) break;
        }
        out["analyses"] = std::move(entries);
        return out;
    }
    return nullptr;
}

}  // namespace

json RunIndex::list() const {
    json out = json::array();
    if (!enabled()) return out;
    for (const auto& dir : run_dirs(root_)) {
        const json m = read_manifest(dir);
        json dbs = json::array();
        for (const auto& d : databases(dir)) dbs.push_back(fs::relative(d, root_).generic_string());
        json model = m.contains("model") ? m["model"] : json(nullptr);
        if (model.is_object() && model.contains("name")) model = model["name"];
        out.push_back({{"path", fs::relative(dir, root_).generic_string()},
                       {"name", m.value("name", dir.filename().string())},
                       {"status", m.value("status", "")},
                       {"started", m.value("started", "")},
                       {"model", model},
                       {"report", fs::exists(dir / "report.html")},
                       {"databases", dbs}});
    }
    std::stable_sort(out.begin(), out.end(), [](const json& a, const json& b) {
        return a["started"].get<std::string>() > b["started"].get<std::string>();
    });
    return out;
}

std::optional<fs::path> RunIndex::resolve(const std::string& rel) const {
    if (!enabled() || rel.empty() || rel.find('\0') != std::string::npos) return std::nullopt;
    const fs::path p(rel);
    if (p.is_absolute() || p.has_root_name() || p.has_root_directory()) return std::nullopt;
    for (const auto& part : p)
        if (part == "..") return std::nullopt;
    std::error_code ec;
    const fs::path full = fs::canonical(root_ / p, ec);  // symlinks resolved: a link out of the root is refused too
    if (ec) return std::nullopt;
    const std::string r = root_.string() + "/", f = full.string();
    if (f.compare(0, r.size(), r) != 0) return std::nullopt;
    if (!fs::is_regular_file(full, ec)) return std::nullopt;
    return full;
}

json RunIndex::neuron(const json& model_info, const std::string& model_name, const std::string& hook,
                      int64_t neuron, const std::string& run, int limit) const {
    if (!enabled() || !model_info.is_object()) return nullptr;
    for (const auto& r : list()) {
        if (!run.empty() && r["path"] != run) continue;
        for (const auto& d : r["databases"]) {
            const auto file = resolve(d.get<std::string>());
            if (!file) continue;
            json found = lookup(*file, model_info, model_name, hook, neuron, limit);
            if (!found.is_null()) {
                found["run"] = r["path"];
                found["database"] = d;
                return found;
            }
        }
    }
    return nullptr;
}

}  // namespace nscope::serve

// Runs that die or run out of space (docs/robustness.md): `kill -9` at random moments and a full disk.
// What a reader of the run store may rely on afterwards: the manifest says whether a run is whole (a killed
// run stays "running"), every file under a final name is whole (files are staged and renamed), the shared
// SQLite neuron database is intact and takes the next run.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <sqlite3.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/util/files.h"
#include "core/util/npy.h"
#include "nscope/io.h"
#include "tests/support/cli.h"

namespace fs = std::filesystem;
using namespace nscope;

namespace {

const std::string kGpt2 = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/models/gpt2";

std::string write_recipe(const std::string& dir, const std::string& body) {
    const std::string p = dir + "/recipe.yaml";
    std::ofstream(p) << body;
    return p;
}

/// `n` prompts of 6 token ids each as ids.npy in `dir` (ids prompts need no tokenizer).
void write_ids(const std::string& dir, int64_t n) {
    std::vector<int64_t> ids(static_cast<size_t>(n) * 6);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 7919) % 997);
    write_file_atomic(dir + "/ids.npy", npy_encode(ids.data(), true, {n, 6}));
}

/// Staged files: the host's `<name>.tmp.<pid>` and the activations exporter's `.<name>.partial.<pid>`.
bool is_staged(const fs::path& p) {
    const std::string f = p.filename().string();
    return f.find(".tmp.") != std::string::npos || f.find(".partial.") != std::string::npos;
}

/// Every file under a final name in `run` is whole: JSON parses, .npy parses with all its data. Staged
/// files (*.tmp.<pid>) may be left behind by a killed process; their names say they are not results.
void check_files_whole(const fs::path& run) {
    for (const auto& e : fs::recursive_directory_iterator(run)) {
        if (!e.is_regular_file() || is_staged(e.path())) continue;
        INFO(e.path().string());
        const std::string ext = e.path().extension().string();
        if (ext == ".json") {
            std::ifstream in(e.path());
            CHECK_NOTHROW(nlohmann::json::parse(in));
        } else if (ext == ".npy") {
            CHECK_NOTHROW(read_npy(e.path()));
        } else if (ext == ".html") {
            CHECK_THAT(nscope::test::read_file(e.path().string()), Catch::Contains("</html>"));
        }
    }
}

/// SQLite's own check of a database file, plus its foreign keys: "ok" when intact.
std::string sqlite_check(const fs::path& db_path) {
    sqlite3* db = nullptr;
    // Read-write: a hot journal left by a killed writer is rolled back on open, as the next run would.
    REQUIRE(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
    std::string result;
    auto collect = [](void* out, int n, char** values, char**) {
        auto* s = static_cast<std::string*>(out);
        for (int i = 0; i < n; ++i) *s += std::string(values[i] ? values[i] : "NULL") + ";";
        return 0;
    };
    char* err = nullptr;
    std::string integrity, foreign;
    if (sqlite3_exec(db, "PRAGMA integrity_check", collect, &integrity, &err) != SQLITE_OK) integrity = err;
    sqlite3_free(err);
    err = nullptr;
    if (sqlite3_exec(db, "PRAGMA foreign_key_check", collect, &foreign, &err) != SQLITE_OK) foreign = err;
    sqlite3_free(err);
    sqlite3_close(db);
    return integrity == "ok;" && foreign.empty() ? "ok" : integrity + " " + foreign;
}

int64_t sqlite_count(const fs::path& db_path, const std::string& sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    const int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

std::set<fs::path> run_dirs(const fs::path& root) {
    std::set<fs::path> r;
    if (fs::exists(root))
        for (const auto& e : fs::directory_iterator(root)) r.insert(e.path());
    return r;
}

}  // namespace

TEST_CASE("kill -9 at 10 random moments: a killed run never reads as complete, no torn file, the shared SQLite "
          "database stays intact and takes the next run",
          "[run][crash]") {
    const std::string dir = nscope::test::temp_dir("kill9");
    const fs::path db = fs::path(dir) / "shared" / "neurons.sqlite";
    write_ids(dir, 600);
    const std::string recipe = write_recipe(dir, "name: crash\nmodel: { path: " + kGpt2 + R"( }
prompts: [ { ids_file: ids.npy } ]
batch_size: 4
hooks: [ "blocks.*.mlp.hook_post", "blocks.*.hook_resid_post" ]
analyses: [ { id: stats, use: stats }, { id: top, use: topk, k: 5 } ]
exports: [ json, activations, { use: sqlite, path: )" + db.string() + " } ]\n");
    const std::vector<std::string> args = {"run", recipe, "--out", dir + "/runs"};
    const fs::path root = fs::path(dir) / "runs" / "crash";

    // One whole run first: it fills the database and tells how long a run takes, so that the kills below
    // spread over every phase (start, model load, forward passes, analyses, each export). The duration only
    // picks the moments; nothing asserts on time.
    const auto t0 = std::chrono::steady_clock::now();
    const auto first = nscope::test::run_nscope(args);
    const auto whole = std::chrono::steady_clock::now() - t0;
    INFO(first.err);
    REQUIRE(first.exit_code == 0);
    REQUIRE(sqlite_check(db) == "ok");
    int64_t runs_in_db = sqlite_count(db, "SELECT count(*) FROM runs");
    REQUIRE(runs_in_db == 1);

    const unsigned seed = std::random_device{}();
    INFO("kill moments seeded with " << seed);
    std::mt19937 rng(seed);
    const auto whole_us = std::chrono::duration_cast<std::chrono::microseconds>(whole).count();
    std::uniform_int_distribution<int64_t> moment(0, whole_us * 11 / 10);
    int killed = 0;
    for (int i = 0; i < 10; ++i) {
        const auto before = run_dirs(root);
        const int64_t at_us = moment(rng);
        INFO("kill " << i << " after " << at_us << " us (a whole run took " << whole_us << " us)");
        const auto proc = nscope::test::start_nscope(args);
        std::this_thread::sleep_for(std::chrono::microseconds(at_us));
        ::kill(proc.pid, SIGKILL);
        const auto r = nscope::test::wait_nscope(proc);
        const bool finished = r.exit_code == 0;  // the run may have ended before the signal landed
        killed += finished ? 0 : 1;
        if (!finished) CHECK(r.exit_code == 128 + SIGKILL);

        bool reads_complete = finished;
        for (const auto& run : run_dirs(root)) {
            if (before.count(run)) continue;
            INFO(run.string());
            const fs::path manifest = run / "manifest.json";
            if (fs::exists(manifest)) {  // a kill before the first manifest write leaves only the folder
                std::ifstream in(manifest);
                const auto m = nlohmann::json::parse(in);  // atomic writes: never torn
                const std::string status = m["status"].get<std::string>();
                if (finished) {
                    CHECK(status == "complete");
                } else {
                    // Killed: still "running", or "complete" when the signal landed after the manifest's last
                    // write, while the process was exiting (unloading plugins). Then all it promised is there.
                    CHECK((status == "running" || status == "complete"));
                    if (status == "complete") {
                        reads_complete = true;
                        CHECK(fs::exists(run / "results" / "stats.json"));
                        CHECK(fs::exists(run / "results" / "top.json"));
                    }
                }
            } else {
                CHECK_FALSE(finished);
                CHECK_FALSE(fs::exists(run / "results"));
            }
            check_files_whole(run);
        }
        CHECK(sqlite_check(db) == "ok");
        // One transaction per export: a killed export adds nothing, a committed one adds its run.
        const int64_t now = sqlite_count(db, "SELECT count(*) FROM runs");
        CHECK((now == runs_in_db || now == runs_in_db + 1));
        if (reads_complete) CHECK(now == runs_in_db + 1);  // complete is written after the exports
        runs_in_db = now;
    }
    CHECK(killed > 0);

    // The next run into the same database works and adds its run.
    const auto before = run_dirs(root);
    const auto last = nscope::test::run_nscope(args);
    INFO(last.err);
    REQUIRE(last.exit_code == 0);
    CHECK(sqlite_check(db) == "ok");
    CHECK(sqlite_count(db, "SELECT count(*) FROM runs") == runs_in_db + 1);
    for (const auto& run : run_dirs(root))
        if (!before.count(run)) {
            std::ifstream in(run / "manifest.json");
            CHECK(nlohmann::json::parse(in)["status"] == "complete");
            check_files_whole(run);
        }
}

TEST_CASE("a full disk under --out: exit 3 naming the path, no partial file under a final name", "[run][crash][disk]") {
    const std::string dir = nscope::test::temp_dir("fulldisk");
    write_ids(dir, 200);
    const std::string recipe = write_recipe(dir, "name: full\nmodel: { path: " + kGpt2 + R"( }
prompts: [ { ids_file: ids.npy } ]
batch_size: 8
hooks: [ "blocks.*.mlp.hook_post" ]
analyses: [ { id: stats, use: stats }, { id: top, use: topk, k: 5 } ]
exports: [ json, activations, { use: sqlite }, report ]
)");
    // Sizes that run out during different writes: the manifest / log, the results, the activations.
    for (const char* size : {"16k", "96k", "1m"}) {
        DYNAMIC_SECTION("tmpfs of " << size) {
            const fs::path out = fs::path(dir) / (std::string("out-") + size);
            fs::create_directories(out);
            const std::string opts = std::string("size=") + size;
            if (::mount("tmpfs", out.c_str(), "tmpfs", 0, opts.c_str()) != 0) {
                WARN("skipped: cannot mount a tmpfs at " << out.string() << " (" << std::strerror(errno)
                                                         << "); run this test as root where mount is permitted");
                return;
            }
            struct Unmount {
                fs::path p;
                ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
            } unmount{out};
            const auto r = nscope::test::run_nscope({"run", recipe, "--out", out.string()});
            INFO(r.err);
            CHECK(r.exit_code == 3);
            CHECK_THAT(r.err, Catch::Contains(out.string()) && Catch::Contains("No space left on device"));
            // Nothing staged is left behind, and what has a final name is whole.
            for (const auto& e : fs::recursive_directory_iterator(out)) {
                INFO(e.path().string());
                CHECK_FALSE(is_staged(e.path()));
            }
            for (const auto& run : run_dirs(out / "full")) {
                check_files_whole(run);
                const fs::path manifest = run / "manifest.json";
                if (fs::exists(manifest)) {
                    std::ifstream in(manifest);
                    CHECK(nlohmann::json::parse(in)["status"] != "complete");
                }
            }
        }
    }
}

// Studies past one process (docs/scale.md), end to end through the nscope binary on the bundled GPT-2
// fixture: `--shard i/n` + `nscope merge` equal the single-process run; `--checkpoint-every` + `kill -9` +
// `--resume` equal an uninterrupted run; every refusal exits 2 naming what does not fit.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>

#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/run/rerun.h"
#include "core/util/files.h"
#include "core/util/npy.h"
#include "tests/support/cli.h"

namespace fs = std::filesystem;
using namespace nscope;
using nscope::test::run_nscope;

namespace {

const std::string kGpt2 = std::string(NSCOPE_SOURCE_DIR) + "/tests/fixtures/models/gpt2";

/// `n` prompts of varying length (4..9 token ids) as ids.jsonl-free text: one ids.npy row each would pad,
/// so prompts are written inline as `ids:` lists.
std::string prompts_yaml(int n) {
    std::string s = "prompts:\n";
    for (int i = 0; i < n; ++i) {
        s += "  - { ids: [";
        const int len = 4 + (i * 5) % 6;
        for (int t = 0; t < len; ++t) s += (t ? ", " : "") + std::to_string((i * 131 + t * 17 + 3) % 997);
        s += "] }\n";
    }
    return s;
}

std::string write_recipe(const std::string& dir, const std::string& name, const std::string& analyses,
                         const std::string& exports, int prompts, int batch_size) {
    const std::string p = dir + "/" + name + ".yaml";
    std::ofstream(p) << "name: " << name << "\nmodel: { path: " << kGpt2 << " }\n"
                     << prompts_yaml(prompts) << "batch_size: " << batch_size
                     << "\nhooks: [ \"blocks.*.mlp.hook_post\", \"blocks.1.hook_resid_post\" ]\n"
                     << "analyses:\n" << analyses << "exports: " << exports << "\n";
    return p;
}

const std::string kAnalyses = R"(  - { id: stats, use: stats, neuron_table: true }
  - { id: dead, use: dead, epsilon: 0.05, on_fraction: 0.5 }
  - { id: top, use: topk, k: 4, context: 2, ngram: 2 }
  - { id: heat, use: heatmap, prompts: [2, 13, 25], top_n: 5 }
)";

/// The streaming geometry analyzers: covariances (pca, linear cka, cluster linkage) and point samples (pca,
/// cluster kmeans; caps below the corpus's tokens, so shards' samples compete in the merge).
const std::string kGeometry = R"(  - { id: pca, use: pca, k: 3, points: 40 }
  - { id: cka, use: cka }
  - { id: linkage, use: cluster, threshold: 0.6 }
  - { id: kmeans, use: cluster, method: kmeans, k: 2, points: 40, n_init: 2 }
)";

/// The run directory a `nscope run` / `merge` printed on stdout (its last line).
fs::path printed_dir(const nscope::test::CliResult& r) {
    std::string out = r.out;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return fs::path(out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1));
}

nlohmann::json manifest(const fs::path& run) {
    std::ifstream in(run / "manifest.json");
    return nlohmann::json::parse(in);
}

/// Doubles agree to `rel` relative (absolute below 1).
bool close(double a, double b, double rel) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    return std::abs(a - b) <= rel * std::max({1.0, std::abs(a), std::abs(b)});
}

/// Where a merged result may differ from the single pass: floating-point values, and only by rounding
/// (the shards' moments are combined in another order). Integers, strings, lists and every top-k or
/// dead-set entry must be equal.
void check_json_close(const nlohmann::json& a, const nlohmann::json& b, const std::string& where, double rel) {
    INFO(where);
    if (a.is_number_float() || b.is_number_float()) {
        REQUIRE(a.is_number());
        REQUIRE(b.is_number());
        CHECK(close(a.get<double>(), b.get<double>(), rel));
        return;
    }
    REQUIRE(a.type() == b.type());
    if (a.is_object()) {
        REQUIRE(a.size() == b.size());
        for (auto it = a.begin(); it != a.end(); ++it) {
            REQUIRE(b.contains(it.key()));
            check_json_close(it.value(), b[it.key()], where + "/" + it.key(), rel);
        }
    } else if (a.is_array()) {
        REQUIRE(a.size() == b.size());
        for (size_t i = 0; i < a.size(); ++i) check_json_close(a[i], b[i], where + "/" + std::to_string(i), rel);
    } else {
        CHECK(a == b);
    }
}

/// The merged run's results equal the single-process run's: JSON results (tables in double) to 1e-9
/// relative, integer arrays exactly, float32 arrays to their own rounding (they are doubles rounded to float).
void check_same_results(const fs::path& single, const fs::path& merged) {
    size_t files = 0;
    for (const auto& e : fs::recursive_directory_iterator(single / "results")) {
        if (!e.is_regular_file()) continue;
        const fs::path rel = fs::relative(e.path(), single);
        INFO(rel.string());
        REQUIRE(fs::exists(merged / rel));
        ++files;
        if (e.path().extension() == ".json") {
            std::ifstream a(e.path()), b(merged / rel);
            check_json_close(nlohmann::json::parse(a), nlohmann::json::parse(b), rel.string(), 1e-9);
        } else if (e.path().extension() == ".npy") {
            const NpyArray a = read_npy(e.path()), b = read_npy(merged / rel);
            REQUIRE(a.descr == b.descr);
            REQUIRE(a.shape == b.shape);
            if (a.descr == "<f4") {
                const auto x = a.to_f32(), y = b.to_f32();
                size_t off = 0;
                for (size_t i = 0; i < x.size(); ++i) off += !close(x[i], y[i], 1e-6);
                CHECK(off == 0);
            } else {
                CHECK(a.bytes == b.bytes);
            }
        }
    }
    CHECK(files > 8);
    size_t merged_files = 0;
    for (const auto& e : fs::recursive_directory_iterator(merged / "results")) merged_files += e.is_regular_file();
    CHECK(merged_files == files);
}

/// A 4-shard study of `analyses` (ids `ids`) merged equals the single-process run; returns the shard dirs and
/// the single run's dir.
struct ShardedStudy {
    std::vector<std::string> shards;
    fs::path single;
};
ShardedStudy check_four_shards(const std::string& dir, const std::string& analyses, const std::vector<std::string>& ids) {
    // 30 prompts in batches of 4: 8 batches, split 2/2/2/2 over 4 shards; the heatmap's prompts, the
    // dead/top-k sets and the point samples span shards.
    const std::string recipe = write_recipe(dir, "study", analyses, "[ json, npy ]", 30, 4);
    const auto single = run_nscope({"run", recipe, "--out", dir + "/single"});
    INFO(single.err);
    REQUIRE(single.exit_code == 0);

    std::vector<std::string> shards;
    for (int i = 0; i < 4; ++i) {
        const auto r = run_nscope({"run", recipe, "--out", dir + "/shards", "--shard", std::to_string(i) + "/4"});
        INFO(r.err);
        REQUIRE(r.exit_code == 0);
        const fs::path shard = printed_dir(r);
        shards.push_back(shard.string());
        const auto m = manifest(shard);
        CHECK(m["shard"]["index"] == i);
        CHECK(m["shard"]["count"] == 4);
        for (const auto& id : ids) CHECK(fs::exists(shard / "state" / (id + ".bin")));
        CHECK_FALSE(fs::exists(shard / "results"));  // a shard exports nothing
    }
    std::vector<std::string> args = {"merge"};
    // Any order on the command line: the merge folds them in shard order.
    args.insert(args.end(), shards.rbegin(), shards.rend());
    args.insert(args.end(), {"--out", dir + "/merged"});
    const auto merged = run_nscope(args);
    INFO(merged.err);
    REQUIRE(merged.exit_code == 0);
    const auto m = manifest(dir + "/merged");
    CHECK(m["status"] == "complete");
    REQUIRE(m["merged_shards"].size() == 4);
    for (int i = 0; i < 4; ++i) CHECK(m["merged_shards"][static_cast<size_t>(i)]["index"] == i);
    CHECK(m["models"][0]["tokens_forwarded"] == manifest(printed_dir(single))["models"][0]["tokens_forwarded"]);
    check_same_results(printed_dir(single), dir + "/merged");
    return {shards, printed_dir(single)};
}

}  // namespace

TEST_CASE("4 shards merged equal the single-process run, and the manifest lists the shards", "[run][shard]") {
    const std::string dir = nscope::test::temp_dir("shards");
    const auto [shards, single_dir] = check_four_shards(dir, kAnalyses, {"stats", "dead", "top", "heat"});

    SECTION("an incomplete, duplicated or mixed shard set is refused, naming the mismatch") {
        auto refused = [&](std::vector<std::string> a, const std::string& why) {
            a.insert(a.begin(), "merge");
            a.insert(a.end(), {"--out", dir + "/refused"});
            const auto r = run_nscope(a);
            INFO(r.err);
            CHECK(r.exit_code == 2);
            CHECK_THAT(r.err, Catch::Contains(why));
            CHECK_FALSE(fs::exists(dir + "/refused"));
        };
        refused({shards[0], shards[1], shards[3]}, "shard(s) 2 of 4 missing");
        refused({shards[0], shards[1], shards[2], shards[2], shards[3]}, "shard 2/4 is given twice");
        refused({shards[0], single_dir.string()}, "is not a shard");
        // A shard of another recipe (another k): the recipe digests differ.
        const std::string other = write_recipe(dir, "study", std::string(kAnalyses).replace(kAnalyses.find("k: 4"), 4, "k: 5"),
                                               "[ json, npy ]", 30, 4);
        const auto r = run_nscope({"run", other, "--out", dir + "/other", "--shard", "3/4"});
        REQUIRE(r.exit_code == 0);
        refused({shards[0], shards[1], shards[2], printed_dir(r).string()}, "shards differ in recipe");
        // Another model: the recorded model hash of one shard is edited.
        const fs::path forged = dir + "/forged";
        fs::copy(shards[3], forged, fs::copy_options::recursive);
        auto fm = manifest(forged);
        fm["models"][0]["sha256"] = std::string(64, '0');
        write_file_atomic(forged / "manifest.json", fm.dump());
        refused({shards[0], shards[1], shards[2], forged.string()}, "shards differ in model hash");
        fm = manifest(shards[3]);
        fm["nscope_version"] = "0.0.9";
        write_file_atomic(forged / "manifest.json", fm.dump());
        refused({shards[0], shards[1], shards[2], forged.string()}, "shards differ in nscope version");
        // A damaged state file: exit 2 naming it, and no merged run.
        write_file_atomic(forged / "manifest.json", manifest(shards[3]).dump());
        const std::string state = nscope::test::read_file((forged / "state" / "top.bin").string());
        write_file_atomic(forged / "state" / "top.bin", state.substr(0, state.size() / 2));
        const auto damaged = run_nscope({"merge", shards[0], shards[1], shards[2], forged.string(), "--out", dir + "/damaged"});
        CHECK(damaged.exit_code == 2);
        CHECK_THAT(damaged.err, Catch::Contains("forged/state/top.bin") &&
                                    Catch::Contains("damaged or incompatible analyzer state"));
        // The merge wrote into a temporary sibling that it removed: nothing at --out, no leftovers beside it.
        CHECK_FALSE(fs::exists(dir + "/damaged"));
        for (const auto& e : fs::directory_iterator(dir))
            CHECK_THAT(e.path().filename().string(), !Catch::Contains("damaged"));
        // An empty folder given as --out stays an empty folder.
        fs::create_directories(dir + "/empty-out");
        const auto again = run_nscope({"merge", shards[0], shards[1], shards[2], forged.string(), "--out", dir + "/empty-out"});
        CHECK(again.exit_code == 2);
        CHECK(fs::is_directory(dir + "/empty-out"));
        CHECK(fs::is_empty(dir + "/empty-out"));
    }
}

TEST_CASE("4 shards of pca, linear cka and cluster (linkage and kmeans) merged equal the single-process run",
          "[run][shard]") {
    check_four_shards(nscope::test::temp_dir("shards-geometry"), kGeometry, {"pca", "cka", "linkage", "kmeans"});
}

TEST_CASE("a sharded recipe with an analysis that cannot save or merge its state is refused at plan time",
          "[run][shard]") {
    const std::string dir = nscope::test::temp_dir("shard-refused");
    const std::string recipe = write_recipe(dir, "refused", "  - { id: stats, use: stats }\n  - { id: lens, use: logit_lens }\n",
                                            "[ json ]", 6, 2);
    for (const std::vector<std::string>& extra : {std::vector<std::string>{"--shard", "0/2"},
                                                  std::vector<std::string>{"--checkpoint-every", "1"}}) {
        std::vector<std::string> args = {"run", recipe, "--out", dir + "/runs"};
        args.insert(args.end(), extra.begin(), extra.end());
        const auto r = run_nscope(args);
        INFO(r.err);
        CHECK(r.exit_code == 2);
        CHECK_THAT(r.err, Catch::Contains("analysis 'lens' (logit_lens)") && Catch::Contains("save its state") &&
                              Catch::Contains(extra[0]));
        CHECK_FALSE(fs::exists(dir + "/runs"));
    }
    // cka saves its state only for the linear method (minibatch CKA depends on where the minibatches fall).
    const std::string minibatch = write_recipe(dir, "minibatch", "  - { id: sim, use: cka, method: minibatch }\n",
                                               "[ json ]", 6, 2);
    const auto mb = run_nscope({"run", minibatch, "--out", dir + "/runs", "--shard", "0/2"});
    CHECK(mb.exit_code == 2);
    CHECK_THAT(mb.err, Catch::Contains("analysis 'sim' (cka)") && Catch::Contains("save its state"));
    for (const char* bad : {"4/4", "1", "a/2", "1/x", "0/0"}) {
        const auto r = run_nscope({"run", recipe, "--out", dir + "/runs", "--shard", bad});
        CHECK(r.exit_code == 2);
        CHECK_THAT(r.err, Catch::Contains("--shard: expected i/n"));
    }
}

namespace {

/// A run of `analyses` killed (-9) once the checkpoint at each of `points` is on disk (0: before any), then
/// resumed, is bit-identical to an uninterrupted run; returns that run's dir.
fs::path check_kill_and_resume(const std::string& dir, const std::string& analyses, const std::vector<size_t>& points) {
    // 48 prompts in batches of 2 (24 batches), a checkpoint every 3.
    const std::string recipe = write_recipe(dir, "long", analyses, "[ json, npy ]", 48, 2);
    const auto whole = run_nscope({"run", recipe, "--out", dir + "/whole", "--checkpoint-every", "3"});
    INFO(whole.err);
    REQUIRE(whole.exit_code == 0);
    const fs::path reference = printed_dir(whole);
    CHECK_FALSE(fs::exists(reference / "checkpoint.json"));  // a complete run keeps no checkpoints

    // Kill once the checkpoint at batch `at` is on disk (0: before any checkpoint).
    for (size_t at : points) {
        INFO("killed after the checkpoint at batch " << at);
        const std::string root = dir + "/killed-" + std::to_string(at);
        const auto proc = nscope::test::start_nscope({"run", recipe, "--out", root, "--checkpoint-every", "3"});
        fs::path run;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
        while (std::chrono::steady_clock::now() < deadline) {
            if (run.empty() && fs::exists(root + "/long"))
                for (const auto& e : fs::directory_iterator(root + "/long")) run = e.path();
            if (!run.empty()) {
                if (at == 0 && fs::exists(run / "manifest.json")) break;
                if (at > 0 && fs::exists(run / "checkpoint.json")) {
                    std::ifstream in(run / "checkpoint.json");
                    nlohmann::json cp;
                    try {
                        cp = nlohmann::json::parse(in);
                    } catch (...) {
                        continue;
                    }
                    if (cp["next_batch"].get<size_t>() >= at) break;
                }
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        ::kill(proc.pid, SIGKILL);
        const auto killed = nscope::test::wait_nscope(proc);
        REQUIRE_FALSE(run.empty());
        if (killed.exit_code == 0) {
            WARN("the run finished before the kill landed; nothing to resume at batch " << at);
            continue;
        }
        CHECK(manifest(run)["status"] == "running");
        const auto resumed = run_nscope({"run", "--resume", run.string()});
        INFO(resumed.err);
        REQUIRE(resumed.exit_code == 0);
        const auto m = manifest(run);
        CHECK(m["status"] == "complete");
        REQUIRE(m["resumes"].size() == 1);
        if (at > 0) CHECK(m["resumes"][0]["next_batch"].get<size_t>() >= at);
        // Restored states are the saved bytes and the remaining batches are the same: bit-identical.
        const RerunReport cmp = compare_runs(reference, run);
        for (const auto& f : cmp.different) FAIL_CHECK("different: " << f);
        for (const auto& f : cmp.missing) FAIL_CHECK("missing: " << f);
        CHECK(cmp.ok());
        CHECK(cmp.identical.size() > 8);
    }
    return reference;
}

}  // namespace

TEST_CASE("kill -9 after several checkpoints, then --resume: the same results as an uninterrupted run",
          "[run][resume][crash]") {
    const std::string dir = nscope::test::temp_dir("resume");
    const fs::path reference = check_kill_and_resume(dir, kAnalyses, {0, 3, 12, 21});

    SECTION("--resume refuses a complete run and a run of another recipe") {
        const auto done = run_nscope({"run", "--resume", reference.string()});
        CHECK(done.exit_code == 2);
        CHECK_THAT(done.err, Catch::Contains("is a complete run"));
        // A run dir whose recorded recipe is not the one given.
        const fs::path unfinished = dir + "/unfinished";
        fs::copy(reference, unfinished, fs::copy_options::recursive);
        auto m = manifest(unfinished);
        m["status"] = "running";
        write_file_atomic(unfinished / "manifest.json", m.dump());
        const std::string other = write_recipe(dir, "long2", kAnalyses, "[ json ]", 48, 2);
        const auto r = run_nscope({"run", other, "--resume", unfinished.string()});
        CHECK(r.exit_code == 2);
        CHECK_THAT(r.err, Catch::Contains("a run of another recipe"));
        // Another model: the recorded digest no longer matches the files.
        m["models"][0]["sha256"] = std::string(64, 'f');
        write_file_atomic(unfinished / "manifest.json", m.dump());
        const auto r2 = run_nscope({"run", "--resume", unfinished.string()});
        CHECK(r2.exit_code == 2);
        CHECK_THAT(r2.err, Catch::Contains("with another model"));
        CHECK(manifest(unfinished)["status"] == "running");  // a refused resume changes nothing
    }
}

TEST_CASE("kill -9 and --resume of pca, linear cka and cluster: the same results as an uninterrupted run",
          "[run][resume][crash]") {
    check_kill_and_resume(nscope::test::temp_dir("resume-geometry"), kGeometry, {3, 12});
}

TEST_CASE("scheduled studies: two runs exporting into one shared SQLite database at the same moment both land",
          "[run][sqlite][concurrent]") {
    const std::string dir = nscope::test::temp_dir("shared-db");
    const fs::path db = fs::path(dir) / "neurons.sqlite";
    const std::string recipe = write_recipe(dir, "nightly", "  - { id: stats, use: stats }\n  - { id: top, use: topk, k: 3 }\n",
                                            "[ { use: sqlite, path: " + db.string() + " } ]", 12, 4);
    // Several rounds of two concurrent writers (the first round also races to create the schema).
    for (int round = 0; round < 3; ++round) {
        const auto a = nscope::test::start_nscope({"run", recipe, "--out", dir + "/runs"});
        const auto b = nscope::test::start_nscope({"run", recipe, "--out", dir + "/runs"});
        const auto ra = nscope::test::wait_nscope(a), rb = nscope::test::wait_nscope(b);
        INFO(ra.err << rb.err);
        CHECK(ra.exit_code == 0);
        CHECK(rb.exit_code == 0);
    }
    sqlite3* handle = nullptr;
    REQUIRE(sqlite3_open_v2(db.c_str(), &handle, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    auto scalar = [&](const char* sql) {
        sqlite3_stmt* st = nullptr;
        REQUIRE(sqlite3_prepare_v2(handle, sql, -1, &st, nullptr) == SQLITE_OK);
        REQUIRE(sqlite3_step(st) == SQLITE_ROW);
        std::string v = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        return v;
    };
    CHECK(scalar("PRAGMA integrity_check") == "ok");
    CHECK(scalar("SELECT count(*) FROM runs") == "6");
    sqlite3_close(handle);
}

namespace {

/// A single-node Slurm cluster started in `dir` by scripts/slurm/local-cluster.sh and stopped when this
/// goes out of scope, whatever the test did.
class LocalSlurm {
public:
    explicit LocalSlurm(std::string dir) : dir_(std::move(dir)) {
        const std::string cmd = "bash " + script() + " start " + dir_ + " > " + dir_ + ".start.log 2>&1";
        const int rc = std::system(cmd.c_str());
        up_ = WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
        why_ = nscope::test::read_file(dir_ + ".start.log");
        if (up_) ::setenv("SLURM_CONF", (dir_ + "/slurm.conf").c_str(), 1);
    }
    ~LocalSlurm() {
        const std::string cmd = "bash " + script() + " stop " + dir_ + " > /dev/null 2>&1";
        if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "local Slurm in %s: stop failed\n", dir_.c_str());
        ::unsetenv("SLURM_CONF");
    }
    bool up() const { return up_; }
    const std::string& why() const { return why_; }

private:
    static std::string script() { return std::string(NSCOPE_SOURCE_DIR) + "/scripts/slurm/local-cluster.sh"; }
    std::string dir_, why_;
    bool up_ = false;
};

std::string shell_output(const std::string& cmd) {
    std::string out;
    if (FILE* p = ::popen((cmd + " 2>&1").c_str(), "r")) {
        char buf[4096];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
        ::pclose(p);
    }
    return out;
}

}  // namespace

TEST_CASE("a 4-shard study on a real single-node Slurm (array job + dependent merge) equals the single-process run",
          "[slurm]") {
    const std::string dir = nscope::test::temp_dir("slurm");
    LocalSlurm slurm(dir + "/cluster");
    if (!slurm.up()) {
        // ctest marks this test Skipped on this line (SKIP_REGULAR_EXPRESSION in tests/CMakeLists.txt).
        std::cout << "SLURM TEST SKIPPED: the Slurm daemons could not start here:\n" << slurm.why() << std::endl;
        return;
    }
    const std::string recipe = write_recipe(dir, "slurmstudy", kAnalyses, "[ json, npy ]", 20, 3);
    // The shards run with --threads 1 (the script's default --cpus 1); so does the reference: on some CPUs
    // LibTorch's kernels round differently with another thread count (a few ULPs, seen on AMD EPYC).
    const auto single = run_nscope({"--threads", "1", "run", recipe, "--out", dir + "/single"});
    INFO(single.err);
    REQUIRE(single.exit_code == 0);

    const std::string study = dir + "/study";
    const std::string submitted = shell_output("bash " + std::string(NSCOPE_SOURCE_DIR) + "/scripts/slurm/nscope-slurm.sh " +
                                               recipe + " --shards 4 --out " + study + " --nscope " + NSCOPE_BIN +
                                               " --checkpoint-every 1");
    INFO(submitted);
    REQUIRE_THAT(submitted, Catch::Contains("merge job"));
    const fs::path merged = study + "/merged";
    std::string status;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
    while (std::chrono::steady_clock::now() < deadline) {
        if (fs::exists(merged / "manifest.json")) {
            status = manifest(merged).value("status", "");
            if (status != "running") break;
        }
        // Nothing queued any more and no merged run: a job failed (its log says why).
        if (shell_output("squeue -h").empty() && !fs::exists(merged / "manifest.json")) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::string logs;
    for (const auto& e : fs::directory_iterator(study + "/slurm"))
        if (e.path().extension() == ".log") logs += "--- " + e.path().string() + "\n" + nscope::test::read_file(e.path().string());
    INFO(logs);
    REQUIRE(status == "complete");
    const auto m = manifest(merged);
    REQUIRE(m["merged_shards"].size() == 4);
    check_same_results(printed_dir(single), merged);
}

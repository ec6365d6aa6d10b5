#include "core/run/rerun.h"

#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/run/recipe.h"
#include "core/run/runner.h"
#include "core/run/study.h"
#include "nscope/error.h"

namespace nscope {
namespace fs = std::filesystem;

namespace {

std::set<std::string> result_files(const fs::path& dir) {
    std::set<std::string> out;
    for (const char* sub : {"results", "activations"}) {
        if (!fs::is_directory(dir / sub)) continue;
        for (const auto& e : fs::recursive_directory_iterator(dir / sub))
            // SQLite databases record the run id and export time by design: not comparable byte for byte.
            if (e.is_regular_file() && e.path().extension() != ".sqlite")
                out.insert(fs::relative(e.path(), dir).string());
    }
    // Multi-model runs keep each model's outputs in a subfolder.
    for (const auto& e : fs::directory_iterator(dir))
        if (e.is_directory() && e.path().filename() != "results" && e.path().filename() != "activations")
            for (const auto& f : result_files(e.path())) out.insert((e.path().filename() / f).string());
    return out;
}

bool same_bytes(const fs::path& a, const fs::path& b) {
    if (fs::file_size(a) != fs::file_size(b)) return false;
    std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
    std::vector<char> ba(1 << 16), bb(1 << 16);
    while (fa && fb) {
        fa.read(ba.data(), static_cast<std::streamsize>(ba.size()));
        fb.read(bb.data(), static_cast<std::streamsize>(bb.size()));
        if (fa.gcount() != fb.gcount() || !std::equal(ba.begin(), ba.begin() + fa.gcount(), bb.begin())) return false;
    }
    return true;
}

}  // namespace

RerunReport compare_runs(const fs::path& a, const fs::path& b) {
    RerunReport r;
    r.original = a;
    r.rerun = b;
    const auto fa = result_files(a), fb = result_files(b);
    for (const auto& f : fa) {
        if (!fb.count(f)) r.missing.push_back(f);
        else if (same_bytes(a / f, b / f)) r.identical.push_back(f);
        else r.different.push_back(f);
    }
    for (const auto& f : fb)
        if (!fa.count(f)) r.extra.push_back(f);
    return r;
}

RerunReport rerun(const PluginRegistry& plugins, const fs::path& run_dir_arg, int threads_override) {
    fs::path run_dir = fs::absolute(run_dir_arg).lexically_normal();
    if (run_dir.filename().empty()) run_dir = run_dir.parent_path();  // "runs/x/id/" -> "runs/x/id"
    const nlohmann::json m = read_manifest(run_dir);
    Recipe recipe = recipe_from_manifest(m, run_dir);
    if (m["status"] != "complete")
        throw InputError(run_dir.string() + " did not complete (status '" + m["status"].get<std::string>() +
                         "'); only complete runs can be compared");
    RunOptions opts;
    opts.out_root = run_dir.parent_path().parent_path();
    opts.threads = threads_override > 0 ? threads_override : m.value("threads", 0);
    opts.command_line = "nscope rerun " + run_dir.string();
    const RunOutcome out = run_recipe(plugins, std::move(recipe), opts);
    if (out.exit_code != 0) throw RuntimeError("the rerun did not complete (see " + out.run_dir.string() + ")");
    return compare_runs(run_dir, out.run_dir);
}

}  // namespace nscope

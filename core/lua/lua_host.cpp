#include "core/lua/lua_host.h"

#include <spdlog/spdlog.h>

#include "core/run/run_dir.h"
#include "nscope/error.h"
#include "nscope/version.h"

namespace nscope::lua {
namespace fs = std::filesystem;

namespace {
fs::path normal(const fs::path& p) { return fs::weakly_canonical(fs::absolute(p)); }
}  // namespace

bool path_within(const fs::path& p, const fs::path& root) {
    auto r = root.begin(), x = p.begin();
    for (; r != root.end(); ++r, ++x) {
        if (r->empty()) continue;  // trailing separator
        if (x == p.end() || *x != *r) return false;
    }
    return true;
}

ScriptHost::ScriptHost(const PluginRegistry& plugins, ScriptOptions options)
    : plugins_(plugins), options_(std::move(options)) {
    cwd_ = normal(fs::current_path());
    script_dir_ = normal(options_.script).parent_path();
}

ScriptHost::~ScriptHost() = default;

std::string ScriptHost::script_name() const {
    std::string name = options_.script.stem().string();
    for (char& c : name)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) c = '_';
    return name.empty() ? "script" : name;
}

fs::path ScriptHost::readable_path(const std::string& p, const char* what) const {
    const fs::path abs = normal(p);
    if (unsafe()) return abs;
    if (path_within(abs, cwd_) || path_within(abs, script_dir_) || (dir_ && path_within(abs, dir_->path())))
        return abs;
    throw std::invalid_argument(std::string(what) + ": reading '" + p +
                                "' is not allowed: the sandbox reads files below the current directory (" +
                                cwd_.string() + ") and the script's folder (" + script_dir_.string() +
                                ") only; run with --unsafe to lift this");
}

fs::path ScriptHost::writable_path(const std::string& p, const char* what) {
    if (p.empty()) throw std::invalid_argument(std::string(what) + ": empty file name");
    const fs::path given(p);
    if (given.is_absolute() && unsafe()) return normal(given);
    // Refuse obvious escapes before creating the run directory.
    const fs::path runs = normal(options_.out_root / script_name());
    if (!unsafe()) {
        if (given.is_absolute() && !path_within(normal(given), runs))
            refuse_write(p, what, (runs / "<run-id>").string());
        if (!given.is_absolute() && *given.lexically_normal().begin() == "..")
            refuse_write(p, what, (runs / "<run-id>").string());
    }
    const fs::path dir = normal(run_dir());
    const fs::path target = normal(given.is_absolute() ? given : dir / given);
    if (unsafe() || path_within(target, dir)) return target;
    refuse_write(p, what, dir.string());
}

void ScriptHost::refuse_write(const std::string& p, const char* what, const std::string& dir) const {
    throw std::invalid_argument(std::string(what) + ": writing '" + p +
                                "' is not allowed: the sandbox writes only inside the script's run directory (" + dir +
                                "; relative paths are relative to it); run with --unsafe to lift this");
}

const fs::path& ScriptHost::run_dir() {
    if (!dir_) {
        dir_ = std::make_unique<RunDirectory>(RunDirectory::create(options_.out_root, script_name()));
        nlohmann::json& m = dir_->manifest();
        m["name"] = script_name();
        m["run_id"] = dir_->id();
        m["kind"] = "script";
        m["script"] = fs::absolute(options_.script).string();
        m["args"] = options_.args;
        m["unsafe"] = options_.unsafe;
        m["status"] = "running";
        m["started"] = iso_time_now();
        m["nscope_version"] = NSCOPE_VERSION_STRING;
        m["command"] = options_.command_line;
        if (options_.threads > 0) m["threads"] = options_.threads;
        dir_->save_manifest();
        dir_->log("script_started", {{"script", options_.script.string()}});
        spdlog::info("script {} -> {}", script_name(), dir_->path().string());
    }
    return dir_->path();
}

void ScriptHost::finish(const std::string& status, const std::string& error) {
    if (!dir_) return;
    nlohmann::json& m = dir_->manifest();
    m["status"] = status;
    m["finished"] = iso_time_now();
    m["exit_status"] = status == "complete" ? 0 : 2;
    if (!error.empty()) m["error"] = error;
    dir_->log("script_" + status, error.empty() ? nlohmann::json::object() : nlohmann::json{{"error", error}});
    dir_->save_manifest();
}

void set_host(lua_State* L, ScriptHost* h) { *static_cast<ScriptHost**>(lua_getextraspace(L)) = h; }

ScriptHost& host(lua_State* L) {
    ScriptHost* h = *static_cast<ScriptHost**>(lua_getextraspace(L));
    if (h == nullptr) throw std::logic_error("nscope: no script host attached to this Lua state");
    return *h;
}

}  // namespace nscope::lua

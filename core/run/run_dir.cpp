#include "core/run/run_dir.h"

#include <unistd.h>

#include <ctime>

#include "nscope/error.h"
#include "core/util/files.h"
#include "nscope/io.h"

namespace nscope {
namespace fs = std::filesystem;

namespace {
std::string utc_stamp(const char* format) {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, format, &tm);
    return buf;
}
}  // namespace

std::string iso_time_now() { return utc_stamp("%Y-%m-%dT%H:%M:%SZ"); }

RunDirectory RunDirectory::create(const fs::path& out_root, const std::string& name) {
    const fs::path parent = out_root / name;
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) throw InputError("cannot create the run folder " + parent.string() + ": " + ec.message());
    const std::string stamp = utc_stamp("%Y%m%d-%H%M%S");
    RunDirectory dir;
    for (int n = 1;; ++n) {
        dir.id_ = n == 1 ? stamp : stamp + "-" + std::to_string(n);
        dir.path_ = fs::absolute(parent / dir.id_);
        if (fs::create_directory(dir.path_, ec)) break;  // false: it exists, try the next suffix
        if (ec) throw InputError("cannot create the run folder " + dir.path_.string() + ": " + ec.message());
    }
    dir.log_ = std::make_shared<std::ofstream>(dir.path_ / "log.jsonl", std::ios::app);
    return dir;
}

RunDirectory RunDirectory::create_at(const fs::path& path) {
    RunDirectory dir;
    dir.final_ = fs::absolute(path).lexically_normal();
    if (dir.final_.filename().empty()) dir.final_ = dir.final_.parent_path();
    std::error_code ec;
    if (fs::exists(dir.final_) && !(fs::is_directory(dir.final_) && fs::is_empty(dir.final_)))
        throw InputError(dir.final_.string() + " already exists; give a new folder for the merged run");
    fs::create_directories(dir.final_.parent_path(), ec);
    if (ec) throw InputError("cannot create the run folder " + dir.final_.parent_path().string() + ": " + ec.message());
    std::string staging = dir.final_.filename().string();  // (appended in place: GCC 12 warns falsely on "." + string)
    staging.insert(staging.begin(), '.');
    staging += ".partial-" + std::to_string(::getpid());
    dir.path_ = dir.final_.parent_path() / staging;
    fs::remove_all(dir.path_, ec);  // a leftover of a killed process that had this pid
    if (!fs::create_directory(dir.path_, ec) || ec)
        throw InputError("cannot create the run folder " + dir.path_.string() + ": " + ec.message());
    dir.id_ = dir.final_.filename().string();
    dir.log_ = std::make_shared<std::ofstream>(dir.path_ / "log.jsonl", std::ios::app);
    return dir;
}

void RunDirectory::publish() {
    if (final_.empty()) return;
    if (log_) log_->flush();
    std::error_code ec;
    fs::rename(path_, final_, ec);  // replaces an empty folder at final_, as create_at allowed
    if (ec) throw InputError("cannot move the finished run " + path_.string() + " to " + final_.string() + ": " + ec.message());
    path_ = final_;
    final_.clear();
}

void RunDirectory::discard() noexcept {
    if (final_.empty()) return;
    log_.reset();
    std::error_code ec;
    fs::remove_all(path_, ec);
}

RunDirectory RunDirectory::reopen(const fs::path& path, nlohmann::json manifest) {
    RunDirectory dir;
    dir.path_ = fs::absolute(path).lexically_normal();
    if (dir.path_.filename().empty()) dir.path_ = dir.path_.parent_path();
    dir.id_ = manifest.value("run_id", dir.path_.filename().string());
    dir.manifest_ = std::move(manifest);
    dir.log_ = std::make_shared<std::ofstream>(dir.path_ / "log.jsonl", std::ios::app);
    return dir;
}

void RunDirectory::write(const fs::path& relative, std::string_view bytes) const {
    write_file_atomic(path_ / relative, bytes);
}

void RunDirectory::save_manifest() const { write("manifest.json", manifest_.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"); }

void RunDirectory::log(const std::string& event, nlohmann::json fields) {
    fields["ts"] = iso_time_now();
    fields["event"] = event;
    if (log_ && *log_) {
        *log_ << fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        log_->flush();
    }
}

}  // namespace nscope

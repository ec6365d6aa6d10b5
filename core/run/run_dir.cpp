#include "core/run/run_dir.h"

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

// The run directory (docs/architecture.md "Run directory"): runs/<name>/<run-id>/ with manifest.json, log.jsonl,
// results/, activations/, report.html. Every file is written atomically (temp + rename); the manifest says
// "running" until the run ends as "complete", "failed" or "interrupted", so a reader never mistakes a
// partial run for a whole one.
#pragma once

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace nscope {

class RunDirectory {
public:
    /// Create `out_root/<name>/<run-id>/` (run-id = UTC time yyyymmdd-HHMMSS, with -2, -3... if taken).
    static RunDirectory create(const std::filesystem::path& out_root, const std::string& name);
    /// A run directory that appears at exactly `path` (nscope merge --out) only when publish()ed: until then
    /// path() is a temporary sibling (`.<name>.partial-<pid>`), which discard() removes, so a failed merge
    /// leaves `path` as it was. InputError if `path` exists and is not an empty folder.
    static RunDirectory create_at(const std::filesystem::path& path);
    /// Continue an existing run directory (--resume) whose manifest is `manifest`; the log is appended to.
    static RunDirectory reopen(const std::filesystem::path& path, nlohmann::json manifest);

    const std::filesystem::path& path() const { return path_; }
    /// Where the run's files end up: path(), or create_at's `path` for a staged directory.
    const std::filesystem::path& final_path() const { return final_.empty() ? path_ : final_; }
    /// A staged directory: rename it to its final path (no-op otherwise). InputError if that fails.
    void publish();
    /// A staged directory: remove it (no-op otherwise; never throws).
    void discard() noexcept;
    const std::string& id() const { return id_; }

    /// Atomically write `bytes` to `path()/relative`.
    void write(const std::filesystem::path& relative, std::string_view bytes) const;

    nlohmann::json& manifest() { return manifest_; }
    /// Atomically (re)write manifest.json.
    void save_manifest() const;

    /// Append one structured event to log.jsonl (with a timestamp).
    void log(const std::string& event, nlohmann::json fields = nlohmann::json::object());

private:
    std::filesystem::path path_;
    std::filesystem::path final_;  ///< create_at: where publish() moves path_
    std::string id_;
    nlohmann::json manifest_ = nlohmann::json::object();
    std::shared_ptr<std::ofstream> log_;
};

/// Seconds since the epoch (UTC) as an ISO 8601 string.
std::string iso_time_now();

}  // namespace nscope

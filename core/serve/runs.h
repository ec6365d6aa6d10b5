// Run directories under `nscope serve --runs DIR` (docs/serve.md): listing them, serving their files
// (never a path outside DIR), and reading a neuron's entries from their SQLite neuron databases
// (docs/sqlite.md). Torch-free; read-only.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace nscope::serve {

class RunIndex {
public:
    /// `root` empty: no runs (every call answers "no runs").
    explicit RunIndex(std::filesystem::path root);

    bool enabled() const { return !root_.empty(); }

    /// Every run directory (one holding manifest.json) up to three levels below the root, newest first:
    /// [{path, name, status, started, model, report, databases: [...]}]. `path` is relative to the root.
    nlohmann::json list() const;

    /// The file `rel` (relative to the root) if it is a regular file inside the root once symlinks and `..`
    /// are resolved; nullopt otherwise (absolute paths, `..` segments, NUL bytes, anything outside).
    std::optional<std::filesystem::path> resolve(const std::string& rel) const;

    /// A neuron's entries in the newest neuron database of a run whose model matches `model_info` (the
    /// architecture and its dimensions; a model of that folder name is preferred), or of the run `run`
    /// (a `path` from list()) when given: {database, run, model, stats, flags, top_examples, top_ngrams,
    /// analyses: [{plugin, analysis, table, row}]} (cluster, polysemantic, drift, ... rows naming the neuron).
    /// null when no database has the neuron.
    nlohmann::json neuron(const nlohmann::json& model_info, const std::string& model_name, const std::string& hook,
                          int64_t neuron, const std::string& run, int limit) const;

private:
    std::filesystem::path root_;  // canonical
};

}  // namespace nscope::serve

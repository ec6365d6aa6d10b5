// nscope rerun RUN_DIR: re-execute a run from its manifest and check that every result is bit-identical.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace nscope {

class PluginRegistry;

struct RerunReport {
    std::filesystem::path original, rerun;
    std::vector<std::string> identical, different, missing, extra;  ///< relative file paths
    bool ok() const { return different.empty() && missing.empty() && extra.empty(); }
};

/// Run the manifest's resolved recipe again (same seed and threads) next to the original, then compare
/// results/ and activations/ byte for byte.
RerunReport rerun(const PluginRegistry& plugins, const std::filesystem::path& run_dir, int threads_override);

/// Compare the files under results/ and activations/ of two run directories.
RerunReport compare_runs(const std::filesystem::path& a, const std::filesystem::path& b);

}  // namespace nscope

// Atomic file writes for the host and, through HostServices (nscope/host.h), for every plugin.
#pragma once

#include <filesystem>
#include <string_view>

#include "nscope/host.h"

namespace nscope {

/// Write `bytes` to `path` atomically (`path.tmp.<pid>`, flush, fsync, rename, fsync of the folder).
/// On failure the temp file is removed and RuntimeError names the path and the system's reason.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

/// fsync `staged`, rename it to `path` (copy + rename when they are on different file systems), fsync the
/// folder. Throws RuntimeError naming both paths.
void commit_file(const std::filesystem::path& staged, const std::filesystem::path& path);

/// The table handed to plugins (RunContext::host, ExportContext::host).
const HostServices& host_services();

}  // namespace nscope

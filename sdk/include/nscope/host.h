// NeuronScope SDK — services the host lends to plugins through a function table.
//
// File handling (temp files, fsync, rename, a full disk) lives in the host, not inline in plugins: a fix
// there reaches every plugin without rebuilding any of them. Plugins reach the table through
// RunContext::host / ExportContext::host; `struct_size` tells which fields a host provides (fields are only
// ever appended).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string_view>

namespace nscope {

struct HostServices {
    uint32_t struct_size = sizeof(HostServices);
    /// Write `bytes` to `path` atomically: a temp file beside it, flushed and fsynced, renamed over `path`.
    /// Creates missing folders. On failure (a full disk, say) removes the temp file and throws RuntimeError
    /// naming the path; `path` is then untouched.
    void (*write_file_atomic)(const std::filesystem::path& path, std::string_view bytes) = nullptr;
    /// Publish a file a plugin wrote itself (streamed to `staged`, closed): fsync it, rename it to `path`
    /// (copying first when the two are on different file systems), fsync the folder. Throws RuntimeError.
    void (*commit_file)(const std::filesystem::path& staged, const std::filesystem::path& path) = nullptr;
};

}  // namespace nscope

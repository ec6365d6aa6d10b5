// Shared by the libFuzzer harnesses (tests/fuzz/README.md).
//
// The contract every harness checks: hostile input ends in a clean InputError (exit 2 for a user) or in
// success, never in a crash, a sanitizer report, a leak, or any other exception type (which the CLI would
// report as "internal error", exit 3). So harnesses catch nscope::InputError only; everything else escapes
// to libFuzzer, which reports it as a crash ("deadly signal" from the uncaught exception's abort).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace nscope::fuzz {

/// A private scratch folder for this process (under $TMPDIR, /dev/shm when it exists: files written per
/// execution stay in memory), created on first use and removed at exit.
inline const std::filesystem::path& scratch_dir() {
    static const std::filesystem::path dir = [] {
        namespace fs = std::filesystem;
        fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
        if (const char* t = std::getenv("NSCOPE_FUZZ_TMP"); t && *t) base = t;
        const fs::path d = base / ("nscope-fuzz-" + std::to_string(::getpid()));
        fs::create_directories(d);
        std::atexit([] {
            std::error_code ec;
            std::filesystem::remove_all(scratch_dir(), ec);
        });
        return d;
    }();
    return dir;
}

inline void write_bytes(const std::filesystem::path& p, std::string_view bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) std::abort();  // the harness itself failed: not a finding about the project
}

inline std::string_view as_view(const uint8_t* data, size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

}  // namespace nscope::fuzz

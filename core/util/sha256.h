// SHA-256 (FIPS 180-4), for recording model files in run manifests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace nscope {

class Sha256 {
public:
    /// `use_cpu_extensions`: take the x86 SHA instructions when the CPU has them (5x faster); false forces
    /// the portable code (tests compare the two).
    explicit Sha256(bool use_cpu_extensions = true);
    void update(const void* data, size_t size);
    /// Lower-case hex digest; the object is finished afterwards.
    std::string hex();
    /// Whether this CPU has the SHA instructions.
    static bool cpu_has_sha();

private:
    void blocks(const uint8_t* p, size_t n);
    uint32_t h_[8];
    uint8_t buf_[64];
    size_t buf_len_ = 0;
    uint64_t total_ = 0;
    bool hardware_ = false;
};

std::string sha256_hex(std::string_view data);
/// Hash a file by streaming it; throws InputError if it cannot be read.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace nscope

// SHA-256 (FIPS 180-4), for recording model files in run manifests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace nscope {

class Sha256 {
public:
    Sha256();
    void update(const void* data, size_t size);
    /// Lower-case hex digest; the object is finished afterwards.
    std::string hex();

private:
    void block(const uint8_t* p);
    uint32_t h_[8];
    uint8_t buf_[64];
    size_t buf_len_ = 0;
    uint64_t total_ = 0;
};

std::string sha256_hex(std::string_view data);
/// Hash a file by streaming it; throws InputError if it cannot be read.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace nscope

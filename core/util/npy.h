// Reading .npy files (format 1.0 / 2.0, little-endian, C order). Writing lives in the SDK (nscope/io.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "nscope/result.h"

namespace nscope {

struct NpyArray {
    std::string descr;            ///< numpy dtype string, e.g. "<f4", "<i8"
    std::vector<int64_t> shape;
    std::vector<char> bytes;      ///< raw element data

    int64_t numel() const;
    /// Values converted to float32 / int64 (accepts f2? no: f4, f8, i1..i8, u1..u8, b1). Throws InputError otherwise.
    std::vector<float> to_f32() const;
    std::vector<int64_t> to_i64() const;
};

/// Read a .npy file; throws InputError with the path and what is wrong for a bad or truncated file.
NpyArray read_npy(const std::filesystem::path& path);

/// Parse .npy bytes already in memory (`what` names the source in errors).
NpyArray parse_npy(const std::string& data, const std::string& what);

}  // namespace nscope

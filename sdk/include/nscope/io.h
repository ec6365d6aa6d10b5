// NeuronScope SDK — .npy encoding for plugins. Writing files goes through the host
// (ExportContext::write_file, HostServices in nscope/host.h), so that every file in a run directory is
// written atomically and an interrupted run never leaves a half-written file that looks whole.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nscope/result.h"

namespace nscope {

/// Encode a .npy (format 1.0) header + data for a little-endian float32 or int64 array.
inline std::string npy_encode(const void* data, bool is_int64, const std::vector<int64_t>& shape) {
    std::string shape_str = "(";
    size_t n = 1;
    for (size_t i = 0; i < shape.size(); ++i) {
        shape_str += std::to_string(shape[i]);
        shape_str += (shape.size() == 1 || i + 1 < shape.size()) ? "," : "";
        if (i + 1 < shape.size()) shape_str += " ";
        n *= static_cast<size_t>(shape[i]);
    }
    shape_str += ")";
    std::string header = std::string("{'descr': '") + (is_int64 ? "<i8" : "<f4") +
                         "', 'fortran_order': False, 'shape': " + shape_str + ", }";
    const size_t unpadded = 10 + header.size() + 1;  // magic(6)+version(2)+len(2) + header + '\n'
    header.append((64 - unpadded % 64) % 64, ' ');
    header.push_back('\n');
    std::string out("\x93NUMPY\x01\x00", 8);
    out.push_back(static_cast<char>(header.size() & 0xff));
    out.push_back(static_cast<char>((header.size() >> 8) & 0xff));
    out += header;
    const size_t elem = is_int64 ? 8 : 4;
    out.append(static_cast<const char*>(data), n * elem);
    return out;
}

inline std::string npy_encode(const NdArray& a) {
    return a.is_int64 ? npy_encode(a.i64.data(), true, a.shape) : npy_encode(a.f32.data(), false, a.shape);
}

}  // namespace nscope

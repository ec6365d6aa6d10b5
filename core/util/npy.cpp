#include "core/util/npy.h"

#include <charconv>
#include <cstring>
#include <optional>
#include <string_view>
#include <type_traits>
#include <fstream>
#include <sstream>

#include "nscope/error.h"

namespace nscope {
namespace {

std::string dict_value(const std::string& header, const std::string& key, const std::string& what) {
    const auto k = header.find("'" + key + "'");
    if (k == std::string::npos) throw InputError(what + ": .npy header has no '" + key + "'");
    auto colon = header.find(':', k);
    if (colon == std::string::npos) throw InputError(what + ": malformed .npy header");
    size_t start = colon + 1;
    while (start < header.size() && header[start] == ' ') ++start;
    size_t end = start;
    if (header[start] == '(') {
        end = header.find(')', start);
        if (end == std::string::npos) throw InputError(what + ": malformed .npy shape");
        return header.substr(start, end - start + 1);
    }
    if (header[start] == '\'') {
        end = header.find('\'', start + 1);
        if (end == std::string::npos) throw InputError(what + ": malformed .npy header");
        return header.substr(start + 1, end - start - 1);
    }
    while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
    return header.substr(start, end - start);
}

/// A non-negative decimal integer (the whole of `s` after trimming spaces), or nothing.
std::optional<uint64_t> parse_count(std::string_view s) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == 'L')) s.remove_suffix(1);  // Python 2 wrote 3L
    uint64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
    return v;
}

size_t elem_size(const std::string& descr, const std::string& what) {
    if (descr.size() < 3) throw InputError(what + ": unsupported .npy dtype '" + descr + "'");
    if (descr[0] == '>') throw InputError(what + ": big-endian .npy arrays are not supported (dtype '" + descr + "')");
    // Element sizes of numeric dtypes; anything else (and a 0-byte size, which would let any shape pass the
    // length check) is refused here rather than when converting.
    const auto size = parse_count(std::string_view(descr).substr(2));
    if (!size || (*size != 1 && *size != 2 && *size != 4 && *size != 8 && *size != 16))
        throw InputError(what + ": unsupported .npy dtype '" + descr + "'");
    return static_cast<size_t>(*size);
}

template <typename Out>
std::vector<Out> convert(const NpyArray& a) {
    const int64_t n = a.numel();
    std::vector<Out> out(static_cast<size_t>(n));
    const char kind = a.descr[1];
    const size_t size = std::stoul(a.descr.substr(2));
    const char* p = a.bytes.data();
    for (int64_t i = 0; i < n; ++i, p += size) {
        double v = 0;
        if (kind == 'f' && size == 4) { float x; std::memcpy(&x, p, 4); v = x; }
        else if (kind == 'f' && size == 8) { double x; std::memcpy(&x, p, 8); v = x; }
        else if (kind == 'i' && size == 8) { int64_t x; std::memcpy(&x, p, 8); out[i] = static_cast<Out>(x); continue; }
        else if (kind == 'i' && size == 4) { int32_t x; std::memcpy(&x, p, 4); v = x; }
        else if (kind == 'i' && size == 2) { int16_t x; std::memcpy(&x, p, 2); v = x; }
        else if ((kind == 'i' || kind == 'u' || kind == 'b') && size == 1) { v = (kind == 'i') ? static_cast<int8_t>(*p) : static_cast<uint8_t>(*p); }
        else if (kind == 'u' && size == 8) { uint64_t x; std::memcpy(&x, p, 8); v = static_cast<double>(x); }
        else if (kind == 'u' && size == 4) { uint32_t x; std::memcpy(&x, p, 4); v = x; }
        else if (kind == 'u' && size == 2) { uint16_t x; std::memcpy(&x, p, 2); v = x; }
        else throw InputError("unsupported .npy dtype '" + a.descr + "' (use float32/float64 or an integer type)");
        // Casting NaN, an infinity or a value beyond int64 to an integer is undefined behaviour (found by
        // tests/fuzz/fuzz_npy.cpp with a uint64 max): refuse it.
        if constexpr (std::is_integral_v<Out>)
            if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0))
                throw InputError(".npy value " + std::to_string(v) + " at index " + std::to_string(i) + " (dtype '" +
                                 a.descr + "') is not an int64");
        out[i] = static_cast<Out>(v);
    }
    return out;
}

}  // namespace

int64_t NpyArray::numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
}

std::vector<float> NpyArray::to_f32() const { return convert<float>(*this); }
std::vector<int64_t> NpyArray::to_i64() const { return convert<int64_t>(*this); }

NpyArray parse_npy(const std::string& data, const std::string& what) {
    if (data.size() < 10 || std::memcmp(data.data(), "\x93NUMPY", 6) != 0)
        throw InputError(what + ": not a .npy file (missing \\x93NUMPY magic)");
    const int major = static_cast<unsigned char>(data[6]);
    size_t header_len = 0, offset = 0;
    if (major == 1) {
        header_len = static_cast<unsigned char>(data[8]) | (static_cast<unsigned char>(data[9]) << 8);
        offset = 10;
    } else if (major == 2 || major == 3) {
        if (data.size() < 12) throw InputError(what + ": truncated .npy header");
        uint32_t l;
        std::memcpy(&l, data.data() + 8, 4);
        header_len = l;
        offset = 12;
    } else {
        throw InputError(what + ": unsupported .npy version " + std::to_string(major));
    }
    if (offset + header_len > data.size()) throw InputError(what + ": truncated .npy header");
    const std::string header = data.substr(offset, header_len);
    NpyArray a;
    a.descr = dict_value(header, "descr", what);
    if (dict_value(header, "fortran_order", what).find("True") != std::string::npos)
        throw InputError(what + ": Fortran-ordered .npy arrays are not supported (save with np.ascontiguousarray)");
    const std::string shape = dict_value(header, "shape", what);
    if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')')
        throw InputError(what + ": malformed .npy shape '" + shape + "' (expected a tuple such as (2, 3))");
    // Dimensions are checked and multiplied without wrapping: the byte count below is what bounds the read.
    const size_t esize = elem_size(a.descr, what);
    uint64_t need = esize;
    std::stringstream ss(shape.substr(1, shape.size() - 2));
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (item.find_first_not_of(' ') == std::string::npos) continue;
        const auto dim = parse_count(item);
        if (!dim || *dim > static_cast<uint64_t>(INT64_MAX))
            throw InputError(what + ": malformed .npy shape " + shape + " (dimensions must be integers >= 0)");
        if (__builtin_mul_overflow(need, *dim, &need))
            throw InputError(what + ": .npy shape " + shape + " is too large");
        a.shape.push_back(static_cast<int64_t>(*dim));
    }
    const size_t have = data.size() - offset - header_len;
    if (have < need)
        throw InputError(what + ": truncated .npy data (" + std::to_string(have) + " of " + std::to_string(need) +
                         " bytes)");
    a.bytes.assign(data.begin() + static_cast<std::ptrdiff_t>(offset + header_len),
                   data.begin() + static_cast<std::ptrdiff_t>(offset + header_len + need));
    return a;
}

NpyArray read_npy(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw InputError("cannot open " + path.string() + ": no such file");
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return parse_npy(data, path.string());
}

}  // namespace nscope

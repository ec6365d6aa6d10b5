#include "core/util/npy.h"

#include <cstring>
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

size_t elem_size(const std::string& descr, const std::string& what) {
    if (descr.size() < 3) throw InputError(what + ": unsupported .npy dtype '" + descr + "'");
    if (descr[0] == '>') throw InputError(what + ": big-endian .npy arrays are not supported (dtype '" + descr + "')");
    return static_cast<size_t>(std::stoul(descr.substr(2)));
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
    std::stringstream ss(shape.substr(1, shape.size() - 2));
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (item.find_first_not_of(' ') == std::string::npos) continue;
        a.shape.push_back(std::stoll(item));
    }
    const size_t esize = elem_size(a.descr, what);
    const size_t need = static_cast<size_t>(a.numel()) * esize;
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

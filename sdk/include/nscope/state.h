// NeuronScope SDK — saved analyzer state (shards, checkpoints, resume).
//
// An analyzer that can save its state (Analyzer::state_version() > 0) writes it with a StateWriter in
// `save_state` and reads it back with a StateReader in `load_state`. The host wraps the payload in an
// envelope (seal_state / open_state): a magic, the envelope format, the analyzer's id@version, its state
// version, a fingerprint of its configuration, the payload length and a checksum, so a blob of another
// analyzer, configuration or layout, or a truncated or damaged file, is refused with an InputError
// instead of being misread. Torch-free and header-only: plugins and the host share this code.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "nscope/error.h"

namespace nscope {

/// Appends little-endian host-layout values to a byte buffer. Only trivially copyable types go in raw.
class StateWriter {
public:
    template <typename T>
    void pod(const T& v) {
        static_assert(std::is_trivially_copyable_v<T>, "StateWriter::pod needs a trivially copyable type");
        buf_.append(reinterpret_cast<const char*>(&v), sizeof(T));
    }
    void u32(uint32_t v) { pod(v); }
    void u64(uint64_t v) { pod(v); }
    void f64(double v) { pod(v); }
    void boolean(bool v) { pod(static_cast<uint8_t>(v ? 1 : 0)); }
    void str(std::string_view s) {
        u64(s.size());
        buf_.append(s.data(), s.size());
    }
    /// A count, then the elements' bytes.
    template <typename T>
    void array(const std::vector<T>& v) {
        static_assert(std::is_trivially_copyable_v<T>, "StateWriter::array needs a trivially copyable type");
        u64(v.size());
        if (!v.empty()) buf_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
    }
    void strings(const std::vector<std::string>& v) {
        u64(v.size());
        for (const auto& s : v) str(s);
    }
    void string_map(const std::map<std::string, std::string>& m) {
        u64(m.size());
        for (const auto& [k, v] : m) str(k), str(v);
    }

    const std::string& bytes() const { return buf_; }
    std::string take() { return std::move(buf_); }

private:
    std::string buf_;
};

/// Reads what a StateWriter wrote, checking every length against the bytes left: a damaged blob is an
/// InputError naming `source`, never a read past the end or a huge allocation.
class StateReader {
public:
    StateReader(std::string_view bytes, std::string source) : data_(bytes), source_(std::move(source)) {}

    template <typename T>
    T pod() {
        static_assert(std::is_trivially_copyable_v<T>, "StateReader::pod needs a trivially copyable type");
        need(sizeof(T), "a value");
        T v;
        std::memcpy(&v, data_.data() + at_, sizeof(T));
        at_ += sizeof(T);
        return v;
    }
    uint32_t u32() { return pod<uint32_t>(); }
    uint64_t u64() { return pod<uint64_t>(); }
    double f64() { return pod<double>(); }
    bool boolean() {
        const auto b = pod<uint8_t>();
        if (b > 1) fail("a boolean is " + std::to_string(b));
        return b == 1;
    }
    std::string str() { return std::string(view(u64(), "a string")); }
    /// The next `n` bytes, in place.
    std::string_view view(uint64_t n, const std::string& what) {
        need(n, what + " of " + std::to_string(n) + " bytes");
        const std::string_view v = data_.substr(at_, n);
        at_ += n;
        return v;
    }
    template <typename T>
    std::vector<T> array() {
        static_assert(std::is_trivially_copyable_v<T>, "StateReader::array needs a trivially copyable type");
        const uint64_t n = u64();
        if (n > left() / sizeof(T)) fail("an array of " + std::to_string(n) + " elements is longer than the blob");
        std::vector<T> v(n);
        if (n) std::memcpy(v.data(), data_.data() + at_, n * sizeof(T));
        at_ += n * sizeof(T);
        return v;
    }
    /// An array that must have exactly `n` elements (a size the configuration fixes).
    template <typename T>
    std::vector<T> array_of(size_t n, std::string_view what) {
        auto v = array<T>();
        if (v.size() != n)
            fail(std::string(what) + " has " + std::to_string(v.size()) + " elements, expected " + std::to_string(n));
        return v;
    }
    std::vector<std::string> strings() {
        const uint64_t n = u64();
        if (n > left() / sizeof(uint64_t)) fail("a list of " + std::to_string(n) + " strings is longer than the blob");
        std::vector<std::string> v;
        for (uint64_t i = 0; i < n; ++i) v.push_back(str());
        return v;
    }
    std::map<std::string, std::string> string_map() {
        const uint64_t n = u64();
        if (n > left() / (2 * sizeof(uint64_t))) fail("a map of " + std::to_string(n) + " entries is longer than the blob");
        std::map<std::string, std::string> m;
        for (uint64_t i = 0; i < n; ++i) {
            std::string k = str();
            m[std::move(k)] = str();
        }
        return m;
    }
    /// A count of items that each take at least `min_bytes` (so a corrupt count cannot drive a huge loop).
    uint64_t count(size_t min_bytes, std::string_view what) {
        const uint64_t n = u64();
        if (min_bytes && n > left() / min_bytes)
            fail(std::string(what) + ": " + std::to_string(n) + " entries cannot fit in the blob");
        return n;
    }

    size_t left() const { return data_.size() - at_; }
    /// Everything must have been read.
    void expect_end() const {
        if (left()) fail(std::to_string(left()) + " unread bytes at the end");
    }
    [[noreturn]] void fail(const std::string& why) const {
        throw InputError(source_ + ": damaged or incompatible analyzer state (" + why + ")");
    }

private:
    void need(uint64_t n, const std::string& what) const {
        if (n > left()) fail("truncated: " + what + " needs " + std::to_string(n) + " bytes, " + std::to_string(left()) + " left");
    }
    std::string_view data_;
    size_t at_ = 0;
    std::string source_;
};

/// What an envelope says about its payload.
struct StateEnvelope {
    std::string analyzer;     ///< plugin id@version that wrote it
    uint32_t version = 0;     ///< the analyzer's state_version()
    std::string fingerprint;  ///< of the configuration (the host's choice of digest)
    std::string_view payload; ///< points into the blob given to open_state
};

namespace state_detail {
inline constexpr char kMagic[8] = {'N', 'S', 'C', 'O', 'P', 'E', 'S', 'T'};
/// Format 2: the checksum reads 8-byte words in four independent lanes (~10x faster than format 1's
/// byte-wise FNV-1a, which dominated the merge of large shard sets). Format 1 is still read.
inline constexpr uint32_t kFormat = 2;
/// Format 1's checksum, FNV-1a, 64 bits.
inline uint64_t checksum_v1(std::string_view s) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
}
/// Format 2's checksum: each lane is FNV-style (xor a word, multiply by an odd constant: a bijection, so
/// any changed word changes the lane), the tail bytes go through FNV-1a, and the lanes and the length are
/// folded with an invertible mix. Catches flipped bits and swapped blocks; not a cryptographic digest.
inline uint64_t checksum(std::string_view s) {
    constexpr uint64_t kPrime = 1099511628211ull;
    uint64_t lane[4] = {1469598103934665603ull, 0x9e3779b97f4a7c15ull, 0xc2b2ae3d27d4eb4full, 0x165667b19e3779f9ull};
    const char* p = s.data();
    size_t i = 0;
    for (; i + 32 <= s.size(); i += 32)
        for (int j = 0; j < 4; ++j) {
            uint64_t w;
            std::memcpy(&w, p + i + 8 * j, 8);
            lane[j] = (lane[j] ^ w) * kPrime;
        }
    for (; i < s.size(); ++i) lane[0] = (lane[0] ^ static_cast<unsigned char>(p[i])) * kPrime;
    uint64_t h = s.size();
    for (uint64_t l : lane) {
        h = (h ^ l) * 0xff51afd7ed558ccdull;
        h ^= h >> 33;
    }
    return h;
}
}  // namespace state_detail

/// The envelope around an analyzer's payload (see the top of this file).
inline std::string seal_state(std::string_view analyzer, uint32_t version, std::string_view fingerprint,
                              std::string_view payload) {
    StateWriter w;
    for (char c : state_detail::kMagic) w.pod(c);
    w.u32(state_detail::kFormat);
    w.str(analyzer);
    w.u32(version);
    w.str(fingerprint);
    w.str(payload);
    w.u64(state_detail::checksum(payload));
    return w.take();
}

/// Parse an envelope; InputError naming `source` for anything but a whole, intact blob.
inline StateEnvelope open_state(std::string_view blob, const std::string& source) {
    StateReader r(blob, source);
    for (char c : state_detail::kMagic)
        if (r.pod<char>() != c) r.fail("not an nscope state file (bad magic)");
    const uint32_t format = r.u32();
    if (format != state_detail::kFormat && format != 1)
        r.fail("envelope format " + std::to_string(format) + ", this nscope reads 1 and " + std::to_string(state_detail::kFormat));
    StateEnvelope env;
    env.analyzer = r.str();
    env.version = r.u32();
    env.fingerprint = r.str();
    env.payload = r.view(r.u64(), "the payload");
    const uint64_t sum = format == 1 ? state_detail::checksum_v1(env.payload) : state_detail::checksum(env.payload);
    if (r.u64() != sum) r.fail("checksum mismatch: the payload is damaged");
    r.expect_end();
    return env;
}

}  // namespace nscope

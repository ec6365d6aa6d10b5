// A minimal ZIP writer (PKWARE APPNOTE 6.3): "stored" members (no compression), CRC-32, a central
// directory and the end record. No ZIP64: archives and members must stay below 4 GiB and 65535 entries.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nscope/error.h>

namespace nscope::zip {

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), table-driven.
inline uint32_t crc32(std::string_view data) {
    static const std::array<uint32_t, 256> table = [] {
        std::array<uint32_t, 256> t{};
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    uint32_t c = 0xFFFFFFFFu;
    for (unsigned char b : data) c = table[(c ^ b) & 0xFFu] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

class Writer {
public:
    void add(const std::string& name, std::string_view data) {
        if (data.size() >= 0xFFFFFFFFull || out_.size() + data.size() + 30 + name.size() >= 0xFFFFFFFFull ||
            entries_.size() >= 0xFFFF)
            throw RuntimeError("npz: archive over 4 GiB or 65535 members (ZIP64 is not supported): " + name);
        Entry e{name, crc32(data), static_cast<uint32_t>(data.size()), static_cast<uint32_t>(out_.size())};
        u32(out_, 0x04034b50);  // local file header
        u16(out_, 20);          // version needed: 2.0
        u16(out_, 0);           // flags
        u16(out_, 0);           // method: stored
        u16(out_, 0);           // time 00:00:00
        u16(out_, kDate);       // date 1980-01-01
        u32(out_, e.crc);
        u32(out_, e.size);      // compressed size
        u32(out_, e.size);      // uncompressed size
        u16(out_, static_cast<uint16_t>(name.size()));
        u16(out_, 0);           // extra length
        out_ += name;
        out_.append(data.data(), data.size());
        entries_.push_back(std::move(e));
    }

    /// The finished archive: members, central directory, end of central directory record.
    std::string finish() {
        std::string cd;
        for (const auto& e : entries_) {
            u32(cd, 0x02014b50);
            u16(cd, 20);  // made by
            u16(cd, 20);  // needed
            u16(cd, 0);
            u16(cd, 0);
            u16(cd, 0);
            u16(cd, kDate);
            u32(cd, e.crc);
            u32(cd, e.size);
            u32(cd, e.size);
            u16(cd, static_cast<uint16_t>(e.name.size()));
            u16(cd, 0);  // extra
            u16(cd, 0);  // comment
            u16(cd, 0);  // disk number start
            u16(cd, 0);  // internal attributes
            u32(cd, 0);  // external attributes
            u32(cd, e.offset);
            cd += e.name;
        }
        if (out_.size() + cd.size() >= 0xFFFFFFFFull) throw RuntimeError("npz: archive over 4 GiB (ZIP64 is not supported)");
        const auto cd_offset = static_cast<uint32_t>(out_.size());
        std::string result = std::move(out_);
        result += cd;
        u32(result, 0x06054b50);
        u16(result, 0);
        u16(result, 0);
        u16(result, static_cast<uint16_t>(entries_.size()));
        u16(result, static_cast<uint16_t>(entries_.size()));
        u32(result, static_cast<uint32_t>(cd.size()));
        u32(result, cd_offset);
        u16(result, 0);  // comment length
        out_.clear();
        entries_.clear();
        return result;
    }

private:
    static constexpr uint16_t kDate = (0 << 9) | (1 << 5) | 1;  // years since 1980, month, day
    struct Entry {
        std::string name;
        uint32_t crc, size, offset;
    };
    static void u16(std::string& s, uint16_t v) {
        s.push_back(static_cast<char>(v & 0xff));
        s.push_back(static_cast<char>(v >> 8));
    }
    static void u32(std::string& s, uint32_t v) {
        for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    }
    std::string out_;
    std::vector<Entry> entries_;
};

}  // namespace nscope::zip

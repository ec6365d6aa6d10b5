#include "core/tokenizer/unicode.h"

#include <algorithm>
#include <iterator>

namespace nscope::unicode {
namespace {
#include "core/tokenizer/unicode_tables.inc"

constexpr char32_t kReplacement = 0xFFFD;
constexpr char32_t kHangulS = 0xAC00, kHangulL = 0x1100, kHangulV = 0x1161, kHangulT = 0x11A7;
constexpr int kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr int kHangulNCount = kHangulVCount * kHangulTCount, kHangulSCount = kHangulLCount * kHangulNCount;

}  // namespace

Category category(char32_t c) {
    if (c >= 0x110000) return Category::Cn;
    // Last run whose start is <= c.
    auto it = std::upper_bound(std::begin(kCategoryRuns), std::end(kCategoryRuns), static_cast<uint32_t>(c),
                               [](uint32_t v, const uint32_t (&run)[2]) { return v < run[0]; });
    return static_cast<Category>((*(it - 1))[1]);
}

uint8_t combining_class(char32_t c) {
    if (c < 0x300) return 0;
    auto it = std::upper_bound(std::begin(kCccRanges), std::end(kCccRanges), static_cast<uint32_t>(c),
                               [](uint32_t v, const uint32_t (&r)[3]) { return v < r[0]; });
    if (it == std::begin(kCccRanges)) return 0;
    const auto& r = *(it - 1);
    return c <= r[1] ? static_cast<uint8_t>(r[2]) : 0;
}

bool is_whitespace(char32_t c) {
    switch (c) {
        case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
        case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
            return true;
        default:
            return c >= 0x2000 && c <= 0x200A;
    }
}

bool is_letter(char32_t c) {
    if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    return category(c) <= Category::Lo;
}
bool is_numeric(char32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    const Category k = category(c);
    return k == Category::Nd || k == Category::Nl || k == Category::No;
}
bool is_alphanumeric(char32_t c) { return is_letter(c) || is_numeric(c); }
bool is_punctuation(char32_t c) {
    const Category k = category(c);
    return k >= Category::Pc && k <= Category::Po;
}
bool is_other(char32_t c) {
    const Category k = category(c);
    return k >= Category::Cc && k != Category::Cn;  // as HF (unicode_categories): unassigned is not "other"
}
bool is_mark_nonspacing(char32_t c) { return c >= 0x300 && category(c) == Category::Mn; }

bool is_cjk(char32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

void append_lower(char32_t c, std::u32string& out) {
    if (c < 0x80) {
        out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
        return;
    }
    if (c == 0x130) {  // LATIN CAPITAL LETTER I WITH DOT ABOVE -> i + COMBINING DOT ABOVE
        out.push_back(U'i');
        out.push_back(0x307);
        return;
    }
    auto it = std::lower_bound(std::begin(kLower), std::end(kLower), static_cast<uint32_t>(c),
                               [](const uint32_t (&r)[2], uint32_t v) { return r[0] < v; });
    out.push_back(it != std::end(kLower) && (*it)[0] == c ? static_cast<char32_t>((*it)[1]) : c);
}

void append_decomposed(char32_t c, bool compat, std::u32string& out) {
    if (c < 0xA0) {
        out.push_back(c);
        return;
    }
    if (c >= kHangulS && c < kHangulS + kHangulSCount) {
        const int s = static_cast<int>(c - kHangulS);
        out.push_back(kHangulL + s / kHangulNCount);
        out.push_back(kHangulV + (s % kHangulNCount) / kHangulTCount);
        if (s % kHangulTCount) out.push_back(kHangulT + s % kHangulTCount);
        return;
    }
    auto it = std::lower_bound(std::begin(kDecompIndex), std::end(kDecompIndex), static_cast<uint32_t>(c),
                               [](const uint32_t (&r)[5], uint32_t v) { return r[0] < v; });
    if (it == std::end(kDecompIndex) || (*it)[0] != c) {
        out.push_back(c);
        return;
    }
    const uint32_t off = compat ? (*it)[3] : (*it)[1];
    const uint32_t len = compat ? (*it)[4] : (*it)[2];
    if (len == 0) {
        out.push_back(c);
        return;
    }
    for (uint32_t i = 0; i < len; ++i) out.push_back(kDecompPool[off + i]);
}

char32_t compose(char32_t a, char32_t b) {
    // Hangul LV and LVT.
    if (a >= kHangulL && a < kHangulL + kHangulLCount && b >= kHangulV && b < kHangulV + kHangulVCount)
        return kHangulS + ((a - kHangulL) * kHangulVCount + (b - kHangulV)) * kHangulTCount;
    if (a >= kHangulS && a < kHangulS + kHangulSCount && (a - kHangulS) % kHangulTCount == 0 && b > kHangulT &&
        b < kHangulT + kHangulTCount)
        return a + (b - kHangulT);
    auto it = std::lower_bound(std::begin(kCompose), std::end(kCompose), std::pair<uint32_t, uint32_t>(a, b),
                               [](const uint32_t (&r)[3], std::pair<uint32_t, uint32_t> v) {
                                   return r[0] < v.first || (r[0] == v.first && r[1] < v.second);
                               });
    if (it != std::end(kCompose) && (*it)[0] == a && (*it)[1] == b) return (*it)[2];
    return 0;
}

namespace {

// Length of the valid UTF-8 sequence at s[i] (1..4), or 0 if invalid; `consumed` is the length of the
// maximal invalid subpart when invalid (at least 1).
size_t utf8_sequence(std::string_view s, size_t i, char32_t& cp, size_t& consumed) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    consumed = 1;
    if (b0 < 0x80) {
        cp = b0;
        return 1;
    }
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 1;
        cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 2;
        cp = b0 & 0x0F;
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 3;
        cp = b0 & 0x07;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    for (size_t k = 1; k <= need; ++k) {
        if (i + k >= s.size()) return 0;
        const auto b = static_cast<unsigned char>(s[i + k]);
        if (b < lo || b > hi) return 0;
        lo = 0x80;
        hi = 0xBF;
        cp = (cp << 6) | (b & 0x3F);
        consumed = k + 1;
    }
    return need + 1;
}

}  // namespace

std::u32string decode_utf8(std::string_view s) {
    std::u32string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        char32_t cp;
        size_t consumed;
        const size_t n = utf8_sequence(s, i, cp, consumed);
        if (n) {
            out.push_back(cp);
            i += n;
        } else {
            out.push_back(kReplacement);
            i += consumed;
        }
    }
    return out;
}

void append_utf8(char32_t c, std::string& out) {
    if (c < 0x80) {
        out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (c >> 6)));
        out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (c >> 12)));
        out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (c >> 18)));
        out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
}

std::string encode_utf8(std::u32string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char32_t c : s) append_utf8(c, out);
    return out;
}

std::string utf8_lossy(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size());
    size_t i = 0;
    while (i < bytes.size()) {
        char32_t cp;
        size_t consumed;
        const size_t n = utf8_sequence(bytes, i, cp, consumed);
        if (n) {
            out.append(bytes.substr(i, n));
            i += n;
        } else {
            out.append("\xEF\xBF\xBD");
            i += consumed;
        }
    }
    return out;
}

bool is_valid_utf8(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        char32_t cp;
        size_t consumed;
        const size_t n = utf8_sequence(s, i, cp, consumed);
        if (!n) return false;
        i += n;
    }
    return true;
}

}  // namespace nscope::unicode

// Normalizers: each rewrites a NormStr in place, keeping every code point's source range.
#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/tokenizer/components.h"
#include "core/tokenizer/unicode.h"

namespace nscope::tok {
namespace {

using json = nlohmann::json;

// Unicode normalization with source alignment as HF's tokenizers computes it. Every output code point carries a
// "change" relative to the source: 0 = it replaces the next source code point, +1 = inserted (shares the
// previous one's range), -N = it replaces the next one and N more are removed. Canonical ordering moves code
// points together with their change and composition folds a merged mark's change into its starter; ranges
// are then handed out in source order (apply_changes). So a reordered combining mark does not carry its own
// source range along, and offsets stay monotonic.
struct Changed {
    char32_t c;
    int change;
};

/// Canonical decomposition (compatibility too when `compat`) and canonical ordering.
std::vector<Changed> decompose_changes(const NormStr& s, bool compat) {
    std::vector<Changed> out;
    out.reserve(s.size());
    std::u32string piece;
    for (char32_t c : s.chars) {
        piece.clear();
        unicode::append_decomposed(c, compat, piece);
        for (size_t k = 0; k < piece.size(); ++k) out.push_back({piece[k], k == 0 ? 0 : 1});
    }
    for (size_t i = 0; i < out.size();) {  // stable sort of each run of non-starters by combining class
        if (unicode::combining_class(out[i].c) == 0) {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < out.size() && unicode::combining_class(out[j].c) != 0) ++j;
        std::stable_sort(out.begin() + static_cast<ptrdiff_t>(i), out.begin() + static_cast<ptrdiff_t>(j),
                         [](const Changed& x, const Changed& y) {
                             return unicode::combining_class(x.c) < unicode::combining_class(y.c);
                         });
        i = j;
    }
    return out;
}

/// Canonical composition of a decomposed, ordered sequence; a merged mark leaves its change to the starter.
void compose_changes(std::vector<Changed>& v) {
    std::vector<Changed> out;
    out.reserve(v.size());
    ptrdiff_t starter = -1;
    int last_cc = -1;  // combining class of the last character kept since the starter; -1: none
    for (const Changed& x : v) {
        const int cc = unicode::combining_class(x.c);
        if (starter >= 0 && (last_cc == -1 || (last_cc != 0 && last_cc < cc))) {
            Changed& st = out[static_cast<size_t>(starter)];
            if (char32_t comp = unicode::compose(st.c, x.c)) {
                st.c = comp;
                st.change += x.change - 1;  // the mark is gone: a source it replaced is now removed
                continue;
            }
        }
        if (cc == 0) {
            starter = static_cast<ptrdiff_t>(out.size());
            last_cc = -1;
        } else {
            last_cc = cc;
        }
        out.push_back(x);
    }
    v = std::move(out);
}

/// Replace `s` by `v`, aligning each code point by its change (the rule HF's NormalizedString::transform uses).
void apply_changes(NormStr& s, const std::vector<Changed>& v) {
    std::u32string chars;
    std::vector<std::pair<uint32_t, uint32_t>> align;
    chars.reserve(v.size());
    align.reserve(v.size());
    size_t next = 0;  // the next source code point
    for (const Changed& x : v) {
        chars.push_back(x.c);
        if (x.change > 0) {
            align.push_back(s.align[next == 0 ? 0 : next - 1]);
        } else {
            align.push_back(s.align[std::min(next, s.align.size() - 1)]);
            next += 1 + static_cast<size_t>(-x.change);
        }
    }
    s.chars = std::move(chars);
    s.align = std::move(align);
}

void decompose(NormStr& s, bool compat) { apply_changes(s, decompose_changes(s, compat)); }

class UnicodeNorm : public Normalizer {
public:
    UnicodeNorm(bool compat, bool comp) : compat_(compat), compose_(comp) {}
    void normalize(NormStr& s) const override {
        // Fast path: ASCII is already in every normalization form.
        if (std::all_of(s.chars.begin(), s.chars.end(), [](char32_t c) { return c < 0x80; })) return;
        std::vector<Changed> v = decompose_changes(s, compat_);
        if (compose_) compose_changes(v);
        apply_changes(s, v);
    }

private:
    bool compat_, compose_;
};

class Lowercase : public Normalizer {
public:
    void normalize(NormStr& s) const override {
        s.map([](char32_t c, std::u32string& out) { unicode::append_lower(c, out); });
    }
};

class StripAccents : public Normalizer {
public:
    void normalize(NormStr& s) const override {
        s.map([](char32_t c, std::u32string& out) {
            if (!unicode::is_mark_nonspacing(c)) out.push_back(c);
        });
    }
};

class Strip : public Normalizer {
public:
    Strip(bool left, bool right) : left_(left), right_(right) {}
    void normalize(NormStr& s) const override {
        size_t b = 0, e = s.size();
        if (left_)
            while (b < e && unicode::is_whitespace(s.chars[b])) ++b;
        if (right_)
            while (e > b && unicode::is_whitespace(s.chars[e - 1])) --e;
        if (b != 0 || e != s.size()) s = s.slice(b, e);
    }

private:
    bool left_, right_;
};

class Prepend : public Normalizer {
public:
    explicit Prepend(std::u32string p) : prepend_(std::move(p)) {}
    void normalize(NormStr& s) const override { s.prepend(prepend_); }

private:
    std::u32string prepend_;
};

class Replace : public Normalizer {
public:
    Replace(const json& j, const JsonPath& p)
        : pattern_(field(j, p, "pattern"), p / "pattern"),
          content_(unicode::decode_utf8(get_string(j, p, "content"))) {}
    void normalize(NormStr& s) const override { s.replace_ranges(pattern_.find_all(s.chars), content_); }

private:
    Pattern pattern_;
    std::u32string content_;
};

class ByteLevelNorm : public Normalizer {
public:
    void normalize(NormStr& s) const override {
        const std::u32string& table = bytes_to_chars();
        s.map([&table](char32_t c, std::u32string& out) {
            std::string bytes;
            unicode::append_utf8(c, bytes);
            for (unsigned char b : bytes) out.push_back(table[b]);
        });
    }
};

class Bert : public Normalizer {
public:
    Bert(const json& j, const JsonPath& p)
        : clean_text_(get_bool(j, p, "clean_text", true)),
          chinese_(get_bool(j, p, "handle_chinese_chars", true)),
          lowercase_(get_bool(j, p, "lowercase", true)),
          strip_accents_(get_bool(j, p, "strip_accents", lowercase_)) {}

    void normalize(NormStr& s) const override {
        if (clean_text_) {
            s.map([](char32_t c, std::u32string& out) {
                if (c == 0 || c == 0xFFFD) return;
                if (c == '\t' || c == '\n' || c == '\r') {
                    out.push_back(' ');
                    return;
                }
                if (unicode::is_other(c)) return;
                out.push_back(unicode::is_whitespace(c) ? U' ' : c);
            });
        }
        if (chinese_) {
            s.map([](char32_t c, std::u32string& out) {
                if (unicode::is_cjk(c)) {
                    out.push_back(' ');
                    out.push_back(c);
                    out.push_back(' ');
                } else {
                    out.push_back(c);
                }
            });
        }
        if (strip_accents_) {
            decompose(s, false);
            StripAccents{}.normalize(s);
        }
        if (lowercase_) Lowercase{}.normalize(s);
    }

private:
    bool clean_text_, chinese_, lowercase_, strip_accents_;
};

class Sequence : public Normalizer {
public:
    Sequence(const json& j, const JsonPath& p) {
        const json& list = field(j, p, "normalizers");
        const JsonPath lp = p / "normalizers";
        if (!list.is_array()) lp.fail("expected an array");
        for (size_t i = 0; i < list.size(); ++i)
            if (auto n = make_normalizer(list[i], lp[i])) items_.push_back(std::move(n));
    }
    void normalize(NormStr& s) const override {
        for (const auto& n : items_) n->normalize(s);
    }

private:
    std::vector<std::unique_ptr<Normalizer>> items_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& j, const JsonPath& p) {
    if (j.is_null()) return nullptr;
    const std::string type = type_of(j, p);
    if (type == "BertNormalizer") return std::make_unique<Bert>(j, p);
    if (type == "Sequence") return std::make_unique<Sequence>(j, p);
    if (type == "Prepend") return std::make_unique<Prepend>(unicode::decode_utf8(get_string(j, p, "prepend")));
    if (type == "Replace") return std::make_unique<Replace>(j, p);
    if (type == "NFC") return std::make_unique<UnicodeNorm>(false, true);
    if (type == "NFD") return std::make_unique<UnicodeNorm>(false, false);
    if (type == "NFKC") return std::make_unique<UnicodeNorm>(true, true);
    if (type == "NFKD") return std::make_unique<UnicodeNorm>(true, false);
    if (type == "Lowercase") return std::make_unique<Lowercase>();
    if (type == "StripAccents") return std::make_unique<StripAccents>();
    if (type == "Strip")
        return std::make_unique<Strip>(get_bool(j, p, "strip_left", true), get_bool(j, p, "strip_right", true));
    if (type == "ByteLevel") return std::make_unique<ByteLevelNorm>();
    (p / "type").unsupported("normalizer", type,
                             {"BertNormalizer", "Sequence", "Prepend", "Replace", "NFC", "NFD", "NFKC", "NFKD",
                              "Lowercase", "StripAccents", "Strip", "ByteLevel"});
}

}  // namespace nscope::tok

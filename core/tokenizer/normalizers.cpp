// Normalizers: each rewrites a NormStr in place, keeping every code point's source range.
#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/tokenizer/components.h"
#include "core/tokenizer/unicode.h"

namespace nscope::tok {
namespace {

using json = nlohmann::json;

// Canonical ordering: stable sort of each run of non-starters by combining class.
void canonical_order(NormStr& s) {
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
        if (unicode::combining_class(s.chars[i]) == 0) {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < n && unicode::combining_class(s.chars[j]) != 0) ++j;
        if (j - i > 1) {
            std::vector<std::pair<char32_t, std::pair<uint32_t, uint32_t>>> run;
            for (size_t k = i; k < j; ++k) run.emplace_back(s.chars[k], s.align[k]);
            std::stable_sort(run.begin(), run.end(), [](const auto& a, const auto& b) {
                return unicode::combining_class(a.first) < unicode::combining_class(b.first);
            });
            for (size_t k = i; k < j; ++k) {
                s.chars[k] = run[k - i].first;
                s.align[k] = run[k - i].second;
            }
        }
        i = j;
    }
}

void decompose(NormStr& s, bool compat) {
    s.map([compat](char32_t c, std::u32string& out) { unicode::append_decomposed(c, compat, out); });
    canonical_order(s);
}

// Canonical composition of a decomposed string. A composite keeps its starter's source range.
void compose(NormStr& s) {
    std::u32string out;
    std::vector<std::pair<uint32_t, uint32_t>> out_align;
    out.reserve(s.size());
    out_align.reserve(s.size());
    ptrdiff_t starter = -1;
    int last_cc = -1;  // combining class of the last character kept since the starter; -1: none
    for (size_t i = 0; i < s.size(); ++i) {
        const char32_t c = s.chars[i];
        const int cc = unicode::combining_class(c);
        if (starter >= 0 && (last_cc == -1 || (last_cc != 0 && last_cc < cc))) {
            if (char32_t comp = unicode::compose(out[static_cast<size_t>(starter)], c)) {
                out[static_cast<size_t>(starter)] = comp;
                continue;
            }
        }
        if (cc == 0) {
            starter = static_cast<ptrdiff_t>(out.size());
            last_cc = -1;
        } else {
            last_cc = cc;
        }
        out.push_back(c);
        out_align.push_back(s.align[i]);
    }
    s.chars = std::move(out);
    s.align = std::move(out_align);
}

class UnicodeNorm : public Normalizer {
public:
    UnicodeNorm(bool compat, bool comp) : compat_(compat), compose_(comp) {}
    void normalize(NormStr& s) const override {
        // Fast path: ASCII is already in every normalization form.
        if (std::all_of(s.chars.begin(), s.chars.end(), [](char32_t c) { return c < 0x80; })) return;
        decompose(s, compat_);
        if (compose_) compose(s);
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

// Pre-tokenizers: split normalized text into the pieces the model tokenizes one by one.
#include <nlohmann/json.hpp>

#include "core/tokenizer/components.h"
#include "core/tokenizer/unicode.h"

namespace nscope::tok {
namespace {

using json = nlohmann::json;
using Ranges = std::vector<std::pair<size_t, size_t>>;

// GPT-2's pre-tokenization pattern (ByteLevel with use_regex).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

template <class Pred>
Ranges char_matches(const std::u32string& s, Pred pred) {
    Ranges out;
    for (size_t i = 0; i < s.size(); ++i)
        if (pred(s[i])) out.emplace_back(i, i + 1);
    return out;
}

bool is_bert_punc(char32_t c) {
    return (c < 0x80 && ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
                         (c >= 123 && c <= 126))) ||
           unicode::is_punctuation(c);
}

/// Apply `f(piece, out)` to every piece.
template <class F>
void split_each(std::vector<NormStr>& pieces, F f) {
    std::vector<NormStr> out;
    out.reserve(pieces.size());
    for (const auto& p : pieces) f(p, out);
    pieces = std::move(out);
}

class ByteLevel : public PreTokenizer {
public:
    ByteLevel(const json& j, const JsonPath& p)
        : add_prefix_space_(get_bool(j, p, "add_prefix_space", true)), use_regex_(get_bool(j, p, "use_regex", true)) {
        if (use_regex_) regex_ = std::make_unique<Regex>(kGpt2Pattern, p);
    }
    void pre_tokenize(std::vector<NormStr>& pieces) const override {
        const std::u32string& table = bytes_to_chars();
        split_each(pieces, [&](const NormStr& piece, std::vector<NormStr>& out) {
            NormStr s = piece;
            if (add_prefix_space_ && !s.empty() && s.chars.front() != U' ') s.prepend(U" ");
            const size_t first = out.size();
            if (use_regex_)
                split_append(s, regex_->find_all(s.chars), SplitBehavior::Isolated, false, out);
            else if (!s.empty())
                out.push_back(std::move(s));
            for (size_t i = first; i < out.size(); ++i)
                out[i].map([&table](char32_t c, std::u32string& o) {
                    if (c < 0x80) {
                        o.push_back(table[c]);
                        return;
                    }
                    std::string bytes;
                    unicode::append_utf8(c, bytes);
                    for (unsigned char b : bytes) o.push_back(table[b]);
                });
        });
    }

private:
    bool add_prefix_space_, use_regex_;
    std::unique_ptr<Regex> regex_;
};

class Split : public PreTokenizer {
public:
    Split(const json& j, const JsonPath& p)
        : pattern_(field(j, p, "pattern"), p / "pattern"),
          behavior_(parse_behavior(j, p, "behavior", SplitBehavior::Removed)),
          invert_(get_bool(j, p, "invert", false)) {
        if (!j.contains("behavior")) (p / "behavior").fail("missing field");
    }
    void pre_tokenize(std::vector<NormStr>& pieces) const override {
        split_each(pieces, [&](const NormStr& s, std::vector<NormStr>& out) {
            split_append(s, pattern_.find_all(s.chars), behavior_, invert_, out);
        });
    }

private:
    Pattern pattern_;
    SplitBehavior behavior_;
    bool invert_;
};

class Metaspace : public PreTokenizer {
public:
    enum class Prepend { Always, First, Never };
    Metaspace(const json& j, const JsonPath& p) {
        const std::u32string rep = unicode::decode_utf8(get_string(j, p, "replacement", "\xE2\x96\x81"));
        if (rep.size() != 1) (p / "replacement").fail("expected a single character");
        replacement_ = rep[0];
        split_ = get_bool(j, p, "split", true);
        scheme_ = get_bool(j, p, "add_prefix_space", true) ? Prepend::Always : Prepend::Never;
        if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
            const std::string s = get_string(j, p, "prepend_scheme");
            if (s == "always")
                scheme_ = Prepend::Always;
            else if (s == "first")
                scheme_ = Prepend::First;
            else if (s == "never")
                scheme_ = Prepend::Never;
            else
                (p / "prepend_scheme").unsupported("prepend scheme", s, {"always", "first", "never"});
        }
    }
    void pre_tokenize(std::vector<NormStr>& pieces) const override {
        const std::u32string rep(1, replacement_);
        split_each(pieces, [&](const NormStr& piece, std::vector<NormStr>& out) {
            NormStr s = piece;
            s.replace_ranges(char_matches(s.chars, [](char32_t c) { return c == U' '; }), rep);
            if (!s.empty() && s.chars.front() != replacement_) {
                if (scheme_ == Prepend::Always || (scheme_ == Prepend::First && s.align.front().first == 0))
                    s.prepend(rep);
            }
            if (split_)
                split_append(s, char_matches(s.chars, [this](char32_t c) { return c == replacement_; }),
                             SplitBehavior::MergedWithNext, false, out);
            else if (!s.empty())
                out.push_back(std::move(s));
        });
    }

private:
    char32_t replacement_;
    Prepend scheme_;
    bool split_;
};

class Whitespace : public PreTokenizer {
public:
    explicit Whitespace(const JsonPath& p) : regex_(R"(\w+|[^\w\s]+)", p) {}
    void pre_tokenize(std::vector<NormStr>& pieces) const override {
        split_each(pieces, [&](const NormStr& s, std::vector<NormStr>& out) {
            split_append(s, regex_.find_all(s.chars), SplitBehavior::Removed, true, out);
        });
    }

private:
    Regex regex_;
};

/// Splits on single characters chosen by a predicate (WhitespaceSplit, Punctuation, Digits, CharDelimiterSplit).
template <class Pred>
class CharSplit : public PreTokenizer {
public:
    CharSplit(Pred pred, SplitBehavior behavior) : pred_(pred), behavior_(behavior) {}
    void pre_tokenize(std::vector<NormStr>& pieces) const override {
        split_each(pieces, [&](const NormStr& s, std::vector<NormStr>& out) {
            split_append(s, char_matches(s.chars, pred_), behavior_, false, out);
        });
    }

private:
    Pred pred_;
    SplitBehavior behavior_;
};
template <class Pred>
std::unique_ptr<PreTokenizer> char_split(Pred pred, SplitBehavior behavior) {
    return std::make_unique<CharSplit<Pred>>(pred, behavior);
}

class Sequence : public PreTokenizer {
public:
    Sequence(const json& j, const JsonPath& p) {
        const json& list = field(j, p, "pretokenizers");
        const JsonPath lp = p / "pretokenizers";
        if (!list.is_array()) lp.fail("expected an array");
        for (size_t i = 0; i < list.size(); ++i)
            if (auto t = make_pre_tokenizer(list[i], lp[i])) items_.push_back(std::move(t));
    }
    void pre_tokenize(std::vector<NormStr>& pieces) const override {
        for (const auto& t : items_) t->pre_tokenize(pieces);
    }
    std::vector<std::unique_ptr<PreTokenizer>> items_;
};

class Bert : public PreTokenizer {
public:
    void pre_tokenize(std::vector<NormStr>& pieces) const override {
        ws_->pre_tokenize(pieces);
        punct_->pre_tokenize(pieces);
    }
    std::unique_ptr<PreTokenizer> ws_ = char_split(unicode::is_whitespace, SplitBehavior::Removed);
    std::unique_ptr<PreTokenizer> punct_ = char_split(is_bert_punc, SplitBehavior::Isolated);
};

}  // namespace

const std::u32string& bytes_to_chars() {
    static const std::u32string table = [] {
        std::u32string t(256, 0);
        char32_t next = 256;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            t[static_cast<size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
        }
        return t;
    }();
    return table;
}

int char_to_byte(char32_t c) {
    static const std::vector<int> inverse = [] {
        std::vector<int> inv(512, -1);
        const std::u32string& t = bytes_to_chars();
        for (int b = 0; b < 256; ++b) inv[t[static_cast<size_t>(b)]] = b;
        return inv;
    }();
    return c < inverse.size() ? inverse[c] : -1;
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const JsonPath& p) {
    if (j.is_null()) return nullptr;
    const std::string type = type_of(j, p);
    if (type == "ByteLevel") return std::make_unique<ByteLevel>(j, p);
    if (type == "Split") return std::make_unique<Split>(j, p);
    if (type == "Sequence") return std::make_unique<Sequence>(j, p);
    if (type == "Metaspace") return std::make_unique<Metaspace>(j, p);
    if (type == "Whitespace") return std::make_unique<Whitespace>(p);
    if (type == "WhitespaceSplit") return char_split(unicode::is_whitespace, SplitBehavior::Removed);
    if (type == "BertPreTokenizer") return std::make_unique<Bert>();
    if (type == "Punctuation")
        return char_split(is_bert_punc, parse_behavior(j, p, "behavior", SplitBehavior::Isolated));
    if (type == "Digits")
        return char_split(unicode::is_numeric, get_bool(j, p, "individual_digits", false) ? SplitBehavior::Isolated
                                                                                          : SplitBehavior::Contiguous);
    if (type == "CharDelimiterSplit") {
        const std::u32string d = unicode::decode_utf8(get_string(j, p, "delimiter"));
        if (d.size() != 1) (p / "delimiter").fail("expected a single character");
        const char32_t delim = d[0];
        return char_split([delim](char32_t c) { return c == delim; }, SplitBehavior::Removed);
    }
    (p / "type").unsupported("pre-tokenizer", type,
                             {"ByteLevel", "Split", "Sequence", "Metaspace", "Whitespace", "WhitespaceSplit",
                              "BertPreTokenizer", "Punctuation", "Digits", "CharDelimiterSplit"});
}

}  // namespace nscope::tok

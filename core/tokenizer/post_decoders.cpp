// Post-processors (special tokens around a sequence, byte-level offset trimming) and decoders.
#include <map>

#include <nlohmann/json.hpp>

#include "core/tokenizer/components.h"
#include "core/tokenizer/unicode.h"

namespace nscope::tok {
namespace {

using json = nlohmann::json;

// ---- post-processors ---------------------------------------------------------------------------------

/// HF's byte-level offset trimming: leading / trailing spaces ('Ġ' or whitespace) leave the offsets.
void trim_offsets(Encoding& e, bool add_prefix_space) {
    for (size_t i = 0; i < e.size(); ++i) {
        const std::u32string t = unicode::decode_utf8(e.tokens[i]);
        auto is_space = [](char32_t c) { return c == 0x120 || unicode::is_whitespace(c); };
        size_t leading = 0, trailing = 0;
        while (leading < t.size() && is_space(t[leading])) ++leading;
        while (trailing < t.size() && is_space(t[t.size() - 1 - trailing])) ++trailing;
        auto& [b, en] = e.offsets[i];
        if (leading > 0) {
            const bool is_first = i == 0 || b == 0;
            if (!(is_first && add_prefix_space && leading == 1)) b = std::min(b + leading, en);
        }
        if (trailing > 0 && en >= trailing) en = std::max(en - trailing, b);
    }
}

struct SpecialPiece {
    std::vector<int64_t> ids;
    std::vector<std::string> tokens;
};

void append_special(Encoding& e, const SpecialPiece& s, int64_t type_id) {
    for (size_t k = 0; k < s.ids.size(); ++k) {
        e.ids.push_back(s.ids[k]);
        e.tokens.push_back(s.tokens[k]);
        e.offsets.emplace_back(0, 0);
        e.type_ids.push_back(type_id);
        e.special_tokens_mask.push_back(1);
    }
}

void append_sequence(Encoding& e, const Encoding& seq, int64_t type_id) {
    e.ids.insert(e.ids.end(), seq.ids.begin(), seq.ids.end());
    e.tokens.insert(e.tokens.end(), seq.tokens.begin(), seq.tokens.end());
    e.offsets.insert(e.offsets.end(), seq.offsets.begin(), seq.offsets.end());
    e.type_ids.insert(e.type_ids.end(), seq.size(), type_id);
    e.special_tokens_mask.insert(e.special_tokens_mask.end(), seq.special_tokens_mask.begin(),
                                 seq.special_tokens_mask.end());
}

class ByteLevelPost : public PostProcessor {
public:
    ByteLevelPost(const json& j, const JsonPath& p)
        : trim_(get_bool(j, p, "trim_offsets", true)), add_prefix_space_(get_bool(j, p, "add_prefix_space", true)) {}
    void process(Encoding& e, bool) const override {
        if (trim_) trim_offsets(e, add_prefix_space_);
    }

private:
    bool trim_, add_prefix_space_;
};

class Template : public PostProcessor {
public:
    Template(const json& j, const JsonPath& p) {
        const json& specials = j.contains("special_tokens") ? j["special_tokens"] : json::object();
        const JsonPath sp = p / "special_tokens";
        if (!specials.is_object()) sp.fail("expected an object");
        for (auto it = specials.begin(); it != specials.end(); ++it) {
            const JsonPath ip = sp / it.key();
            SpecialPiece s;
            const json& ids = field(it.value(), ip, "ids");
            const json& toks = field(it.value(), ip, "tokens");
            if (!ids.is_array() || !toks.is_array() || ids.size() != toks.size())
                ip.fail("expected \"ids\" and \"tokens\" arrays of the same length");
            for (size_t k = 0; k < ids.size(); ++k) {
                if (!ids[k].is_number_integer()) (ip / "ids")[k].fail("expected an integer");
                if (!toks[k].is_string()) (ip / "tokens")[k].fail("expected a string");
                s.ids.push_back(ids[k].get<int64_t>());
                s.tokens.push_back(toks[k].get<std::string>());
            }
            specials_[it.key()] = std::move(s);
        }
        const json& single = field(j, p, "single");
        const JsonPath tp = p / "single";
        if (!single.is_array()) tp.fail("expected an array of {\"SpecialToken\"|\"Sequence\": {...}} pieces");
        for (size_t i = 0; i < single.size(); ++i) {
            const json& piece = single[i];
            Piece out;
            if (piece.is_object() && piece.contains("SpecialToken")) {
                const json& st = piece["SpecialToken"];
                const JsonPath pp = tp[i] / "SpecialToken";
                out.special = get_string(st, pp, "id");
                out.type_id = get_int(st, pp, "type_id", 0);
                if (!specials_.count(out.special))
                    (pp / "id").fail("special token '" + out.special + "' is not listed in special_tokens");
            } else if (piece.is_object() && piece.contains("Sequence")) {
                out.type_id = get_int(piece["Sequence"], tp[i] / "Sequence", "type_id", 0);
            } else {
                tp[i].fail("expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
            }
            single_.push_back(std::move(out));
        }
    }
    void process(Encoding& e, bool add_special) const override {
        Encoding out;
        for (const auto& piece : single_) {
            if (piece.special.empty())
                append_sequence(out, e, piece.type_id);
            else if (add_special)
                append_special(out, specials_.at(piece.special), piece.type_id);
        }
        e = std::move(out);
    }
    std::vector<int64_t> prefix_ids() const override { return collect(true); }
    std::vector<int64_t> suffix_ids() const override { return collect(false); }

private:
    struct Piece {
        std::string special;  // empty: the sequence
        int64_t type_id = 0;
    };
    std::vector<int64_t> collect(bool before) const {
        std::vector<int64_t> out;
        bool seen_sequence = false;
        for (const auto& piece : single_) {
            if (piece.special.empty()) {
                seen_sequence = true;
            } else if (seen_sequence != before) {
                const auto& ids = specials_.at(piece.special).ids;
                out.insert(out.end(), ids.begin(), ids.end());
            }
        }
        return out;
    }
    std::map<std::string, SpecialPiece> specials_;
    std::vector<Piece> single_;
};

class BertLike : public PostProcessor {
public:
    BertLike(const json& j, const JsonPath& p, bool roberta) : roberta_(roberta) {
        cls_ = pair(j, p, "cls");
        sep_ = pair(j, p, "sep");
        trim_ = roberta && get_bool(j, p, "trim_offsets", true);
        add_prefix_space_ = get_bool(j, p, "add_prefix_space", true);
    }
    void process(Encoding& e, bool add_special) const override {
        if (trim_) trim_offsets(e, add_prefix_space_);
        if (!add_special) return;
        Encoding out;
        append_special(out, cls_, 0);
        append_sequence(out, e, 0);
        append_special(out, sep_, 0);
        e = std::move(out);
    }
    std::vector<int64_t> prefix_ids() const override { return cls_.ids; }
    std::vector<int64_t> suffix_ids() const override { return sep_.ids; }

private:
    static SpecialPiece pair(const json& j, const JsonPath& p, const char* key) {
        const json& v = field(j, p, key);
        if (!v.is_array() || v.size() != 2 || !v[0].is_string() || !v[1].is_number_integer())
            (p / key).fail("expected [\"token\", id]");
        return {{v[1].get<int64_t>()}, {v[0].get<std::string>()}};
    }
    bool roberta_;
    SpecialPiece cls_, sep_;
    bool trim_ = false, add_prefix_space_ = true;
};

class PostSequence : public PostProcessor {
public:
    PostSequence(const json& j, const JsonPath& p) {
        const json& list = field(j, p, "processors");
        const JsonPath lp = p / "processors";
        if (!list.is_array()) lp.fail("expected an array");
        for (size_t i = 0; i < list.size(); ++i)
            if (auto t = make_post_processor(list[i], lp[i])) items_.push_back(std::move(t));
    }
    void process(Encoding& e, bool add_special) const override {
        for (const auto& t : items_) t->process(e, add_special);
    }
    std::vector<int64_t> prefix_ids() const override {
        std::vector<int64_t> out;
        for (const auto& t : items_) {
            auto ids = t->prefix_ids();
            out.insert(out.end(), ids.begin(), ids.end());
        }
        return out;
    }
    std::vector<int64_t> suffix_ids() const override {
        std::vector<int64_t> out;
        for (const auto& t : items_) {
            auto ids = t->suffix_ids();
            out.insert(out.end(), ids.begin(), ids.end());
        }
        return out;
    }

private:
    std::vector<std::unique_ptr<PostProcessor>> items_;
};

// ---- decoders ----------------------------------------------------------------------------------------

class ByteLevelDec : public Decoder {
public:
    void decode_chain(std::vector<std::string>& tokens) const override {
        std::string bytes;
        for (const auto& t : tokens) {
            const std::u32string cs = unicode::decode_utf8(t);
            std::string tb;
            bool ok = true;
            for (char32_t c : cs) {
                const int b = char_to_byte(c);
                if (b < 0) {
                    ok = false;
                    break;
                }
                tb.push_back(static_cast<char>(b));
            }
            bytes += ok ? tb : t;
        }
        tokens.assign(1, unicode::utf8_lossy(bytes));
    }
};

class MetaspaceDec : public Decoder {
public:
    MetaspaceDec(const json& j, const JsonPath& p) {
        const std::u32string rep = unicode::decode_utf8(get_string(j, p, "replacement", "\xE2\x96\x81"));
        if (rep.size() != 1) (p / "replacement").fail("expected a single character");
        replacement_ = rep[0];
        strip_first_ = get_bool(j, p, "add_prefix_space", true);
        if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string())
            strip_first_ = j["prepend_scheme"].get<std::string>() != "never";
    }
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (size_t i = 0; i < tokens.size(); ++i) {
            std::string out;
            for (char32_t c : unicode::decode_utf8(tokens[i])) {
                if (c == replacement_) {
                    if (i == 0 && strip_first_) continue;
                    out.push_back(' ');
                } else {
                    unicode::append_utf8(c, out);
                }
            }
            tokens[i] = std::move(out);
        }
    }

private:
    char32_t replacement_;
    bool strip_first_;
};

class ByteFallbackDec : public Decoder {
public:
    void decode_chain(std::vector<std::string>& tokens) const override {
        std::vector<std::string> out;
        std::string pending;
        size_t pending_count = 0;
        auto flush = [&] {
            if (!pending_count) return;
            if (unicode::is_valid_utf8(pending)) {
                out.push_back(pending);
            } else {
                for (size_t k = 0; k < pending_count; ++k) out.emplace_back("\xEF\xBF\xBD");
            }
            pending.clear();
            pending_count = 0;
        };
        for (auto& t : tokens) {
            if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
                std::isxdigit(static_cast<unsigned char>(t[4]))) {
                pending.push_back(static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
                ++pending_count;
                continue;
            }
            flush();
            out.push_back(std::move(t));
        }
        flush();
        tokens = std::move(out);
    }
};

class FuseDec : public Decoder {
public:
    void decode_chain(std::vector<std::string>& tokens) const override {
        std::string all;
        for (const auto& t : tokens) all += t;
        tokens.assign(1, all);
    }
};

class StripDec : public Decoder {
public:
    StripDec(const json& j, const JsonPath& p) {
        const std::u32string c = unicode::decode_utf8(get_string(j, p, "content"));
        if (c.size() != 1) (p / "content").fail("expected a single character");
        content_ = c[0];
        start_ = static_cast<size_t>(get_int(j, p, "start", 0));
        stop_ = static_cast<size_t>(get_int(j, p, "stop", 0));
    }
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (auto& t : tokens) {
            const std::u32string cs = unicode::decode_utf8(t);
            size_t b = 0, e = cs.size();
            while (b < start_ && b < cs.size() && cs[b] == content_) ++b;
            size_t k = 0;
            while (k < stop_ && e > b && cs[e - 1] == content_) {
                --e;
                ++k;
            }
            t = unicode::encode_utf8(std::u32string_view(cs).substr(b, e - b));
        }
    }

private:
    char32_t content_;
    size_t start_, stop_;
};

class ReplaceDec : public Decoder {
public:
    ReplaceDec(const json& j, const JsonPath& p)
        : pattern_(field(j, p, "pattern"), p / "pattern"), content_(unicode::decode_utf8(get_string(j, p, "content"))) {}
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (auto& t : tokens) {
            NormStr s;
            s.chars = unicode::decode_utf8(t);
            s.align.assign(s.chars.size(), {0, 0});
            s.replace_ranges(pattern_.find_all(s.chars), content_);
            t = unicode::encode_utf8(s.chars);
        }
    }

private:
    Pattern pattern_;
    std::u32string content_;
};

void replace_all(std::string& s, std::string_view from, std::string_view to) {
    size_t hit = s.find(from);
    if (hit == std::string::npos) return;
    std::string out;
    size_t pos = 0;
    for (; hit != std::string::npos; hit = s.find(from, pos)) {
        out.append(s, pos, hit - pos);
        out.append(to);
        pos = hit + from.size();
    }
    out.append(s, pos, std::string::npos);
    s = std::move(out);
}

class WordPieceDec : public Decoder {
public:
    WordPieceDec(const json& j, const JsonPath& p)
        : prefix_(get_string(j, p, "prefix", "##")), cleanup_(get_bool(j, p, "cleanup", true)) {}
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (size_t i = 0; i < tokens.size(); ++i) {
            std::string& t = tokens[i];
            if (i != 0) {
                if (t.compare(0, prefix_.size(), prefix_) == 0)
                    t.erase(0, prefix_.size());
                else
                    t = " " + t;
            }
            if (cleanup_) {
                replace_all(t, " .", ".");
                replace_all(t, " ?", "?");
                replace_all(t, " !", "!");
                replace_all(t, " ,", ",");
                replace_all(t, " ' ", "'");
                replace_all(t, " n't", "n't");
                replace_all(t, " 'm", "'m");
                replace_all(t, " do not", " don't");
                replace_all(t, " 's", "'s");
                replace_all(t, " 've", "'ve");
                replace_all(t, " 're", "'re");
            }
        }
    }

private:
    std::string prefix_;
    bool cleanup_;
};

class BpeDec : public Decoder {
public:
    BpeDec(const json& j, const JsonPath& p) : suffix_(get_string(j, p, "suffix", "</w>")) {}
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (size_t i = 0; i < tokens.size(); ++i)
            if (!suffix_.empty()) replace_all(tokens[i], suffix_, i + 1 == tokens.size() ? "" : " ");
    }

private:
    std::string suffix_;
};

class DecSequence : public Decoder {
public:
    DecSequence(const json& j, const JsonPath& p) {
        const json& list = field(j, p, "decoders");
        const JsonPath lp = p / "decoders";
        if (!list.is_array()) lp.fail("expected an array");
        for (size_t i = 0; i < list.size(); ++i)
            if (auto d = make_decoder(list[i], lp[i])) items_.push_back(std::move(d));
    }
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (const auto& d : items_) d->decode_chain(tokens);
    }

private:
    std::vector<std::unique_ptr<Decoder>> items_;
};

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const JsonPath& p) {
    if (j.is_null()) return nullptr;
    const std::string type = type_of(j, p);
    if (type == "TemplateProcessing") return std::make_unique<Template>(j, p);
    if (type == "BertProcessing") return std::make_unique<BertLike>(j, p, false);
    if (type == "RobertaProcessing") return std::make_unique<BertLike>(j, p, true);
    if (type == "ByteLevel") return std::make_unique<ByteLevelPost>(j, p);
    if (type == "Sequence") return std::make_unique<PostSequence>(j, p);
    (p / "type").unsupported("post-processor", type,
                             {"TemplateProcessing", "BertProcessing", "RobertaProcessing", "ByteLevel", "Sequence"});
}

std::unique_ptr<Decoder> make_decoder(const json& j, const JsonPath& p) {
    if (j.is_null()) return nullptr;
    const std::string type = type_of(j, p);
    if (type == "ByteLevel") return std::make_unique<ByteLevelDec>();
    if (type == "Metaspace") return std::make_unique<MetaspaceDec>(j, p);
    if (type == "ByteFallback") return std::make_unique<ByteFallbackDec>();
    if (type == "Fuse") return std::make_unique<FuseDec>();
    if (type == "Strip") return std::make_unique<StripDec>(j, p);
    if (type == "Replace") return std::make_unique<ReplaceDec>(j, p);
    if (type == "WordPiece") return std::make_unique<WordPieceDec>(j, p);
    if (type == "BPEDecoder") return std::make_unique<BpeDec>(j, p);
    if (type == "Sequence") return std::make_unique<DecSequence>(j, p);
    (p / "type").unsupported("decoder", type,
                             {"ByteLevel", "Metaspace", "ByteFallback", "Fuse", "Strip", "Replace", "WordPiece",
                              "BPEDecoder", "Sequence"});
}

}  // namespace nscope::tok

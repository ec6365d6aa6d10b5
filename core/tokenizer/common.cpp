// NormStr operations, JSON access with paths, PCRE2 patterns and HF's split behaviours.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/tokenizer/components.h"
#include "core/tokenizer/unicode.h"
#include "core/util/text.h"
#include "nscope/error.h"

namespace nscope::tok {

using json = nlohmann::json;

// ---- NormStr -----------------------------------------------------------------------------------------

NormStr NormStr::slice(size_t begin, size_t end) const {
    NormStr out;
    out.chars = chars.substr(begin, end - begin);
    out.align.assign(align.begin() + static_cast<ptrdiff_t>(begin), align.begin() + static_cast<ptrdiff_t>(end));
    return out;
}

void NormStr::map(const std::function<void(char32_t, std::u32string&)>& f) {
    std::u32string out;
    std::vector<std::pair<uint32_t, uint32_t>> out_align;
    out.reserve(chars.size());
    out_align.reserve(chars.size());
    for (size_t i = 0; i < chars.size(); ++i) {
        const size_t before = out.size();
        f(chars[i], out);
        out_align.insert(out_align.end(), out.size() - before, align[i]);
    }
    chars = std::move(out);
    align = std::move(out_align);
}

void NormStr::prepend(std::u32string_view s) {
    if (chars.empty() || s.empty()) return;
    const auto a = align.front();
    chars.insert(0, s);
    align.insert(align.begin(), s.size(), a);
}

void NormStr::replace_ranges(const std::vector<std::pair<size_t, size_t>>& matches, std::u32string_view content) {
    if (matches.empty()) return;
    std::u32string out;
    std::vector<std::pair<uint32_t, uint32_t>> out_align;
    size_t pos = 0;
    for (const auto& [b, e] : matches) {
        out.append(chars, pos, b - pos);
        out_align.insert(out_align.end(), align.begin() + static_cast<ptrdiff_t>(pos),
                         align.begin() + static_cast<ptrdiff_t>(b));
        // As in HF: the new characters share the alignment of the last replaced one.
        out.append(content);
        out_align.insert(out_align.end(), content.size(), align[e - 1]);
        pos = e;
    }
    out.append(chars, pos, std::u32string::npos);
    out_align.insert(out_align.end(), align.begin() + static_cast<ptrdiff_t>(pos), align.end());
    chars = std::move(out);
    align = std::move(out_align);
}

// ---- JSON paths --------------------------------------------------------------------------------------

void JsonPath::fail(const std::string& what) const {
    throw InputError(*file + ": " + (path.empty() ? std::string("(top level)") : path) + ": " + what);
}

void JsonPath::unsupported(const std::string& kind, const std::string& type,
                           const std::vector<std::string>& supported) const {
    fail("unsupported " + kind + " type '" + type + "'" + did_you_mean(type, supported) +
         "; supported: " + join(supported, ", "));
}

const json& field(const json& j, const JsonPath& p, const char* key) {
    if (!j.is_object()) p.fail("expected an object");
    auto it = j.find(key);
    if (it == j.end()) (p / key).fail("missing field");
    return *it;
}

std::string get_string(const json& j, const JsonPath& p, const char* key, const std::string& dflt) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return dflt;
    if (!it->is_string()) (p / key).fail("expected a string, got " + it->dump());
    return it->get<std::string>();
}

std::string get_string(const json& j, const JsonPath& p, const char* key) {
    const json& v = field(j, p, key);
    if (!v.is_string()) (p / key).fail("expected a string, got " + v.dump());
    return v.get<std::string>();
}

bool get_bool(const json& j, const JsonPath& p, const char* key, bool dflt) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return dflt;
    if (!it->is_boolean()) (p / key).fail("expected true or false, got " + it->dump());
    return it->get<bool>();
}

int64_t get_int(const json& j, const JsonPath& p, const char* key, int64_t dflt) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return dflt;
    if (!it->is_number_integer()) (p / key).fail("expected an integer, got " + it->dump());
    return it->get<int64_t>();
}

std::string type_of(const json& j, const JsonPath& p) {
    if (!j.is_object()) p.fail("expected an object with a \"type\", got " + j.dump().substr(0, 80));
    return get_string(j, p, "type");
}

// ---- PCRE2 -------------------------------------------------------------------------------------------

Regex::Regex(std::string_view pattern, const JsonPath& where) {
    int err = 0;
    PCRE2_SIZE err_off = 0;
    auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                               &err, &err_off, nullptr);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        where.fail("invalid regex at offset " + std::to_string(err_off) + ": " + reinterpret_cast<char*>(msg));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional speed-up; falls back to the interpreter
    code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::u32string_view text) const {
    std::vector<std::pair<size_t, size_t>> out;
    if (text.empty()) return out;
    // UTF-8 copy plus the code point index of every byte offset (and of the end).
    std::string utf8;
    utf8.reserve(text.size());
    std::vector<uint32_t> cp_at;
    cp_at.reserve(text.size() + 1);
    for (size_t i = 0; i < text.size(); ++i) {
        const size_t before = utf8.size();
        unicode::append_utf8(text[i], utf8);
        cp_at.insert(cp_at.end(), utf8.size() - before, static_cast<uint32_t>(i));
    }
    cp_at.push_back(static_cast<uint32_t>(text.size()));

    auto* code = static_cast<pcre2_code*>(code_);
    thread_local std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create(16, nullptr), &pcre2_match_data_free);
    size_t start = 0;
    while (start <= utf8.size()) {
        const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(utf8.data()), utf8.size(), start,
                                   PCRE2_NO_UTF_CHECK, md.get(), nullptr);
        if (rc < 0) break;  // PCRE2_ERROR_NOMATCH (or a resource limit: stop matching)
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
        const size_t b = ov[0], e = ov[1];
        if (e > b) {
            out.emplace_back(cp_at[b], cp_at[e]);
            start = e;
        } else {  // empty match: step over one code point
            if (b >= utf8.size()) break;
            size_t next = b + 1;
            while (next < utf8.size() && (static_cast<unsigned char>(utf8[next]) & 0xC0) == 0x80) ++next;
            start = next;
        }
    }
    return out;
}

Pattern::Pattern(const json& j, const JsonPath& p) {
    if (j.is_object() && j.contains("String")) {
        literal_ = unicode::decode_utf8(get_string(j, p, "String"));
    } else if (j.is_object() && j.contains("Regex")) {
        regex_ = std::make_shared<Regex>(get_string(j, p, "Regex"), p / "Regex");
    } else if (j.is_string()) {
        literal_ = unicode::decode_utf8(j.get<std::string>());
    } else {
        p.fail("expected {\"String\": ...} or {\"Regex\": ...}, got " + j.dump().substr(0, 80));
    }
}

std::vector<std::pair<size_t, size_t>> Pattern::find_all(std::u32string_view text) const {
    if (regex_) return regex_->find_all(text);
    std::vector<std::pair<size_t, size_t>> out;
    if (literal_.empty()) return out;
    size_t pos = 0;
    while ((pos = text.find(literal_, pos)) != std::u32string_view::npos) {
        out.emplace_back(pos, pos + literal_.size());
        pos += literal_.size();
    }
    return out;
}

// ---- splitting ---------------------------------------------------------------------------------------

SplitBehavior parse_behavior(const json& j, const JsonPath& p, const char* key, SplitBehavior dflt) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return dflt;
    const std::string b = get_string(j, p, key);
    if (b == "Removed") return SplitBehavior::Removed;
    if (b == "Isolated") return SplitBehavior::Isolated;
    if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
    if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
    if (b == "Contiguous") return SplitBehavior::Contiguous;
    (p / key).unsupported("split behavior", b,
                          {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"});
}

void split_append(const NormStr& s, const std::vector<std::pair<size_t, size_t>>& matches, SplitBehavior behavior,
                  bool invert, std::vector<NormStr>& out) {
    struct Part {
        size_t b, e;
        bool match;
    };
    std::vector<Part> parts;
    size_t prev = 0;
    for (const auto& [b, e] : matches) {
        if (b > prev) parts.push_back({prev, b, false});
        parts.push_back({b, e, true});
        prev = e;
    }
    if (prev < s.size()) parts.push_back({prev, s.size(), false});
    if (invert)
        for (auto& p : parts) p.match = !p.match;

    std::vector<Part> merged;
    switch (behavior) {
        case SplitBehavior::Isolated:
            merged = std::move(parts);
            break;
        case SplitBehavior::Removed:
            for (const auto& p : parts)
                if (!p.match) merged.push_back(p);
            break;
        case SplitBehavior::MergedWithPrevious: {
            bool prev_match = false;
            for (const auto& p : parts) {
                if (p.match && !prev_match && !merged.empty())
                    merged.back().e = p.e;
                else
                    merged.push_back(p);
                prev_match = p.match;
            }
            break;
        }
        case SplitBehavior::MergedWithNext: {
            bool prev_match = false;
            for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
                if (it->match && !prev_match && !merged.empty())
                    merged.back().b = it->b;
                else
                    merged.push_back(*it);
                prev_match = it->match;
            }
            std::reverse(merged.begin(), merged.end());
            break;
        }
        case SplitBehavior::Contiguous: {
            bool prev_match = false;
            bool first = true;
            for (const auto& p : parts) {
                if (!first && p.match == prev_match)
                    merged.back().e = p.e;
                else
                    merged.push_back(p);
                prev_match = p.match;
                first = false;
            }
            break;
        }
    }
    for (const auto& p : merged)
        if (p.e > p.b) out.push_back(s.slice(p.b, p.e));
}

}  // namespace nscope::tok

#include "core/train/bpe_trainer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <map>
#include <queue>
#include <set>
#include <unordered_map>

#include "nscope/error.h"

namespace nscope {

namespace {

// GPT-2's pre-tokenizer pattern (contractions, letter runs, digit runs, other runs, whitespace).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string utf8(uint32_t cp) {
    std::string s;
    if (cp < 0x80) {
        s.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    return s;
}

class Regex {
public:
    Regex() {
        int err = 0;
        PCRE2_SIZE off = 0;
        code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern), PCRE2_ZERO_TERMINATED,
                              PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
        if (!code_) throw RuntimeError("cannot compile the GPT-2 pre-tokenizer pattern");
        pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
        match_ = pcre2_match_data_create_from_pattern(code_, nullptr);
    }
    ~Regex() {
        pcre2_match_data_free(match_);
        pcre2_code_free(code_);
    }
    template <typename F>
    void for_each(std::string_view text, F&& f) {
        PCRE2_SIZE start = 0;
        while (start < text.size()) {
            const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                                       PCRE2_NO_UTF_CHECK, match_, nullptr);
            if (rc < 0) break;
            const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match_);
            if (ov[1] == ov[0]) {  // empty match: step one byte
                ++start;
                continue;
            }
            f(text.substr(ov[0], ov[1] - ov[0]));
            start = ov[1];
        }
    }

private:
    pcre2_code* code_ = nullptr;
    pcre2_match_data* match_ = nullptr;
};

struct PairHash {
    size_t operator()(const std::pair<int, int>& p) const {
        return std::hash<uint64_t>()((static_cast<uint64_t>(p.first) << 32) | static_cast<uint32_t>(p.second));
    }
};

// Drop bytes of invalid UTF-8 so PCRE2 (UTF mode) accepts the text; the byte-level model still covers
// every byte at encode time.
std::string without_invalid_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = n > 0 && i + n <= s.size();
        for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 2;
        if (ok) out.append(s.substr(i, n)), i += n;
        else ++i;
    }
    return out;
}

}  // namespace

const std::vector<std::string>& gpt2_byte_symbols() {
    static const std::vector<std::string> table = [] {
        // Printable bytes map to themselves; the rest to 256, 257, ... in byte order.
        std::vector<std::string> t(256);
        uint32_t next = 256;
        for (uint32_t b = 0; b < 256; ++b) {
            const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            t[b] = utf8(printable ? b : next++);
        }
        return t;
    }();
    return table;
}

BpeTrainer::BpeTrainer(BpeTrainerOptions options) : options_(std::move(options)) {
    if (options_.vocab_size < options_.special_tokens.size() + 256)
        throw InputError("tokenizer vocab_size must be at least 256 + the special tokens (" +
                         std::to_string(256 + options_.special_tokens.size()) + ")");
}

void BpeTrainer::add_text(std::string_view text) {
    static thread_local Regex regex;
    const std::string clean = without_invalid_utf8(text);
    const auto& sym = gpt2_byte_symbols();
    regex.for_each(clean, [&](std::string_view word) {
        std::string mapped;
        for (unsigned char c : word) mapped += sym[c];
        auto [it, fresh] = index_.try_emplace(mapped, counts_.size());
        if (fresh) counts_.emplace_back(mapped, 0);
        ++counts_[it->second].second;
        ++total_words_;
    });
}

nlohmann::json BpeTrainer::train() {
    const auto& sym = gpt2_byte_symbols();
    std::vector<std::string> tokens(options_.special_tokens);  // id -> token string
    std::unordered_map<std::string, int> byte_id;
    for (int b = 0; b < 256; ++b) {
        byte_id[sym[b]] = static_cast<int>(tokens.size());
        tokens.push_back(sym[b]);
    }
    // Words as symbol-id sequences (split into the byte symbols, one per UTF-8 encoded code point).
    struct Word {
        std::vector<int> ids;
        int64_t count;
    };
    std::vector<Word> words;
    words.reserve(counts_.size());
    for (const auto& [w, n] : counts_) {
        Word word{{}, n};
        for (size_t i = 0; i < w.size();) {
            const auto c = static_cast<unsigned char>(w[i]);
            const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : 3;
            word.ids.push_back(byte_id.at(w.substr(i, len)));
            i += len;
        }
        words.push_back(std::move(word));
    }

    using Pair = std::pair<int, int>;
    std::unordered_map<Pair, int64_t, PairHash> pair_count;
    std::unordered_map<Pair, std::set<size_t>, PairHash> pair_words;
    auto add_word = [&](size_t wi, int64_t sign) {
        const Word& w = words[wi];
        for (size_t i = 0; i + 1 < w.ids.size(); ++i) {
            const Pair p{w.ids[i], w.ids[i + 1]};
            pair_count[p] += sign * w.count;
            if (sign > 0) pair_words[p].insert(wi);
        }
    };
    for (size_t wi = 0; wi < words.size(); ++wi) add_word(wi, +1);

    // Max-heap by count, then by the pair's strings (smaller first) for determinism; stale entries skipped.
    struct Entry {
        int64_t count;
        Pair pair;
    };
    auto worse = [&](const Entry& a, const Entry& b) {
        if (a.count != b.count) return a.count < b.count;
        const auto& ta = tokens[a.pair.first];
        const auto& tb = tokens[b.pair.first];
        if (ta != tb) return ta > tb;
        return tokens[a.pair.second] > tokens[b.pair.second];
    };
    std::priority_queue<Entry, std::vector<Entry>, decltype(worse)> heap(worse);
    for (const auto& [p, n] : pair_count) heap.push({n, p});

    std::vector<std::pair<std::string, std::string>> merges;
    while (tokens.size() < options_.vocab_size && !heap.empty()) {
        const Entry top = heap.top();
        heap.pop();
        const auto it = pair_count.find(top.pair);
        if (it == pair_count.end() || it->second != top.count) continue;  // stale
        if (top.count < options_.min_frequency) break;
        const int merged = static_cast<int>(tokens.size());
        tokens.push_back(tokens[top.pair.first] + tokens[top.pair.second]);
        merges.emplace_back(tokens[top.pair.first], tokens[top.pair.second]);
        const std::set<size_t> affected = pair_words[top.pair];
        std::set<Pair> touched;
        for (size_t wi : affected) {
            Word& w = words[wi];
            for (size_t i = 0; i + 1 < w.ids.size(); ++i) touched.insert({w.ids[i], w.ids[i + 1]});
            add_word(wi, -1);
            std::vector<int> out;
            out.reserve(w.ids.size());
            for (size_t i = 0; i < w.ids.size(); ++i) {
                if (i + 1 < w.ids.size() && w.ids[i] == top.pair.first && w.ids[i + 1] == top.pair.second) {
                    out.push_back(merged);
                    ++i;
                } else {
                    out.push_back(w.ids[i]);
                }
            }
            w.ids = std::move(out);
            add_word(wi, +1);
            for (size_t i = 0; i + 1 < w.ids.size(); ++i) touched.insert({w.ids[i], w.ids[i + 1]});
        }
        pair_count.erase(top.pair);
        pair_words.erase(top.pair);
        for (const Pair& p : touched) {
            auto pc = pair_count.find(p);
            if (pc == pair_count.end()) continue;
            if (pc->second <= 0) {
                pair_count.erase(pc);
                pair_words.erase(p);
                continue;
            }
            heap.push({pc->second, p});
        }
    }

    nlohmann::json vocab = nlohmann::json::object();
    for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
    nlohmann::json merge_list = nlohmann::json::array();
    for (const auto& [a, b] : merges) merge_list.push_back(a + " " + b);
    nlohmann::json added = nlohmann::json::array();
    for (size_t i = 0; i < options_.special_tokens.size(); ++i)
        added.push_back({{"id", i}, {"content", options_.special_tokens[i]}, {"single_word", false}, {"lstrip", false},
                         {"rstrip", false}, {"normalized", true}, {"special", true}});
    const nlohmann::json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                                       {"use_regex", true}};
    return {{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", added},
            {"normalizer", nullptr},
            {"pre_tokenizer", byte_level},
            {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
            {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
            {"model",
             {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
              {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
              {"vocab", vocab}, {"merges", merge_list}}}};
}

}  // namespace nscope

// Models: BPE (byte-level and SentencePiece-style with byte fallback), WordPiece, WordLevel.
#include <array>
#include <cstdio>
#include <atomic>
#include <mutex>
#include <queue>

#include <nlohmann/json.hpp>

#include "core/tokenizer/components.h"
#include "core/tokenizer/unicode.h"

namespace nscope::tok {
namespace {

using json = nlohmann::json;

void load_vocab(Model& m, const json& j, const JsonPath& p) {
    const json& v = field(j, p, "vocab");
    const JsonPath vp = p / "vocab";
    if (!v.is_object()) vp.fail("expected an object {token: id}");
    m.vocab.reserve(v.size());
    int64_t max_id = -1;
    std::string max_token;
    for (auto it = v.begin(); it != v.end(); ++it) {
        if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
            (vp / it.key()).fail("expected a non-negative integer id, got " + it.value().dump());
        const int64_t id = it.value().get<int64_t>();
        m.vocab.emplace(it.key(), id);
        if (id > max_id) max_id = id, max_token = it.key();
    }
    // The id -> token table below is dense, so one corrupted id must not size it (found by fuzz_tokenizer:
    // an id of 2.2e13 asked for 700 TB). Real vocabularies number their tokens 0..n-1 with few holes.
    const int64_t max_holes = int64_t{1} << 20;
    if (max_id >= static_cast<int64_t>(v.size()) + max_holes)
        (vp / max_token).fail("id " + std::to_string(max_id) + " leaves more than " + std::to_string(max_holes) +
                              " unused ids below it in a vocabulary of " + std::to_string(v.size()) +
                              " tokens; is the file damaged?");
    m.vocab_r.assign(static_cast<size_t>(max_id + 1), std::string());
    for (const auto& [tok, id] : m.vocab) m.vocab_r[static_cast<size_t>(id)] = tok;
}

std::optional<int64_t> lookup_unk(const Model& m, const json& j, const JsonPath& p) {
    const std::string unk = get_string(j, p, "unk_token", "");
    if (unk.empty()) return std::nullopt;
    auto id = m.token_to_id(unk);
    if (!id) (p / "unk_token").fail("unk_token '" + unk + "' is not in the vocabulary");
    return id;
}

class Bpe : public Model {
public:
    Bpe(const json& j, const JsonPath& p) {
        type = "BPE";
        load_vocab(*this, j, p);
        prefix_ = get_string(j, p, "continuing_subword_prefix", "");
        suffix_ = get_string(j, p, "end_of_word_suffix", "");
        fuse_unk_ = get_bool(j, p, "fuse_unk", false);
        byte_fallback_ = get_bool(j, p, "byte_fallback", false);
        ignore_merges_ = get_bool(j, p, "ignore_merges", false);
        unk_id = lookup_unk(*this, j, p);
        if (byte_fallback_) {
            for (int b = 0; b < 256; ++b) {
                char name[8];
                std::snprintf(name, sizeof name, "<0x%02X>", b);
                auto id = token_to_id(name);
                byte_ids_[static_cast<size_t>(b)] = id ? *id : -1;
            }
        }
        const json& merges = field(j, p, "merges");
        const JsonPath mp = p / "merges";
        if (!merges.is_array()) mp.fail("expected an array of \"a b\" strings or [a, b] pairs");
        merges_.reserve(merges.size());
        for (size_t i = 0; i < merges.size(); ++i) {
            const json& m = merges[i];
            std::string a, b;
            if (m.is_string()) {
                const std::string s = m.get<std::string>();
                const size_t sp = s.find(' ');
                if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
                    mp[i].fail("expected \"a b\" (two tokens separated by one space), got \"" + s + "\"");
                a = s.substr(0, sp);
                b = s.substr(sp + 1);
            } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
                a = m[0].get<std::string>();
                b = m[1].get<std::string>();
            } else {
                mp[i].fail("expected \"a b\" or [\"a\", \"b\"], got " + m.dump().substr(0, 80));
            }
            auto ia = token_to_id(a), ib = token_to_id(b);
            if (!ia || !ib) mp[i].fail("merge token '" + (ia ? b : a) + "' is not in the vocabulary");
            std::string merged = a;
            merged += (!prefix_.empty() && b.compare(0, prefix_.size(), prefix_) == 0) ? b.substr(prefix_.size()) : b;
            auto im = token_to_id(merged);
            if (!im) mp[i].fail("merge result '" + merged + "' is not in the vocabulary");
            merges_.emplace(key(*ia, *ib), std::pair<uint32_t, int64_t>(static_cast<uint32_t>(i), *im));
        }
    }

    void tokenize(std::u32string_view word, std::vector<ModelToken>& out) const override {
        if (word.empty()) return;
        const std::string utf8 = unicode::encode_utf8(word);
        if (ignore_merges_) {
            if (auto id = token_to_id(utf8)) {
                out.push_back({*id, 0, static_cast<uint32_t>(word.size())});
                return;
            }
        }
        {
            std::lock_guard<std::mutex> lock(cache_mutex_);
            auto it = cache_.find(utf8);
            if (it != cache_.end()) {
                out.insert(out.end(), it->second.begin(), it->second.end());
                cache_hits_.fetch_add(1, std::memory_order_relaxed);
                return;
            }
        }
        cache_misses_.fetch_add(1, std::memory_order_relaxed);
        std::vector<ModelToken> result;
        merge_word(word, result);
        out.insert(out.end(), result.begin(), result.end());
        std::lock_guard<std::mutex> lock(cache_mutex_);
        if (cache_.size() < kCacheCapacity) cache_.emplace(utf8, std::move(result));
    }

    ModelStats stats() const override {
        return {cache_hits_.load(std::memory_order_relaxed), cache_misses_.load(std::memory_order_relaxed),
                queue_pops_.load(std::memory_order_relaxed)};
    }

private:
    static constexpr size_t kCacheCapacity = 10000;
    static uint64_t key(int64_t a, int64_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b); }

    struct Symbol {
        int64_t id;
        uint32_t begin, end;  // code points in the word
        int prev, next;
        bool alive;
    };

    void merge_word(std::u32string_view word, std::vector<ModelToken>& out) const {
        std::vector<Symbol> syms;
        syms.reserve(word.size());
        bool last_unk = false;
        std::string s;
        for (size_t i = 0; i < word.size(); ++i) {
            s.clear();
            if (i > 0) s += prefix_;
            unicode::append_utf8(word[i], s);
            if (i + 1 == word.size()) s += suffix_;
            const auto b = static_cast<uint32_t>(i), e = static_cast<uint32_t>(i + 1);
            if (auto id = token_to_id(s)) {
                syms.push_back({*id, b, e, 0, 0, true});
                last_unk = false;
                continue;
            }
            if (byte_fallback_) {
                std::string bytes;
                unicode::append_utf8(word[i], bytes);
                bool all = true;
                for (unsigned char c : bytes) all = all && byte_ids_[c] >= 0;
                if (all) {
                    for (unsigned char c : bytes) syms.push_back({byte_ids_[c], b, e, 0, 0, true});
                    last_unk = false;
                    continue;
                }
            }
            if (!unk_id) continue;  // no unk token: the character is dropped, as HF does
            if (fuse_unk_ && last_unk) {
                syms.back().end = e;
            } else {
                syms.push_back({*unk_id, b, e, 0, 0, true});
            }
            last_unk = true;
        }
        const int n = static_cast<int>(syms.size());
        for (int i = 0; i < n; ++i) {
            syms[static_cast<size_t>(i)].prev = i - 1;
            syms[static_cast<size_t>(i)].next = i + 1 < n ? i + 1 : -1;
        }

        struct Candidate {
            uint32_t rank;
            int pos;
            int64_t new_id;
            bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
        };
        std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
        auto push = [&](int left) {
            const int right = syms[static_cast<size_t>(left)].next;
            if (right < 0) return;
            auto it = merges_.find(key(syms[static_cast<size_t>(left)].id, syms[static_cast<size_t>(right)].id));
            if (it != merges_.end()) queue.push({it->second.first, left, it->second.second});
        };
        for (int i = 0; i + 1 < n; ++i) push(i);
        uint64_t pops = 0;
        while (!queue.empty()) {
            const Candidate top = queue.top();
            queue.pop();
            ++pops;
            Symbol& left = syms[static_cast<size_t>(top.pos)];
            if (!left.alive || left.next < 0) continue;
            Symbol& right = syms[static_cast<size_t>(left.next)];
            auto it = merges_.find(key(left.id, right.id));
            if (it == merges_.end() || it->second.second != top.new_id) continue;  // stale candidate
            left.id = top.new_id;
            left.end = right.end;
            right.alive = false;
            left.next = right.next;
            if (right.next >= 0) syms[static_cast<size_t>(right.next)].prev = top.pos;
            if (left.prev >= 0) push(left.prev);
            push(top.pos);
        }
        queue_pops_.fetch_add(pops, std::memory_order_relaxed);
        for (int i = n > 0 ? 0 : -1; i >= 0; i = syms[static_cast<size_t>(i)].next)
            out.push_back({syms[static_cast<size_t>(i)].id, syms[static_cast<size_t>(i)].begin,
                           syms[static_cast<size_t>(i)].end});
    }

    std::string prefix_, suffix_;
    bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
    std::array<int64_t, 256> byte_ids_{};
    std::unordered_map<uint64_t, std::pair<uint32_t, int64_t>> merges_;  // (a, b) -> (rank, merged id)
    mutable std::mutex cache_mutex_;
    mutable std::unordered_map<std::string, std::vector<ModelToken>> cache_;
    mutable std::atomic<uint64_t> cache_hits_{0}, cache_misses_{0}, queue_pops_{0};
};

class WordPiece : public Model {
public:
    WordPiece(const json& j, const JsonPath& p) {
        type = "WordPiece";
        load_vocab(*this, j, p);
        unk_id = lookup_unk(*this, j, p);
        if (!unk_id) (p / "unk_token").fail("WordPiece needs an unk_token");
        prefix_ = get_string(j, p, "continuing_subword_prefix", "##");
        max_chars_ = static_cast<size_t>(get_int(j, p, "max_input_chars_per_word", 100));
    }
    void tokenize(std::u32string_view word, std::vector<ModelToken>& out) const override {
        if (word.empty()) return;
        const auto n = static_cast<uint32_t>(word.size());
        if (word.size() > max_chars_) {
            out.push_back({*unk_id, 0, n});
            return;
        }
        const size_t first = out.size();
        std::string sub;
        uint32_t start = 0;
        while (start < n) {
            uint32_t end = n;
            std::optional<int64_t> found;
            while (start < end) {
                sub.clear();
                if (start > 0) sub = prefix_;
                for (uint32_t i = start; i < end; ++i) unicode::append_utf8(word[i], sub);
                if ((found = token_to_id(sub))) break;
                --end;
            }
            if (!found) {
                out.resize(first);
                out.push_back({*unk_id, 0, n});
                return;
            }
            out.push_back({*found, start, end});
            start = end;
        }
    }

private:
    std::string prefix_;
    size_t max_chars_ = 100;
};

class WordLevel : public Model {
public:
    WordLevel(const json& j, const JsonPath& p) {
        type = "WordLevel";
        load_vocab(*this, j, p);
        unk_id = lookup_unk(*this, j, p);
    }
    void tokenize(std::u32string_view word, std::vector<ModelToken>& out) const override {
        if (word.empty()) return;
        const auto n = static_cast<uint32_t>(word.size());
        if (auto id = token_to_id(unicode::encode_utf8(word)))
            out.push_back({*id, 0, n});
        else if (unk_id)
            out.push_back({*unk_id, 0, n});
    }
};

}  // namespace

std::optional<int64_t> Model::token_to_id(std::string_view token) const {
    auto it = vocab.find(token);
    if (it == vocab.end()) return std::nullopt;
    return it->second;
}

const std::string& Model::id_to_token(int64_t id) const {
    static const std::string empty;
    if (id < 0 || static_cast<size_t>(id) >= vocab_r.size()) return empty;
    return vocab_r[static_cast<size_t>(id)];
}

std::unique_ptr<Model> make_model(const json& j, const JsonPath& p) {
    if (!j.is_object()) p.fail("expected an object");
    std::string type = get_string(j, p, "type", "");
    if (type.empty()) {  // very old files omit the model type: infer it like HF does
        if (j.contains("merges"))
            type = "BPE";
        else if (j.contains("continuing_subword_prefix") || j.contains("max_input_chars_per_word"))
            type = "WordPiece";
        else
            (p / "type").fail("missing field");
    }
    if (type == "BPE") {
        if (j.contains("dropout") && j["dropout"].is_number() && j["dropout"].get<double>() > 0)
            (p / "dropout").fail("BPE dropout is a training-time option and is not supported; set it to null");
        return std::make_unique<Bpe>(j, p);
    }
    if (type == "WordPiece") return std::make_unique<WordPiece>(j, p);
    if (type == "WordLevel") return std::make_unique<WordLevel>(j, p);
    (p / "type").unsupported("model", type, {"BPE", "WordPiece", "WordLevel"});
}

}  // namespace nscope::tok

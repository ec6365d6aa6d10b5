// Internal building blocks of the tokenizer pipeline (HF tokenizers' architecture):
// added tokens -> normalizer -> pre-tokenizer -> model -> post-processor; decoder for the way back.
// Strings travel as code points with, per code point, the [start, end) range of the input it came from.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/tokenizer/tokenizer.h"

namespace nscope::tok {

/// A normalized string: code points plus, per code point, its source range in the input (code points).
struct NormStr {
    std::u32string chars;
    std::vector<std::pair<uint32_t, uint32_t>> align;

    size_t size() const { return chars.size(); }
    bool empty() const { return chars.empty(); }
    NormStr slice(size_t begin, size_t end) const;
    /// Replace each code point with f's output (possibly empty); new code points keep the source range.
    void map(const std::function<void(char32_t, std::u32string&)>& f);
    void prepend(std::u32string_view s);   ///< new code points take the first code point's range
    /// Replace the code point ranges `matches` (sorted, disjoint) with `content`.
    void replace_ranges(const std::vector<std::pair<size_t, size_t>>& matches, std::u32string_view content);
    /// Source range of chars [begin, end) (end > begin).
    std::pair<size_t, size_t> source(size_t begin, size_t end) const {
        return {align[begin].first, align[end - 1].second};
    }
};

/// Where a JSON value sits, for error messages: the file and the JSON path ("pre_tokenizer.pretokenizers[1]").
struct JsonPath {
    const std::string* file;
    std::string path;
    JsonPath operator/(std::string_view key) const {
        return {file, path.empty() ? std::string(key) : path + "." + std::string(key)};
    }
    JsonPath operator[](size_t i) const { return {file, path + "[" + std::to_string(i) + "]"}; }
    [[noreturn]] void fail(const std::string& what) const;
    [[noreturn]] void unsupported(const std::string& kind, const std::string& type,
                                  const std::vector<std::string>& supported) const;
};

// Typed field access with errors naming the path.
const nlohmann::json& field(const nlohmann::json& j, const JsonPath& p, const char* key);
std::string get_string(const nlohmann::json& j, const JsonPath& p, const char* key, const std::string& dflt);
std::string get_string(const nlohmann::json& j, const JsonPath& p, const char* key);
bool get_bool(const nlohmann::json& j, const JsonPath& p, const char* key, bool dflt);
int64_t get_int(const nlohmann::json& j, const JsonPath& p, const char* key, int64_t dflt);
std::string type_of(const nlohmann::json& j, const JsonPath& p);

/// A compiled PCRE2 pattern (UTF + UCP). Thread-safe to use.
class Regex {
public:
    Regex(std::string_view pattern, const JsonPath& where);
    ~Regex();
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;
    /// Non-empty, non-overlapping matches in `text` as code point ranges.
    std::vector<std::pair<size_t, size_t>> find_all(std::u32string_view text) const;

private:
    void* code_ = nullptr;  // pcre2_code_8
};

/// A pattern as the files spell it: {"String": "..."} or {"Regex": "..."}.
class Pattern {
public:
    Pattern(const nlohmann::json& j, const JsonPath& p);
    std::vector<std::pair<size_t, size_t>> find_all(std::u32string_view text) const;
    bool is_literal() const { return !regex_; }
    const std::u32string& literal() const { return literal_; }

private:
    std::u32string literal_;
    std::shared_ptr<Regex> regex_;
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
SplitBehavior parse_behavior(const nlohmann::json& j, const JsonPath& p, const char* key, SplitBehavior dflt);
/// Split `s` at `matches` (sorted disjoint code point ranges) the HF way; empty pieces are dropped.
void split_append(const NormStr& s, const std::vector<std::pair<size_t, size_t>>& matches, SplitBehavior behavior,
                  bool invert, std::vector<NormStr>& out);

// ---- components --------------------------------------------------------------------------------------

class Normalizer {
public:
    virtual ~Normalizer() = default;
    virtual void normalize(NormStr& s) const = 0;
};
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const JsonPath& p);

class PreTokenizer {
public:
    virtual ~PreTokenizer() = default;
    /// Split each piece further (pieces keep their source ranges, see NormStr).
    virtual void pre_tokenize(std::vector<NormStr>& pieces) const = 0;
};
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const JsonPath& p);

/// The byte <-> printable code point table of GPT-2's byte-level BPE.
const std::u32string& bytes_to_chars();   // index: byte value
int char_to_byte(char32_t c);             // -1 if not a byte-level char

struct ModelToken {
    int64_t id;
    uint32_t begin, end;  // code point range in the pre-token
};

class Model {
public:
    virtual ~Model() = default;
    virtual void tokenize(std::u32string_view word, std::vector<ModelToken>& out) const = 0;
    virtual ModelStats stats() const { return {}; }
    std::optional<int64_t> token_to_id(std::string_view token) const;
    const std::string& id_to_token(int64_t id) const;  // "" if unknown

    std::string type;
    std::vector<std::string> vocab_r;  // id -> token ("" for holes)
    struct Hash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    std::unordered_map<std::string, int64_t, Hash, std::equal_to<>> vocab;
    std::optional<int64_t> unk_id;
};
std::unique_ptr<Model> make_model(const nlohmann::json& j, const JsonPath& p);

class PostProcessor {
public:
    virtual ~PostProcessor() = default;
    virtual void process(Encoding& e, bool add_special_tokens) const = 0;
    /// Special token ids the processor puts before / after a single sequence.
    virtual std::vector<int64_t> prefix_ids() const { return {}; }
    virtual std::vector<int64_t> suffix_ids() const { return {}; }
};
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j, const JsonPath& p);

class Decoder {
public:
    virtual ~Decoder() = default;
    virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const JsonPath& p);

}  // namespace nscope::tok

// NeuronScope tokenizer: HuggingFace `tokenizer.json` files (the `tokenizers` library's format), in C++.
//
// Supported components (anything else is refused with an InputError naming the file and JSON path):
//   models          BPE (byte-level as in GPT-2 / LLaMA-3 / Qwen, SentencePiece-style with byte fallback
//                   as in LLaMA-2 / Mistral / Gemma; `ignore_merges`, `fuse_unk`, merges as "a b" or
//                   ["a","b"]), WordPiece (BERT), WordLevel
//   normalizers     BertNormalizer, Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip,
//                   StripAccents
//   pre-tokenizers  ByteLevel, Split (PCRE2 regex or literal), Sequence, Metaspace, Whitespace,
//                   WhitespaceSplit, BertPreTokenizer, Digits, Punctuation, CharDelimiterSplit
//   post-processors TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence
//   decoders        ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, WordPiece, BPEDecoder, Sequence
//
// Behaviour follows HF tokenizers 0.22: added tokens are matched in the raw text before normalization
// (those with `normalized: true` in the normalized text), honouring lstrip / rstrip / single_word; offsets
// are [start, end) in Unicode code points of the input text, exactly as HF reports them with char offsets.
// `padding` and `truncation` sections are read for pad_id() only: encode() never pads or truncates.
// A Tokenizer is immutable after loading; encode() and decode() may be called from several threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nscope {

/// Work counters of a tokenizer's model (for tests and diagnostics).
struct ModelStats {
    uint64_t cache_hits = 0, cache_misses = 0;  ///< BPE word cache
    uint64_t queue_pops = 0;                    ///< BPE merge candidates examined (the merge loop's work)
};

/// The result of encoding one text. All vectors have the same length.
struct Encoding {
    std::vector<int64_t> ids;
    std::vector<std::string> tokens;                ///< vocab strings, e.g. "Ġbank", "▁bank", "##ing"
    std::vector<std::pair<size_t, size_t>> offsets; ///< [start, end) in Unicode code points of the input;
                                                    ///< (0, 0) for special tokens added by the post-processor
    std::vector<int64_t> type_ids;                  ///< segment ids (0 for a single sequence)
    std::vector<uint8_t> special_tokens_mask;       ///< 1 for tokens added by the post-processor

    size_t size() const { return ids.size(); }
};

class Tokenizer {
public:
    /// Load a tokenizer.json. Throws InputError (file missing, malformed JSON with the parse error,
    /// unsupported component with its JSON path and the supported types).
    static Tokenizer from_file(const std::filesystem::path& tokenizer_json);
    /// Load from the JSON text itself; `origin` names the source in error messages.
    static Tokenizer from_json_string(std::string_view json, const std::string& origin = "<string>");
    /// `path` may be a tokenizer.json or a folder containing one (a model folder). Throws InputError.
    static std::filesystem::path resolve_path(const std::filesystem::path& path);

    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;
    ~Tokenizer();

    /// Tokenize `text` (UTF-8; invalid bytes are read as U+FFFD). With `add_special_tokens` the
    /// post-processor adds its special tokens (BOS, [CLS]/[SEP], ...), as HF does by default.
    Encoding encode(std::string_view text, bool add_special_tokens = true) const;
    /// The text after the file's normalizer (added tokens matched in the raw text are kept verbatim),
    /// e.g. the NFC form for Qwen; the text itself when the file has no normalizer.
    std::string normalize(std::string_view text) const;
    /// Text of a sequence of ids through the file's decoder. Unknown ids are skipped.
    std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = true) const;

    std::string id_to_token(int64_t id) const;  ///< vocab string, "" if out of range
    std::optional<int64_t> token_to_id(std::string_view token) const;
    /// Readable text of one token (decode of [id], keeping special tokens), e.g. " bank" for "Ġbank".
    std::string token_text(int64_t id) const;
    /// One past the largest id of the model vocabulary and the added tokens (the embedding rows needed).
    size_t vocab_size() const;
    /// True for added tokens marked `special` (e.g. <s>, [CLS], <|eot_id|>).
    bool is_special(int64_t id) const;

    /// Known special ids: from the file's `padding`, the post-processor template and added tokens, and
    /// from a tokenizer_config.json next to the file (bos_token / eos_token / pad_token) when present.
    std::optional<int64_t> pad_id() const;
    std::optional<int64_t> bos_id() const;
    std::optional<int64_t> eos_id() const;
    std::optional<int64_t> unk_id() const;

    /// Model type from the file: "BPE", "WordPiece" or "WordLevel".
    const std::string& model_type() const;
    /// Where the tokenizer was loaded from.
    const std::string& origin() const;
    /// Work counters of the model (BPE: word cache hits / misses, merge candidates examined).
    ModelStats model_stats() const;

private:
    struct Impl;
    explicit Tokenizer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

/// The text of token `id`, or "#id" when there is no tokenizer (prompts given as ids only).
std::string token_text_or_id(const Tokenizer* tok, int64_t id);

/// The id of `text` when it is exactly one token (no special tokens added); otherwise InputError, prefixed
/// with `where`, listing the pieces it splits into and how to name a single token.
int64_t single_token_id(const Tokenizer& tok, const std::string& text, const std::string& where);

}  // namespace nscope

// Byte-level BPE tokenizer training (GPT-2 style) that writes a HuggingFace tokenizer.json.
//
// Text is split with GPT-2's pre-tokenizer regex, every byte mapped to GPT-2's printable byte alphabet, and
// merges learned greedily by pair frequency (ties broken by the pair's strings, so training is
// deterministic). The vocabulary holds the special tokens first, then the 256 byte symbols, then one token
// per merge. The file uses only standard components (ByteLevel pre-tokenizer / post-processor / decoder,
// BPE model), so the HF tokenizers library and nscope's tokenizer read it identically.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <unordered_map>

#include <nlohmann/json.hpp>

namespace nscope {

struct BpeTrainerOptions {
    size_t vocab_size = 4096;                            ///< including special tokens and the 256 bytes
    int64_t min_frequency = 2;                           ///< a pair must occur this often to be merged
    std::vector<std::string> special_tokens = {"<|endoftext|>"};
};

class BpeTrainer {
public:
    explicit BpeTrainer(BpeTrainerOptions options = {});
    /// Count the pre-tokenized words of `text` (call once per document or chunk).
    void add_text(std::string_view text);
    /// Learn the merges; returns the tokenizer.json document.
    nlohmann::json train();
    size_t words_seen() const { return total_words_; }

private:
    BpeTrainerOptions options_;
    std::vector<std::pair<std::string, int64_t>> counts_;  // word (byte-mapped) -> count, built in add_text
    std::unordered_map<std::string, size_t> index_;
    size_t total_words_ = 0;
};

/// GPT-2's byte -> printable unicode mapping (byte b maps to one code point, UTF-8 encoded).
const std::vector<std::string>& gpt2_byte_symbols();

}  // namespace nscope

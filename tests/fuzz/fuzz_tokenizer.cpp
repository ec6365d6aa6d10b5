// tokenizer.json loading + encode / decode (core/tokenizer). Input: the tokenizer.json text, a NUL byte,
// then the text to encode (no NUL: an empty text).
#include <cstring>

#include "core/tokenizer/tokenizer.h"
#include "nscope/error.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view in = nscope::fuzz::as_view(data, size);
    const size_t nul = in.find('\0');
    const std::string_view json = in.substr(0, nul);
    const std::string_view text = nul == std::string_view::npos ? std::string_view() : in.substr(nul + 1);
    try {
        const auto tok = nscope::Tokenizer::from_json_string(json, "fuzz-tokenizer.json");
        for (bool special : {true, false}) {
            const nscope::Encoding e = tok.encode(text, special);
            if (e.tokens.size() != e.ids.size() || e.offsets.size() != e.ids.size() ||
                e.type_ids.size() != e.ids.size() || e.special_tokens_mask.size() != e.ids.size())
                std::abort();  // the Encoding contract: all vectors have the same length
            (void)tok.decode(e.ids, special);
            for (const int64_t id : e.ids) (void)tok.token_text(id);
        }
        (void)tok.normalize(text);
        (void)tok.decode({-1, 0, 1, static_cast<int64_t>(tok.vocab_size()), INT64_MAX}, false);  // unknown ids
    } catch (const nscope::InputError&) {
    }
    return 0;
}

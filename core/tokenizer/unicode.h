// Unicode helpers for the tokenizer: UTF-8 <-> code points, general categories, normalization forms and
// lowercase, from tables generated out of Python's unicodedata (scripts/gen-unicode-tables.py).
// Internal to nscope_tokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nscope::unicode {

enum class Category : uint8_t {
    Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps, Pe, Pi, Pf, Po,
    Sm, Sc, Sk, So, Zs, Zl, Zp, Cc, Cf, Cs, Co, Cn
};

Category category(char32_t c);
uint8_t combining_class(char32_t c);

/// Rust's char::is_whitespace (the White_Space property).
bool is_whitespace(char32_t c);
bool is_letter(char32_t c);        ///< L*
bool is_numeric(char32_t c);       ///< Nd, Nl, No (Rust's char::is_numeric)
bool is_alphanumeric(char32_t c);  ///< L* or N*
bool is_punctuation(char32_t c);   ///< P*
bool is_other(char32_t c);         ///< Cc, Cf, Cs, Co (not Cn, as HF's BERT normalizer)
bool is_mark_nonspacing(char32_t c);  ///< Mn
/// BERT's "Chinese character" blocks (CJK ideographs, not Hangul or Kana).
bool is_cjk(char32_t c);

/// Lowercase of one character (usually one character; U+0130 gives two).
void append_lower(char32_t c, std::u32string& out);

/// Full canonical (compat=false) or compatibility (compat=true) decomposition of one character.
void append_decomposed(char32_t c, bool compat, std::u32string& out);
/// Canonical composition of a pair, or 0.
char32_t compose(char32_t a, char32_t b);

/// Decode UTF-8; invalid bytes become U+FFFD (one per maximal invalid subpart, like Rust's from_utf8_lossy).
std::u32string decode_utf8(std::string_view s);
void append_utf8(char32_t c, std::string& out);
std::string encode_utf8(std::u32string_view s);
/// Replace invalid UTF-8 sequences with U+FFFD the way Rust's String::from_utf8_lossy does.
std::string utf8_lossy(std::string_view bytes);
bool is_valid_utf8(std::string_view s);

}  // namespace nscope::unicode

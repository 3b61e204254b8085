// Unicode support for the tokenizers: UTF-8 coding, general categories, case, NFD.
// Tables come from scripts/gen_unicode_tables.py (UnicodeTables.inc); no ICU.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llmopt::tok {

/// Unicode general category. The order must match GC_ORDER in scripts/gen_unicode_tables.py.
// clang-format off
enum class Gc : uint8_t {
  Cn, Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps, Pe, Pi, Pf, Po,
  Sm, Sc, Sk, So, Zs, Zl, Zp, Cc, Cf, Cs, Co
};
// clang-format on

/// The Unicode version of the generated tables.
const char *unicodeVersion();

Gc category(char32_t c);
inline bool isLetter(Gc g) { return g >= Gc::Lu && g <= Gc::Lo; }
inline bool isMark(Gc g) { return g >= Gc::Mn && g <= Gc::Me; }
inline bool isNumber(Gc g) { return g >= Gc::Nd && g <= Gc::No; }
/// \p{L}, \p{N}.
inline bool isLetter(char32_t c) { return isLetter(category(c)); }
inline bool isNumber(char32_t c) { return isNumber(category(c)); }
/// The White_Space property: Oniguruma's \s and Rust's char::is_whitespace.
bool isWhitespace(char32_t c);
/// Unicode \w as Rust's regex crate has it (Alphabetic, marks, Nd, Pc, Join_Control), approximated
/// with general categories.
bool isWordChar(char32_t c);

/// BERT's questions, answered as `tokenizers` does: from Unicode 8.0 category tables.
bool isBertPunctuation(char32_t c);    ///< ASCII punctuation or P* (Unicode 8.0).
bool isBertNonspacingMark(char32_t c); ///< Mn (Unicode 8.0).
bool isBertControl(char32_t c);        ///< Cc, Cf or Co (Unicode 8.0), except \t \n \r.
bool isBertChineseChar(char32_t c);    ///< The CJK ranges of BERT (as `tokenizers` spells them).

/// Appends the full lowercase mapping of c (one code point, or two for U+0130).
void appendLower(char32_t c, std::u32string &out);
/// Canonical combining class.
uint8_t combiningClass(char32_t c);
/// Canonical decomposition (NFD) of a code point sequence, canonically ordered.
std::u32string nfd(std::u32string_view s);

// ---- UTF-8 ----

/// Decodes one code point at s[i], advancing i; an invalid sequence yields U+FFFD and skips
/// the maximal invalid subpart (as Rust's String::from_utf8_lossy does).
char32_t decodeUtf8(std::string_view s, size_t &i);
void appendUtf8(char32_t c, std::string &out);
std::u32string toUtf32(std::string_view s);
std::string toUtf8(std::u32string_view s);
/// Replaces invalid UTF-8 with U+FFFD, per maximal invalid subpart.
std::string utf8Lossy(std::string_view bytes);
/// Byte length of the UTF-8 sequence led by b (1 for a stray continuation byte).
inline size_t utf8Len(unsigned char b) {
  return b < 0x80 ? 1 : b < 0xE0 ? (b < 0xC0 ? 1 : 2) : b < 0xF0 ? 3 : 4;
}

/// A piece of text decoded once: code points and the byte offset where each starts
/// (off has size() + 1 entries).
struct CodePoints {
  std::u32string cps;
  std::vector<uint32_t> off;
  explicit CodePoints(std::string_view s);
  size_t size() const { return cps.size(); }
};

} // namespace llmopt::tok

// Lexical rules of the IR text form (docs/ir-text.md): which names print bare, how
// strings are escaped and how numbers are spelled so that they read back bit-exactly.
// Shared by the printer, the parser and toString(Type).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace llmopt::text {

/// `"..."`: printable ASCII as is except `"` and `\`; `\n \t \r \" \\`; every other
/// byte as `\xHH`, so any byte string (attributes may hold binary) survives.
std::string quote(std::string_view s);

/// A bare word: `[A-Za-z_][A-Za-z0-9_.-]*` (op types, domains, attribute keys,
/// graph names, dim symbols). Anything else prints quoted.
bool isBareWord(std::string_view s);
inline bool isWordStart(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}
inline bool isWordChar(char c) {
  return isWordStart(c) || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

/// A bare value name after `%`: `[A-Za-z0-9_.\-/:]+` not ending in `:` (so `%y: f32`
/// reads as name `y`). Others print as `%"..."`.
bool isBareValueName(std::string_view s);
inline bool isValueNameChar(char c) { return isWordChar(c) || c == '/' || c == ':'; }

/// Shortest spelling that parses back to the same bits: `1.0`, `-0.0`, `1e+20`, `inf`,
/// `-inf`, `nan`, `-nan`, and `nan(0x7fc00001)` (all bits) for other NaNs. Always
/// contains `.`, `e`, `inf` or `nan`, so a float never reads as an integer. The parsers
/// also take integer spellings (`1`), for hand-written value lists.
std::string formatFloat(float f);
std::string formatDouble(double d);
std::optional<float> parseFloat(std::string_view s);
std::optional<double> parseDouble(std::string_view s);
/// True if a number token is spelled as a float (has `.`, `e`, `inf` or `nan`).
bool looksLikeFloat(std::string_view s);
std::optional<int64_t> parseInt(std::string_view s);
std::optional<uint64_t> parseUInt(std::string_view s);

/// Lowercase hex of bytes, and back (nullopt on odd length or a non-hex digit).
std::string hexEncode(const uint8_t *p, size_t n);
std::optional<std::string> hexDecode(std::string_view s);

} // namespace llmopt::text

// Splitting a piece of text the way `tokenizers` does: find matches (of a regex, a literal or a
// character class), then keep, drop or merge them by a SplitDelimiterBehavior.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "frontend/tokenizer/Unicode.h"

namespace llmopt::tok {

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

/// Parses "Removed", "Isolated", ... (the JSON spelling).
std::optional<SplitBehavior> parseSplitBehavior(std::string_view s);

/// A byte range of the piece and whether the pattern matched it. Spans cover the piece in order.
struct Span {
  uint32_t begin, end;
  bool match;
};

/// The pre-tokenizer regexes of well-known tokenizer.json files, matched by hand over Unicode
/// categories (std::regex has no \p{L}). Each is recognised by its exact pattern text.
enum class SplitRegex {
  Gpt2,   ///< 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Llama3, ///< (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|...
  Qwen2,  ///< Llama3 with \p{N} (one digit) for \p{N}{1,3}
  Number, ///< \p{N}
};

/// The hand-written matcher for a regex pattern text, if there is one.
std::optional<SplitRegex> recogniseRegex(std::string_view pattern);
/// The pattern texts recognise() accepts, for error messages.
std::string knownRegexes();

/// Matches of a regex over the piece (leftmost-first alternation, as Oniguruma), as spans.
std::vector<Span> regexSpans(SplitRegex re, const CodePoints &text);
/// Non-overlapping occurrences of a literal.
std::vector<Span> literalSpans(std::string_view literal, std::string_view text);
/// Each code point satisfying `pred` is a match of its own.
template <typename Pred> std::vector<Span> charSpans(const CodePoints &text, Pred pred) {
  std::vector<Span> spans;
  uint32_t last = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (!pred(text.cps[i]))
      continue;
    if (last < text.off[i])
      spans.push_back({last, text.off[i], false});
    spans.push_back({text.off[i], text.off[i + 1], true});
    last = text.off[i + 1];
  }
  if (last < text.off.back())
    spans.push_back({last, text.off.back(), false});
  return spans;
}

/// Applies the behaviour (optionally inverting matches first) and appends the non-empty pieces.
void splitSpans(std::string_view text, std::vector<Span> spans, SplitBehavior behavior, bool invert,
                std::vector<std::string> &out);

} // namespace llmopt::tok

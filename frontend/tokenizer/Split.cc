// Hand-written matchers for the pre-tokenizer regexes, and `tokenizers`' split behaviours.
#include "frontend/tokenizer/Split.h"

#include <algorithm>
#include <array>

namespace llmopt::tok {
namespace {

constexpr std::string_view kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kNumber = R"(\p{N})";

/// What the regexes ask of a code point: \p{L}, \p{N}, \s, or none of those.
enum Cls : uint8_t { L, N, S, O };

struct Matcher {
  const std::u32string &c;
  std::vector<uint8_t> cls;
  size_t n;

  explicit Matcher(const CodePoints &t) : c(t.cps), n(t.size()) {
    cls.resize(n);
    for (size_t i = 0; i < n; ++i) {
      Gc g = category(c[i]);
      cls[i] = isLetter(g) ? L : isNumber(g) ? N : isWhitespace(c[i]) ? S : O;
    }
  }
  size_t run(size_t i, Cls k) const {
    while (i < n && cls[i] == k)
      ++i;
    return i;
  }
  bool isCrLf(size_t i) const { return c[i] == '\r' || c[i] == '\n'; }

  /// 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive (Unicode folding: ſ is s).
  size_t contraction(size_t i, bool ci) const {
    if (c[i] != '\'' || i + 1 >= n)
      return 0;
    auto fold = [&](char32_t x) -> char32_t {
      if (!ci)
        return x;
      if (x == 0x17F)
        return 's';
      return x >= 'A' && x <= 'Z' ? x + 32 : x;
    };
    char32_t a = fold(c[i + 1]);
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
      return i + 2;
    if (i + 2 < n) {
      char32_t b = fold(c[i + 2]);
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return i + 3;
    }
    return 0;
  }

  /// \s+(?!\S)|\s+ at a whitespace code point: a run followed by non-space gives back its last
  /// code point (so " word" can take it), unless that would leave nothing.
  size_t spaces(size_t i) const {
    size_t j = run(i, S);
    if (j == n || j - i == 1)
      return j;
    return j - 1;
  }

  // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  size_t gpt2(size_t i) const {
    if (size_t e = contraction(i, false))
      return e;
    size_t k = (c[i] == ' ' && i + 1 < n && cls[i + 1] != S) ? i + 1 : i;
    if (cls[k] != S)
      return run(k, static_cast<Cls>(cls[k]));
    return spaces(i);
  }

  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxDigits}|
  //  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  size_t llama3(size_t i, size_t maxDigits) const {
    if (size_t e = contraction(i, true))
      return e;
    if (cls[i] == L)
      return run(i, L);
    if (cls[i] != N && !isCrLf(i) && i + 1 < n && cls[i + 1] == L)
      return run(i + 1, L);
    if (cls[i] == N)
      return std::min(run(i, N), i + maxDigits);
    size_t k = (c[i] == ' ' && i + 1 < n && cls[i + 1] == O) ? i + 1 : i;
    if (cls[k] == O) {
      size_t j = run(k, O);
      while (j < n && isCrLf(j))
        ++j;
      return j;
    }
    // \s*[\r\n]+: up to and including the last CR/LF of the whitespace run.
    size_t j = run(i, S);
    for (size_t e = j; e > i; --e)
      if (isCrLf(e - 1))
        return e;
    return spaces(i);
  }
};

} // namespace

std::optional<SplitBehavior> parseSplitBehavior(std::string_view s) {
  if (s == "Removed")
    return SplitBehavior::Removed;
  if (s == "Isolated")
    return SplitBehavior::Isolated;
  if (s == "MergedWithPrevious")
    return SplitBehavior::MergedWithPrevious;
  if (s == "MergedWithNext")
    return SplitBehavior::MergedWithNext;
  if (s == "Contiguous")
    return SplitBehavior::Contiguous;
  return std::nullopt;
}

std::optional<SplitRegex> recogniseRegex(std::string_view pattern) {
  if (pattern == kGpt2)
    return SplitRegex::Gpt2;
  if (pattern == kLlama3)
    return SplitRegex::Llama3;
  if (pattern == kQwen2)
    return SplitRegex::Qwen2;
  if (pattern == kNumber)
    return SplitRegex::Number;
  return std::nullopt;
}

std::string knownRegexes() {
  std::string s;
  for (std::string_view p : {kGpt2, kLlama3, kQwen2, kNumber})
    s += (s.empty() ? "" : ", ") + std::string("'") + std::string(p) + "'";
  return s;
}

std::vector<Span> regexSpans(SplitRegex re, const CodePoints &text) {
  if (re == SplitRegex::Number)
    return charSpans(text, [](char32_t c) { return isNumber(c); });
  Matcher m(text);
  std::vector<Span> spans;
  for (size_t i = 0; i < m.n;) {
    size_t e = re == SplitRegex::Gpt2     ? m.gpt2(i)
               : re == SplitRegex::Llama3 ? m.llama3(i, 3)
                                          : m.llama3(i, 1);
    spans.push_back({text.off[i], text.off[e], true});
    i = e;
  }
  return spans;
}

std::vector<Span> literalSpans(std::string_view literal, std::string_view text) {
  std::vector<Span> spans;
  uint32_t last = 0;
  if (!literal.empty()) {
    for (size_t p = text.find(literal); p != std::string_view::npos;
         p = text.find(literal, p + literal.size())) {
      if (last < p)
        spans.push_back({last, static_cast<uint32_t>(p), false});
      spans.push_back({static_cast<uint32_t>(p), static_cast<uint32_t>(p + literal.size()), true});
      last = static_cast<uint32_t>(p + literal.size());
    }
  }
  if (last < text.size())
    spans.push_back({last, static_cast<uint32_t>(text.size()), false});
  return spans;
}

void splitSpans(std::string_view text, std::vector<Span> spans, SplitBehavior behavior, bool invert,
                std::vector<std::string> &out) {
  if (invert)
    for (Span &s : spans)
      s.match = !s.match;
  // Each rule below is tokenizers' NormalizedString::split, folded over the spans.
  std::vector<Span> pieces;
  bool prevMatch = false;
  switch (behavior) {
  case SplitBehavior::Isolated:
    pieces = std::move(spans);
    break;
  case SplitBehavior::Removed:
    for (const Span &s : spans)
      if (!s.match)
        pieces.push_back(s);
    break;
  case SplitBehavior::Contiguous: // runs of matches become one piece
    for (const Span &s : spans) {
      if (s.match == prevMatch && !pieces.empty())
        pieces.back().end = s.end;
      else
        pieces.push_back(s);
      prevMatch = s.match;
    }
    break;
  case SplitBehavior::MergedWithPrevious: // a match joins the piece before it
    for (const Span &s : spans) {
      if (s.match && !prevMatch && !pieces.empty())
        pieces.back().end = s.end;
      else
        pieces.push_back(s);
      prevMatch = s.match;
    }
    break;
  case SplitBehavior::MergedWithNext: // a match joins the piece after it
    for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
      if (it->match && !prevMatch && !pieces.empty())
        pieces.back().begin = it->begin;
      else
        pieces.push_back(*it);
      prevMatch = it->match;
    }
    std::reverse(pieces.begin(), pieces.end());
    break;
  }
  for (const Span &s : pieces)
    if (s.end > s.begin)
      out.emplace_back(text.substr(s.begin, s.end - s.begin));
}

} // namespace llmopt::tok

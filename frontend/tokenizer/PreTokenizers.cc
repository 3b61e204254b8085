// Pre-tokenizers: ByteLevel, Split, Digits, BertPreTokenizer, WhitespaceSplit, Punctuation,
// Sequence; and the byte-level alphabet.
#include <array>

#include "frontend/tokenizer/Components.h"
#include "frontend/tokenizer/Split.h"
#include "frontend/tokenizer/Unicode.h"

namespace llmopt::tok {
namespace {

/// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
/// for U+0100 onwards, so every byte is a visible character.
struct ByteAlphabet {
  std::array<char32_t, 256> toChar{};
  std::array<std::string, 256> toUtf8;
  ByteAlphabet() {
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      toChar[b] = printable ? static_cast<char32_t>(b) : next++;
      appendUtf8(toChar[b], toUtf8[b]);
    }
  }
};

const ByteAlphabet &byteAlphabet() {
  static const ByteAlphabet a;
  return a;
}

/// Optionally puts a space before the piece, splits it with the GPT-2 regex, and rewrites each
/// piece's bytes into the byte-level alphabet.
class ByteLevel final : public PreTokenizer {
public:
  ByteLevel(bool prefixSpace, bool useRegex) : prefixSpace_(prefixSpace), useRegex_(useRegex) {}

  void split(std::string_view piece, std::vector<std::string> &out) const override {
    std::string spaced;
    if (prefixSpace_ && (piece.empty() || piece[0] != ' ')) {
      spaced.reserve(piece.size() + 1);
      spaced.push_back(' ');
      spaced.append(piece);
      piece = spaced;
    }
    size_t first = out.size();
    if (useRegex_)
      splitSpans(piece, regexSpans(SplitRegex::Gpt2, CodePoints(piece)), SplitBehavior::Isolated,
                 false, out);
    else if (!piece.empty())
      out.emplace_back(piece);
    const ByteAlphabet &a = byteAlphabet();
    for (size_t i = first; i < out.size(); ++i) {
      std::string mapped;
      mapped.reserve(out[i].size() * 2);
      for (unsigned char b : out[i])
        mapped += a.toUtf8[b];
      out[i] = std::move(mapped);
    }
  }

private:
  bool prefixSpace_, useRegex_;
};

class SplitPre final : public PreTokenizer {
public:
  SplitPre(std::optional<SplitRegex> re, std::string literal, SplitBehavior b, bool invert)
      : re_(re), literal_(std::move(literal)), behavior_(b), invert_(invert) {}

  void split(std::string_view piece, std::vector<std::string> &out) const override {
    auto spans = re_ ? regexSpans(*re_, CodePoints(piece)) : literalSpans(literal_, piece);
    splitSpans(piece, std::move(spans), behavior_, invert_, out);
  }

private:
  std::optional<SplitRegex> re_;
  std::string literal_;
  SplitBehavior behavior_;
  bool invert_;
};

/// Splits at code points satisfying Pred, with a behaviour.
template <typename Pred> class CharSplit final : public PreTokenizer {
public:
  CharSplit(Pred pred, SplitBehavior b) : pred_(pred), behavior_(b) {}
  void split(std::string_view piece, std::vector<std::string> &out) const override {
    splitSpans(piece, charSpans(CodePoints(piece), pred_), behavior_, false, out);
  }

private:
  Pred pred_;
  SplitBehavior behavior_;
};

template <typename Pred> std::unique_ptr<PreTokenizer> charSplit(Pred pred, SplitBehavior b) {
  return std::make_unique<CharSplit<Pred>>(pred, b);
}

class SequencePre final : public PreTokenizer {
public:
  explicit SequencePre(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void split(std::string_view piece, std::vector<std::string> &out) const override {
    std::vector<std::string> cur{std::string(piece)}, next;
    for (const auto &p : parts_) {
      next.clear();
      for (const std::string &s : cur)
        p->split(s, next);
      cur.swap(next);
    }
    for (std::string &s : cur)
      out.push_back(std::move(s));
  }

private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

bool isBertWhitespace(char32_t c) { return isWhitespace(c); }
bool isNumeric(char32_t c) { return isNumber(c); }

/// BERT: split on whitespace (dropped), then isolate each punctuation character.
class BertPre final : public PreTokenizer {
public:
  void split(std::string_view piece, std::vector<std::string> &out) const override {
    std::vector<std::string> words;
    CodePoints text(piece);
    splitSpans(piece, charSpans(text, isBertWhitespace), SplitBehavior::Removed, false, words);
    for (const std::string &w : words)
      splitSpans(w, charSpans(CodePoints(w), isBertPunctuation), SplitBehavior::Isolated, false,
                 out);
  }
};

Expected<SplitBehavior> behaviorAt(const JsonAt &at, std::string_view key, SplitBehavior def) {
  if (!at.has(key) || at.j[std::string(key)].is_null())
    return def;
  LLMOPT_ASSIGN_OR_RETURN(std::string s, at.string(key));
  if (auto b = parseSplitBehavior(s))
    return *b;
  return at[key].unsupported("split behavior", s,
                             "Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
}

} // namespace

char32_t byteToChar(uint8_t b) { return byteAlphabet().toChar[b]; }

int charToByte(char32_t c) {
  static const auto inverse = [] {
    std::array<int16_t, 324> inv;
    inv.fill(-1);
    for (int b = 0; b < 256; ++b)
      inv[byteAlphabet().toChar[b]] = static_cast<int16_t>(b);
    return inv;
  }();
  return c < inverse.size() ? inverse[c] : -1;
}

Expected<std::unique_ptr<PreTokenizer>> makePreTokenizer(const JsonAt &at) {
  LLMOPT_ASSIGN_OR_RETURN(std::string type, at.type());
  if (type == "ByteLevel") {
    LLMOPT_ASSIGN_OR_RETURN(bool prefix, at.boolean("add_prefix_space", true));
    LLMOPT_ASSIGN_OR_RETURN(bool useRegex, at.boolean("use_regex", true));
    return std::unique_ptr<PreTokenizer>(new ByteLevel(prefix, useRegex));
  }
  if (type == "Split") {
    JsonAt pattern = at["pattern"];
    LLMOPT_ASSIGN_OR_RETURN(SplitBehavior b, behaviorAt(at, "behavior", SplitBehavior::Isolated));
    LLMOPT_ASSIGN_OR_RETURN(bool invert, at.boolean("invert", false));
    if (pattern.has("String")) {
      LLMOPT_ASSIGN_OR_RETURN(std::string lit, pattern.string("String"));
      return std::unique_ptr<PreTokenizer>(new SplitPre(std::nullopt, std::move(lit), b, invert));
    }
    LLMOPT_ASSIGN_OR_RETURN(std::string re, pattern.string("Regex"));
    auto known = recogniseRegex(re);
    if (!known)
      return pattern["Regex"].unsupported("Split regex", re, knownRegexes());
    return std::unique_ptr<PreTokenizer>(new SplitPre(known, "", b, invert));
  }
  if (type == "Digits") {
    LLMOPT_ASSIGN_OR_RETURN(bool individual, at.boolean("individual_digits", false));
    return charSplit(isNumeric, individual ? SplitBehavior::Isolated : SplitBehavior::Contiguous);
  }
  if (type == "BertPreTokenizer")
    return std::unique_ptr<PreTokenizer>(new BertPre());
  if (type == "WhitespaceSplit")
    return charSplit(isBertWhitespace, SplitBehavior::Removed);
  if (type == "Punctuation") {
    LLMOPT_ASSIGN_OR_RETURN(SplitBehavior b, behaviorAt(at, "behavior", SplitBehavior::Isolated));
    return charSplit(isBertPunctuation, b);
  }
  if (type == "Sequence") {
    JsonAt list = at["pretokenizers"];
    if (!list.j.is_array())
      return list.error("expected an array");
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < list.j.size(); ++i) {
      LLMOPT_ASSIGN_OR_RETURN(auto part, makePreTokenizer(list[i]));
      parts.push_back(std::move(part));
    }
    return std::unique_ptr<PreTokenizer>(new SequencePre(std::move(parts)));
  }
  return at["type"].unsupported("pre-tokenizer type", type,
                                "ByteLevel, Split, Digits, BertPreTokenizer, WhitespaceSplit, "
                                "Punctuation, Sequence");
}

} // namespace llmopt::tok

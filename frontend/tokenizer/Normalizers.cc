// Normalizers: BertNormalizer, Lowercase, NFD, StripAccents, Prepend, Replace, Sequence.
#include "frontend/tokenizer/Components.h"
#include "frontend/tokenizer/Unicode.h"

namespace llmopt::tok {
namespace {

/// BERT's cleanup: drop controls, unify whitespace, space out CJK ideographs, strip accents
/// (NFD, then drop nonspacing marks), lowercase. In that order, as tokenizers' bert.rs.
class BertNormalizer final : public Normalizer {
public:
  BertNormalizer(bool clean, bool chinese, bool strip, bool lower)
      : clean_(clean), chinese_(chinese), strip_(strip), lower_(lower) {}

  std::string normalize(std::string_view s) const override {
    std::u32string t = toUtf32(s), u;
    u.reserve(t.size());
    if (clean_) {
      for (char32_t c : t) {
        if (c == 0 || c == 0xFFFD || isBertControl(c))
          continue;
        bool ws = c == '\t' || c == '\n' || c == '\r' || isWhitespace(c);
        u.push_back(ws ? U' ' : c);
      }
      t.swap(u);
    }
    if (chinese_) {
      u.clear();
      for (char32_t c : t) {
        if (isBertChineseChar(c)) {
          u += U' ';
          u += c;
          u += U' ';
        } else {
          u += c;
        }
      }
      t.swap(u);
    }
    if (strip_) {
      u.clear();
      for (char32_t c : nfd(t))
        if (!isBertNonspacingMark(c))
          u.push_back(c);
      t.swap(u);
    }
    if (lower_) {
      u.clear();
      for (char32_t c : t)
        appendLower(c, u);
      t.swap(u);
    }
    return toUtf8(t);
  }

private:
  bool clean_, chinese_, strip_, lower_;
};

class Lowercase final : public Normalizer {
public:
  std::string normalize(std::string_view s) const override {
    std::u32string u;
    for (char32_t c : toUtf32(s))
      appendLower(c, u);
    return toUtf8(u);
  }
};

class Nfd final : public Normalizer {
public:
  std::string normalize(std::string_view s) const override { return toUtf8(nfd(toUtf32(s))); }
};

/// Drops combining marks (M*); meant to follow NFD.
class StripAccents final : public Normalizer {
public:
  std::string normalize(std::string_view s) const override {
    std::u32string u;
    for (char32_t c : toUtf32(s))
      if (!isMark(category(c)))
        u.push_back(c);
    return toUtf8(u);
  }
};

class Prepend final : public Normalizer {
public:
  explicit Prepend(std::string p) : prefix_(std::move(p)) {}
  std::string normalize(std::string_view s) const override {
    return s.empty() ? std::string() : prefix_ + std::string(s);
  }

private:
  std::string prefix_;
};

/// Replaces every occurrence of a literal.
class Replace final : public Normalizer {
public:
  Replace(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  std::string normalize(std::string_view s) const override {
    if (from_.empty())
      return std::string(s);
    std::string out;
    size_t last = 0;
    for (size_t p = s.find(from_); p != std::string_view::npos; p = s.find(from_, last)) {
      out.append(s.substr(last, p - last)).append(to_);
      last = p + from_.size();
    }
    return out.append(s.substr(last));
  }

private:
  std::string from_, to_;
};

class SequenceNormalizer final : public Normalizer {
public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  std::string normalize(std::string_view s) const override {
    std::string cur(s);
    for (const auto &p : parts_)
      cur = p->normalize(cur);
    return cur;
  }

private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

} // namespace

Expected<std::unique_ptr<Normalizer>> makeNormalizer(const JsonAt &at) {
  LLMOPT_ASSIGN_OR_RETURN(std::string type, at.type());
  if (type == "BertNormalizer") {
    LLMOPT_ASSIGN_OR_RETURN(bool clean, at.boolean("clean_text", true));
    LLMOPT_ASSIGN_OR_RETURN(bool chinese, at.boolean("handle_chinese_chars", true));
    LLMOPT_ASSIGN_OR_RETURN(bool lower, at.boolean("lowercase", true));
    LLMOPT_ASSIGN_OR_RETURN(bool strip, at.boolean("strip_accents", lower)); // null: as lowercase
    return std::unique_ptr<Normalizer>(new BertNormalizer(clean, chinese, strip, lower));
  }
  if (type == "Lowercase")
    return std::unique_ptr<Normalizer>(new Lowercase());
  if (type == "NFD")
    return std::unique_ptr<Normalizer>(new Nfd());
  if (type == "StripAccents")
    return std::unique_ptr<Normalizer>(new StripAccents());
  if (type == "Prepend") {
    LLMOPT_ASSIGN_OR_RETURN(std::string p, at.string("prepend"));
    return std::unique_ptr<Normalizer>(new Prepend(std::move(p)));
  }
  if (type == "Replace") {
    JsonAt pattern = at["pattern"];
    if (!pattern.has("String"))
      return pattern.unsupported("Replace pattern", pattern.j.dump(), "{\"String\": ...}");
    LLMOPT_ASSIGN_OR_RETURN(std::string from, pattern.string("String"));
    LLMOPT_ASSIGN_OR_RETURN(std::string to, at.string("content"));
    return std::unique_ptr<Normalizer>(new Replace(std::move(from), std::move(to)));
  }
  if (type == "Sequence") {
    JsonAt list = at["normalizers"];
    if (!list.j.is_array())
      return list.error("expected an array");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < list.j.size(); ++i) {
      LLMOPT_ASSIGN_OR_RETURN(auto part, makeNormalizer(list[i]));
      parts.push_back(std::move(part));
    }
    return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(parts)));
  }
  return at["type"].unsupported("normalizer type", type,
                                "BertNormalizer, Lowercase, NFD, StripAccents, Prepend, Replace, "
                                "Sequence");
}

} // namespace llmopt::tok

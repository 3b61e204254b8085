// The WordPiece model (BERT): greedy longest-match-first over the vocabulary, "##" marking a
// piece that continues a word; a word with any unmatchable part is one [UNK].
#include <fmt/format.h>

#include "frontend/tokenizer/Components.h"
#include "frontend/tokenizer/Unicode.h"

namespace llmopt::tok {
namespace {

class WordPiece final : public Model {
public:
  Vocab vocab;
  int32_t unk = 0;
  std::string prefix;
  size_t maxChars = 100;

  void tokenize(std::string_view word, std::vector<int32_t> &out) const override {
    size_t chars = 0;
    for (unsigned char b : word)
      chars += (b & 0xC0) != 0x80;
    if (chars > maxChars) {
      out.push_back(unk);
      return;
    }
    size_t mark = out.size();
    std::string buf;
    for (size_t start = 0; start < word.size();) {
      std::optional<int32_t> found;
      size_t end = word.size();
      while (start < end) {
        std::string_view sub = word.substr(start, end - start);
        if (start > 0) {
          buf.assign(prefix).append(sub);
          sub = buf;
        }
        if ((found = vocab.find(sub)))
          break;
        do // back off one character
          --end;
        while (end > start && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80);
      }
      if (!found) {
        out.resize(mark);
        out.push_back(unk);
        return;
      }
      out.push_back(*found);
      start = end;
    }
  }
  std::optional<int32_t> tokenToId(std::string_view t) const override { return vocab.find(t); }
  const std::string *idToToken(int32_t id) const override { return vocab.token(id); }
  int32_t size() const override { return static_cast<int32_t>(vocab.tokens.size()); }
  std::optional<int32_t> unkId() const override { return unk; }
  std::string_view type() const override { return "WordPiece"; }
};

} // namespace

Expected<std::unique_ptr<Model>> makeWordPiece(const JsonAt &at) {
  auto wp = std::make_unique<WordPiece>();
  LLMOPT_ASSIGN_OR_RETURN(wp->vocab, Vocab::fromJson(at["vocab"]));
  LLMOPT_ASSIGN_OR_RETURN(std::string unk, at.string("unk_token"));
  LLMOPT_ASSIGN_OR_RETURN(auto prefix, at.optString("continuing_subword_prefix"));
  wp->prefix = prefix.value_or("##");
  if (at.has("max_input_chars_per_word")) {
    LLMOPT_ASSIGN_OR_RETURN(int64_t m, at.integer("max_input_chars_per_word"));
    wp->maxChars = static_cast<size_t>(std::max<int64_t>(m, 0));
  }
  auto unkId = wp->vocab.find(unk);
  if (!unkId)
    return at["unk_token"].error(fmt::format("unk_token '{}' is not in the vocabulary", unk));
  wp->unk = *unkId;
  return std::unique_ptr<Model>(std::move(wp));
}

} // namespace llmopt::tok

// Text <-> token ids for the models llmopt compresses, loaded from a Hugging Face tokenizer.json.
//
// Supported (what GPT-2 / Llama-3 / SmolLM2 and BERT files use; anything else is a load error
// naming the JSON path):
//   normalizer: BertNormalizer, Lowercase, NFD, StripAccents, Prepend, Replace (string), Sequence
//   pre_tokenizer: ByteLevel, Split (a string, or the GPT-2 / Llama-3 / Qwen2 / \p{N} regexes),
//     Digits, BertPreTokenizer, WhitespaceSplit, Punctuation, Sequence
//   model: BPE (merge ranks, byte_fallback, unk/fuse_unk, ignore_merges), WordPiece
//   post_processor: TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence
//   decoder: ByteLevel, WordPiece, ByteFallback, Fuse, Strip, Replace (string), Sequence
// Added tokens (special or not; lstrip/rstrip/single_word/normalized) are matched before
// normalization and pre-tokenization, as in `tokenizers`. Truncation and padding settings are
// ignored: callers window long text themselves.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ir/Status.h"

namespace llmopt::tok {

/// Special token ids, where the file defines them (see loadTokenizer for where each comes from).
struct SpecialTokenIds {
  std::optional<int32_t> bos, eos, pad, unk, cls, sep;
};

/// A loaded tokenizer. Thread-safe: encode/decode may run concurrently.
class Tokenizer {
public:
  virtual ~Tokenizer() = default;

  /// Token ids of `utf8` (invalid UTF-8 is replaced by U+FFFD first). Special tokens written in
  /// the text are always recognised; `addSpecialTokens` applies the post-processor (e.g. BERT's
  /// [CLS] ... [SEP]).
  virtual std::vector<int32_t> encode(std::string_view utf8, bool addSpecialTokens) const = 0;
  /// Text of `ids` through the file's decoder; unknown ids are skipped.
  virtual std::string decode(std::span<const int32_t> ids,
                             bool skipSpecialTokens = false) const = 0;
  /// One past the largest id of the vocabulary and the added tokens.
  virtual int32_t vocabSize() const = 0;
  virtual const SpecialTokenIds &specialTokens() const = 0;
  virtual std::optional<int32_t> tokenToId(std::string_view token) const = 0;
  /// The token's string, or "" for an id that has none.
  virtual std::string idToToken(int32_t id) const = 0;
  /// "BPE" or "WordPiece".
  virtual std::string_view modelType() const = 0;
};

/// Loads a tokenizer.json. Special ids: from tokenizer_config.json beside it when that exists
/// (bos_token, eos_token, ...), else unk from the model, pad from `padding`, cls/sep (WordPiece)
/// or bos/eos (BPE) from the post-processor's template, else well-known token names.
Expected<std::unique_ptr<Tokenizer>> loadTokenizer(const std::string &path);

/// Parses tokenizer.json text; `origin` names it in errors. `configJson` is the optional
/// tokenizer_config.json text.
Expected<std::unique_ptr<Tokenizer>>
parseTokenizer(std::string_view json, const std::string &origin, std::string_view configJson = {});

} // namespace llmopt::tok

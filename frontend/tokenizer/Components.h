// The stages of a tokenizer.json pipeline (normalizer, pre-tokenizer, model, post-processor,
// decoder) and their JSON factories. Internal to llmopt_tokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "ir/Status.h"

namespace llmopt::tok {

/// A JSON value and its path in the file ("/pre_tokenizer/pretokenizers/1"), for errors.
struct JsonAt {
  const nlohmann::json &j;
  std::string path;

  JsonAt operator[](std::string_view key) const;
  JsonAt operator[](size_t index) const;
  bool has(std::string_view key) const;
  /// An optional member: absent and null both read as `def`.
  Expected<bool> boolean(std::string_view key, bool def) const;
  Expected<std::string> string(std::string_view key) const;
  Expected<std::optional<std::string>> optString(std::string_view key) const;
  Expected<int64_t> integer(std::string_view key) const;
  /// The "type" member.
  Expected<std::string> type() const { return string("type"); }
  Status error(std::string_view what) const;
  /// "<path>: unsupported <what> '<value>' (supported: <list>)".
  Status unsupported(std::string_view what, std::string_view value,
                     std::string_view supported) const;
};

/// Hash for string maps looked up by string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using VocabMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

/// A model's vocabulary: token -> id and back.
struct Vocab {
  VocabMap ids;
  std::vector<std::string> tokens; ///< by id; "" where no token has the id
  std::vector<bool> present;

  /// Reads a JSON object {token: id}.
  static Expected<Vocab> fromJson(const JsonAt &at);
  std::optional<int32_t> find(std::string_view token) const {
    auto it = ids.find(token);
    return it == ids.end() ? std::nullopt : std::optional<int32_t>(it->second);
  }
  const std::string *token(int32_t id) const {
    return id >= 0 && static_cast<size_t>(id) < tokens.size() && present[id] ? &tokens[id]
                                                                             : nullptr;
  }
};

// ---- Stages ----

class Normalizer {
public:
  virtual ~Normalizer() = default;
  virtual std::string normalize(std::string_view s) const = 0;
};

/// Splits one piece of text into pieces (it may also rewrite them, as ByteLevel does).
class PreTokenizer {
public:
  virtual ~PreTokenizer() = default;
  /// Appends the non-empty pieces of `piece` to `out`.
  virtual void split(std::string_view piece, std::vector<std::string> &out) const = 0;
};

class Model {
public:
  virtual ~Model() = default;
  /// Appends the ids of one pre-tokenized piece.
  virtual void tokenize(std::string_view piece, std::vector<int32_t> &out) const = 0;
  virtual std::optional<int32_t> tokenToId(std::string_view token) const = 0;
  /// nullptr for an id outside the vocabulary.
  virtual const std::string *idToToken(int32_t id) const = 0;
  virtual int32_t size() const = 0; ///< One past the largest id.
  virtual std::optional<int32_t> unkId() const = 0;
  virtual std::string_view type() const = 0;
};

class PostProcessor {
public:
  virtual ~PostProcessor() = default;
  /// Adds the special tokens around one sequence (called only when they are wanted).
  virtual void process(std::vector<int32_t> &ids) const = 0;
  /// Tokens put before / after the sequence, for the special-id defaults.
  virtual std::vector<int32_t> prefixIds() const { return {}; }
  virtual std::vector<int32_t> suffixIds() const { return {}; }
};

class Decoder {
public:
  virtual ~Decoder() = default;
  /// Rewrites the token strings in place (`tokenizers`' decode_chain); decode joins them.
  virtual void decodeChain(std::vector<std::string> &tokens) const = 0;
};

// ---- Factories: each reads one JSON object and names its path in any error ----

Expected<std::unique_ptr<Normalizer>> makeNormalizer(const JsonAt &at);
Expected<std::unique_ptr<PreTokenizer>> makePreTokenizer(const JsonAt &at);
Expected<std::unique_ptr<Model>> makeModel(const JsonAt &at);
Expected<std::unique_ptr<Model>> makeBpe(const JsonAt &at);
Expected<std::unique_ptr<Model>> makeWordPiece(const JsonAt &at);
Expected<std::unique_ptr<PostProcessor>> makePostProcessor(const JsonAt &at);
Expected<std::unique_ptr<Decoder>> makeDecoder(const JsonAt &at);

// ---- ByteLevel alphabet (GPT-2's bytes_to_unicode) ----

/// The code point standing for byte b in byte-level vocabularies.
char32_t byteToChar(uint8_t b);
/// The byte a byte-level code point stands for, or -1.
int charToByte(char32_t c);

} // namespace llmopt::tok

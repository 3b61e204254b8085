// The tokenizer.json pipeline: added tokens, normalizer, pre-tokenizer, model, post-processor;
// decoding; and loading with special-token ids.
#include "frontend/tokenizer/Tokenizer.h"

#include <fstream>
#include <sstream>
#include <unordered_set>

#include "frontend/tokenizer/AddedTokens.h"
#include "frontend/tokenizer/Components.h"
#include "frontend/tokenizer/Unicode.h"

namespace llmopt::tok {
namespace {

bool validUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t start = i;
    if (decodeUtf8(s, i) == 0xFFFD && s.substr(start, i - start) != "\xEF\xBF\xBD")
      return false;
  }
  return true;
}

class HfTokenizer final : public Tokenizer {
public:
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> preTokenizer;
  std::unique_ptr<Model> model;
  std::unique_ptr<PostProcessor> postProcessor;
  std::unique_ptr<Decoder> decoder;
  std::vector<AddedToken> added;
  AddedTokenMatcher rawMatcher, normalizedMatcher;
  std::unordered_set<std::string, StringHash, std::equal_to<>> specialContents;
  std::unordered_map<int32_t, size_t> addedById;
  std::unordered_map<std::string, size_t, StringHash, std::equal_to<>> addedByContent;
  SpecialTokenIds specials;

  std::vector<int32_t> encode(std::string_view text, bool addSpecialTokens) const override {
    std::string clean;
    if (!validUtf8(text)) {
      clean = utf8Lossy(text);
      text = clean;
    }
    std::vector<int32_t> ids;
    std::vector<std::string> pieces;
    for (const Segment &raw : rawMatcher.split(text)) {
      if (raw.id) {
        ids.push_back(*raw.id);
        continue;
      }
      std::string_view part = text.substr(raw.begin, raw.end - raw.begin);
      std::string norm = normalizer ? normalizer->normalize(part) : std::string(part);
      for (const Segment &seg : normalizedMatcher.split(norm)) {
        if (seg.id) {
          ids.push_back(*seg.id);
          continue;
        }
        std::string_view piece = std::string_view(norm).substr(seg.begin, seg.end - seg.begin);
        pieces.clear();
        if (preTokenizer)
          preTokenizer->split(piece, pieces);
        else
          pieces.emplace_back(piece);
        for (const std::string &p : pieces)
          model->tokenize(p, ids);
      }
    }
    if (addSpecialTokens && postProcessor)
      postProcessor->process(ids);
    return ids;
  }

  std::string decode(std::span<const int32_t> ids, bool skipSpecialTokens) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
      const std::string *t = tokenString(id);
      if (!t || (skipSpecialTokens && specialContents.count(*t)))
        continue;
      tokens.push_back(*t);
    }
    std::string out;
    if (!decoder) {
      for (size_t i = 0; i < tokens.size(); ++i)
        out.append(i ? " " : "").append(tokens[i]);
      return out;
    }
    decoder->decodeChain(tokens);
    for (const std::string &t : tokens)
      out += t;
    return out;
  }

  int32_t vocabSize() const override {
    int32_t n = model->size();
    for (const AddedToken &t : added)
      n = std::max(n, t.id + 1);
    return n;
  }
  const SpecialTokenIds &specialTokens() const override { return specials; }
  std::optional<int32_t> tokenToId(std::string_view token) const override {
    if (auto it = addedByContent.find(token); it != addedByContent.end())
      return added[it->second].id;
    return model->tokenToId(token);
  }
  std::string idToToken(int32_t id) const override {
    const std::string *t = tokenString(id);
    return t ? *t : std::string();
  }
  std::string_view modelType() const override { return model->type(); }

  const std::string *tokenString(int32_t id) const {
    if (auto it = addedById.find(id); it != addedById.end())
      return &added[it->second].content;
    return model->idToToken(id);
  }
};

/// added_tokens: ids come from the model's vocabulary when it has the token (as tokenizers does).
Status readAddedTokens(const JsonAt &at, HfTokenizer &tok) {
  if (at.j.is_null())
    return Status::ok();
  if (!at.j.is_array())
    return at.error("expected an array");
  for (size_t i = 0; i < at.j.size(); ++i) {
    JsonAt t = at[i];
    AddedToken a;
    LLMOPT_ASSIGN_OR_RETURN(a.content, t.string("content"));
    LLMOPT_ASSIGN_OR_RETURN(int64_t id, t.integer("id"));
    LLMOPT_ASSIGN_OR_RETURN(a.special, t.boolean("special", false));
    LLMOPT_ASSIGN_OR_RETURN(a.singleWord, t.boolean("single_word", false));
    LLMOPT_ASSIGN_OR_RETURN(a.lstrip, t.boolean("lstrip", false));
    LLMOPT_ASSIGN_OR_RETURN(a.rstrip, t.boolean("rstrip", false));
    LLMOPT_ASSIGN_OR_RETURN(a.normalized, t.boolean("normalized", !a.special));
    if (a.content.empty())
      continue;
    a.id = tok.model->tokenToId(a.content).value_or(static_cast<int32_t>(id));
    if (a.special)
      tok.specialContents.insert(a.content);
    tok.added.push_back(std::move(a));
  }
  // Special tokens are matched before the others (tokenizers chains them in that order).
  std::stable_partition(tok.added.begin(), tok.added.end(),
                        [](const AddedToken &a) { return a.special; });
  std::vector<AddedToken> raw, norm;
  std::vector<std::string> rawPatterns, normPatterns;
  for (size_t i = 0; i < tok.added.size(); ++i) {
    const AddedToken &a = tok.added[i];
    tok.addedById.emplace(a.id, i);
    tok.addedByContent.emplace(a.content, i);
    if (a.normalized) {
      norm.push_back(a);
      normPatterns.push_back(tok.normalizer ? tok.normalizer->normalize(a.content) : a.content);
    } else {
      raw.push_back(a);
      rawPatterns.push_back(a.content);
    }
  }
  tok.rawMatcher = AddedTokenMatcher(std::move(raw), rawPatterns);
  tok.normalizedMatcher = AddedTokenMatcher(std::move(norm), normPatterns);
  return Status::ok();
}

/// Special ids: tokenizer_config.json, then what the file implies, then well-known names.
void resolveSpecials(const nlohmann::json &root, const nlohmann::json &config, HfTokenizer &tok) {
  SpecialTokenIds &s = tok.specials;
  auto fromConfig = [&](const char *key, std::optional<int32_t> &slot) {
    if (!config.is_object() || !config.contains(key))
      return;
    const nlohmann::json &v = config[key];
    if (v.is_string())
      slot = tok.tokenToId(v.get<std::string>());
    else if (v.is_object() && v.contains("content") && v["content"].is_string())
      slot = tok.tokenToId(v["content"].get<std::string>());
  };
  fromConfig("bos_token", s.bos);
  fromConfig("eos_token", s.eos);
  fromConfig("pad_token", s.pad);
  fromConfig("unk_token", s.unk);
  fromConfig("cls_token", s.cls);
  fromConfig("sep_token", s.sep);

  if (!s.unk)
    s.unk = tok.model->unkId();
  const nlohmann::json &padding = root.contains("padding") ? root["padding"] : nlohmann::json();
  if (!s.pad && padding.is_object() && padding.contains("pad_id") &&
      padding["pad_id"].is_number_integer())
    s.pad = padding["pad_id"].get<int32_t>();
  if (tok.postProcessor) {
    bool wordPiece = tok.model->type() == "WordPiece";
    auto before = tok.postProcessor->prefixIds(), after = tok.postProcessor->suffixIds();
    std::optional<int32_t> &first = wordPiece ? s.cls : s.bos, &last = wordPiece ? s.sep : s.eos;
    if (!first && !before.empty())
      first = before.front();
    if (!last && !after.empty())
      last = after.back();
  }
  auto byName = [&](std::optional<int32_t> &slot, std::initializer_list<const char *> names) {
    for (const char *n : names)
      if (!slot)
        slot = tok.tokenToId(n);
  };
  byName(s.bos, {"<s>", "<|begin_of_text|>", "<|startoftext|>", "<|endoftext|>"});
  byName(s.eos, {"</s>", "<|end_of_text|>", "<|endoftext|>"});
  byName(s.pad, {"<pad>", "[PAD]", "<|pad|>"});
  byName(s.unk, {"<unk>", "[UNK]"});
  byName(s.cls, {"[CLS]", "<cls>"});
  byName(s.sep, {"[SEP]", "<sep>"});
}

Expected<std::string> readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return errorf("{}: cannot open", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace

Expected<std::unique_ptr<Tokenizer>>
parseTokenizer(std::string_view json, const std::string &origin, std::string_view configJson) {
  nlohmann::json root = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object())
    return errorf("{}: not a JSON object", origin);
  nlohmann::json config;
  if (!configJson.empty()) {
    config = nlohmann::json::parse(configJson, nullptr, false);
    if (config.is_discarded())
      return errorf("{}: tokenizer_config.json is not valid JSON", origin);
  }
  JsonAt at{root, ""};
  auto tok = std::make_unique<HfTokenizer>();
  auto stage = [&](const char *key, auto make, auto &slot) -> Status {
    JsonAt part = at[key];
    if (part.j.is_null())
      return Status::ok();
    auto made = make(part);
    if (!made)
      return made.status();
    slot = made.take();
    return Status::ok();
  };
  Status st = stage("model", makeModel, tok->model);
  if (st && !tok->model)
    st = at["model"].error("missing model");
  if (st)
    st = stage("normalizer", makeNormalizer, tok->normalizer);
  if (st)
    st = stage("pre_tokenizer", makePreTokenizer, tok->preTokenizer);
  if (st)
    st = stage("post_processor", makePostProcessor, tok->postProcessor);
  if (st)
    st = stage("decoder", makeDecoder, tok->decoder);
  if (st)
    st = readAddedTokens(at["added_tokens"], *tok);
  if (!st)
    return st.withContext(origin);
  resolveSpecials(root, config, *tok);
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

Expected<std::unique_ptr<Tokenizer>> loadTokenizer(const std::string &path) {
  LLMOPT_ASSIGN_OR_RETURN(std::string text, readFile(path));
  std::string config;
  size_t slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  if (std::ifstream probe(dir + "tokenizer_config.json"); probe) {
    LLMOPT_ASSIGN_OR_RETURN(config, readFile(dir + "tokenizer_config.json"));
  }
  return parseTokenizer(text, path, config);
}

} // namespace llmopt::tok

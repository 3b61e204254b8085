// Decoders (ByteLevel, WordPiece, ByteFallback, Fuse, Strip, Replace, Sequence) and
// post-processors (TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence).
#include <fmt/format.h>

#include "frontend/tokenizer/Components.h"
#include "frontend/tokenizer/Unicode.h"

namespace llmopt::tok {
namespace {

/// Byte-level characters back to bytes; a token with any other character keeps its own bytes.
class ByteLevelDecoder final : public Decoder {
public:
  void decodeChain(std::vector<std::string> &tokens) const override {
    std::string bytes;
    for (const std::string &t : tokens) {
      size_t mark = bytes.size();
      bool ok = true;
      for (size_t i = 0; i < t.size() && ok;) {
        int b = charToByte(decodeUtf8(t, i));
        ok = b >= 0;
        bytes.push_back(static_cast<char>(b));
      }
      if (!ok)
        bytes.resize(mark), bytes.append(t);
    }
    tokens.assign(1, utf8Lossy(bytes));
  }
};

/// "##ing" joins the previous token; other tokens get a space; optional English cleanup.
class WordPieceDecoder final : public Decoder {
public:
  WordPieceDecoder(std::string prefix, bool cleanup)
      : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void decodeChain(std::vector<std::string> &tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string &t = tokens[i];
      if (i != 0) {
        if (!prefix_.empty() && t.compare(0, prefix_.size(), prefix_) == 0)
          t.erase(0, prefix_.size());
        else
          t = std::string(" ").append(t); // (t.insert trips GCC 12's -Wrestrict)
      }
      if (cleanup_)
        for (auto [from, to] : kCleanup)
          replaceAll(t, from, to);
    }
  }

private:
  static constexpr std::pair<std::string_view, std::string_view> kCleanup[] = {
      {" .", "."},   {" ?", "?"},     {" !", "!"},    {" ,", ","},
      {" ' ", "'"},  {" n't", "n't"}, {" 'm", "'m"},  {" do not", " don't"},
      {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  static void replaceAll(std::string &s, std::string_view from, std::string_view to) {
    std::string out;
    size_t last = 0;
    for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, last)) {
      out.append(s, last, p - last).append(to);
      last = p + from.size();
    }
    if (last != 0)
      s = out.append(s, last);
  }
  std::string prefix_;
  bool cleanup_;
};

/// Runs of <0xAB> tokens become their UTF-8 text (or one U+FFFD per byte if invalid).
class ByteFallbackDecoder final : public Decoder {
public:
  void decodeChain(std::vector<std::string> &tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t count = 0;
    auto flush = [&] {
      if (count == 0)
        return;
      if (utf8Lossy(bytes) == bytes)
        out.push_back(bytes);
      else
        out.insert(out.end(), count, "\xEF\xBF\xBD");
      bytes.clear(), count = 0;
    };
    for (std::string &t : tokens) {
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && isxdigit(t[3]) &&
          isxdigit(t[4])) {
        bytes.push_back(static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
        ++count;
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    tokens.swap(out);
  }
};

class FuseDecoder final : public Decoder {
public:
  void decodeChain(std::vector<std::string> &tokens) const override {
    std::string all;
    for (const std::string &t : tokens)
      all += t;
    tokens.assign(1, all);
  }
};

/// Removes up to `start` leading and `stop` trailing copies of one character from each token.
class StripDecoder final : public Decoder {
public:
  StripDecoder(char32_t c, size_t start, size_t stop) : c_(c), start_(start), stop_(stop) {}
  void decodeChain(std::vector<std::string> &tokens) const override {
    for (std::string &t : tokens) {
      std::u32string u = toUtf32(t);
      size_t b = 0, e = u.size();
      while (b < std::min(start_, u.size()) && u[b] == c_)
        ++b;
      for (size_t i = 0; i < stop_ && e > b && u[e - 1] == c_; ++i)
        --e;
      t = toUtf8(std::u32string_view(u).substr(b, e - b));
    }
  }

private:
  char32_t c_;
  size_t start_, stop_;
};

class ReplaceDecoder final : public Decoder {
public:
  ReplaceDecoder(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  void decodeChain(std::vector<std::string> &tokens) const override {
    for (std::string &t : tokens) {
      std::string out;
      size_t last = 0;
      for (size_t p = t.find(from_); !from_.empty() && p != std::string::npos;
           p = t.find(from_, last)) {
        out.append(t, last, p - last).append(to_);
        last = p + from_.size();
      }
      t = out.append(t, last);
    }
  }

private:
  std::string from_, to_;
};

class SequenceDecoder final : public Decoder {
public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  void decodeChain(std::vector<std::string> &tokens) const override {
    for (const auto &p : parts_)
      p->decodeChain(tokens);
  }

private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

/// Special tokens around the sequence: TemplateProcessing's "single", Bert/Roberta's cls A sep.
class TemplatePost final : public PostProcessor {
public:
  std::vector<int32_t> before, after;
  void process(std::vector<int32_t> &ids) const override {
    ids.insert(ids.begin(), before.begin(), before.end());
    ids.insert(ids.end(), after.begin(), after.end());
  }
  std::vector<int32_t> prefixIds() const override { return before; }
  std::vector<int32_t> suffixIds() const override { return after; }
};

class SequencePost final : public PostProcessor {
public:
  std::vector<std::unique_ptr<PostProcessor>> parts;
  void process(std::vector<int32_t> &ids) const override {
    for (const auto &p : parts)
      p->process(ids);
  }
  std::vector<int32_t> prefixIds() const override {
    std::vector<int32_t> r;
    for (const auto &p : parts)
      for (int32_t id : p->prefixIds())
        r.push_back(id);
    return r;
  }
  std::vector<int32_t> suffixIds() const override {
    std::vector<int32_t> r;
    for (const auto &p : parts)
      for (int32_t id : p->suffixIds())
        r.push_back(id);
    return r;
  }
};

/// TemplateProcessing's "single": [{"SpecialToken": {"id": name}}, {"Sequence": {"id": "A"}}, ...].
Status readTemplate(const JsonAt &at, TemplatePost &post) {
  JsonAt single = at["single"], specials = at["special_tokens"];
  if (!single.j.is_array())
    return single.error("expected an array");
  bool seenA = false;
  for (size_t i = 0; i < single.j.size(); ++i) {
    JsonAt item = single[i];
    if (item.has("Sequence")) {
      LLMOPT_ASSIGN_OR_RETURN(std::string id, item["Sequence"].string("id"));
      if (id != "A" || seenA)
        return item["Sequence"].error("a single-sequence template holds sequence A once");
      seenA = true;
      continue;
    }
    if (!item.has("SpecialToken"))
      return item.error("expected a SpecialToken or a Sequence");
    LLMOPT_ASSIGN_OR_RETURN(std::string name, item["SpecialToken"].string("id"));
    if (!specials.has(name))
      return specials.error(fmt::format("special token '{}' is not defined", name));
    JsonAt ids = specials[name]["ids"];
    if (!ids.j.is_array())
      return ids.error("expected an array of ids");
    for (const auto &id : ids.j) {
      if (!id.is_number_integer())
        return ids.error("expected an array of ids");
      (seenA ? post.after : post.before).push_back(id.get<int32_t>());
    }
  }
  if (!seenA)
    return single.error("the template has no sequence A");
  return Status::ok();
}

/// ["[CLS]", 101] -> 101.
Expected<int32_t> tokenPair(const JsonAt &at) {
  if (!at.j.is_array() || at.j.size() != 2 || !at.j[1].is_number_integer())
    return at.error("expected [token, id]");
  return at.j[1].get<int32_t>();
}

} // namespace

Expected<std::unique_ptr<Decoder>> makeDecoder(const JsonAt &at) {
  LLMOPT_ASSIGN_OR_RETURN(std::string type, at.type());
  if (type == "ByteLevel")
    return std::unique_ptr<Decoder>(new ByteLevelDecoder());
  if (type == "WordPiece") {
    LLMOPT_ASSIGN_OR_RETURN(auto prefix, at.optString("prefix"));
    LLMOPT_ASSIGN_OR_RETURN(bool cleanup, at.boolean("cleanup", true));
    return std::unique_ptr<Decoder>(new WordPieceDecoder(prefix.value_or("##"), cleanup));
  }
  if (type == "ByteFallback")
    return std::unique_ptr<Decoder>(new ByteFallbackDecoder());
  if (type == "Fuse")
    return std::unique_ptr<Decoder>(new FuseDecoder());
  if (type == "Strip") {
    LLMOPT_ASSIGN_OR_RETURN(std::string content, at.string("content"));
    LLMOPT_ASSIGN_OR_RETURN(int64_t start, at.integer("start"));
    LLMOPT_ASSIGN_OR_RETURN(int64_t stop, at.integer("stop"));
    std::u32string c = toUtf32(content);
    if (c.size() != 1 || start < 0 || stop < 0)
      return at.error("Strip needs one character and non-negative counts");
    return std::unique_ptr<Decoder>(new StripDecoder(c[0], start, stop));
  }
  if (type == "Replace") {
    JsonAt pattern = at["pattern"];
    if (!pattern.has("String"))
      return pattern.unsupported("Replace pattern", pattern.j.dump(), "{\"String\": ...}");
    LLMOPT_ASSIGN_OR_RETURN(std::string from, pattern.string("String"));
    LLMOPT_ASSIGN_OR_RETURN(std::string to, at.string("content"));
    return std::unique_ptr<Decoder>(new ReplaceDecoder(std::move(from), std::move(to)));
  }
  if (type == "Sequence") {
    JsonAt list = at["decoders"];
    if (!list.j.is_array())
      return list.error("expected an array");
    std::vector<std::unique_ptr<Decoder>> parts;
    for (size_t i = 0; i < list.j.size(); ++i) {
      LLMOPT_ASSIGN_OR_RETURN(auto part, makeDecoder(list[i]));
      parts.push_back(std::move(part));
    }
    return std::unique_ptr<Decoder>(new SequenceDecoder(std::move(parts)));
  }
  return at["type"].unsupported(
      "decoder type", type, "ByteLevel, WordPiece, ByteFallback, Fuse, Strip, Replace, Sequence");
}

Expected<std::unique_ptr<PostProcessor>> makePostProcessor(const JsonAt &at) {
  LLMOPT_ASSIGN_OR_RETURN(std::string type, at.type());
  if (type == "ByteLevel") // only trims offsets, which we do not produce
    return std::unique_ptr<PostProcessor>(new SequencePost());
  if (type == "TemplateProcessing") {
    auto post = std::make_unique<TemplatePost>();
    LLMOPT_RETURN_IF_ERROR(readTemplate(at, *post));
    return std::unique_ptr<PostProcessor>(std::move(post));
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto post = std::make_unique<TemplatePost>();
    LLMOPT_ASSIGN_OR_RETURN(int32_t cls, tokenPair(at["cls"]));
    LLMOPT_ASSIGN_OR_RETURN(int32_t sep, tokenPair(at["sep"]));
    post->before = {cls};
    post->after = {sep};
    return std::unique_ptr<PostProcessor>(std::move(post));
  }
  if (type == "Sequence") {
    auto post = std::make_unique<SequencePost>();
    JsonAt list = at["processors"];
    if (!list.j.is_array())
      return list.error("expected an array");
    for (size_t i = 0; i < list.j.size(); ++i) {
      LLMOPT_ASSIGN_OR_RETURN(auto part, makePostProcessor(list[i]));
      post->parts.push_back(std::move(part));
    }
    return std::unique_ptr<PostProcessor>(std::move(post));
  }
  return at["type"].unsupported("post-processor type", type,
                                "TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, "
                                "Sequence");
}

} // namespace llmopt::tok

// Tokenizers on small hand-made tokenizer.json files: BPE merge order, byte-level round trips,
// added/special tokens, WordPiece unknowns and accents, the split regexes, errors. (Parity with
// the `tokenizers` package on real files is tests/python/test_tokenizer_parity.py.)
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "frontend/tokenizer/Components.h"
#include "frontend/tokenizer/Split.h"
#include "frontend/tokenizer/Tokenizer.h"
#include "frontend/tokenizer/Unicode.h"
#include "tests/support/TempPath.h"

namespace llmopt::tok {
namespace {

using json = nlohmann::json;
using Ids = std::vector<int32_t>;

std::unique_ptr<Tokenizer> parse(const json &j, std::string_view config = {}) {
  auto t = parseTokenizer(j.dump(), "test.json", config);
  EXPECT_TRUE(t) << (t ? "" : t.status().message());
  return t ? t.take() : nullptr;
}

std::string parseError(const json &j) {
  auto t = parseTokenizer(j.dump(), "test.json");
  return t ? std::string("(loaded)") : t.status().message();
}

/// A character-level BPE over {a, b, c} with the given merges (as "x y" strings).
json charBpe(std::vector<std::string> merges) {
  json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}, {"aa", 6}};
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

/// A byte-level BPE: all 256 byte characters, plus "Ġt", "he", "Ġthe" and their merges.
json byteLevelBpe() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    appendUtf8(byteToChar(static_cast<uint8_t>(b)), s);
    vocab[s] = b;
  }
  vocab["Ġt"] = 256, vocab["he"] = 257, vocab["Ġthe"] = 258, vocab["<|eot|>"] = 259;
  json byteLevel = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  return {{"added_tokens",
           {{{"id", 259}, {"content", "<|eot|>"}, {"special", true}, {"normalized", false}}}},
          {"pre_tokenizer", byteLevel},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"Ġ t", "h e", "Ġt he"}}}}};
}

/// A BERT-style WordPiece tokenizer with a tiny vocabulary.
json wordPiece() {
  json vocab = {{"[PAD]", 0},  {"[UNK]", 1}, {"[CLS]", 2}, {"[SEP]", 3}, {"un", 4}, {"##aff", 5},
                {"##able", 6}, {"cafe", 7},  {"deja", 8},  {"vu", 9},    {",", 10}, {"!", 11},
                {"中", 12},    {"文", 13},   {"a", 14},    {"##a", 15}};
  json added = json::array();
  for (auto [name, id] : {std::pair{"[PAD]", 0}, {"[UNK]", 1}, {"[CLS]", 2}, {"[SEP]", 3}})
    added.push_back({{"id", id}, {"content", name}, {"special", true}, {"normalized", false}});
  return {
      {"added_tokens", added},
      {"normalizer", {{"type", "BertNormalizer"}, {"lowercase", true}, {"strip_accents", nullptr}}},
      {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
      {"post_processor",
       {{"type", "BertProcessing"}, {"cls", {"[CLS]", 2}}, {"sep", {"[SEP]", 3}}}},
      {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
      {"model",
       {{"type", "WordPiece"},
        {"unk_token", "[UNK]"},
        {"max_input_chars_per_word", 10},
        {"vocab", vocab}}}};
}

// ---- BPE ----

TEST(TokenizerBpe, MergesApplyInRankOrder) {
  // "b c" first: a + bc, and no "a bc" merge exists.
  EXPECT_EQ(parse(charBpe({"b c", "a b", "ab c"}))->encode("abc", false), (Ids{0, 4}));
  // "a b" first: ab + c -> abc.
  EXPECT_EQ(parse(charBpe({"a b", "b c", "ab c"}))->encode("abc", false), (Ids{5}));
}

TEST(TokenizerBpe, EqualRanksMergeLeftmostFirst) {
  EXPECT_EQ(parse(charBpe({"a a"}))->encode("aaa", false), (Ids{6, 0}));
  EXPECT_EQ(parse(charBpe({"a a"}))->encode("aaaa", false), (Ids{6, 6}));
}

TEST(TokenizerBpe, UnknownCharactersVanishWithoutUnkToken) {
  EXPECT_EQ(parse(charBpe({}))->encode("axb", false), (Ids{0, 1}));
}

TEST(TokenizerBpe, UnknownCharactersFuseIntoOneUnk) {
  json j = charBpe({});
  j["model"]["vocab"]["<unk>"] = 7;
  j["model"]["unk_token"] = "<unk>";
  EXPECT_EQ(parse(j)->encode("axyb", false), (Ids{0, 7, 7, 1}));
  j["model"]["fuse_unk"] = true;
  EXPECT_EQ(parse(j)->encode("axyb", false), (Ids{0, 7, 1}));
}

TEST(TokenizerBpe, ByteFallbackSpellsUnknownCharactersAsBytes) {
  json j = charBpe({});
  j["model"]["byte_fallback"] = true;
  j["model"]["vocab"]["<0xC3>"] = 10;
  j["model"]["vocab"]["<0xA9>"] = 11;
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}};
  auto t = parse(j);
  EXPECT_EQ(t->encode("aé", false), (Ids{0, 10, 11}));
  EXPECT_EQ(t->decode(Ids{0, 10, 11}), "aé");
}

TEST(TokenizerBpe, ByteLevelRoundTripsAnyText) {
  auto t = parse(byteLevelBpe());
  EXPECT_EQ(t->encode("the the", false), (Ids{'t', 257, 258}));
  for (std::string s :
       {"the the", "  tabs\tand\nnewlines  ", "Café 日本語 👨‍👩‍👧 1234", ""})
    EXPECT_EQ(t->decode(t->encode(s, false)), s) << s;
}

TEST(TokenizerBpe, InvalidUtf8IsReplacedBeforeEncoding) {
  auto t = parse(byteLevelBpe());
  EXPECT_EQ(t->decode(t->encode("a\xC3(b\xED\xA0\x80", false)), "a\uFFFD(b\uFFFD\uFFFD\uFFFD");
}

// ---- Added and special tokens ----

TEST(TokenizerAdded, SpecialTokensAreMatchedBeforePreTokenization) {
  auto t = parse(byteLevelBpe());
  EXPECT_EQ(t->encode("the<|eot|>the", false), (Ids{'t', 257, 259, 't', 257}));
  EXPECT_EQ(t->decode(Ids{'t', 257, 259}), "the<|eot|>");
  EXPECT_EQ(t->decode(Ids{'t', 257, 259}, /*skipSpecialTokens=*/true), "the");
  EXPECT_EQ(t->encode("<|eot", false).size(), 5u); // a partial token is plain text
}

TEST(TokenizerAdded, StripAndSingleWordOptions) {
  json j = byteLevelBpe();
  j["added_tokens"][0]["lstrip"] = true;
  j["added_tokens"][0]["rstrip"] = true;
  EXPECT_EQ(parse(j)->encode("he  <|eot|> he", false), (Ids{257, 259, 257}));
  j["added_tokens"][0]["single_word"] = true;
  EXPECT_EQ(parse(j)->encode("x<|eot|>", false).size(), 8u); // not a word of its own: text
  EXPECT_EQ(parse(j)->encode("x <|eot|>", false), (Ids{'x', 259}));
}

TEST(TokenizerAdded, NormalizedAddedTokensMatchNormalizedText) {
  json j = wordPiece();
  j["added_tokens"].push_back(
      {{"id", 20}, {"content", "Hello"}, {"special", false}, {"normalized", true}});
  auto t = parse(j);
  EXPECT_EQ(t->encode("HELLO hello", false), (Ids{20, 20}));
  EXPECT_EQ(t->vocabSize(), 21);
}

// ---- WordPiece ----

TEST(TokenizerWordPiece, ContinuationPiecesAndTemplate) {
  auto t = parse(wordPiece());
  EXPECT_EQ(t->encode("unaffable", false), (Ids{4, 5, 6}));
  EXPECT_EQ(t->encode("unaffable", true), (Ids{2, 4, 5, 6, 3}));
  EXPECT_EQ(t->encode("", true), (Ids{2, 3}));
  EXPECT_EQ(t->decode(Ids{2, 4, 5, 6, 10, 9, 11}, true), "unaffable, vu!");
}

TEST(TokenizerWordPiece, UnknownWordsAndLongWordsAreOneUnk) {
  auto t = parse(wordPiece());
  EXPECT_EQ(t->encode("unaffablex vu", false), (Ids{1, 9})); // one bad piece spoils the word
  EXPECT_EQ(t->encode("aaaaaaaaaa", false), (Ids{14, 15, 15, 15, 15, 15, 15, 15, 15, 15}));
  EXPECT_EQ(t->encode("aaaaaaaaaaa", false), (Ids{1})); // 11 > max_input_chars_per_word
}

TEST(TokenizerWordPiece, BertNormalizerStripsAccentsAndSplitsCjkAndPunctuation) {
  auto t = parse(wordPiece());
  EXPECT_EQ(t->encode("Café, DÉJÀ\tvu!", false), (Ids{7, 10, 8, 9, 11}));
  EXPECT_EQ(t->encode("中文", false), (Ids{12, 13}));
  EXPECT_EQ(t->encode(std::string("a\0\u200b a", 7), false), (Ids{14, 14})); // controls dropped
  EXPECT_EQ(t->encode("[CLS]vu[SEP]", false), (Ids{2, 9, 3}));
}

TEST(TokenizerWordPiece, SpecialIds) {
  auto t = parse(wordPiece());
  const SpecialTokenIds &s = t->specialTokens();
  EXPECT_EQ(s.cls, 2);
  EXPECT_EQ(s.sep, 3);
  EXPECT_EQ(s.unk, 1);
  EXPECT_EQ(s.pad, 0);
  EXPECT_EQ(t->modelType(), "WordPiece");
  EXPECT_EQ(t->tokenToId("##aff"), 5);
  EXPECT_EQ(t->idToToken(6), "##able");
}

TEST(TokenizerLoad, ReadsTokenizerConfigBesideTheFile) {
  auto dir = std::filesystem::path(test::tempPath("tokenizer_test"));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << byteLevelBpe().dump();
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": {"content": "<|eot|>"}})";
  auto t = loadTokenizer((dir / "tokenizer.json").string());
  ASSERT_TRUE(t) << t.status().message();
  EXPECT_EQ((*t)->specialTokens().eos, 259);
  std::filesystem::remove_all(dir);
  EXPECT_FALSE(loadTokenizer((dir / "tokenizer.json").string()));
}

// ---- Split regexes (expected pieces from `tokenizers`' Oniguruma regexes) ----

std::vector<std::string> splitWith(SplitRegex re, std::string_view s) {
  std::vector<std::string> out;
  splitSpans(s, regexSpans(re, CodePoints(s)), SplitBehavior::Isolated, false, out);
  return out;
}

TEST(TokenizerSplit, Gpt2Regex) {
  using V = std::vector<std::string>;
  EXPECT_EQ(splitWith(SplitRegex::Gpt2, "Hello world's  123 !!"),
            (V{"Hello", " world", "'s", " ", " 123", " !!"}));
  EXPECT_EQ(splitWith(SplitRegex::Gpt2, "I'M  fine\tthanks"),
            (V{"I", "'", "M", " ", " fine", "\t", "thanks"}));
  EXPECT_EQ(splitWith(SplitRegex::Gpt2, "x \n\n  y"), (V{"x", " \n\n ", " y"}));
}

TEST(TokenizerSplit, Llama3Regex) {
  using V = std::vector<std::string>;
  EXPECT_EQ(splitWith(SplitRegex::Llama3, "I'M  fine\tthanks"),
            (V{"I", "'M", " ", " fine", "\tthanks"}));
  EXPECT_EQ(splitWith(SplitRegex::Llama3, "x \n\n  y"), (V{"x", " \n\n", " ", " y"}));
  EXPECT_EQ(splitWith(SplitRegex::Llama3, "12345 (abc) 'sup"),
            (V{"123", "45", " (", "abc", ")", " '", "sup"}));
}

TEST(TokenizerSplit, Behaviors) {
  using V = std::vector<std::string>;
  auto run = [](SplitBehavior b) {
    std::vector<std::string> out;
    splitSpans("a--b-", literalSpans("-", "a--b-"), b, false, out);
    return out;
  };
  EXPECT_EQ(run(SplitBehavior::Removed), (V{"a", "b"}));
  EXPECT_EQ(run(SplitBehavior::Isolated), (V{"a", "-", "-", "b", "-"}));
  EXPECT_EQ(run(SplitBehavior::MergedWithPrevious), (V{"a-", "-", "b-"}));
  EXPECT_EQ(run(SplitBehavior::MergedWithNext), (V{"a", "-", "-b", "-"}));
  EXPECT_EQ(run(SplitBehavior::Contiguous), (V{"a", "--", "b", "-"}));
  std::vector<std::string> inverted; // invert: the text between delimiters is what matches
  splitSpans("a--b-", literalSpans("-", "a--b-"), SplitBehavior::MergedWithPrevious, true,
             inverted);
  EXPECT_EQ(inverted, (V{"a", "-", "-b", "-"}));
}

// ---- Unicode ----

TEST(TokenizerUnicode, Tables) {
  EXPECT_EQ(category(U'a'), Gc::Ll);
  EXPECT_EQ(category(U'中'), Gc::Lo);
  EXPECT_EQ(category(0x1F600), Gc::So);
  EXPECT_EQ(category(0x0378), Gc::Cn);
  EXPECT_TRUE(isWhitespace(0x3000));
  EXPECT_FALSE(isWhitespace(0x200B));
  EXPECT_EQ(nfd(U"\u00e9\u1e69"), U"e\u0301s\u0323\u0307"); // decomposed, marks reordered
  EXPECT_EQ(nfd(U"\uac01"), U"\u1100\u1161\u11a8");         // Hangul, algorithmically
  std::u32string lower;
  for (char32_t c : std::u32string(U"ÀΣİ"))
    appendLower(c, lower);
  EXPECT_EQ(lower, U"àσi\u0307");
  EXPECT_TRUE(isBertPunctuation(U'$'));
  EXPECT_TRUE(isBertPunctuation(0x2E3B));  // Unicode 6.0 punctuation
  EXPECT_FALSE(isBertPunctuation(0x2E4F)); // Unicode 11.0: after tokenizers' tables
  EXPECT_EQ(utf8Lossy("\xF0\x90\x80z\xFF"), "\uFFFDz\uFFFD");
}

// ---- Errors name the JSON path and the unsupported value ----

TEST(TokenizerErrors, UnsupportedFeaturesAreNamed) {
  json j = byteLevelBpe();
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", {{{"type", "Digits"}}, {{"type", "Metaspace"}}}}};
  std::string e = parseError(j);
  EXPECT_NE(e.find("test.json: /pre_tokenizer/pretokenizers/1/type"), std::string::npos) << e;
  EXPECT_NE(e.find("'Metaspace'"), std::string::npos) << e;

  j = byteLevelBpe();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}};
  EXPECT_NE(parseError(j).find("/pre_tokenizer/pattern/Regex: unsupported Split regex"),
            std::string::npos);

  j = byteLevelBpe();
  j["model"]["type"] = "Unigram";
  EXPECT_NE(parseError(j).find("/model/type: unsupported model type 'Unigram'"), std::string::npos);

  j = byteLevelBpe();
  j["normalizer"] = {{"type", "NFKC"}};
  EXPECT_NE(parseError(j).find("/normalizer/type: unsupported normalizer type 'NFKC'"),
            std::string::npos);

  j = charBpe({"a b", "a z"});
  EXPECT_NE(parseError(j).find("/model/merges/1: merge 'a z' names a token not in the vocabulary"),
            std::string::npos);

  EXPECT_NE(parseError(json::array()).find("not a JSON object"), std::string::npos);
}

} // namespace
} // namespace llmopt::tok

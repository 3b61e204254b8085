// llmopt-tokenize: text lines to token ids (or back) with a tokenizer.json.
//
//   llmopt-tokenize --tokenizer T.json [--add-special] < text      one line of ids per line
//   llmopt-tokenize --tokenizer T.json --decode [--skip-special] < ids
//   llmopt-tokenize --tokenizer T.json --info                       vocabulary and special ids
// With -z, input texts (and decoded outputs) are separated by NUL instead of newline, so texts
// may hold newlines.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "frontend/tokenizer/Tokenizer.h"

namespace {

constexpr const char *kUsage =
    "usage: llmopt-tokenize --tokenizer T.json [--decode] [--add-special] [--skip-special]\n"
    "                       [-z] [--info] [--stats]\n"
    "Reads stdin line by line ('\\n' only). Encoding writes each line's ids, space-separated;\n"
    "--decode reads such lines and writes the text. -z: texts are NUL-terminated records, not\n"
    "lines (encoding reads them, decoding writes them). --add-special applies the post-processor\n"
    "(e.g. [CLS] ... [SEP]); --skip-special drops special tokens when decoding; --info prints\n"
    "the vocabulary size, model type and special ids; --stats reports lines, tokens and time on\n"
    "stderr.\n";

struct Options {
  std::string tokenizer;
  bool decode = false, addSpecial = false, skipSpecial = false, info = false, stats = false;
  bool nulData = false;
};

bool parseArgs(int argc, char **argv, Options &o) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--tokenizer" && i + 1 < argc)
      o.tokenizer = argv[++i];
    else if (a == "--decode")
      o.decode = true;
    else if (a == "--add-special")
      o.addSpecial = true;
    else if (a == "--skip-special")
      o.skipSpecial = true;
    else if (a == "--info")
      o.info = true;
    else if (a == "--stats")
      o.stats = true;
    else if (a == "-z" || a == "--null-data")
      o.nulData = true;
    else {
      fmt::print(stderr, "llmopt-tokenize: unknown argument '{}'\n{}", a, kUsage);
      return false;
    }
  }
  if (o.tokenizer.empty()) {
    fmt::print(stderr, "llmopt-tokenize: --tokenizer is required\n{}", kUsage);
    return false;
  }
  return true;
}

std::string optId(const std::optional<int32_t> &id) { return id ? std::to_string(*id) : "null"; }

void printInfo(const llmopt::tok::Tokenizer &t) {
  const auto &s = t.specialTokens();
  fmt::print("{{\"model\": \"{}\", \"vocab_size\": {}, \"bos\": {}, \"eos\": {}, \"pad\": {}, "
             "\"unk\": {}, \"cls\": {}, \"sep\": {}}}\n",
             t.modelType(), t.vocabSize(), optId(s.bos), optId(s.eos), optId(s.pad), optId(s.unk),
             optId(s.cls), optId(s.sep));
}

/// Parses "12 7 9"; returns false on anything else.
bool parseIds(std::string_view line, std::vector<int32_t> &ids) {
  ids.clear();
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ')
      ++i;
    if (i == line.size())
      break;
    size_t j = i;
    int64_t v = 0;
    while (j < line.size() && line[j] >= '0' && line[j] <= '9' && v < (int64_t{1} << 31))
      v = v * 10 + (line[j++] - '0');
    if (j == i || v >= (int64_t{1} << 31) || (j < line.size() && line[j] != ' '))
      return false;
    ids.push_back(static_cast<int32_t>(v));
    i = j;
  }
  return true;
}

} // namespace

int main(int argc, char **argv) {
  Options o;
  if (!parseArgs(argc, argv, o))
    return 1;
  auto loaded = llmopt::tok::loadTokenizer(o.tokenizer);
  if (!loaded) {
    fmt::print(stderr, "llmopt-tokenize: {}\n", loaded.status().message());
    return 1;
  }
  const llmopt::tok::Tokenizer &tok = **loaded;
  if (o.info) {
    printInfo(tok);
    return 0;
  }
  std::ios::sync_with_stdio(false);
  auto start = std::chrono::steady_clock::now();
  size_t lines = 0, tokens = 0, bytes = 0;
  std::string line, out;
  std::vector<int32_t> ids;
  const char textEnd = o.nulData ? '\0' : '\n';
  while (std::getline(std::cin, line, o.decode ? '\n' : textEnd)) {
    ++lines;
    bytes += line.size() + 1;
    out.clear();
    if (o.decode) {
      if (!parseIds(line, ids)) {
        fmt::print(stderr, "llmopt-tokenize: line {}: expected space-separated ids\n", lines);
        return 1;
      }
      out = tok.decode(ids, o.skipSpecial);
    } else {
      ids = tok.encode(line, o.addSpecial);
      for (size_t i = 0; i < ids.size(); ++i)
        fmt::format_to(std::back_inserter(out), "{}{}", i ? " " : "", ids[i]);
    }
    tokens += ids.size();
    out.push_back(o.decode ? textEnd : '\n');
    std::cout.write(out.data(), static_cast<std::streamsize>(out.size()));
  }
  std::cout.flush();
  if (o.stats) {
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print(stderr, "llmopt-tokenize: {} lines, {} bytes, {} tokens in {:.3f} s ({:.2f} MB/s)\n",
               lines, bytes, tokens, s, bytes / 1e6 / std::max(s, 1e-9));
  }
  return 0;
}

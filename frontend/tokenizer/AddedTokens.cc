// Leftmost-longest matching of added tokens over a byte trie.
#include "frontend/tokenizer/AddedTokens.h"

#include <algorithm>

#include "frontend/tokenizer/Unicode.h"

namespace llmopt::tok {
namespace {

/// Rust regex \w at the end / start of a string (single_word's neighbours).
bool endsWithWord(std::string_view s) {
  if (s.empty())
    return false;
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80)
    --i;
  return isWordChar(decodeUtf8(s, i));
}

bool startsWithWord(std::string_view s) {
  size_t i = 0;
  return !s.empty() && isWordChar(decodeUtf8(s, i));
}

/// Start of the whitespace run that ends s.
size_t trailingSpaceStart(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t i = end - 1;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80)
      --i;
    size_t j = i;
    if (!isWhitespace(decodeUtf8(s, j)))
      break;
    end = i;
  }
  return end;
}

/// Length of the whitespace run that starts s.
size_t leadingSpaceLen(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    if (!isWhitespace(decodeUtf8(s, j)))
      break;
    i = j;
  }
  return i;
}

} // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens,
                                     const std::vector<std::string> &patterns)
    : tokens_(std::move(tokens)) {
  for (size_t t = 0; t < tokens_.size(); ++t) {
    const std::string &p = patterns[t];
    if (p.empty())
      continue;
    firstByte_[static_cast<unsigned char>(p[0])] = true;
    int32_t node = 0;
    for (unsigned char b : p) {
      auto &next = trie_[node].next;
      auto it = std::find_if(next.begin(), next.end(), [&](auto &e) { return e.first == b; });
      if (it != next.end()) {
        node = it->second;
        continue;
      }
      int32_t fresh = static_cast<int32_t>(trie_.size());
      trie_[node].next.emplace_back(b, fresh);
      trie_.emplace_back();
      node = fresh;
    }
    if (trie_[node].token < 0) // the first of equal patterns wins
      trie_[node].token = static_cast<int32_t>(t);
  }
}

std::pair<int32_t, size_t> AddedTokenMatcher::longestAt(std::string_view text, size_t pos) const {
  std::pair<int32_t, size_t> best{-1, pos};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto &next = trie_[node].next;
    unsigned char b = static_cast<unsigned char>(text[i]);
    auto it = std::find_if(next.begin(), next.end(), [&](auto &e) { return e.first == b; });
    if (it == next.end())
      break;
    node = it->second;
    if (trie_[node].token >= 0)
      best = {trie_[node].token, i + 1};
  }
  return best;
}

std::vector<Segment> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<Segment> out;
  size_t done = 0; // end of the last segment emitted
  for (size_t pos = 0; pos < text.size() && !tokens_.empty();) {
    if (!firstByte_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    auto [t, end] = longestAt(text, pos);
    if (t < 0) {
      ++pos;
      continue;
    }
    const AddedToken &tok = tokens_[t];
    size_t start = pos, stop = end;
    pos = end; // the search resumes after the match even if it is discarded
    if (tok.singleWord && ((start > 0 && endsWithWord(text.substr(0, start))) ||
                           (stop < text.size() && startsWithWord(text.substr(stop)))))
      continue;
    if (tok.lstrip)
      start = std::max(trailingSpaceStart(text.substr(0, start)), done);
    if (tok.rstrip)
      stop += leadingSpaceLen(text.substr(stop));
    if (done < start)
      out.push_back({done, start, std::nullopt});
    out.push_back({start, stop, tok.id});
    done = stop;
  }
  if (done < text.size())
    out.push_back({done, text.size(), std::nullopt});
  return out;
}

} // namespace llmopt::tok

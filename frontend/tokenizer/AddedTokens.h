// Added tokens (special or not): found in the text before normalization and pre-tokenization,
// leftmost-longest, with tokenizers' lstrip / rstrip / single_word rules.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llmopt::tok {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false, singleWord = false, lstrip = false, rstrip = false, normalized = true;
};

/// A byte range of the text, and the added token it is (if it is one).
struct Segment {
  size_t begin, end;
  std::optional<int32_t> id;
};

/// Finds a set of added tokens in text (tokenizers' AddedVocabulary::find_matches).
class AddedTokenMatcher {
public:
  /// `patterns[i]` is what token i looks like in the text it is matched against (normalized
  /// tokens are matched in normalized text). Empty patterns never match.
  AddedTokenMatcher(std::vector<AddedToken> tokens, const std::vector<std::string> &patterns);
  AddedTokenMatcher() = default;

  bool empty() const { return tokens_.empty(); }
  /// Segments covering `text` in order; empty text gives none.
  std::vector<Segment> split(std::string_view text) const;

private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> next;
    int32_t token = -1; ///< index of the token ending here
  };
  /// Longest pattern starting at `pos`: (token index, end), or token -1.
  std::pair<int32_t, size_t> longestAt(std::string_view text, size_t pos) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> trie_{Node{}};
  std::array<bool, 256> firstByte_{};
};

} // namespace llmopt::tok

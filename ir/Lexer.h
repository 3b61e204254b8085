// The tokenizer of the IR text form: words, %values, strings, numbers and punctuation,
// each with its line and column. Tokens are produced on demand (one lookahead), so a
// multi-gigabyte dump with hex constants is not held twice.
#pragma once

#include <string>
#include <string_view>

namespace llmopt {

struct Token {
  enum class Kind { Eof, Word, Value, String, Number, Punct, Error };
  Kind kind = Kind::Eof;
  /// Word / Number / Punct: the spelling. String: the decoded bytes. Value: the
  /// decoded name (digits for anonymous `%$N`). Error: what is wrong.
  std::string text;
  bool anonymous = false; ///< A `%$N` value: an empty-named value, N unique per print.
  int line = 1, col = 1;

  bool is(Kind k, std::string_view t) const { return kind == k && text == t; }
  bool isPunct(std::string_view t) const { return is(Kind::Punct, t); }
  bool isWord(std::string_view t) const { return is(Kind::Word, t); }
  /// The token as it should appear in "got '...'" messages.
  std::string describe() const;
};

class Lexer {
public:
  explicit Lexer(std::string_view text) : src_(text) { advance(); }
  const Token &peek() const { return tok_; }
  Token next() {
    Token t = std::move(tok_);
    advance();
    return t;
  }

private:
  void advance();
  void skipSpaceAndComments();
  void lexString(Token &t);
  void lexValue(Token &t);
  void lexWordOrNumber(Token &t);
  char at(size_t i) const { return i < src_.size() ? src_[i] : '\0'; }
  void bump(size_t n = 1);

  std::string_view src_;
  size_t pos_ = 0;
  int line_ = 1, col_ = 1;
  Token tok_;
};

} // namespace llmopt

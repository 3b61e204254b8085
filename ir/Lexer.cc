// Tokenizer for the IR text form; see ir/Lexer.h and docs/ir-text.md.
#include "ir/Lexer.h"

#include <algorithm>
#include <cstring>

#include "ir/TextSyntax.h"

namespace llmopt {

std::string Token::describe() const {
  std::string s;
  switch (kind) {
  case Kind::Eof: return "end of input";
  case Kind::String: s = text::quote(text); break;
  case Kind::Value:
    s = anonymous ? "%$" + text : "%" + (text::isBareValueName(text) ? text : text::quote(text));
    break;
  default: s = text;
  }
  // Hex constants can be megabytes long; a message needs only the start.
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

void Lexer::bump(size_t n) {
  for (size_t i = 0; i < n && pos_ < src_.size(); ++i, ++pos_) {
    if (src_[pos_] == '\n') {
      ++line_;
      col_ = 1;
    } else {
      ++col_;
    }
  }
}

void Lexer::skipSpaceAndComments() {
  for (;;) {
    char c = at(pos_);
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      bump();
    } else if ((c == '/' && at(pos_ + 1) == '/') || c == ';') {
      while (pos_ < src_.size() && src_[pos_] != '\n')
        bump();
    } else {
      return;
    }
  }
}

static bool isDigit(char c) { return c >= '0' && c <= '9'; }

void Lexer::advance() {
  skipSpaceAndComments();
  tok_ = Token{};
  tok_.line = line_;
  tok_.col = col_;
  if (pos_ >= src_.size())
    return;
  const char c = src_[pos_];
  if (c == '"')
    return lexString(tok_);
  if (c == '%')
    return lexValue(tok_);
  if (c == ':' && at(pos_ + 1) == ':') {
    tok_.kind = Token::Kind::Punct;
    tok_.text = "::";
    return bump(2);
  }
  if (std::strchr("()[]{}<>,=:*?", c)) {
    tok_.kind = Token::Kind::Punct;
    tok_.text = std::string(1, c);
    return bump();
  }
  const char n = at(pos_ + 1);
  if (text::isWordStart(c) || isDigit(c) ||
      ((c == '-' || c == '+') && (text::isWordChar(n) && n != '-')))
    return lexWordOrNumber(tok_);
  tok_.kind = Token::Kind::Error;
  tok_.text = "unexpected character " + text::quote(std::string_view(&c, 1));
  bump();
}

void Lexer::lexString(Token &t) {
  bump(); // opening quote
  t.kind = Token::Kind::String;
  for (;;) {
    if (pos_ >= src_.size()) {
      t.kind = Token::Kind::Error;
      t.text = "unterminated string";
      return;
    }
    char c = src_[pos_];
    if (c == '"')
      return bump();
    if (c != '\\') { // copy the run up to the next quote or escape at once
      size_t end = std::min(src_.find_first_of("\"\\", pos_), src_.size());
      t.text.append(src_.substr(pos_, end - pos_));
      bump(end - pos_);
      continue;
    }
    char e = at(pos_ + 1);
    char decoded = 0;
    switch (e) {
    case 'n': decoded = '\n'; break;
    case 't': decoded = '\t'; break;
    case 'r': decoded = '\r'; break;
    case '"': decoded = '"'; break;
    case '\\': decoded = '\\'; break;
    case 'x': {
      auto byte =
          pos_ + 4 <= src_.size() ? text::hexDecode(src_.substr(pos_ + 2, 2)) : std::nullopt;
      if (byte) {
        t.text += (*byte)[0];
        bump(4);
        continue;
      }
      break;
    }
    default: break;
    }
    if (!decoded) {
      t.kind = Token::Kind::Error;
      t.text = "invalid escape in string (expected \\n \\t \\r \\\" \\\\ or \\xHH)";
      return;
    }
    t.text += decoded;
    bump(2);
  }
}

void Lexer::lexValue(Token &t) {
  bump(); // '%'
  t.kind = Token::Kind::Value;
  if (at(pos_) == '"') {
    lexString(t);
    if (t.kind == Token::Kind::String)
      t.kind = Token::Kind::Value;
    return;
  }
  if (at(pos_) == '$' && isDigit(at(pos_ + 1))) {
    bump();
    t.anonymous = true;
    while (isDigit(at(pos_))) {
      t.text += src_[pos_];
      bump();
    }
    return;
  }
  size_t end = pos_;
  while (end < src_.size() && text::isValueNameChar(src_[end]))
    ++end;
  while (end > pos_ && src_[end - 1] == ':') // `%y: f32` names `y`
    --end;
  t.text = std::string(src_.substr(pos_, end - pos_));
  bump(end - pos_);
  if (t.text.empty()) {
    t.kind = Token::Kind::Error;
    t.text = "expected a value name after '%'";
  }
}

void Lexer::lexWordOrNumber(Token &t) {
  const size_t start = pos_;
  const bool word = text::isWordStart(src_[pos_]);
  t.kind = word ? Token::Kind::Word : Token::Kind::Number;
  if (!word)
    bump(); // digit or sign
  for (;;) {
    const char c = at(pos_), prev = pos_ > start ? src_[pos_ - 1] : '\0';
    bool exponentSign = !word && (c == '+' || c == '-') && (prev == 'e' || prev == 'E');
    if ((word && text::isWordChar(c)) ||
        (!word && (text::isWordStart(c) || isDigit(c) || c == '.' || exponentSign)))
      bump();
    else
      break;
  }
  // A NaN with its bits spelled out, `nan(0x7fc00001)`, is one token.
  std::string_view sofar = src_.substr(start, pos_ - start);
  if ((sofar == "nan" || sofar == "-nan") && at(pos_) == '(') {
    size_t close = src_.find(')', pos_);
    if (close != std::string_view::npos && close - pos_ <= 20)
      bump(close + 1 - pos_);
  }
  t.text = std::string(src_.substr(start, pos_ - start));
}

} // namespace llmopt

// The IR text parser's internals, shared by ir/Parser.cc (models, graphs, statements)
// and ir/ParserLiterals.cc (types, tensors, attribute values). Not a public header.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "ir/Graph.h"
#include "ir/Lexer.h"
#include "ir/Status.h"

namespace llmopt::detail {

/// A recursive-descent parser over one Lexer. Every method consumes exactly the
/// construct it names or returns an error positioned at the offending token.
class TextParser {
public:
  TextParser(std::string_view text, std::string_view source) : lex_(text), source_(source) {}

  Expected<std::unique_ptr<Model>> model();
  Expected<Type> type();
  /// Errors unless the whole input has been consumed.
  Status expectEnd();

private:
  // ---- models, graphs, statements (Parser.cc)
  Status modelField(Model &m);
  Status modelBody(Model &m);
  Status graphInto(Graph &g);
  Status graphInputs(Graph &g);
  Status statement(Graph &g, bool &returned);
  Status definition(Graph &g);
  Status constant(Graph &g, const Token &name);
  Status node(Graph &g, const std::vector<std::pair<Token, Type>> &outputs);
  Status nodeAttributes(std::vector<Attribute> &attrs, std::string &name, std::string &doc);
  Status annotation();
  Status returnList(Graph &g);
  Expected<Value *> use();
  Status define(const Token &t, Value *v);
  Value *lookup(const Token &t, bool innermostOnly) const;

  // ---- types, tensors, attribute values (ParserLiterals.cc)
  Expected<Type> tensorType(DType elem);
  Expected<Dim> dim();
  Expected<QuantEncoding> quant();
  Expected<int64_t> integer();
  Expected<int64_t> keyedInt(std::string_view key);
  Expected<float> floatValue();
  Expected<std::string> string(std::string_view what);
  Expected<std::string> hexBytes();
  Expected<std::shared_ptr<Tensor>> tensorBody(DType dt, const std::vector<int64_t> &shape,
                                               const std::string &what);
  Expected<std::shared_ptr<Tensor>> tensorData(DType dt, const std::vector<int64_t> &shape,
                                               const std::string &what);
  Status element(DType dt, std::string &bytes, size_t i);
  Expected<std::shared_ptr<Tensor>> tensorLiteral(const std::string &what);
  Expected<Attribute> attribute(std::string name);
  Status attributeList(Attribute &a, std::string_view tag);
  Status list(const std::function<Status()> &each);

  // ---- tokens
  bool accept(std::string_view punctOrWord);
  Status expect(std::string_view punctOrWord);
  /// "<source>:<line>:<col>: expected <what>, got '<next token>'".
  Status expected(std::string_view what) const;
  Status errorAt(const Token &t, const std::string &msg) const;

  /// Values visible in one graph: named ones and `%$N` anonymous ones apart, so a
  /// real name can never collide with a printed placeholder.
  struct Scope {
    Graph *graph;
    std::unordered_map<std::string, Value *> named, anonymous;
  };

  Lexer lex_;
  std::string source_;
  std::vector<Scope> scopes_;
};

} // namespace llmopt::detail

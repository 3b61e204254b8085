// IR text parser: models, graphs and statements, with scoped value names.
// Types, tensors and attribute values are in ir/ParserLiterals.cc.
#include "ir/Parser.h"

#include <algorithm>

#include "ir/ParserImpl.h"

namespace llmopt {
namespace detail {

using K = Token::Kind;

// ---------------------------------------------------------------- tokens

bool TextParser::accept(std::string_view punctOrWord) {
  const Token &t = lex_.peek();
  if (!t.isPunct(punctOrWord) && !t.isWord(punctOrWord))
    return false;
  lex_.next();
  return true;
}

Status TextParser::expect(std::string_view punctOrWord) {
  return accept(punctOrWord) ? Status::ok() : expected(fmt::format("'{}'", punctOrWord));
}

Status TextParser::errorAt(const Token &t, const std::string &msg) const {
  return errorf("{}:{}:{}: {}", source_, t.line, t.col, msg);
}

Status TextParser::expected(std::string_view what) const {
  const Token &t = lex_.peek();
  if (t.kind == K::Error) // the lexer's own diagnosis is more precise
    return errorAt(t, t.text);
  return errorAt(t, fmt::format("expected {}, got '{}'", what, t.describe()));
}

Status TextParser::expectEnd() {
  return lex_.peek().kind == K::Eof ? Status::ok() : expected("end of input");
}

// ---------------------------------------------------------------- model

Expected<std::unique_ptr<Model>> TextParser::model() {
  auto m = std::make_unique<Model>();
  LLMOPT_RETURN_IF_ERROR(expect("model"));
  while (!lex_.peek().isPunct("{"))
    LLMOPT_RETURN_IF_ERROR(modelField(*m));
  LLMOPT_RETURN_IF_ERROR(expect("{"));
  LLMOPT_RETURN_IF_ERROR(modelBody(*m));
  LLMOPT_RETURN_IF_ERROR(expect("}"));
  LLMOPT_RETURN_IF_ERROR(expectEnd());
  return Expected<std::unique_ptr<Model>>(std::move(m));
}

Status TextParser::modelField(Model &m) {
  static constexpr std::string_view kFields[] = {"ir_version", "opsets", "producer",
                                                 "producer_version", "domain", "model_version",
                                                 "doc"};
  const Token &key = lex_.peek();
  if (key.kind != K::Word || std::find(std::begin(kFields), std::end(kFields), key.text) ==
                                 std::end(kFields))
    return expected("a model field (ir_version, opsets, producer, producer_version, domain, "
                    "model_version, doc) or '{'");
  const std::string name = lex_.next().text;
  LLMOPT_RETURN_IF_ERROR(expect("="));
  if (name == "ir_version" || name == "model_version") {
    LLMOPT_ASSIGN_OR_RETURN(int64_t v, integer());
    (name == "ir_version" ? m.irVersion : m.modelVersion) = v;
    return Status::ok();
  }
  if (name == "opsets") {
    m.opsets.clear();
    LLMOPT_RETURN_IF_ERROR(expect("{"));
    if (accept("}"))
      return Status::ok();
    do {
      LLMOPT_ASSIGN_OR_RETURN(std::string domain, string("an opset domain string"));
      LLMOPT_RETURN_IF_ERROR(expect(":"));
      LLMOPT_ASSIGN_OR_RETURN(m.opsets[std::string(canonicalDomain(domain))], integer());
    } while (accept(","));
    return expect("}");
  }
  std::string &field = name == "producer"           ? m.producerName
                       : name == "producer_version" ? m.producerVersion
                       : name == "domain"           ? m.domain
                                                    : m.doc;
  LLMOPT_ASSIGN_OR_RETURN(field, string("a string"));
  return Status::ok();
}

Status TextParser::modelBody(Model &m) {
  bool haveGraph = false;
  for (;;) {
    if (accept("metadata")) {
      LLMOPT_ASSIGN_OR_RETURN(std::string key, string("a metadata key string"));
      LLMOPT_RETURN_IF_ERROR(expect("="));
      LLMOPT_ASSIGN_OR_RETURN(std::string value, string("a metadata value string"));
      m.metadata.emplace_back(std::move(key), std::move(value)); // duplicates kept as they are
    } else if (accept("function")) {
      LLMOPT_ASSIGN_OR_RETURN(std::string bytes, hexBytes());
      m.functions.push_back(std::move(bytes));
    } else if (accept("training_info")) {
      LLMOPT_ASSIGN_OR_RETURN(std::string bytes, hexBytes());
      m.trainingInfo.push_back(std::move(bytes));
    } else if (!haveGraph && accept("graph")) {
      LLMOPT_RETURN_IF_ERROR(graphInto(m.graph()));
      haveGraph = true;
    } else if (haveGraph && lex_.peek().isPunct("}")) {
      return Status::ok();
    } else {
      return expected(haveGraph ? "'metadata', 'function', 'training_info' or '}'"
                                : "'graph', 'metadata', 'function' or 'training_info'");
    }
  }
}

// ---------------------------------------------------------------- graphs

Status TextParser::graphInto(Graph &g) {
  const Token &name = lex_.peek();
  if (name.kind != K::Word && name.kind != K::String)
    return expected("a graph name");
  g.setName(lex_.next().text);
  scopes_.push_back(Scope{&g, {}, {}});
  LLMOPT_RETURN_IF_ERROR(expect("("));
  LLMOPT_RETURN_IF_ERROR(graphInputs(g));
  if (accept("doc")) {
    LLMOPT_RETURN_IF_ERROR(expect("="));
    LLMOPT_ASSIGN_OR_RETURN(g.doc, string("a doc string"));
  }
  LLMOPT_RETURN_IF_ERROR(expect("{"));
  bool returned = false;
  while (!returned && !lex_.peek().isPunct("}"))
    LLMOPT_RETURN_IF_ERROR(statement(g, returned));
  LLMOPT_RETURN_IF_ERROR(expect("}"));
  scopes_.pop_back();
  return Status::ok();
}

Status TextParser::graphInputs(Graph &g) {
  if (accept(")"))
    return Status::ok();
  do {
    if (lex_.peek().kind != K::Value)
      return expected("a graph input (%name: type)");
    Token name = lex_.next();
    LLMOPT_RETURN_IF_ERROR(expect(":"));
    LLMOPT_ASSIGN_OR_RETURN(Type t, type());
    LLMOPT_RETURN_IF_ERROR(define(name, g.addInput(name.anonymous ? "" : name.text, std::move(t))));
  } while (accept(","));
  return expect(")");
}

Status TextParser::statement(Graph &g, bool &returned) {
  const Token &t = lex_.peek();
  if (t.kind == K::Value)
    return definition(g);
  if (t.isWord("return")) {
    lex_.next();
    returned = true;
    return returnList(g);
  }
  if (t.isWord("value_info") || t.isWord("doc"))
    return annotation();
  if (t.kind == K::Word || t.kind == K::String)
    return node(g, {}); // an op with no results
  return expected("a statement (%value = ..., an op, doc, value_info or return)");
}

Status TextParser::definition(Graph &g) {
  std::vector<std::pair<Token, Type>> outputs;
  do {
    if (lex_.peek().kind != K::Value)
      return expected("a value name");
    Token name = lex_.next();
    Type t;
    if (accept(":")) {
      LLMOPT_ASSIGN_OR_RETURN(t, type());
    }
    outputs.emplace_back(std::move(name), std::move(t));
  } while (accept(","));
  LLMOPT_RETURN_IF_ERROR(expect("="));
  const Token &next = lex_.peek();
  if (outputs.size() == 1 && outputs[0].second.kind == Type::Kind::Unknown &&
      (next.isWord("const") || next.isWord("default")))
    return constant(g, outputs[0].first);
  return node(g, outputs);
}

Status TextParser::constant(Graph &g, const Token &name) {
  const bool isDefault = lex_.next().text == "default";
  const std::string what = (isDefault ? "default " : "constant ") + name.describe();
  const Token typeAt = lex_.peek();
  LLMOPT_ASSIGN_OR_RETURN(Type t, type());
  if (!t.isTensor() || !t.isStaticShape())
    return errorAt(typeAt, fmt::format("{}: expected a tensor type with a static shape, got '{}'",
                                       what, toString(t)));
  // A quantized constant stores its integers; the type names the logical element type.
  const DType stored = t.quant ? t.quant->storage : t.elem;
  LLMOPT_ASSIGN_OR_RETURN(auto data, tensorBody(stored, t.staticShape(), what));
  if (isDefault) {
    Value *v = lookup(name, /*innermostOnly=*/true);
    if (!v || !v->isGraphInput() || v->isConstant())
      return errorAt(name, what + " must name an input of this graph that has no default yet");
    v->setConstant(std::move(data));
    v->setType(std::move(t));
    return Status::ok();
  }
  Value *v = g.addConstant(name.anonymous ? "" : name.text, std::move(data));
  v->setType(std::move(t));
  return define(name, v);
}

Status TextParser::node(Graph &g, const std::vector<std::pair<Token, Type>> &outputs) {
  auto opName = [&]() -> Expected<std::string> {
    const Token &t = lex_.peek();
    if (t.kind != K::Word && t.kind != K::String)
      return expected("an op type");
    return lex_.next().text;
  };
  std::string domain;
  LLMOPT_ASSIGN_OR_RETURN(std::string opType, opName());
  if (accept("::")) {
    domain = std::move(opType);
    LLMOPT_ASSIGN_OR_RETURN(opType, opName());
  }
  LLMOPT_RETURN_IF_ERROR(expect("("));
  std::vector<Value *> inputs;
  if (!accept(")")) {
    do {
      LLMOPT_ASSIGN_OR_RETURN(Value * v, use());
      inputs.push_back(v);
    } while (accept(","));
    LLMOPT_RETURN_IF_ERROR(expect(")"));
  }
  // Attributes (and their subgraphs) come before the node exists: a node's own
  // results are not visible inside its subgraphs.
  std::vector<Attribute> attrs;
  std::string name, doc;
  if (lex_.peek().isPunct("{"))
    LLMOPT_RETURN_IF_ERROR(nodeAttributes(attrs, name, doc));
  Node *n = g.addNode(domain, opType, inputs, 0, std::move(name));
  n->doc = std::move(doc);
  for (const auto &[tok, type] : outputs)
    LLMOPT_RETURN_IF_ERROR(define(tok, n->addOutput(tok.anonymous ? "" : tok.text, type)));
  for (Attribute &a : attrs)
    n->setAttr(std::move(a));
  return Status::ok();
}

Status TextParser::nodeAttributes(std::vector<Attribute> &attrs, std::string &name,
                                  std::string &doc) {
  LLMOPT_RETURN_IF_ERROR(expect("{"));
  if (accept("}"))
    return Status::ok();
  do {
    const Token key = lex_.peek();
    if (key.kind != K::Word && key.kind != K::String)
      return expected("an attribute name");
    lex_.next();
    LLMOPT_RETURN_IF_ERROR(expect("="));
    // Bare `name` / `doc_string` are the node's own fields; quoted, they are attributes.
    if (key.isWord("name")) {
      LLMOPT_ASSIGN_OR_RETURN(name, string("a node name string"));
    } else if (key.isWord("doc_string")) {
      LLMOPT_ASSIGN_OR_RETURN(doc, string("a doc string"));
    } else {
      for (const Attribute &a : attrs)
        if (a.name == key.text)
          return errorAt(key, fmt::format("duplicate attribute '{}'", key.text));
      LLMOPT_ASSIGN_OR_RETURN(Attribute a, attribute(key.text));
      attrs.push_back(std::move(a));
    }
  } while (accept(","));
  return expect("}");
}

Status TextParser::annotation() {
  const bool isDoc = lex_.next().text == "doc";
  if (lex_.peek().kind != K::Value)
    return expected("a value name");
  Token name = lex_.next();
  Value *v = lookup(name, /*innermostOnly=*/true);
  if (!v)
    return errorAt(name, fmt::format("undefined value {} in this graph", name.describe()));
  if (!isDoc) {
    v->hadValueInfo = true;
    return Status::ok();
  }
  LLMOPT_ASSIGN_OR_RETURN(v->doc, string("a doc string"));
  return Status::ok();
}

Status TextParser::returnList(Graph &g) {
  if (lex_.peek().isPunct("}"))
    return Status::ok();
  do {
    LLMOPT_ASSIGN_OR_RETURN(Value * v, use());
    g.addOutput(v);
  } while (accept(","));
  return Status::ok();
}

// ---------------------------------------------------------------- scopes

Expected<Value *> TextParser::use() {
  const Token &t = lex_.peek();
  if (t.isWord("_")) { // an omitted optional input
    lex_.next();
    return static_cast<Value *>(nullptr);
  }
  if (t.kind != K::Value)
    return expected("a value (%name or _)");
  Token name = lex_.next();
  Value *v = lookup(name, /*innermostOnly=*/false);
  if (!v)
    return errorAt(name, fmt::format("undefined value {} (values are defined before their uses)",
                                     name.describe()));
  return v;
}

Status TextParser::define(const Token &t, Value *v) {
  auto &names = t.anonymous ? scopes_.back().anonymous : scopes_.back().named;
  if (!names.emplace(t.text, v).second)
    return errorAt(t, fmt::format("redefinition of {}", t.describe()));
  return Status::ok();
}

Value *TextParser::lookup(const Token &t, bool innermostOnly) const {
  for (auto s = scopes_.rbegin(); s != scopes_.rend(); ++s) {
    const auto &names = t.anonymous ? s->anonymous : s->named;
    if (auto it = names.find(t.text); it != names.end())
      return it->second;
    if (innermostOnly)
      break;
  }
  return nullptr;
}

} // namespace detail

Expected<std::unique_ptr<Model>> parseModel(std::string_view text, std::string_view sourceName) {
  detail::TextParser p(text, sourceName);
  return p.model();
}

Expected<Type> parseType(std::string_view text) {
  detail::TextParser p(text, "<type>");
  LLMOPT_ASSIGN_OR_RETURN(Type t, p.type());
  LLMOPT_RETURN_IF_ERROR(p.expectEnd());
  return t;
}

} // namespace llmopt

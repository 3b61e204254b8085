// IR text printer; the format is described in ir/Printer.h and docs/ir-text.md.
#include "ir/Printer.h"

#include <cstring>
#include <unordered_map>

#include <fmt/format.h>

#include "ir/TextSyntax.h"

namespace llmopt {
namespace {

// Words that start a statement or follow `%x =`; an op type or domain spelled like
// one prints quoted so that the statement still reads unambiguously.
bool isReserved(std::string_view w) {
  static constexpr std::string_view kReserved[] = {
      "_", "return", "doc", "value_info", "const", "default", "graph", "scales", "zero_points"};
  for (std::string_view r : kReserved)
    if (w == r)
      return true;
  return false;
}

std::string word(std::string_view s) {
  return text::isBareWord(s) ? std::string(s) : text::quote(s);
}
std::string opWord(std::string_view s) { return isReserved(s) ? text::quote(s) : word(s); }

// Attribute keys `name` and `doc_string` (bare) are the node's own name and doc.
std::string attrKey(std::string_view s) {
  return s == "name" || s == "doc_string" ? text::quote(s) : word(s);
}

// Element types whose values print as a list; the rest (f16, bf16, sub-byte, f8,
// complex) are bytes whose text spelling would not be exact or readable.
bool printsAsValues(DType t) {
  switch (t) {
  case DType::F32: case DType::F64: case DType::I8: case DType::I16: case DType::I32:
  case DType::I64: case DType::U8: case DType::U16: case DType::U32: case DType::U64:
  case DType::Bool:
    return true;
  default:
    return false;
  }
}

template <typename T> T load(const uint8_t *p, int64_t i) {
  T v;
  std::memcpy(&v, p + static_cast<size_t>(i) * sizeof(T), sizeof(T));
  return v;
}

// Element `i` spelled for a value list; nullopt when it has no exact spelling
// (a bool byte other than 0 or 1).
std::optional<std::string> elementText(const Tensor &t, int64_t i) {
  const uint8_t *p = t.data();
  switch (t.dtype()) {
  case DType::F32: return text::formatFloat(load<float>(p, i));
  case DType::F64: return text::formatDouble(load<double>(p, i));
  case DType::U64: return fmt::format("{}", load<uint64_t>(p, i));
  case DType::Bool:
    if (p[i] > 1)
      return std::nullopt;
    return p[i] ? "true" : "false";
  default: return fmt::format("{}", t.getInt(i));
  }
}

class Printer {
public:
  explicit Printer(const PrintOptions &opts) : opts_(opts) {}
  std::string take() { return std::move(out_); }
  void model(const Model &m);
  void graph(const Graph &g, int indent);

private:
  void ref(const Value *v);
  void pad(int indent) { out_.append(static_cast<size_t>(indent), ' '); }
  void annotations(const Value *v, int indent);
  void constant(const Value *v, int indent);
  void node(const Node &n, int indent);
  void attrDict(const Node &n, int indent);
  void attrValue(const Attribute &a, int indent);
  template <typename T, typename F> void list(std::string_view tag, const T &items, F each);
  void tensorBody(const Tensor &t);
  bool valueList(const Tensor &t);
  void tensorLiteral(const std::shared_ptr<Tensor> &t);
  void hex(std::string_view bytes);

  const PrintOptions &opts_;
  std::string out_;
  std::unordered_map<const Value *, size_t> anonymous_;
};

void Printer::ref(const Value *v) {
  if (!v) {
    out_ += '_';
  } else if (!v->name().empty()) {
    out_ += '%';
    out_ += text::isBareValueName(v->name()) ? v->name() : text::quote(v->name());
  } else {
    auto [it, fresh] = anonymous_.try_emplace(v, anonymous_.size());
    out_ += fmt::format("%${}", it->second);
  }
}

void Printer::hex(std::string_view bytes) {
  out_ += "hex\"";
  out_ += text::hexEncode(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size());
  out_ += '"';
}

void Printer::model(const Model &m) {
  out_ += fmt::format("model ir_version={} opsets={{", m.irVersion);
  bool first = true;
  for (const auto &[domain, version] : m.opsets) {
    out_ += fmt::format("{}{}: {}", first ? "" : ", ", text::quote(domain), version);
    first = false;
  }
  out_ += fmt::format("}} producer={} producer_version={} domain={} model_version={} doc={} {{\n",
                      text::quote(m.producerName), text::quote(m.producerVersion),
                      text::quote(m.domain), m.modelVersion, text::quote(m.doc));
  for (const auto &[key, value] : m.metadata)
    out_ += fmt::format("  metadata {} = {}\n", text::quote(key), text::quote(value));
  for (const std::string &f : m.functions) {
    out_ += "  function ";
    hex(f);
    out_ += '\n';
  }
  for (const std::string &t : m.trainingInfo) {
    out_ += "  training_info ";
    hex(t);
    out_ += '\n';
  }
  pad(2);
  graph(m.graph(), 2);
  out_ += "\n}\n";
}

void Printer::graph(const Graph &g, int indent) {
  out_ += "graph " + word(g.name()) + "(";
  for (size_t i = 0; i < g.inputs().size(); ++i) {
    out_ += i ? ", " : "";
    ref(g.inputs()[i]);
    out_ += ": " + toString(g.inputs()[i]->type());
  }
  out_ += ')';
  if (!g.doc.empty())
    out_ += " doc=" + text::quote(g.doc);
  out_ += " {\n";
  const int body = indent + 2;
  for (const Value *in : g.inputs())
    annotations(in, body);
  // Defaults first, in input order, then the other constants in creation order: the
  // order the parser recreates them in, so print -> parse -> print is stable.
  for (const Value *in : g.inputs())
    if (in->isConstant())
      constant(in, body);
  for (const Value *c : g.constants())
    if (!c->isGraphInput())
      constant(c, body);
  for (const auto &n : g.nodes())
    node(*n, body);
  pad(body);
  out_ += "return";
  for (size_t i = 0; i < g.outputs().size(); ++i) {
    out_ += i ? ", " : " ";
    ref(g.outputs()[i]);
  }
  out_ += '\n';
  pad(indent);
  out_ += '}';
}

void Printer::annotations(const Value *v, int indent) {
  if (v->hadValueInfo) {
    pad(indent);
    out_ += "value_info ";
    ref(v);
    out_ += '\n';
  }
  if (!v->doc.empty()) {
    pad(indent);
    out_ += "doc ";
    ref(v);
    out_ += ' ' + text::quote(v->doc) + '\n';
  }
}

void Printer::constant(const Value *v, int indent) {
  pad(indent);
  ref(v);
  out_ += v->isGraphInput() ? " = default " : " = const ";
  out_ += toString(v->type()) + ' ';
  tensorBody(*v->constant());
  out_ += '\n';
  if (!v->isGraphInput())
    annotations(v, indent);
}

void Printer::node(const Node &n, int indent) {
  pad(indent);
  for (size_t i = 0; i < n.numOutputs(); ++i) {
    out_ += i ? ", " : "";
    ref(n.output(i));
    if (n.output(i)->type().kind != Type::Kind::Unknown)
      out_ += ": " + toString(n.output(i)->type());
  }
  if (n.numOutputs())
    out_ += " = ";
  if (!n.domain().empty())
    out_ += opWord(n.domain()) + "::";
  out_ += opWord(n.opType()) + '(';
  for (size_t i = 0; i < n.numInputs(); ++i) {
    out_ += i ? ", " : "";
    ref(n.input(i));
  }
  out_ += ')';
  attrDict(n, indent);
  out_ += '\n';
  for (const Value *out : n.outputs())
    annotations(out, indent);
}

void Printer::attrDict(const Node &n, int indent) {
  if (n.attributes().empty() && n.name().empty() && n.doc.empty())
    return;
  out_ += " {";
  const char *sep = "";
  for (const Attribute &a : n.attributes()) {
    out_ += sep + attrKey(a.name) + " = ";
    attrValue(a, indent);
    sep = ", ";
  }
  if (!n.name().empty()) {
    out_ += std::string(sep) + "name = " + text::quote(n.name());
    sep = ", ";
  }
  if (!n.doc.empty())
    out_ += std::string(sep) + "doc_string = " + text::quote(n.doc);
  out_ += '}';
}

template <typename T, typename F>
void Printer::list(std::string_view tag, const T &items, F each) {
  out_ += tag;
  out_ += '[';
  for (size_t i = 0; i < items.size(); ++i) {
    out_ += i ? ", " : "";
    each(items[i]);
  }
  out_ += ']';
}

void Printer::attrValue(const Attribute &a, int indent) {
  using K = Attribute::Kind;
  if (!a.refAttrName.empty()) {
    // A reference to an attribute of the enclosing function; it carries no value.
    out_ += fmt::format("ref<{}>({})", attrKindName(a.kind), text::quote(a.refAttrName));
  } else {
    auto subgraph = [&](const std::unique_ptr<Graph> &g) {
      if (g)
        graph(*g, indent);
      else
        out_ += "null";
    };
    auto opaque = [&](const std::string &s) { hex(s); };
    switch (a.kind) {
    case K::Float: out_ += text::formatFloat(a.f); break;
    case K::Int: out_ += fmt::format("{}", a.i); break;
    case K::String: out_ += text::quote(a.s); break;
    case K::Tensor: tensorLiteral(a.t); break;
    case K::Graph: subgraph(a.g); break;
    case K::Floats: list("floats", a.floats, [&](float f) { out_ += text::formatFloat(f); }); break;
    case K::Ints: list("ints", a.ints, [&](int64_t i) { out_ += fmt::format("{}", i); }); break;
    case K::Strings:
      list("strings", a.strings, [&](const std::string &s) { out_ += text::quote(s); });
      break;
    case K::Tensors: list("tensors", a.tensors, [&](const auto &t) { tensorLiteral(t); }); break;
    case K::Graphs: list("graphs", a.graphs, subgraph); break;
    case K::TypeProto:
    case K::SparseTensor:
      out_ += std::string(attrKindName(a.kind)) + ' ';
      hex(a.opaque.empty() ? std::string() : a.opaque.front());
      break;
    case K::TypeProtos:
    case K::SparseTensors: list(attrKindName(a.kind), a.opaque, opaque); break;
    }
  }
  if (!a.doc.empty())
    out_ += " doc(" + text::quote(a.doc) + ")";
}

void Printer::tensorLiteral(const std::shared_ptr<Tensor> &t) {
  if (!t) {
    out_ += "null";
    return;
  }
  out_ += "tensor<" + toString(t->type()) + ' ';
  tensorBody(*t);
  out_ += '>';
}

bool Printer::valueList(const Tensor &t) {
  if (t.numel() > static_cast<int64_t>(opts_.elideThreshold))
    return false;
  if (t.dtype() == DType::String) {
    list("", t.stringData(), [&](const std::string &s) { out_ += text::quote(s); });
    return true;
  }
  if (!printsAsValues(t.dtype()))
    return false;
  std::vector<std::string> items;
  for (int64_t i = 0; i < t.numel(); ++i) {
    std::optional<std::string> s = elementText(t, i);
    if (!s)
      return false;
    items.push_back(std::move(*s));
  }
  list("", items, [&](const std::string &s) { out_ += s; });
  return true;
}

void Printer::tensorBody(const Tensor &t) {
  if (opts_.elideLargeConstants && t.numel() > static_cast<int64_t>(opts_.elideThreshold)) {
    out_ += fmt::format("elided<hash={:016x}>", t.hash());
  } else if (!valueList(t)) {
    if (t.dtype() == DType::String) // strings have no bytes; large lists print in full
      list("", t.stringData(), [&](const std::string &s) { out_ += text::quote(s); });
    else
      hex(std::string_view(reinterpret_cast<const char *>(t.data()), t.nbytes()));
  }
  if (t.scales) {
    out_ += " scales=";
    tensorLiteral(t.scales);
  }
  if (t.zeroPoints) {
    out_ += " zero_points=";
    tensorLiteral(t.zeroPoints);
  }
}

} // namespace

std::string printModel(const Model &m, const PrintOptions &opts) {
  Printer p(opts);
  p.model(m);
  return p.take();
}

std::string printGraph(const Graph &g, const PrintOptions &opts) {
  Printer p(opts);
  p.graph(g, 0);
  return p.take() + '\n';
}

} // namespace llmopt

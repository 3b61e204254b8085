// IR text parser: types, constant tensor bodies and attribute values.
#include <cstring>
#include <limits>

#include "ir/ParserImpl.h"
#include "ir/TextSyntax.h"

namespace llmopt::detail {

using K = Token::Kind;

// ---------------------------------------------------------------- scalars

Expected<int64_t> TextParser::integer() {
  const Token &t = lex_.peek();
  std::optional<int64_t> v;
  if (t.kind == K::Number && !text::looksLikeFloat(t.text))
    v = text::parseInt(t.text);
  if (!v)
    return expected("an integer");
  lex_.next();
  return *v;
}

Expected<int64_t> TextParser::keyedInt(std::string_view key) {
  LLMOPT_RETURN_IF_ERROR(expect(key));
  LLMOPT_RETURN_IF_ERROR(expect("="));
  return integer();
}

Expected<float> TextParser::floatValue() {
  const Token &t = lex_.peek();
  std::optional<float> v;
  if (t.kind == K::Number || t.kind == K::Word)
    v = text::parseFloat(t.text);
  if (!v)
    return expected("a float");
  lex_.next();
  return *v;
}

Expected<std::string> TextParser::string(std::string_view what) {
  if (lex_.peek().kind != K::String)
    return expected(what);
  return lex_.next().text;
}

Expected<std::string> TextParser::hexBytes() {
  LLMOPT_RETURN_IF_ERROR(expect("hex"));
  const Token &t = lex_.peek();
  std::optional<std::string> bytes;
  if (t.kind == K::String)
    bytes = text::hexDecode(t.text);
  if (!bytes)
    return expected("a string of hex digit pairs");
  lex_.next();
  return std::move(*bytes);
}

Status TextParser::list(const std::function<Status()> &each) {
  LLMOPT_RETURN_IF_ERROR(expect("["));
  if (accept("]"))
    return Status::ok();
  do {
    LLMOPT_RETURN_IF_ERROR(each());
  } while (accept(","));
  return expect("]");
}

// ---------------------------------------------------------------- types

// Grammar (what toString(Type) prints):
//   type   := '?' | tensor | 'sparse<' tensor '>' | 'seq<' type '>' | 'opt<' type '>'
//           | 'map<' dtype ',' type '>'
//   tensor := dtype '[' ('*' | dim,*) ']'
//             [ 'q<' dtype ',bits=' N ',axis=' N ',block=' N ',' ('sym' | 'asym') '>' ]
Expected<Type> TextParser::type() {
  if (accept("?"))
    return Type::unknown();
  const Token &t = lex_.peek();
  if (t.kind != K::Word)
    return expected("a type");
  Type out;
  if (t.text == "seq" || t.text == "opt" || t.text == "map") {
    out.kind = t.text == "seq" ? Type::Kind::Sequence
               : t.text == "opt" ? Type::Kind::Optional
                                 : Type::Kind::Map;
    lex_.next();
    LLMOPT_RETURN_IF_ERROR(expect("<"));
    if (out.kind == Type::Kind::Map) {
      std::optional<DType> key = parseDType(lex_.peek().text);
      if (lex_.peek().kind != K::Word || !key)
        return expected("a map key element type");
      lex_.next();
      out.key = *key;
      LLMOPT_RETURN_IF_ERROR(expect(","));
    }
    LLMOPT_ASSIGN_OR_RETURN(Type inner, type());
    out.inner = std::make_shared<Type>(std::move(inner));
    LLMOPT_RETURN_IF_ERROR(expect(">"));
    return out;
  }
  if (accept("sparse")) {
    LLMOPT_RETURN_IF_ERROR(expect("<"));
    std::optional<DType> elem = parseDType(lex_.peek().text);
    if (lex_.peek().kind != K::Word || !elem)
      return expected("an element type");
    lex_.next();
    LLMOPT_ASSIGN_OR_RETURN(out, tensorType(*elem));
    out.kind = Type::Kind::SparseTensor;
    LLMOPT_RETURN_IF_ERROR(expect(">"));
    return out;
  }
  std::optional<DType> elem = parseDType(t.text);
  if (!elem)
    return expected("a type");
  lex_.next();
  return tensorType(*elem);
}

Expected<Type> TextParser::tensorType(DType elem) {
  Type out = Type::tensor(elem);
  LLMOPT_RETURN_IF_ERROR(expect("["));
  if (!accept("*")) {
    out.dims.emplace();
    if (!lex_.peek().isPunct("]")) {
      do {
        LLMOPT_ASSIGN_OR_RETURN(Dim d, dim());
        out.dims->push_back(std::move(d));
      } while (accept(","));
    }
  }
  LLMOPT_RETURN_IF_ERROR(expect("]"));
  if (accept("q")) {
    LLMOPT_ASSIGN_OR_RETURN(out.quant, quant());
  }
  return out;
}

Expected<Dim> TextParser::dim() {
  if (accept("?"))
    return Dim::unknown();
  const Token &t = lex_.peek();
  if (t.kind == K::Word || t.kind == K::String)
    return Dim::sym(lex_.next().text);
  LLMOPT_ASSIGN_OR_RETURN(int64_t v, integer());
  return Dim::of(v);
}

Expected<QuantEncoding> TextParser::quant() {
  QuantEncoding q;
  LLMOPT_RETURN_IF_ERROR(expect("<"));
  std::optional<DType> storage = parseDType(lex_.peek().text);
  if (lex_.peek().kind != K::Word || !storage)
    return expected("a storage element type");
  lex_.next();
  q.storage = *storage;
  LLMOPT_RETURN_IF_ERROR(expect(","));
  LLMOPT_ASSIGN_OR_RETURN(int64_t bits, keyedInt("bits"));
  LLMOPT_RETURN_IF_ERROR(expect(","));
  LLMOPT_ASSIGN_OR_RETURN(int64_t axis, keyedInt("axis"));
  LLMOPT_RETURN_IF_ERROR(expect(","));
  LLMOPT_ASSIGN_OR_RETURN(q.blockSize, keyedInt("block"));
  LLMOPT_RETURN_IF_ERROR(expect(","));
  q.bits = static_cast<int>(bits);
  q.axis = static_cast<int>(axis);
  if (accept("asym"))
    q.symmetric = false;
  else if (!accept("sym"))
    return expected("'sym' or 'asym'");
  LLMOPT_RETURN_IF_ERROR(expect(">"));
  return q;
}

// ---------------------------------------------------------------- tensors

// body := ('[' values ']' | 'hex"..."' | 'elided<hash=H>') ['scales=' tensor<...>]
//         ['zero_points=' tensor<...>]
Expected<std::shared_ptr<Tensor>> TextParser::tensorBody(DType dt,
                                                         const std::vector<int64_t> &shape,
                                                         const std::string &what) {
  LLMOPT_ASSIGN_OR_RETURN(auto t, tensorData(dt, shape, what));
  if (accept("scales")) {
    LLMOPT_RETURN_IF_ERROR(expect("="));
    LLMOPT_ASSIGN_OR_RETURN(t->scales, tensorLiteral("scales of " + what));
  }
  if (accept("zero_points")) {
    LLMOPT_RETURN_IF_ERROR(expect("="));
    LLMOPT_ASSIGN_OR_RETURN(t->zeroPoints, tensorLiteral("zero points of " + what));
  }
  return t;
}

Expected<std::shared_ptr<Tensor>> TextParser::tensorData(DType dt,
                                                         const std::vector<int64_t> &shape,
                                                         const std::string &what) {
  const Token at = lex_.peek();
  int64_t numel = 1;
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(numel, d, &numel) || numel > (int64_t(1) << 50))
      return errorAt(at, fmt::format("{}: shape has a negative or oversized dimension", what));
  if (at.isWord("elided"))
    return errorAt(at, what + " was elided when printed; print with full constants to round-trip");
  if (at.isWord("hex")) {
    if (dt == DType::String)
      return expected("a list of strings");
    LLMOPT_ASSIGN_OR_RETURN(std::string bytes, hexBytes());
    if (bytes.size() != storageBytes(dt, numel))
      return errorAt(at, fmt::format("{}: expected {} bytes of {} data, got {}", what,
                                     storageBytes(dt, numel), dtypeName(dt), bytes.size()));
    return std::make_shared<Tensor>(Tensor::fromBytes(dt, shape, bytes.data(), bytes.size()));
  }
  if (!at.isPunct("["))
    return expected("tensor data ([values], hex\"...\")");
  std::vector<std::string> strings;
  std::string bytes;
  size_t count = 0;
  LLMOPT_RETURN_IF_ERROR(list([&]() -> Status {
    if (dt != DType::String)
      return element(dt, bytes, count++);
    LLMOPT_ASSIGN_OR_RETURN(std::string s, string("a string"));
    strings.push_back(std::move(s));
    ++count;
    return Status::ok();
  }));
  if (count != static_cast<size_t>(numel))
    return errorAt(at, fmt::format("{}: expected {} values, got {}", what, numel, count));
  if (dt == DType::String)
    return std::make_shared<Tensor>(Tensor::strings(shape, std::move(strings)));
  return std::make_shared<Tensor>(Tensor::fromBytes(dt, shape, bytes.data(), bytes.size()));
}

// Integer element types a value list may hold, with their ranges.
static bool intRange(DType dt, int64_t &lo, int64_t &hi) {
  switch (dt) {
  case DType::I8: lo = INT8_MIN, hi = INT8_MAX; return true;
  case DType::I16: lo = INT16_MIN, hi = INT16_MAX; return true;
  case DType::I32: lo = INT32_MIN, hi = INT32_MAX; return true;
  case DType::I64: lo = INT64_MIN, hi = INT64_MAX; return true;
  case DType::U8: lo = 0, hi = UINT8_MAX; return true;
  case DType::U16: lo = 0, hi = UINT16_MAX; return true;
  case DType::U32: lo = 0, hi = UINT32_MAX; return true;
  default: return false;
  }
}

// Appends element `i` of a value list to `bytes` (little-endian, like Tensor::data()).
Status TextParser::element(DType dt, std::string &bytes, size_t i) {
  const Token &t = lex_.peek();
  auto append = [&](const auto &v) {
    bytes.append(reinterpret_cast<const char *>(&v), sizeof v);
    lex_.next();
    return Status::ok();
  };
  const std::string what = fmt::format("{} value #{}", dtypeName(dt), i);
  int64_t lo = 0, hi = 0;
  if (dt == DType::F32) {
    if (auto f = text::parseFloat(t.text); f && t.kind != K::String)
      return append(*f);
  } else if (dt == DType::F64) {
    if (auto d = text::parseDouble(t.text); d && t.kind != K::String)
      return append(*d);
  } else if (dt == DType::Bool) {
    if (t.isWord("true") || t.isWord("false"))
      return append(static_cast<uint8_t>(t.text == "true"));
  } else if (dt == DType::U64) {
    if (auto u = text::parseUInt(t.text); u && t.kind == K::Number)
      return append(*u);
  } else if (intRange(dt, lo, hi)) {
    auto v = t.kind == K::Number ? text::parseInt(t.text) : std::nullopt;
    if (v && *v >= lo && *v <= hi) {
      const size_t width = static_cast<size_t>(dtypeBits(dt) / 8);
      int64_t x = *v;
      bytes.append(reinterpret_cast<const char *>(&x), width); // little-endian host
      lex_.next();
      return Status::ok();
    }
  } else {
    return expected(fmt::format("hex\"...\" data ({} has no value-list form)", dtypeName(dt)));
  }
  return expected(what);
}

Expected<std::shared_ptr<Tensor>> TextParser::tensorLiteral(const std::string &what) {
  LLMOPT_RETURN_IF_ERROR(expect("tensor"));
  LLMOPT_RETURN_IF_ERROR(expect("<"));
  const Token typeAt = lex_.peek();
  LLMOPT_ASSIGN_OR_RETURN(Type t, type());
  if (!t.isTensor() || !t.isStaticShape() || t.quant)
    return errorAt(typeAt, fmt::format("{}: expected a tensor type with a static shape, got '{}'",
                                       what, toString(t)));
  LLMOPT_ASSIGN_OR_RETURN(auto data, tensorBody(t.elem, t.staticShape(), what));
  LLMOPT_RETURN_IF_ERROR(expect(">"));
  return data;
}

// ---------------------------------------------------------------- attributes

static std::optional<Attribute::Kind> attrKindByName(std::string_view name) {
  for (int k = 0; k <= static_cast<int>(Attribute::Kind::SparseTensors); ++k)
    if (attrKindName(static_cast<Attribute::Kind>(k)) == name)
      return static_cast<Attribute::Kind>(k);
  return std::nullopt;
}

Expected<Attribute> TextParser::attribute(std::string name) {
  using AK = Attribute::Kind;
  Attribute a;
  a.name = std::move(name);
  const Token t = lex_.peek(); // a copy: the checks below run after tokens are consumed
  const std::string what = fmt::format("tensor attribute '{}'", a.name);
  if (t.kind == K::Number && !text::looksLikeFloat(t.text)) {
    a.kind = AK::Int;
    LLMOPT_ASSIGN_OR_RETURN(a.i, integer());
  } else if (t.kind == K::Number ||
             (t.kind == K::Word && (t.text == "inf" || t.text.starts_with("nan")))) {
    a.kind = AK::Float;
    LLMOPT_ASSIGN_OR_RETURN(a.f, floatValue());
  } else if (t.kind == K::String) {
    a.kind = AK::String;
    a.s = lex_.next().text;
  } else if (t.isWord("tensor")) {
    a.kind = AK::Tensor;
    LLMOPT_ASSIGN_OR_RETURN(a.t, tensorLiteral(what));
  } else if (accept("graph")) {
    a.kind = AK::Graph;
    a.g = std::make_unique<Graph>();
    LLMOPT_RETURN_IF_ERROR(graphInto(*a.g));
  } else if (accept("type_proto") || accept("sparse_tensor")) {
    a.kind = t.text == "type_proto" ? AK::TypeProto : AK::SparseTensor;
    LLMOPT_ASSIGN_OR_RETURN(std::string bytes, hexBytes());
    a.opaque.push_back(std::move(bytes));
  } else if (accept("ref")) {
    LLMOPT_RETURN_IF_ERROR(expect("<"));
    std::optional<AK> kind = attrKindByName(lex_.peek().text);
    if (lex_.peek().kind != K::Word || !kind)
      return expected("an attribute kind (int, float, string, ints, ...)");
    lex_.next();
    a.kind = *kind;
    LLMOPT_RETURN_IF_ERROR(expect(">"));
    LLMOPT_RETURN_IF_ERROR(expect("("));
    LLMOPT_ASSIGN_OR_RETURN(a.refAttrName, string("a referenced attribute name"));
    LLMOPT_RETURN_IF_ERROR(expect(")"));
  } else if (std::optional<AK> kind = attrKindByName(t.text); t.kind == K::Word && kind) {
    lex_.next();
    a.kind = *kind;
    LLMOPT_RETURN_IF_ERROR(attributeList(a, what));
  } else {
    return expected("an attribute value");
  }
  if (accept("doc")) {
    LLMOPT_RETURN_IF_ERROR(expect("("));
    LLMOPT_ASSIGN_OR_RETURN(a.doc, string("an attribute doc string"));
    LLMOPT_RETURN_IF_ERROR(expect(")"));
  }
  return a;
}

// The tagged lists: ints[...], floats[...], strings[...], tensors[...], graphs[...],
// type_protos[hex"..."], sparse_tensors[hex"..."].
Status TextParser::attributeList(Attribute &a, std::string_view what) {
  using AK = Attribute::Kind;
  auto each = [&]() -> Status {
    switch (a.kind) {
    case AK::Ints: {
      LLMOPT_ASSIGN_OR_RETURN(a.ints.emplace_back(), integer());
      return Status::ok();
    }
    case AK::Floats: {
      LLMOPT_ASSIGN_OR_RETURN(a.floats.emplace_back(), floatValue());
      return Status::ok();
    }
    case AK::Strings: {
      LLMOPT_ASSIGN_OR_RETURN(a.strings.emplace_back(), string("a string"));
      return Status::ok();
    }
    case AK::Tensors: {
      LLMOPT_ASSIGN_OR_RETURN(a.tensors.emplace_back(), tensorLiteral(std::string(what)));
      return Status::ok();
    }
    case AK::Graphs:
      LLMOPT_RETURN_IF_ERROR(expect("graph"));
      a.graphs.push_back(std::make_unique<Graph>());
      return graphInto(*a.graphs.back());
    case AK::TypeProtos:
    case AK::SparseTensors: {
      LLMOPT_ASSIGN_OR_RETURN(a.opaque.emplace_back(), hexBytes());
      return Status::ok();
    }
    default:
      return expected("an attribute value");
    }
  };
  return list(each);
}

} // namespace llmopt::detail

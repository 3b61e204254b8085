// Type helpers and the textual spelling of types.
#include "ir/Type.h"

#include <fmt/format.h>

#include "ir/TextSyntax.h"

namespace llmopt {

Type Type::tensorOf(DType e, const std::vector<int64_t> &shape) {
  Dims d;
  d.reserve(shape.size());
  for (int64_t s : shape)
    d.push_back(Dim::of(s));
  return tensor(e, std::move(d));
}

bool Type::isStaticShape() const {
  if (!dims)
    return false;
  for (const Dim &d : *dims)
    if (!d.isStatic())
      return false;
  return true;
}

std::vector<int64_t> Type::staticShape() const {
  std::vector<int64_t> s;
  for (const Dim &d : *dims)
    s.push_back(d.value);
  return s;
}

bool Type::operator==(const Type &o) const {
  if (kind != o.kind || elem != o.elem || dims != o.dims || key != o.key || quant != o.quant)
    return false;
  if (!inner || !o.inner)
    return !inner && !o.inner;
  return *inner == *o.inner;
}

std::string toString(const Dim &d) {
  switch (d.kind) {
  case Dim::Kind::Static: return std::to_string(d.value);
  // Symbols that are not plain words are quoted so that the text form stays parseable.
  case Dim::Kind::Symbolic: return text::isBareWord(d.symbol) ? d.symbol : text::quote(d.symbol);
  case Dim::Kind::Unknown: break;
  }
  return "?";
}

static std::string tensorString(const Type &t) {
  std::string s(dtypeName(t.elem));
  if (!t.dims) {
    s += "[*]";
  } else {
    s += '[';
    for (size_t i = 0; i < t.dims->size(); ++i) {
      if (i)
        s += ',';
      s += toString((*t.dims)[i]);
    }
    s += ']';
  }
  if (t.quant) {
    const QuantEncoding &q = *t.quant;
    s += fmt::format(" q<{},bits={},axis={},block={},{}>", dtypeName(q.storage), q.bits, q.axis,
                     q.blockSize, q.symmetric ? "sym" : "asym");
  }
  return s;
}

std::string toString(const Type &t) {
  switch (t.kind) {
  case Type::Kind::Unknown: return "?";
  case Type::Kind::Tensor: return tensorString(t);
  case Type::Kind::SparseTensor: return "sparse<" + tensorString(t) + ">";
  case Type::Kind::Sequence: return "seq<" + (t.inner ? toString(*t.inner) : "?") + ">";
  case Type::Kind::Optional: return "opt<" + (t.inner ? toString(*t.inner) : "?") + ">";
  case Type::Kind::Map:
    return fmt::format("map<{},{}>", dtypeName(t.key), t.inner ? toString(*t.inner) : "?");
  }
  return "?";
}

} // namespace llmopt

// InferContext and the broadcasting / axis helpers shared by the shape rules.
#include <fmt/format.h>

#include "passes/analysis/ShapeRules.h"

namespace llmopt::shape {

std::optional<std::vector<int64_t>> KnownValue::ints() const {
  std::vector<int64_t> out;
  out.reserve(elems.size());
  for (const DimExpr &e : elems) {
    auto c = e.asConstant();
    if (!c)
      return std::nullopt;
    out.push_back(*c);
  }
  return out;
}

bool isIntegral(DType d) {
  switch (d) {
  case DType::I8: case DType::I16: case DType::I32: case DType::I64:
  case DType::U8: case DType::U16: case DType::U32: case DType::U64: case DType::Bool:
    return true;
  default:
    return false;
  }
}

std::optional<KnownValue> knownOfTensor(const Tensor &t) {
  if (!isIntegral(t.dtype()) || t.rank() > 1 || static_cast<size_t>(t.numel()) > kMaxKnownElems)
    return std::nullopt;
  KnownValue k;
  k.scalar = t.rank() == 0;
  for (int64_t i = 0; i < t.numel(); ++i)
    k.elems.push_back(DimExpr::constant(t.getInt(i)));
  return k;
}

InferContext::InferContext(Node &n, const KnownMap &known) : node(n), known_(known) {
  opset = n.opsetVersion();
  if (opset <= 0)
    opset = n.domain().empty() ? kDefaultOpset : 1;
  outTypes.resize(n.numOutputs());
  outKnown.resize(n.numOutputs());
  inDims_.resize(n.numInputs());
  for (size_t i = 0; i < n.numInputs(); ++i) {
    const Value *v = n.input(i);
    if (v && v->type().isTensor() && v->type().dims)
      inDims_[i] = toSymShape(*v->type().dims);
  }
}

const Type &InferContext::type(size_t i) const {
  static const Type kNone;
  const Value *v = node.input(i);
  return v ? v->type() : kNone;
}

const KnownValue *InferContext::known(size_t i) const {
  const Value *v = node.input(i);
  if (!v)
    return nullptr;
  auto it = known_.find(v);
  return it == known_.end() ? nullptr : &it->second;
}

std::optional<std::vector<int64_t>> InferContext::ints(size_t i) const {
  const KnownValue *k = known(i);
  return k ? k->ints() : std::nullopt;
}

std::optional<std::vector<double>> InferContext::reals(size_t i) const {
  if (auto v = ints(i)) {
    std::vector<double> out(v->begin(), v->end());
    return out;
  }
  const Value *v = node.input(i);
  if (!v)
    return std::nullopt;
  const Tensor *t = nullptr;
  const Node *p = v->producer();
  if (v->isConstant()) {
    t = v->constant().get();
  } else if (p && p->domain().empty() && p->opType() == "Constant") {
    if (const Attribute *a = p->attr("value"); a && a->t)
      t = a->t.get();
    else if (const Attribute *f = p->attr("value_float"))
      return std::vector<double>{f->f};
    else if (const Attribute *fs = p->attr("value_floats"))
      return std::vector<double>(fs->floats.begin(), fs->floats.end());
  }
  if (!t || t->dtype() == DType::String || static_cast<size_t>(t->numel()) > kMaxKnownElems ||
      v->type().quant)
    return std::nullopt;
  std::vector<double> out;
  for (int64_t k = 0; k < t->numel(); ++k)
    out.push_back(t->getDouble(k));
  return out;
}

void InferContext::setTensor(size_t i, DType elem, std::optional<SymShape> dims) {
  if (i >= outTypes.size())
    return;
  if (elem == DType::Undefined && !dims) { // nothing known: not even that it is a tensor
    outTypes[i] = Type::unknown();
    return;
  }
  outTypes[i] = Type::tensor(elem, dims ? std::optional<Dims>(toDims(*dims)) : std::nullopt);
}

void InferContext::setType(size_t i, Type t) {
  if (i < outTypes.size())
    outTypes[i] = std::move(t);
}

void InferContext::setKnown(size_t i, KnownValue v) {
  if (i < outKnown.size() && v.elems.size() <= kMaxKnownElems)
    outKnown[i] = std::move(v);
}

Status InferContext::error(const std::string &msg) const {
  return errorf("shape inference: node '{}' ({}): {}", node.name(), node.qualifiedOpType(), msg);
}

Expected<int64_t> InferContext::axis(int64_t a, int64_t rank) const {
  if (a < -rank || a >= rank)
    return error(fmt::format("axis {} is out of range for rank {}", a, rank));
  return a < 0 ? a + rank : a;
}

std::optional<DimExpr> broadcastDim(const DimExpr &a, const DimExpr &b) {
  if (a.known() && a == b)
    return a;
  if (a.isConstant(1))
    return b;
  if (b.isConstant(1))
    return a;
  if (a.isConstant() && b.isConstant())
    return std::nullopt; // two different numbers, neither 1
  if (a.isConstant())
    return a; // b must be 1 or a
  if (b.isConstant())
    return b;
  return DimExpr();
}

Expected<std::optional<SymShape>> broadcast(const InferContext &c,
                                            const std::vector<const std::optional<SymShape> *> &shapes) {
  size_t rank = 0;
  for (const auto *s : shapes) {
    if (!*s)
      return std::optional<SymShape>();
    rank = std::max(rank, (*s)->size());
  }
  SymShape out(rank, DimExpr::constant(1));
  for (const auto *s : shapes) {
    const SymShape &sh = **s;
    size_t off = rank - sh.size();
    for (size_t i = 0; i < sh.size(); ++i) {
      auto d = broadcastDim(out[off + i], sh[i]);
      if (!d) {
        std::string all;
        for (const auto *t : shapes)
          all += (all.empty() ? "" : " vs ") + toString(**t);
        return c.error(fmt::format("shapes {} do not broadcast", all));
      }
      out[off + i] = *d;
    }
  }
  return std::optional<SymShape>(std::move(out));
}

std::optional<DimExpr> unifyDim(const DimExpr &a, const DimExpr &b) {
  if (!a.known())
    return b;
  if (!b.known())
    return a;
  if (a.isConstant() && b.isConstant() && a != b)
    return std::nullopt;
  return b.isConstant() ? b : a;
}

DType firstElem(const InferContext &c, std::initializer_list<size_t> inputs) {
  for (size_t i : inputs)
    if (c.elem(i) != DType::Undefined)
      return c.elem(i);
  return DType::Undefined;
}

std::optional<std::vector<int64_t>> axesOf(const InferContext &c, int64_t inputSince,
                                           size_t inputIdx, bool *present) {
  if (c.opset < inputSince) {
    *present = c.hasAttr("axes");
    return c.attrInts("axes");
  }
  *present = c.has(inputIdx);
  if (!*present) {
    // Tolerate the pre-opset attribute form that some producers still write.
    *present = c.hasAttr("axes");
    return c.attrInts("axes");
  }
  return c.ints(inputIdx);
}

std::optional<KnownValue> combineKnown(const KnownValue &a, const KnownValue &b,
                                       DimExpr (*fn)(const DimExpr &, const DimExpr &)) {
  size_t n = std::max(a.elems.size(), b.elems.size());
  if ((a.elems.size() != n && a.elems.size() != 1) || (b.elems.size() != n && b.elems.size() != 1))
    return std::nullopt;
  KnownValue out;
  out.scalar = a.scalar && b.scalar;
  for (size_t i = 0; i < n; ++i)
    out.elems.push_back(fn(a.elems[a.elems.size() == 1 ? 0 : i], b.elems[b.elems.size() == 1 ? 0 : i]));
  return out;
}

} // namespace llmopt::shape

// Shape rules for ops that produce shapes or constants (Shape, Size, Range, Constant,
// ConstantOfShape, NonZero, OneHot, EyeLike) and a few small layout ops.
#include <cmath>

#include <fmt/format.h>

#include "passes/analysis/ShapeRules.h"

namespace llmopt::shape {
namespace {

/// A scalar (or 1-element) input read as a number.
std::optional<double> scalarNumber(const InferContext &c, size_t i) {
  auto v = c.reals(i);
  return v && v->size() == 1 ? std::optional<double>((*v)[0]) : std::nullopt;
}

// Shape(x, start, end) -> i64[end - start], known: x's dims.
Status shapeOp(InferContext &c) {
  if (!c.dims(0)) {
    c.setTensor(0, DType::I64, SymShape{DimExpr()});
    return Status::ok();
  }
  const SymShape &s = *c.dims(0);
  const int64_t r = static_cast<int64_t>(s.size());
  auto norm = [&](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + r : v, 0, r); };
  int64_t b = norm(c.attrInt("start", 0)), e = norm(c.attrInt("end", r));
  SymShape vals(s.begin() + b, s.begin() + std::max(b, e));
  c.setTensor(0, DType::I64, SymShape{DimExpr::constant(static_cast<int64_t>(vals.size()))});
  c.setKnown(0, KnownValue{vals, false});
  return Status::ok();
}

// Size(x) -> i64[], known: the product of x's dims.
Status sizeOp(InferContext &c) {
  c.setTensor(0, DType::I64, SymShape{});
  if (c.dims(0))
    c.setKnown(0, KnownValue{{product(*c.dims(0))}, true});
  return Status::ok();
}

// Range(start, limit, delta) -> [max(ceil((limit - start) / delta), 0)].
Status range(InferContext &c) {
  DType elem = firstElem(c, {0, 1, 2});
  auto s = scalarNumber(c, 0), l = scalarNumber(c, 1), d = scalarNumber(c, 2);
  DimExpr n;
  if (s && l && d && *d != 0) {
    n = DimExpr::constant(std::max<int64_t>(static_cast<int64_t>(std::ceil((*l - *s) / *d)), 0));
  } else {
    const KnownValue *ks = c.known(0), *kl = c.known(1), *kd = c.known(2);
    if (ks && kl && kd && ks->elems.size() == 1 && kl->elems.size() == 1 && kd->elems.size() == 1)
      n = (kl->elems[0] - ks->elems[0]).ceilDiv(kd->elems[0]);
  }
  c.setTensor(0, elem, SymShape{n});
  auto count = n.asConstant();
  if (s && d && count && isIntegral(elem) && static_cast<size_t>(*count) <= kMaxKnownElems) {
    KnownValue k;
    for (int64_t i = 0; i < *count; ++i)
      k.elems.push_back(DimExpr::constant(static_cast<int64_t>(*s + static_cast<double>(i) * *d)));
    c.setKnown(0, std::move(k));
  }
  return Status::ok();
}

// ConstantOfShape(shape) with `value` (a 1-element tensor; default f32 0).
Status constantOfShape(InferContext &c) {
  const Attribute *a = c.node.attr("value");
  const Tensor *v = a && a->t ? a->t.get() : nullptr;
  DType elem = v ? v->dtype() : DType::F32;
  std::optional<SymShape> shape;
  if (const KnownValue *k = c.known(0))
    shape = k->elems;
  else if (c.dims(0) && c.dims(0)->size() == 1 && c.dims(0)->at(0).isConstant())
    shape = SymShape(static_cast<size_t>(*c.dims(0)->at(0).asConstant()), DimExpr());
  if (shape)
    for (const DimExpr &d : *shape)
      if (d.isConstant() && *d.asConstant() < 0)
        return c.error(fmt::format("negative dim in shape {}", toString(*shape)));
  c.setTensor(0, elem, shape);
  if (shape && shape->size() <= 1 && isIntegral(elem)) {
    int64_t fill = v && v->numel() == 1 ? v->getInt(0) : 0;
    auto n = product(*shape).asConstant();
    if (n && static_cast<size_t>(*n) <= kMaxKnownElems)
      c.setKnown(0, KnownValue{std::vector<DimExpr>(static_cast<size_t>(*n), DimExpr::constant(fill)),
                               shape->empty()});
  }
  return Status::ok();
}

// Constant: from value / value_float(s) / value_int(s) / value_string(s).
Status constant(InferContext &c) {
  const Node &n = c.node;
  if (const Attribute *a = n.attr("value"); a && a->t) {
    c.setType(0, a->t->type());
    if (auto k = knownOfTensor(*a->t))
      c.setKnown(0, *k);
  } else if (n.hasAttr("value_float")) {
    c.setTensor(0, DType::F32, SymShape{});
  } else if (const Attribute *f = n.attr("value_floats")) {
    c.setTensor(0, DType::F32, SymShape{DimExpr::constant(static_cast<int64_t>(f->floats.size()))});
  } else if (const Attribute *i = n.attr("value_int")) {
    c.setTensor(0, DType::I64, SymShape{});
    c.setKnown(0, KnownValue{{DimExpr::constant(i->i)}, true});
  } else if (const Attribute *is = n.attr("value_ints")) {
    c.setTensor(0, DType::I64, SymShape{DimExpr::constant(static_cast<int64_t>(is->ints.size()))});
    KnownValue k;
    for (int64_t v : is->ints)
      k.elems.push_back(DimExpr::constant(v));
    c.setKnown(0, std::move(k));
  } else if (n.hasAttr("value_string")) {
    c.setTensor(0, DType::String, SymShape{});
  } else if (const Attribute *ss = n.attr("value_strings")) {
    c.setTensor(0, DType::String, SymShape{DimExpr::constant(static_cast<int64_t>(ss->strings.size()))});
  }
  return Status::ok();
}

// NonZero(x) -> i64[rank, ?].
Status nonZero(InferContext &c) {
  c.setTensor(0, DType::I64, SymShape{c.dims(0) ? DimExpr::constant(c.rank(0)) : DimExpr(), DimExpr()});
  return Status::ok();
}

// OneHot(indices, depth, values): `depth` inserted at `axis`; the values' type.
Status oneHot(InferContext &c) {
  DType elem = c.elem(2);
  if (!c.dims(0)) {
    c.setTensor(0, elem, std::nullopt);
    return Status::ok();
  }
  SymShape s = *c.dims(0);
  LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(c.attrInt("axis", -1), static_cast<int64_t>(s.size()) + 1));
  auto depth = scalarNumber(c, 1);
  s.insert(s.begin() + ax, depth ? DimExpr::constant(static_cast<int64_t>(*depth)) : DimExpr());
  c.setTensor(0, elem, s);
  return Status::ok();
}

// EyeLike(x): x's shape, `dtype` or x's type.
Status eyeLike(InferContext &c) {
  c.setTensor(0, static_cast<DType>(c.attrInt("dtype", static_cast<int64_t>(c.elem(0)))), c.dims(0));
  return Status::ok();
}

// DepthToSpace: [N, C/b^2, H*b, W*b]; SpaceToDepth: [N, C*b^2, H/b, W/b].
Status depthSpace(InferContext &c) {
  std::optional<SymShape> s = c.dims(0);
  if (s && s->size() == 4) {
    DimExpr b = DimExpr::constant(c.attrInt("blocksize", 1));
    if (c.node.opType() == "DepthToSpace")
      *s = {(*s)[0], (*s)[1].divExact(b * b), (*s)[2] * b, (*s)[3] * b};
    else
      *s = {(*s)[0], (*s)[1] * b * b, (*s)[2].divExact(b), (*s)[3].divExact(b)};
  }
  c.setTensor(0, c.elem(0), s);
  return Status::ok();
}

// Det(x[..., M, M]) -> x[...].
Status det(InferContext &c) {
  std::optional<SymShape> s = c.dims(0);
  if (s && s->size() >= 2)
    s->resize(s->size() - 2);
  c.setTensor(0, c.elem(0), s);
  return Status::ok();
}

// Compress(x, condition[, axis]): the selected axis (or the flattened x) has unknown length.
Status compress(InferContext &c) {
  std::optional<SymShape> s = c.dims(0);
  if (!c.hasAttr("axis")) {
    s = SymShape{DimExpr()};
  } else if (s) {
    LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(c.attrInt("axis", 0), c.rank(0)));
    (*s)[ax] = DimExpr();
  }
  c.setTensor(0, c.elem(0), s);
  return Status::ok();
}

// RandomUniformLike / RandomNormalLike(x): x's shape, `dtype` or x's type;
// RandomUniform / RandomNormal: the `shape` attribute, `dtype` (default f32).
Status randomOp(InferContext &c) {
  if (c.node.opType().ends_with("Like")) {
    c.setTensor(0, static_cast<DType>(c.attrInt("dtype", static_cast<int64_t>(c.elem(0)))), c.dims(0));
    return Status::ok();
  }
  SymShape s;
  for (int64_t d : c.attrInts("shape"))
    s.push_back(DimExpr::constant(d));
  c.setTensor(0, static_cast<DType>(c.attrInt("dtype", 1)), s);
  return Status::ok();
}

constexpr RuleEntry kRules[] = {
    {"", "Shape", shapeOp}, {"", "Size", sizeOp}, {"", "Range", range},
    {"", "ConstantOfShape", constantOfShape}, {"", "Constant", constant},
    {"", "NonZero", nonZero}, {"", "OneHot", oneHot}, {"", "EyeLike", eyeLike},
    {"", "DepthToSpace", depthSpace}, {"", "SpaceToDepth", depthSpace}, {"", "Det", det},
    {"", "Compress", compress}, {"", "RandomUniformLike", randomOp},
    {"", "RandomNormalLike", randomOp}, {"", "RandomUniform", randomOp},
    {"", "RandomNormal", randomOp},
};

} // namespace

std::span<const RuleEntry> shapeOpRules() { return kRules; }

} // namespace llmopt::shape

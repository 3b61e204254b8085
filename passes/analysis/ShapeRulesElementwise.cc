// Shape rules for elementwise ops: unary, broadcasting binary / variadic, comparisons,
// Where, Cast, quantize / dequantize, and the normalisations that keep their input's shape.
#include <climits>

#include <fmt/format.h>

#include "passes/analysis/ShapeRules.h"

namespace llmopt::shape {
namespace {

// y = f(x): same element type and shape.
Status unary(InferContext &c) {
  c.passThrough();
  return Status::ok();
}

// Identity: the input's type (sequences and optionals too) and known value.
Status identity(InferContext &c) {
  if (c.type(0).isTensor())
    c.passThrough();
  else
    c.setType(0, c.type(0));
  if (const KnownValue *k = c.known(0))
    c.setKnown(0, *k);
  return Status::ok();
}

Status neg(InferContext &c) {
  c.passThrough();
  if (const KnownValue *k = c.known(0)) {
    KnownValue out = *k;
    for (DimExpr &e : out.elems)
      e = -e;
    c.setKnown(0, std::move(out));
  }
  return Status::ok();
}

// y: bool, shape of x (Not, IsNaN, IsInf).
Status unaryBool(InferContext &c) {
  c.setTensor(0, DType::Bool, c.dims(0));
  return Status::ok();
}

/// Output shape of a broadcasting op over every present input. Before opset 7 the
/// second operand was broadcast onto the first (`broadcast` / `axis` attributes), so
/// the result has the first input's shape.
Expected<std::optional<SymShape>> broadcastInputs(InferContext &c) {
  if (c.opset < 7)
    return c.dims(0);
  std::vector<const std::optional<SymShape> *> shapes;
  for (size_t i = 0; i < c.numInputs(); ++i)
    if (c.has(i))
      shapes.push_back(&c.dims(i));
  return broadcast(c, shapes);
}

DimExpr truncDiv(const DimExpr &a, const DimExpr &b) {
  auto x = a.asConstant(), y = b.asConstant();
  if (x && y)
    return *y == 0 ? DimExpr() : DimExpr::constant(*x / *y);
  return a.divExact(b);
}
DimExpr mod(const DimExpr &a, const DimExpr &b) {
  auto x = a.asConstant(), y = b.asConstant();
  if (x && y && *y != 0)
    return DimExpr::constant(((*x % *y) + *y) % *y); // integer Mod follows the divisor's sign
  return {};
}
DimExpr maxOf(const DimExpr &a, const DimExpr &b) {
  auto x = a.asConstant(), y = b.asConstant();
  if (x && y)
    return DimExpr::constant(std::max(*x, *y));
  return a == b ? a : DimExpr();
}
DimExpr minOf(const DimExpr &a, const DimExpr &b) {
  auto x = a.asConstant(), y = b.asConstant();
  if (x && y)
    return DimExpr::constant(std::min(*x, *y));
  return a == b ? a : DimExpr();
}
DimExpr add(const DimExpr &a, const DimExpr &b) { return a + b; }
DimExpr sub(const DimExpr &a, const DimExpr &b) { return a - b; }
DimExpr mul(const DimExpr &a, const DimExpr &b) { return a * b; }
// Sizes are never negative, so an expression like `batch` or `past+seq` never equals
// -1 (torch's expand() compares its sizes against -1).
DimExpr equal(const DimExpr &a, const DimExpr &b) {
  if (!a.known() || !b.known())
    return {};
  if (a == b)
    return DimExpr::constant(1);
  auto x = a.asConstant(), y = b.asConstant();
  if (x && y)
    return DimExpr::constant(0);
  if ((x && *x < 0 && b.isNonNegative()) || (y && *y < 0 && a.isNonNegative()))
    return DimExpr::constant(0);
  return {};
}

/// A broadcasting op whose output element type is `outElem` (Undefined: the inputs').
Status broadcasting(InferContext &c, DType outElem,
                    DimExpr (*fold)(const DimExpr &, const DimExpr &) = nullptr) {
  LLMOPT_ASSIGN_OR_RETURN(auto dims, broadcastInputs(c));
  // ONNX types every operand of these ops with one T: f32 + i64 is a malformed model.
  for (size_t i = 1; i < c.numInputs() && c.node.domain().empty(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (c.has(i) && c.has(j) && c.elem(i) != DType::Undefined && c.elem(j) != DType::Undefined &&
          c.elem(i) != c.elem(j) && !c.type(i).quant && !c.type(j).quant)
        return c.error(fmt::format("input #{} is {} but input #{} is {}; the operands must have "
                                   "one element type",
                                   j, dtypeName(c.elem(j)), i, dtypeName(c.elem(i))));
  DType elem = outElem;
  for (size_t i = 0; i < c.numInputs() && elem == DType::Undefined; ++i)
    elem = c.elem(i);
  c.setTensor(0, elem, dims);
  if (!fold)
    return Status::ok();
  std::optional<KnownValue> acc;
  for (size_t i = 0; i < c.numInputs(); ++i) {
    const KnownValue *k = c.known(i);
    if (!k)
      return Status::ok();
    acc = acc ? combineKnown(*acc, *k, fold) : std::optional<KnownValue>(*k);
    if (!acc)
      return Status::ok();
  }
  if (acc)
    c.setKnown(0, *acc);
  return Status::ok();
}

Status addRule(InferContext &c) { return broadcasting(c, DType::Undefined, add); }
Status subRule(InferContext &c) { return broadcasting(c, DType::Undefined, sub); }
Status mulRule(InferContext &c) { return broadcasting(c, DType::Undefined, mul); }
Status divRule(InferContext &c) {
  return broadcasting(c, DType::Undefined, isIntegral(c.elem(0)) ? truncDiv : nullptr);
}
Status modRule(InferContext &c) { return broadcasting(c, DType::Undefined, mod); }
Status maxRule(InferContext &c) { return broadcasting(c, DType::Undefined, maxOf); }
Status minRule(InferContext &c) { return broadcasting(c, DType::Undefined, minOf); }
Status plainBroadcast(InferContext &c) { return broadcasting(c, DType::Undefined); }
Status compare(InferContext &c) { return broadcasting(c, DType::Bool); }
Status equalRule(InferContext &c) { return broadcasting(c, DType::Bool, equal); }

// Pow: the base's element type (the exponent may differ).
Status pow(InferContext &c) {
  LLMOPT_ASSIGN_OR_RETURN(auto dims, broadcastInputs(c));
  c.setTensor(0, c.elem(0), dims);
  return Status::ok();
}

// Where(cond, x, y): broadcast of all three; element type of x.
Status where(InferContext &c) {
  LLMOPT_ASSIGN_OR_RETURN(auto dims, broadcastInputs(c));
  c.setTensor(0, firstElem(c, {1, 2}), dims);
  const KnownValue *k = c.known(0), *x = c.known(1), *y = c.known(2);
  if (!k || !x || !y)
    return Status::ok();
  auto cond = k->ints();
  size_t n = std::max({k->elems.size(), x->elems.size(), y->elems.size()});
  auto at = [&](const std::vector<DimExpr> &v, size_t i) { return v.size() == 1 ? v[0] : v[i]; };
  if (!cond || (cond->size() != 1 && cond->size() != n) ||
      (x->elems.size() != 1 && x->elems.size() != n) || (y->elems.size() != 1 && y->elems.size() != n))
    return Status::ok();
  KnownValue out;
  out.scalar = k->scalar && x->scalar && y->scalar;
  for (size_t i = 0; i < n; ++i)
    out.elems.push_back((cond->size() == 1 ? (*cond)[0] : (*cond)[i]) ? at(x->elems, i) : at(y->elems, i));
  c.setKnown(0, std::move(out));
  return Status::ok();
}

/// Known values survive casts between integer types, and to float and back.
void castKnown(InferContext &c, DType to) {
  const KnownValue *k = c.known(0);
  if (!k || !(isIntegral(to) || isFloat(to)))
    return;
  KnownValue out = *k;
  if (to == DType::Bool)
    for (DimExpr &e : out.elems) {
      auto v = e.asConstant();
      e = v ? DimExpr::constant(*v != 0) : DimExpr();
    }
  c.setKnown(0, std::move(out));
}

/// Cast's target: an element type code, or (before opset 6) its TensorProto name.
std::optional<DType> castTarget(const InferContext &c) {
  static const std::pair<std::string_view, DType> kNames[] = {
      {"FLOAT", DType::F32}, {"UINT8", DType::U8}, {"INT8", DType::I8}, {"UINT16", DType::U16},
      {"INT16", DType::I16}, {"INT32", DType::I32}, {"INT64", DType::I64}, {"STRING", DType::String},
      {"BOOL", DType::Bool}, {"FLOAT16", DType::F16}, {"DOUBLE", DType::F64}, {"UINT32", DType::U32},
      {"UINT64", DType::U64}};
  const Attribute *a = c.node.attr("to");
  if (a && a->kind == Attribute::Kind::String) {
    for (const auto &[name, d] : kNames)
      if (a->s == name)
        return d;
    return std::nullopt;
  }
  int64_t code = c.attrInt("to", 0);
  if (code <= 0 || code > INT32_MAX || !isKnownDTypeCode(static_cast<int32_t>(code)))
    return std::nullopt;
  return static_cast<DType>(code);
}

Status cast(InferContext &c) {
  auto target = castTarget(c);
  if (!target)
    return c.error("attribute 'to' is not a known element type");
  DType to = *target;
  c.setTensor(0, to, c.dims(0));
  castKnown(c, to);
  return Status::ok();
}

Status castLike(InferContext &c) {
  c.setTensor(0, c.elem(1), c.dims(0));
  castKnown(c, c.elem(1));
  return Status::ok();
}

// Clip(x, min, max), Dropout(x) -> (y, mask: bool).
Status dropout(InferContext &c) {
  c.passThrough();
  c.setTensor(1, DType::Bool, c.dims(0));
  return Status::ok();
}

// QuantizeLinear(x, scale, zp): zp's type, else output_dtype (21+), else u8.
Status quantizeLinear(InferContext &c) {
  DType out = DType::U8;
  if (c.has(2) && c.elem(2) != DType::Undefined)
    out = c.elem(2);
  else if (int64_t od = c.attrInt("output_dtype", 0); od != 0)
    out = static_cast<DType>(od);
  c.setTensor(0, out, c.dims(0));
  return Status::ok();
}

// DequantizeLinear(q, scale, zp): the scale's type (f32 before opset 19).
Status dequantizeLinear(InferContext &c) {
  DType out = c.opset >= 19 && c.elem(1) != DType::Undefined ? c.elem(1) : DType::F32;
  if (int64_t od = c.attrInt("output_dtype", 0); od != 0)
    out = static_cast<DType>(od);
  c.setTensor(0, out, c.dims(0));
  return Status::ok();
}

// DynamicQuantizeLinear(x) -> (y: u8 like x, scale: f32[], zero_point: u8[]).
Status dynamicQuantizeLinear(InferContext &c) {
  c.setTensor(0, DType::U8, c.dims(0));
  c.setTensor(1, DType::F32, SymShape{});
  c.setTensor(2, DType::U8, SymShape{});
  return Status::ok();
}

/// The statistics shape of a normalisation over axes [axis, rank): those dims become 1.
std::optional<SymShape> statsShape(InferContext &c, int64_t axis) {
  if (!c.dims(0))
    return std::nullopt;
  SymShape s = *c.dims(0);
  int64_t r = static_cast<int64_t>(s.size());
  if (axis < 0)
    axis += r;
  for (int64_t i = std::max<int64_t>(axis, 0); i < r; ++i)
    s[i] = DimExpr::constant(1);
  return s;
}

// LayerNormalization / SimplifiedLayerNormalization(x, scale[, bias]) ->
// (y like x, mean / inv_std_dev: x's shape with the normalised axes set to 1, stash_type).
Status layerNorm(InferContext &c) {
  c.passThrough();
  auto stash = static_cast<DType>(c.attrInt("stash_type", 1));
  auto stats = statsShape(c, c.attrInt("axis", -1));
  for (size_t i = 1; i < c.numOutputs(); ++i)
    c.setTensor(i, stash, stats);
  return Status::ok();
}

// Skip[Simplified]LayerNormalization(x, skip, gamma, ...) -> (y, mean, inv_std_var,
// input_skip_bias_sum): statistics are f32 [..., 1], the sum is like x.
Status skipLayerNorm(InferContext &c) {
  c.passThrough();
  auto stats = statsShape(c, -1);
  for (size_t i = 1; i < c.numOutputs() && i < 3; ++i)
    c.setTensor(i, DType::F32, stats);
  c.passThrough(3, 0);
  return Status::ok();
}

// BatchNormalization: y like x (training-mode running stats are per-channel).
Status batchNorm(InferContext &c) {
  c.passThrough();
  for (size_t i = 1; i < c.numOutputs(); ++i)
    c.setTensor(i, c.elem(0), c.dims(3) ? c.dims(3) : c.dims(1));
  return Status::ok();
}

// Bernoulli(x): dtype attribute or x's type.
Status bernoulli(InferContext &c) {
  c.setTensor(0, static_cast<DType>(c.attrInt("dtype", static_cast<int64_t>(c.elem(0)))), c.dims(0));
  return Status::ok();
}

constexpr RuleEntry kRules[] = {
    // unary, same type and shape
    {"", "Abs", unary}, {"", "Acos", unary}, {"", "Acosh", unary}, {"", "Asin", unary},
    {"", "Asinh", unary}, {"", "Atan", unary}, {"", "Atanh", unary}, {"", "Ceil", unary},
    {"", "Cos", unary}, {"", "Cosh", unary}, {"", "Erf", unary}, {"", "Exp", unary},
    {"", "Floor", unary}, {"", "Log", unary}, {"", "Reciprocal", unary}, {"", "Relu", unary},
    {"", "Round", unary}, {"", "Sigmoid", unary}, {"", "Sign", unary}, {"", "Sin", unary},
    {"", "Sinh", unary}, {"", "Sqrt", unary}, {"", "Tan", unary}, {"", "Tanh", unary},
    {"", "Softplus", unary}, {"", "Softsign", unary}, {"", "Selu", unary}, {"", "Elu", unary},
    {"", "Celu", unary}, {"", "LeakyRelu", unary}, {"", "HardSigmoid", unary},
    {"", "HardSwish", unary}, {"", "Mish", unary}, {"", "ThresholdedRelu", unary},
    {"", "Shrink", unary}, {"", "Gelu", unary}, {"", "Clip", unary}, {"", "Softmax", unary},
    {"", "LogSoftmax", unary}, {"", "Hardmax", unary}, {"", "Trilu", unary},
    {"", "CumSum", unary}, {"", "BitwiseNot", unary}, {"", "LpNormalization", unary},
    {"", "MeanVarianceNormalization", unary}, {"", "LRN", unary},
    {"", "InstanceNormalization", unary}, {"", "ReverseSequence", unary},
    {"", "Scatter", unary}, {"", "ScatterElements", unary}, {"", "ScatterND", unary},
    {"", "GroupNormalization", unary}, {"", "Swish", unary},
    {"com.microsoft", "Gelu", unary}, {"com.microsoft", "FastGelu", unary},
    {"com.microsoft", "QuickGelu", unary}, {"com.microsoft", "BiasGelu", unary},
    {"com.microsoft", "RotaryEmbedding", unary}, {"", "RotaryEmbedding", unary},
    {"", "CumProd", unary}, {"", "TensorScatter", unary},
    {"", "Identity", identity}, {"", "Neg", neg},
    {"", "Not", unaryBool}, {"", "IsNaN", unaryBool}, {"", "IsInf", unaryBool},
    // broadcasting
    {"", "Add", addRule}, {"", "Sub", subRule}, {"", "Mul", mulRule}, {"", "Div", divRule},
    {"", "Mod", modRule}, {"", "Max", maxRule}, {"", "Min", minRule}, {"", "Pow", pow},
    {"llmopt", "SwiGLU", plainBroadcast},
    {"", "Sum", plainBroadcast}, {"", "Mean", plainBroadcast}, {"", "PRelu", plainBroadcast},
    {"", "BitShift", plainBroadcast}, {"", "BitwiseAnd", plainBroadcast},
    {"", "BitwiseOr", plainBroadcast}, {"", "BitwiseXor", plainBroadcast},
    {"", "And", compare}, {"", "Or", compare}, {"", "Xor", compare},
    {"", "Equal", equalRule}, {"", "Less", compare}, {"", "LessOrEqual", compare},
    {"", "Greater", compare}, {"", "GreaterOrEqual", compare}, {"", "Where", where},
    // types
    {"", "Cast", cast}, {"", "CastLike", castLike}, {"", "Dropout", dropout},
    {"", "Bernoulli", bernoulli},
    {"", "QuantizeLinear", quantizeLinear}, {"", "DequantizeLinear", dequantizeLinear},
    {"", "DynamicQuantizeLinear", dynamicQuantizeLinear},
    // normalisations
    {"", "LayerNormalization", layerNorm}, {"", "SimplifiedLayerNormalization", layerNorm},
    {"", "RMSNormalization", layerNorm}, {"", "BatchNormalization", batchNorm},
    {"com.microsoft", "SkipLayerNormalization", skipLayerNorm},
    {"com.microsoft", "SkipSimplifiedLayerNormalization", skipLayerNorm},
};

} // namespace

std::span<const RuleEntry> elementwiseRules() { return kRules; }

} // namespace llmopt::shape

// Elementwise kernels: unary math, broadcasting arithmetic, comparisons, logic,
// Where, variadic Max/Min and Clip.
#include <cmath>
#include <limits>

#include "backend/interp/Elementwise.h"

namespace llmopt::interp {
namespace {

// ---------------------------------------------------------------- unary

/// A float-only unary op (f16/bf16 arrive widened).
template <typename Fn> Expected<TensorList> floatUnary(const Node &n, const InputList &in, Fn fn) {
  const Tensor &x = *in[0];
  return visitFloat(n, x.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    return TensorList{mapUnary<T, T>(x, x.dtype(), [&](T v) { return static_cast<T>(fn(v)); })};
  });
}

/// A unary op over every numeric type.
template <typename Fn> Expected<TensorList> numericUnary(const Node &n, const InputList &in, Fn fn) {
  const Tensor &x = *in[0];
  return visitNumeric(n, x.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    return TensorList{mapUnary<T, T>(x, x.dtype(), [&](T v) { return static_cast<T>(fn(v)); })};
  });
}

#define FLOAT_UNARY(NAME, EXPR)                                                                    \
  Expected<TensorList> k##NAME(const Node &n, const InputList &in) {                               \
    return floatUnary(n, in, [](auto x) { return EXPR; });                                         \
  }
FLOAT_UNARY(Sqrt, std::sqrt(x))
FLOAT_UNARY(Reciprocal, decltype(x)(1) / x)
FLOAT_UNARY(Exp, std::exp(x))
FLOAT_UNARY(Log, std::log(x))
FLOAT_UNARY(Tanh, std::tanh(x))
FLOAT_UNARY(Erf, std::erf(x))
FLOAT_UNARY(Sigmoid, decltype(x)(1) / (decltype(x)(1) + std::exp(-x)))
FLOAT_UNARY(Cos, std::cos(x))
FLOAT_UNARY(Sin, std::sin(x))
FLOAT_UNARY(Floor, std::floor(x))
FLOAT_UNARY(Ceil, std::ceil(x))
#undef FLOAT_UNARY

Expected<TensorList> kAbs(const Node &n, const InputList &in) {
  return numericUnary(n, in, [](auto x) {
    using T = decltype(x);
    if constexpr (std::is_unsigned_v<T>)
      return x;
    else
      return x < T(0) ? wrapSub(T(0), x) : x;
  });
}

Expected<TensorList> kNeg(const Node &n, const InputList &in) {
  return numericUnary(n, in, [](auto x) { return wrapSub(decltype(x)(0), x); });
}

Expected<TensorList> kRelu(const Node &n, const InputList &in) {
  return numericUnary(n, in, [](auto x) { return x > decltype(x)(0) ? x : decltype(x)(0); });
}

Expected<TensorList> kIsNaN(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  return visitFloat(n, x.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    return TensorList{mapUnary<T, bool>(x, DType::Bool, [](T v) { return std::isnan(v); })};
  });
}

Expected<TensorList> kNot(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  if (x.dtype() != DType::Bool)
    return nodeError(n, "expects bool input, got {}", dtypeStr(x.dtype()));
  return TensorList{mapUnary<bool, bool>(x, DType::Bool, [](bool v) { return !v; })};
}

// ---------------------------------------------------------------- binary

Expected<Shape> binaryShape(const Node &n, const Tensor &a, const Tensor &b, bool sameType) {
  if (sameType && a.dtype() != b.dtype())
    return nodeError(n, "input element types differ: {} and {}", dtypeStr(a.dtype()),
                     dtypeStr(b.dtype()));
  return broadcastShapes(n, {&a.shape(), &b.shape()});
}

/// Same-typed numeric inputs, output of the same type.
template <typename Fn> Expected<TensorList> arith(const Node &n, const InputList &in, Fn fn) {
  const Tensor &a = *in[0], &b = *in[1];
  LLMOPT_ASSIGN_OR_RETURN(Shape s, binaryShape(n, a, b, true));
  return visitNumeric(n, a.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    return TensorList{mapBinary<T, T, T>(a, b, s, a.dtype(), [&](T x, T y) { return fn(x, y); })};
  });
}

Expected<TensorList> kAdd(const Node &n, const InputList &in) {
  return arith(n, in, [](auto x, auto y) { return wrapAdd(x, y); });
}
Expected<TensorList> kSub(const Node &n, const InputList &in) {
  return arith(n, in, [](auto x, auto y) { return wrapSub(x, y); });
}
Expected<TensorList> kMul(const Node &n, const InputList &in) {
  return arith(n, in, [](auto x, auto y) { return wrapMul(x, y); });
}
Expected<TensorList> kDiv(const Node &n, const InputList &in) {
  return arith(n, in, [](auto x, auto y) {
    using T = decltype(x);
    if constexpr (std::is_integral_v<T>) {
      // Truncating like C; x/0 gives 0 and MIN/-1 wraps instead of trapping.
      if (y == T(0))
        return T(0);
      if constexpr (std::is_signed_v<T>)
        if (y == T(-1))
          return wrapSub(T(0), x);
      return static_cast<T>(x / y);
    } else {
      return x / y;
    }
  });
}

template <typename T> T fromDouble(double v) {
  if constexpr (std::is_integral_v<T>) {
    if (std::isnan(v))
      return T(0);
    return static_cast<T>(static_cast<int64_t>(std::clamp(v, -9.2e18, 9.2e18)));
  } else {
    return static_cast<T>(v);
  }
}

Expected<TensorList> kPow(const Node &n, const InputList &in) {
  const Tensor &a = *in[0];
  LLMOPT_ASSIGN_OR_RETURN(Shape s, binaryShape(n, a, *in[1], false));
  // A differently typed exponent is read as f64; the output has the base's type.
  Tensor b = *in[1];
  if (b.dtype() != a.dtype()) {
    LLMOPT_ASSIGN_OR_RETURN(b, castTensor(b, DType::F64));
  }
  return visitNumeric(n, a.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    auto pw = [](auto x, auto y) {
      if constexpr (std::is_same_v<T, float> && std::is_same_v<decltype(y), float>)
        return std::pow(x, y);
      else
        return fromDouble<T>(std::pow(static_cast<double>(x), static_cast<double>(y)));
    };
    if (b.dtype() == a.dtype())
      return TensorList{mapBinary<T, T, T>(a, b, s, a.dtype(), pw)};
    return TensorList{mapBinary<T, double, T>(a, b, s, a.dtype(), pw)};
  });
}

/// Same-typed inputs, bool output.
template <typename Fn>
Expected<TensorList> compare(const Node &n, const InputList &in, bool allowBool, Fn fn) {
  const Tensor &a = *in[0], &b = *in[1];
  LLMOPT_ASSIGN_OR_RETURN(Shape s, binaryShape(n, a, b, true));
  if (a.dtype() == DType::Bool && !allowBool)
    return nodeError(n, "element type bool is not supported");
  return visitType(n, a.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    return TensorList{mapBinary<T, T, bool>(a, b, s, DType::Bool, [&](T x, T y) { return fn(x, y); })};
  });
}

Expected<TensorList> kEqual(const Node &n, const InputList &in) {
  return compare(n, in, true, [](auto x, auto y) { return x == y; });
}
Expected<TensorList> kLess(const Node &n, const InputList &in) {
  return compare(n, in, false, [](auto x, auto y) { return x < y; });
}
Expected<TensorList> kLessOrEqual(const Node &n, const InputList &in) {
  return compare(n, in, false, [](auto x, auto y) { return x <= y; });
}
Expected<TensorList> kGreater(const Node &n, const InputList &in) {
  return compare(n, in, false, [](auto x, auto y) { return x > y; });
}
Expected<TensorList> kGreaterOrEqual(const Node &n, const InputList &in) {
  return compare(n, in, false, [](auto x, auto y) { return x >= y; });
}

template <typename Fn> Expected<TensorList> logic(const Node &n, const InputList &in, Fn fn) {
  const Tensor &a = *in[0], &b = *in[1];
  if (a.dtype() != DType::Bool || b.dtype() != DType::Bool)
    return nodeError(n, "expects bool inputs, got {} and {}", dtypeStr(a.dtype()), dtypeStr(b.dtype()));
  LLMOPT_ASSIGN_OR_RETURN(Shape s, binaryShape(n, a, b, true));
  return TensorList{mapBinary<bool, bool, bool>(a, b, s, DType::Bool, fn)};
}
Expected<TensorList> kAnd(const Node &n, const InputList &in) {
  return logic(n, in, [](bool x, bool y) { return x && y; });
}
Expected<TensorList> kOr(const Node &n, const InputList &in) {
  return logic(n, in, [](bool x, bool y) { return x || y; });
}

// ---------------------------------------------------------------- Where, Max/Min, Clip

template <typename T>
Tensor whereLoop(const Tensor &c, const Tensor &x, const Tensor &y, const Shape &s, DType dt) {
  Tensor out = Tensor::zeros(dt, s);
  if (out.numel() == 0)
    return out;
  const BroadcastPlan p = planBroadcast(s, {&c.shape(), &x.shape(), &y.shape()});
  const bool *pc = dataOf<bool>(c);
  const T *px = dataOf<T>(x), *py = dataOf<T>(y);
  T *po = mutableDataOf<T>(out);
  const int64_t inner = p.inner(), sc = p.innerStride(0), sx = p.innerStride(1), sy = p.innerStride(2);
  parallelFor(p.rows(), std::max<int64_t>(1, kElementGrain / inner), [&](int64_t r0, int64_t r1) {
    int64_t off[3];
    for (int64_t r = r0; r < r1; ++r) {
      p.rowOffsets(r, off);
      T *o = po + r * inner;
      for (int64_t i = 0; i < inner; ++i)
        o[i] = pc[off[0] + i * sc] ? px[off[1] + i * sx] : py[off[2] + i * sy];
    }
  });
  return out;
}

Expected<TensorList> kWhere(const Node &n, const InputList &in) {
  const Tensor &c = *in[0], &x = *in[1], &y = *in[2];
  if (c.dtype() != DType::Bool)
    return nodeError(n, "condition must be bool, got {}", dtypeStr(c.dtype()));
  if (x.dtype() != y.dtype())
    return nodeError(n, "X and Y element types differ: {} and {}", dtypeStr(x.dtype()), dtypeStr(y.dtype()));
  LLMOPT_ASSIGN_OR_RETURN(Shape s, broadcastShapes(n, {&c.shape(), &x.shape(), &y.shape()}));
  // Selection moves bytes, so any byte-sized element type works as it is.
  switch (elemBytes(x.dtype())) {
  case 1: return TensorList{whereLoop<uint8_t>(c, x, y, s, x.dtype())};
  case 2: return TensorList{whereLoop<uint16_t>(c, x, y, s, x.dtype())};
  case 4: return TensorList{whereLoop<uint32_t>(c, x, y, s, x.dtype())};
  case 8: return TensorList{whereLoop<uint64_t>(c, x, y, s, x.dtype())};
  default: return nodeError(n, "element type {} is not supported", dtypeStr(x.dtype()));
  }
}

/// Folds variadic broadcasting inputs with a binary function.
template <typename Fn> Expected<TensorList> variadic(const Node &n, const InputList &in, Fn fn) {
  Tensor acc = *in[0];
  for (size_t i = 1; i < in.size(); ++i) {
    if (!in[i])
      continue;
    LLMOPT_ASSIGN_OR_RETURN(Shape s, binaryShape(n, acc, *in[i], true));
    LLMOPT_ASSIGN_OR_RETURN(acc, visitNumeric(n, acc.dtype(), [&](auto tag) -> Expected<Tensor> {
      using T = decltype(tag);
      return mapBinary<T, T, T>(acc, *in[i], s, acc.dtype(), [&](T x, T y) { return fn(x, y); });
    }));
  }
  return TensorList{acc};
}

template <typename T> bool isNan(T v) {
  if constexpr (std::is_floating_point_v<T>)
    return std::isnan(v);
  else
    return false;
}

Expected<TensorList> kMax(const Node &n, const InputList &in) {
  return variadic(n, in, [](auto x, auto y) { return isNan(x) || x >= y ? x : y; });
}
Expected<TensorList> kMin(const Node &n, const InputList &in) {
  return variadic(n, in, [](auto x, auto y) { return isNan(x) || x <= y ? x : y; });
}

Expected<TensorList> kClip(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  const bool attrs = opsetOf(n) < 11;
  const Tensor *lo = attrs ? nullptr : optInput(in, 1);
  const Tensor *hi = attrs ? nullptr : optInput(in, 2);
  for (const Tensor *b : {lo, hi})
    if (b && (b->numel() != 1 || b->dtype() != x.dtype()))
      return nodeError(n, "min/max must be single {} values, got {} {}", dtypeStr(x.dtype()),
                       dtypeStr(b->dtype()), shapeStr(b->shape()));
  return visitNumeric(n, x.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    T l = std::numeric_limits<T>::lowest(), h = std::numeric_limits<T>::max();
    if (attrs) {
      l = static_cast<T>(n.attrFloat("min", -std::numeric_limits<float>::max()));
      h = static_cast<T>(n.attrFloat("max", std::numeric_limits<float>::max()));
    }
    if (lo)
      l = dataOf<T>(*lo)[0];
    if (hi)
      h = dataOf<T>(*hi)[0];
    return TensorList{mapUnary<T, T>(x, x.dtype(), [&](T v) {
      if (isNan(v))
        return v;
      return v < l ? l : (v > h ? h : v);
    })};
  });
}

Expected<TensorList> kIdentity(const Node &n, const InputList &in) { return TensorList{*in[0]}; }

} // namespace

void addElementwiseKernels(KernelTable &t) {
  auto add = [&](OpKind k, KernelFn fn, bool half = true) { t.push_back({k, fn, 1, INT64_MAX, half}); };
  add(OpKind::Abs, kAbs);
  add(OpKind::Neg, kNeg);
  add(OpKind::Sqrt, kSqrt);
  add(OpKind::Reciprocal, kReciprocal);
  add(OpKind::Exp, kExp);
  add(OpKind::Log, kLog);
  add(OpKind::Tanh, kTanh);
  add(OpKind::Erf, kErf);
  add(OpKind::Sigmoid, kSigmoid);
  add(OpKind::Relu, kRelu);
  add(OpKind::Cos, kCos);
  add(OpKind::Sin, kSin);
  add(OpKind::Floor, kFloor);
  add(OpKind::Ceil, kCeil);
  add(OpKind::IsNaN, kIsNaN);
  add(OpKind::Not, kNot, false);
  add(OpKind::Add, kAdd);
  add(OpKind::Sub, kSub);
  add(OpKind::Mul, kMul);
  add(OpKind::Div, kDiv);
  add(OpKind::Pow, kPow);
  add(OpKind::Equal, kEqual);
  add(OpKind::Less, kLess);
  add(OpKind::LessOrEqual, kLessOrEqual);
  add(OpKind::Greater, kGreater);
  add(OpKind::GreaterOrEqual, kGreaterOrEqual);
  add(OpKind::And, kAnd, false);
  add(OpKind::Or, kOr, false);
  add(OpKind::Where, kWhere, false);
  add(OpKind::Max, kMax);
  add(OpKind::Min, kMin);
  add(OpKind::Clip, kClip);
  add(OpKind::Identity, kIdentity, false);
}

} // namespace llmopt::interp

// Shape kernels (the ones constant folding and shape computation lean on): Shape,
// Size, Reshape, Flatten, Squeeze, Unsqueeze, Cast, CastLike, Range,
// ConstantOfShape, Constant, Dropout.
#include <algorithm>
#include <cmath>

#include "backend/interp/Kernel.h"

namespace llmopt::interp {
namespace {

Tensor i64Vector(const std::vector<int64_t> &v) {
  return Tensor::fromVector(DType::I64, {static_cast<int64_t>(v.size())}, v);
}

Expected<TensorList> kShape(const Node &n, const InputList &in) {
  const Shape &s = in[0]->shape();
  const int64_t r = static_cast<int64_t>(s.size());
  auto clampIdx = [&](int64_t i) { return std::clamp(i < 0 ? i + r : i, int64_t(0), r); };
  int64_t b = clampIdx(n.attrInt("start", 0));
  int64_t e = n.hasAttr("end") ? clampIdx(n.attrInt("end", r)) : r;
  std::vector<int64_t> out;
  for (int64_t i = b; i < e; ++i)
    out.push_back(s[static_cast<size_t>(i)]);
  return TensorList{i64Vector(out)};
}

Expected<TensorList> kSize(const Node &n, const InputList &in) {
  return TensorList{Tensor::scalar<int64_t>(DType::I64, in[0]->numel())};
}

Expected<TensorList> kReshape(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  LLMOPT_ASSIGN_OR_RETURN(std::vector<int64_t> req, readInts(n, *in[1], "shape"));
  const bool allowZero = n.attrInt("allowzero", 0) != 0;
  Shape out(req.size());
  int64_t inferAt = -1, known = 1;
  for (size_t i = 0; i < req.size(); ++i) {
    int64_t d = req[i];
    if (d == 0 && !allowZero) {
      if (i >= x.shape().size())
        return nodeError(n, "shape {} copies dim {} (0) but the input {} has rank {}",
                         shapeStr(req), i, shapeStr(x.shape()), x.rank());
      d = x.shape()[i];
    }
    if (d == -1) {
      if (inferAt >= 0)
        return nodeError(n, "shape {} has more than one -1", shapeStr(req));
      inferAt = static_cast<int64_t>(i);
      continue;
    }
    if (d < 0)
      return nodeError(n, "shape {} has a negative dim", shapeStr(req));
    out[i] = d;
    known *= d;
  }
  if (inferAt >= 0) {
    if (known == 0 || x.numel() % known != 0)
      return nodeError(n, "cannot reshape {} to {}", shapeStr(x.shape()), shapeStr(req));
    out[static_cast<size_t>(inferAt)] = x.numel() / known;
  }
  if (numelOf(out) != x.numel())
    return nodeError(n, "cannot reshape {} ({} elements) to {}", shapeStr(x.shape()), x.numel(),
                     shapeStr(req));
  return TensorList{x.reshaped(out)};
}

Expected<TensorList> kFlatten(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  const int64_t r = x.rank();
  int64_t axis = n.attrInt("axis", 1);
  if (axis < -r || axis > r)
    return nodeError(n, "axis {} is out of range for rank {}", axis, r);
  if (axis < 0)
    axis += r;
  int64_t outer = 1;
  for (int64_t i = 0; i < axis; ++i)
    outer *= x.shape()[static_cast<size_t>(i)];
  return TensorList{x.reshaped({outer, outer == 0 ? 0 : x.numel() / outer})};
}

/// Axes from the `axes` attribute (opset < 13) or the optional second input.
Expected<std::vector<int64_t>> axesOf(const Node &n, const InputList &in, bool fromInput, bool &given) {
  if (fromInput) {
    given = optInput(in, 1) != nullptr;
    if (!given)
      return std::vector<int64_t>{};
    return readInts(n, *in[1], "axes");
  }
  given = n.hasAttr("axes");
  return n.attrInts("axes");
}

Expected<TensorList> kSqueeze(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  bool given = false;
  LLMOPT_ASSIGN_OR_RETURN(std::vector<int64_t> axes, axesOf(n, in, opsetOf(n) >= 13, given));
  std::vector<bool> drop(x.shape().size(), false);
  if (!given) {
    for (size_t i = 0; i < drop.size(); ++i)
      drop[i] = x.shape()[i] == 1;
  }
  for (int64_t a : axes) {
    LLMOPT_ASSIGN_OR_RETURN(int64_t ax, normalizeAxis(n, a, x.rank()));
    if (x.shape()[static_cast<size_t>(ax)] != 1)
      return nodeError(n, "cannot squeeze axis {} of shape {} (size is not 1)", a, shapeStr(x.shape()));
    drop[static_cast<size_t>(ax)] = true;
  }
  Shape out;
  for (size_t i = 0; i < drop.size(); ++i)
    if (!drop[i])
      out.push_back(x.shape()[i]);
  return TensorList{x.reshaped(out)};
}

Expected<TensorList> kUnsqueeze(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  bool given = false;
  LLMOPT_ASSIGN_OR_RETURN(std::vector<int64_t> axes, axesOf(n, in, opsetOf(n) >= 13, given));
  if (!given)
    return nodeError(n, "axes are required");
  const int64_t outRank = x.rank() + static_cast<int64_t>(axes.size());
  std::vector<bool> inserted(static_cast<size_t>(outRank), false);
  for (int64_t a : axes) {
    LLMOPT_ASSIGN_OR_RETURN(int64_t ax, normalizeAxis(n, a, outRank));
    if (inserted[static_cast<size_t>(ax)])
      return nodeError(n, "axis {} appears twice", a);
    inserted[static_cast<size_t>(ax)] = true;
  }
  Shape out;
  size_t j = 0;
  for (int64_t i = 0; i < outRank; ++i)
    out.push_back(inserted[static_cast<size_t>(i)] ? 1 : x.shape()[j++]);
  return TensorList{x.reshaped(out)};
}

Expected<TensorList> castTo(const Node &n, const Tensor &x, DType to) {
  auto r = castTensor(x, to);
  if (!r)
    return nodeError(n, "{}", r.status().message());
  return TensorList{r.take()};
}

Expected<TensorList> kCast(const Node &n, const InputList &in) {
  const int64_t to = n.attrInt("to", 0);
  if (!isKnownDTypeCode(static_cast<int32_t>(to)) || to == 0)
    return nodeError(n, "unknown target type {}", to);
  return castTo(n, *in[0], static_cast<DType>(to));
}

Expected<TensorList> kCastLike(const Node &n, const InputList &in) {
  return castTo(n, *in[0], in[1]->dtype());
}

Expected<TensorList> kRange(const Node &n, const InputList &in) {
  for (int i = 0; i < 3; ++i)
    if (in[i]->numel() != 1 || in[i]->dtype() != in[0]->dtype())
      return nodeError(n, "start, limit and delta must be scalars of one type");
  const DType dt = in[0]->dtype();
  return visitNumeric(n, dt, [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    const T start = dataOf<T>(*in[0])[0], limit = dataOf<T>(*in[1])[0], delta = dataOf<T>(*in[2])[0];
    if (delta == T(0))
      return nodeError(n, "delta is zero");
    const double count = std::ceil((static_cast<double>(limit) - static_cast<double>(start)) /
                                   static_cast<double>(delta));
    const int64_t len = std::max<int64_t>(0, static_cast<int64_t>(count));
    Tensor out = Tensor::zeros(dt, {len});
    T *o = mutableDataOf<T>(out);
    for (int64_t i = 0; i < len; ++i)
      o[i] = static_cast<T>(start + static_cast<T>(i) * delta);
    return TensorList{out};
  });
}

Expected<TensorList> kConstantOfShape(const Node &n, const InputList &in) {
  LLMOPT_ASSIGN_OR_RETURN(std::vector<int64_t> shape, readInts(n, *in[0], "shape"));
  for (int64_t d : shape)
    if (d < 0)
      return nodeError(n, "shape {} has a negative dim", shapeStr(shape));
  const Tensor *value = attrTensor(n, "value");
  if (!value) // default: a float 0
    return TensorList{Tensor::zeros(DType::F32, shape)};
  if (value->numel() != 1 || elemBytes(value->dtype()) == 0)
    return nodeError(n, "value must hold one numeric element");
  Tensor out = Tensor::zeros(value->dtype(), shape);
  const size_t eb = elemBytes(value->dtype());
  uint8_t *o = out.mutableData();
  for (int64_t i = 0; i < out.numel(); ++i)
    std::memcpy(o + static_cast<size_t>(i) * eb, value->data(), eb);
  return TensorList{out};
}

Expected<TensorList> kConstant(const Node &n, const InputList &) {
  for (const Attribute &a : n.attributes()) {
    if (a.name == "value" && a.t)
      return TensorList{*a.t};
    if (a.name == "value_float")
      return TensorList{Tensor::scalar<float>(DType::F32, a.f)};
    if (a.name == "value_floats")
      return TensorList{Tensor::fromVector(DType::F32, {static_cast<int64_t>(a.floats.size())}, a.floats)};
    if (a.name == "value_int")
      return TensorList{Tensor::scalar<int64_t>(DType::I64, a.i)};
    if (a.name == "value_ints")
      return TensorList{Tensor::fromVector(DType::I64, {static_cast<int64_t>(a.ints.size())}, a.ints)};
    if (a.name == "value_string")
      return TensorList{Tensor::strings({}, {a.s})};
    if (a.name == "value_strings")
      return TensorList{Tensor::strings({static_cast<int64_t>(a.strings.size())}, a.strings)};
    if (a.name == "sparse_value")
      return nodeError(n, "sparse_value is not supported");
  }
  return nodeError(n, "has no value attribute");
}

Expected<TensorList> kDropout(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  const int64_t v = opsetOf(n);
  const Tensor *training = v >= 12 ? optInput(in, 2) : nullptr;
  const bool train = training && training->numel() == 1 && training->getInt(0) != 0;
  if (train) {
    const Tensor *ratio = optInput(in, 1);
    if (!ratio || ratio->getDouble(0) != 0.0)
      return nodeError(n, "training-mode dropout (random) is not supported");
  }
  // Inference: identity, and a mask of all true (bool from opset 10, X's type before).
  Tensor mask = Tensor::zeros(v >= 10 ? DType::Bool : x.dtype(), x.shape());
  if (mask.dtype() == DType::Bool) {
    std::memset(mask.mutableData(), 1, mask.nbytes());
  } else {
    LLMOPT_ASSIGN_OR_RETURN(Tensor ones, castTensor(Tensor::scalar<float>(DType::F32, 1.0f), x.dtype()));
    const size_t eb = elemBytes(x.dtype());
    uint8_t *o = mask.mutableData();
    for (int64_t i = 0; eb && i < mask.numel(); ++i)
      std::memcpy(o + static_cast<size_t>(i) * eb, ones.data(), eb);
  }
  return TensorList{x, mask};
}

} // namespace

void addShapeKernels(KernelTable &t) {
  t.push_back({OpKind::Shape, kShape});
  t.push_back({OpKind::Size, kSize});
  t.push_back({OpKind::Reshape, kReshape, 5}); // Reshape-1 took the shape as an attribute
  t.push_back({OpKind::Flatten, kFlatten});
  t.push_back({OpKind::Squeeze, kSqueeze});
  t.push_back({OpKind::Unsqueeze, kUnsqueeze});
  t.push_back({OpKind::Cast, kCast});
  t.push_back({OpKind::CastLike, kCastLike});
  t.push_back({OpKind::Range, kRange});
  t.push_back({OpKind::ConstantOfShape, kConstantOfShape});
  t.push_back({OpKind::Constant, kConstant});
  t.push_back({OpKind::Dropout, kDropout});
}

} // namespace llmopt::interp

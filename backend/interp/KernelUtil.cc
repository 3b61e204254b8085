// Helpers shared by the interpreter's kernels: errors, dtype conversion, shapes,
// broadcasting plans and strided copies.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include <fmt/ranges.h>

#include "backend/interp/Kernel.h"

namespace llmopt::interp {

std::string nodeLabel(const Node &n) {
  return fmt::format("node '{}' ({})", n.name(), n.qualifiedOpType());
}

int64_t opsetOf(const Node &n) {
  int64_t v = n.opsetVersion();
  return v > 0 ? v : std::numeric_limits<int64_t>::max();
}

Expected<const Tensor *> needInput(const Node &n, const InputList &in, size_t i, std::string_view what) {
  if (const Tensor *t = optInput(in, i))
    return t;
  return nodeError(n, "input {} ({}) is required", i, what);
}

const Tensor *attrTensor(const Node &n, std::string_view name) {
  const Attribute *a = n.attr(name);
  return a && a->kind == Attribute::Kind::Tensor && a->t ? a->t.get() : nullptr;
}

std::string dtypeStr(DType t) { return std::string(dtypeName(t)); }

template <> DType dtypeOf<float>() { return DType::F32; }
template <> DType dtypeOf<double>() { return DType::F64; }
template <> DType dtypeOf<int8_t>() { return DType::I8; }
template <> DType dtypeOf<int16_t>() { return DType::I16; }
template <> DType dtypeOf<int32_t>() { return DType::I32; }
template <> DType dtypeOf<int64_t>() { return DType::I64; }
template <> DType dtypeOf<uint8_t>() { return DType::U8; }
template <> DType dtypeOf<uint16_t>() { return DType::U16; }
template <> DType dtypeOf<uint32_t>() { return DType::U32; }
template <> DType dtypeOf<uint64_t>() { return DType::U64; }
template <> DType dtypeOf<bool>() { return DType::Bool; }

// ---------------------------------------------------------------- dtype conversion

Tensor widenHalf(const Tensor &t) {
  if (!isHalfType(t.dtype()))
    return t;
  Tensor out = Tensor::zeros(DType::F32, t.shape());
  const auto *src = dataOf<uint16_t>(t);
  float *dst = mutableDataOf<float>(out);
  const bool half = t.dtype() == DType::F16;
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i)
    dst[i] = half ? halfToFloat(src[i]) : bf16ToFloat(src[i]);
  return out;
}

namespace {

/// One element converted with ONNX Cast semantics.
template <typename D, typename S> D convertElem(S s) {
  if constexpr (std::is_same_v<D, bool>) {
    return s != S(0);
  } else if constexpr (std::is_floating_point_v<S> && std::is_integral_v<D>) {
    if (std::isnan(s))
      return D(0);
    // Out-of-range is undefined in ONNX; clamp through int64 rather than invoke UB.
    double c = std::clamp(static_cast<double>(s), -9.2233720368547748e18, 9.2233720368547748e18);
    if constexpr (std::is_same_v<D, uint64_t>)
      return c >= 9.2233720368547748e18 ? static_cast<uint64_t>(c) : static_cast<D>(static_cast<int64_t>(c));
    else
      return static_cast<D>(static_cast<int64_t>(c));
  } else {
    return static_cast<D>(s);
  }
}

Tensor narrowToHalf(const Tensor &f32, DType to) {
  Tensor out = Tensor::zeros(to, f32.shape());
  const float *src = dataOf<float>(f32);
  auto *dst = mutableDataOf<uint16_t>(out);
  const int64_t n = f32.numel();
  for (int64_t i = 0; i < n; ++i)
    dst[i] = to == DType::F16 ? floatToHalf(src[i]) : floatToBf16(src[i]);
  return out;
}

Tensor unpackSubByte(const Tensor &t) {
  const bool isSigned = t.dtype() == DType::I4 || t.dtype() == DType::I2;
  Tensor out = Tensor::zeros(isSigned ? DType::I8 : DType::U8, t.shape());
  uint8_t *dst = out.mutableData();
  for (int64_t i = 0; i < t.numel(); ++i)
    dst[i] = static_cast<uint8_t>(t.getInt(i));
  return out;
}

Tensor packSubByte(const Tensor &i64, DType to) {
  Tensor out = Tensor::zeros(to, i64.shape());
  uint8_t *dst = out.mutableData();
  const int bits = dtypeBits(to), perByte = 8 / bits, mask = (1 << bits) - 1;
  const auto *src = dataOf<int64_t>(i64);
  for (int64_t i = 0; i < i64.numel(); ++i)
    dst[i / perByte] |= static_cast<uint8_t>((src[i] & mask) << ((i % perByte) * bits));
  return out;
}

} // namespace

Expected<Tensor> castTensor(const Tensor &t, DType to) {
  if (t.dtype() == to)
    return t;
  if (t.dtype() == DType::String || to == DType::String)
    return errorf("cast between {} and {} is not supported", dtypeStr(t.dtype()), dtypeStr(to));
  Tensor src = t;
  if (isHalfType(src.dtype()))
    src = widenHalf(src);
  else if (isSubByte(src.dtype()))
    src = unpackSubByte(src);
  if (isHalfType(to)) {
    LLMOPT_ASSIGN_OR_RETURN(Tensor f, castTensor(src, DType::F32));
    return narrowToHalf(f, to);
  }
  if (isSubByte(to)) {
    if (to != DType::I4 && to != DType::U4 && to != DType::I2 && to != DType::U2)
      return errorf("cast to {} is not supported", dtypeStr(to));
    LLMOPT_ASSIGN_OR_RETURN(Tensor w, castTensor(src, DType::I64));
    return packSubByte(w, to);
  }
  if (src.dtype() == to)
    return src;
  return visitTypeAnon(src.dtype(), [&](auto s) -> Expected<Tensor> {
    using S = decltype(s);
    return visitTypeAnon(to, [&](auto d) -> Expected<Tensor> {
      using D = decltype(d);
      Tensor out = Tensor::zeros(to, src.shape());
      const S *in = dataOf<S>(src);
      D *o = mutableDataOf<D>(out);
      const int64_t n = src.numel();
      for (int64_t i = 0; i < n; ++i)
        o[i] = convertElem<D>(in[i]);
      return out;
    });
  });
}

// ---------------------------------------------------------------- shapes

int64_t numelOf(const Shape &s) {
  int64_t n = 1;
  for (int64_t d : s)
    n *= d;
  return n;
}

Shape stridesOf(const Shape &s) {
  Shape st(s.size(), 1);
  for (size_t i = s.size(); i-- > 1;)
    st[i - 1] = st[i] * s[i];
  return st;
}

std::string shapeStr(const Shape &s) { return fmt::format("[{}]", fmt::join(s, ",")); }

Expected<int64_t> normalizeAxis(const Node &n, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank)
    return nodeError(n, "axis {} is out of range for rank {}", axis, rank);
  return axis < 0 ? axis + rank : axis;
}

Expected<std::vector<int64_t>> readInts(const Node &n, const Tensor &t, std::string_view what) {
  if (!isIntType(t.dtype()))
    return nodeError(n, "{} must be an integer tensor, got {}", what, dtypeStr(t.dtype()));
  if (t.rank() > 1)
    return nodeError(n, "{} must be 1-D, got shape {}", what, shapeStr(t.shape()));
  return t.toInts();
}

Expected<Shape> broadcastShapes(const Node &n, const std::vector<const Shape *> &shapes) {
  size_t rank = 0;
  for (const Shape *s : shapes)
    rank = std::max(rank, s->size());
  Shape out(rank, 1);
  for (const Shape *s : shapes) {
    size_t off = rank - s->size();
    for (size_t i = 0; i < s->size(); ++i) {
      int64_t d = (*s)[i], &o = out[off + i];
      if (d == o || d == 1)
        continue;
      if (o == 1) {
        o = d;
        continue;
      }
      std::vector<std::string> all;
      for (const Shape *x : shapes)
        all.push_back(shapeStr(*x));
      return nodeError(n, "shapes {} cannot be broadcast together", fmt::join(all, " and "));
    }
  }
  return out;
}

int64_t BroadcastPlan::rows() const {
  int64_t r = 1;
  for (size_t i = 0; i + 1 < dims.size(); ++i)
    r *= dims[i];
  return r;
}

void BroadcastPlan::rowOffsets(int64_t r, int64_t *offsets) const {
  for (size_t k = 0; k < strides.size(); ++k)
    offsets[k] = 0;
  for (size_t d = dims.size() - 1; d-- > 0;) {
    int64_t idx = r % dims[d];
    r /= dims[d];
    for (size_t k = 0; k < strides.size(); ++k)
      offsets[k] += idx * strides[k][d];
  }
}

BroadcastPlan planBroadcast(const Shape &out, const std::vector<const Shape *> &ins) {
  const size_t rank = out.size(), k = ins.size();
  std::vector<Shape> full(k, Shape(rank, 0));
  for (size_t i = 0; i < k; ++i) {
    const Shape &s = *ins[i];
    Shape cs = stridesOf(s);
    size_t off = rank - s.size();
    for (size_t j = 0; j < s.size(); ++j)
      full[i][off + j] = s[j] == 1 ? 0 : cs[j];
  }
  BroadcastPlan p;
  p.strides.assign(k, {});
  for (size_t d = 0; d < rank; ++d) {
    if (out[d] == 1)
      continue;
    bool merge = !p.dims.empty();
    for (size_t i = 0; merge && i < k; ++i)
      merge = p.strides[i].back() == full[i][d] * out[d];
    if (merge) {
      p.dims.back() *= out[d];
      for (size_t i = 0; i < k; ++i)
        p.strides[i].back() = full[i][d];
    } else {
      p.dims.push_back(out[d]);
      for (size_t i = 0; i < k; ++i)
        p.strides[i].push_back(full[i][d]);
    }
  }
  if (p.dims.empty()) {
    p.dims.push_back(1);
    for (auto &s : p.strides)
      s.push_back(0);
  }
  return p;
}

namespace {

template <size_t N>
void copyRows(const uint8_t *src, int64_t base, const Shape &dims, const Shape &strides,
              uint8_t *dst, size_t elemSize) {
  const int64_t inner = dims.back(), is = strides.back();
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < dims.size(); ++i)
    rows *= dims[i];
  const size_t nd = dims.size();
  parallelFor(rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(inner, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t off = base, rem = r;
      for (size_t d = nd - 1; d-- > 0;) {
        off += (rem % dims[d]) * strides[d];
        rem /= dims[d];
      }
      uint8_t *o = dst + static_cast<size_t>(r * inner) * elemSize;
      const uint8_t *s = src + off * static_cast<int64_t>(elemSize);
      if (is == 1) {
        std::memcpy(o, s, static_cast<size_t>(inner) * elemSize);
      } else if constexpr (N > 0) {
        for (int64_t i = 0; i < inner; ++i)
          std::memcpy(o + i * N, s + i * is * static_cast<int64_t>(N), N);
      } else {
        for (int64_t i = 0; i < inner; ++i)
          std::memcpy(o + i * elemSize, s + i * is * static_cast<int64_t>(elemSize), elemSize);
      }
    }
  });
}

} // namespace

void copyStrided(const uint8_t *src, int64_t srcOffset, const Shape &outShape,
                 const Shape &srcStrides, uint8_t *dst, size_t elemSize) {
  if (numelOf(outShape) == 0)
    return;
  Shape dims, strides;
  for (size_t d = 0; d < outShape.size(); ++d) {
    if (outShape[d] == 1)
      continue;
    if (!dims.empty() && strides.back() == srcStrides[d] * outShape[d]) {
      dims.back() *= outShape[d];
      strides.back() = srcStrides[d];
    } else {
      dims.push_back(outShape[d]);
      strides.push_back(srcStrides[d]);
    }
  }
  if (dims.empty()) {
    dims.push_back(1);
    strides.push_back(1);
  }
  switch (elemSize) {
  case 1: copyRows<1>(src, srcOffset, dims, strides, dst, elemSize); break;
  case 2: copyRows<2>(src, srcOffset, dims, strides, dst, elemSize); break;
  case 4: copyRows<4>(src, srcOffset, dims, strides, dst, elemSize); break;
  case 8: copyRows<8>(src, srcOffset, dims, strides, dst, elemSize); break;
  default: copyRows<0>(src, srcOffset, dims, strides, dst, elemSize); break;
  }
}

} // namespace llmopt::interp

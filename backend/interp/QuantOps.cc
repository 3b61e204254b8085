// Quantization kernels: QuantizeLinear / DequantizeLinear (per tensor, per axis and
// opset-21 blocked, incl. int4/uint4), DynamicQuantizeLinear.
// com.microsoft::MatMulNBits lives in MatMulNBits.cc.
#include <cmath>

#include "backend/interp/Kernel.h"

namespace llmopt::interp {
namespace {

/// Which scale (and zero point) element applies to each element of x.
struct QuantLayout {
  enum class Mode { Tensor, Axis, Block } mode = Mode::Tensor;
  int64_t D = 1, inner = 1, blockSize = 0, blocks = 1;
  int64_t paramIndex(int64_t i) const {
    switch (mode) {
    case Mode::Tensor: return 0;
    case Mode::Axis: return (i / inner) % D;
    case Mode::Block: {
      const int64_t o = i / (D * inner), d = (i / inner) % D, in = i % inner;
      return (o * blocks + d / blockSize) * inner + in;
    }
    }
    return 0;
  }
};

Expected<QuantLayout> quantLayout(const Node &n, const Tensor &x, const Tensor &scale, const Tensor *zp) {
  QuantLayout q;
  if (zp && zp->shape() != scale.shape())
    return nodeError(n, "zero point shape {} differs from scale shape {}", shapeStr(zp->shape()),
                     shapeStr(scale.shape()));
  const int64_t blockSize = n.attrInt("block_size", 0);
  if (blockSize == 0 && scale.numel() == 1 && scale.rank() <= 1)
    return q;
  LLMOPT_ASSIGN_OR_RETURN(int64_t axis, normalizeAxis(n, n.attrInt("axis", 1), x.rank()));
  const Shape &s = x.shape();
  q.D = s[static_cast<size_t>(axis)];
  for (size_t i = static_cast<size_t>(axis) + 1; i < s.size(); ++i)
    q.inner *= s[i];
  if (blockSize > 0) {
    q.mode = QuantLayout::Mode::Block;
    q.blockSize = blockSize;
    q.blocks = (q.D + blockSize - 1) / blockSize;
    Shape want = s;
    want[static_cast<size_t>(axis)] = q.blocks;
    if (scale.shape() != want)
      return nodeError(n, "blocked scale must have shape {} (block_size {}), got {}", shapeStr(want),
                       blockSize, shapeStr(scale.shape()));
    return q;
  }
  if (scale.rank() != 1 || scale.numel() != q.D)
    return nodeError(n, "per-axis scale must be 1-D of size {} (axis {}), got {}", q.D, axis,
                     shapeStr(scale.shape()));
  q.mode = QuantLayout::Mode::Axis;
  return q;
}

/// Saturation range of a quantized type.
Expected<std::pair<int64_t, int64_t>> quantRange(const Node &n, DType t) {
  switch (t) {
  case DType::U8: return std::pair<int64_t, int64_t>{0, 255};
  case DType::I8: return std::pair<int64_t, int64_t>{-128, 127};
  case DType::U16: return std::pair<int64_t, int64_t>{0, 65535};
  case DType::I16: return std::pair<int64_t, int64_t>{-32768, 32767};
  case DType::U4: return std::pair<int64_t, int64_t>{0, 15};
  case DType::I4: return std::pair<int64_t, int64_t>{-8, 7};
  case DType::I32: return std::pair<int64_t, int64_t>{INT32_MIN, INT32_MAX};
  default: return nodeError(n, "quantized type {} is not supported", dtypeStr(t));
  }
}

Expected<TensorList> kQuantizeLinear(const Node &n, const InputList &in) {
  const Tensor &x = *in[0], &scale = *in[1];
  const Tensor *zp = optInput(in, 2);
  DType outType = zp ? zp->dtype() : DType::U8;
  if (!zp && n.hasAttr("output_dtype"))
    outType = static_cast<DType>(n.attrInt("output_dtype", 2));
  LLMOPT_ASSIGN_OR_RETURN(auto range, quantRange(n, outType));
  if (outType == DType::I32)
    return nodeError(n, "quantized type i32 is not supported");
  if (x.dtype() != DType::F32 && x.dtype() != DType::I32)
    return nodeError(n, "x must be f32, f16, bf16 or i32, got {}", dtypeStr(x.dtype()));
  if (scale.dtype() != DType::F32)
    return nodeError(n, "scale must be a float type, got {}", dtypeStr(scale.dtype()));
  LLMOPT_ASSIGN_OR_RETURN(QuantLayout q, quantLayout(n, x, scale, zp));
  std::vector<int64_t> zps = zp ? zp->toInts() : std::vector<int64_t>(static_cast<size_t>(scale.numel()), 0);
  const float *s = dataOf<float>(scale);
  Tensor wide = Tensor::zeros(DType::I32, x.shape());
  int32_t *o = mutableDataOf<int32_t>(wide);
  const int64_t count = x.numel();
  parallelFor(count, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t p = q.paramIndex(i);
      const float xv = x.dtype() == DType::F32 ? dataOf<float>(x)[i] : static_cast<float>(dataOf<int32_t>(x)[i]);
      const float r = std::nearbyint(xv / s[p]); // round half to even
      double v = static_cast<double>(r) + static_cast<double>(zps[static_cast<size_t>(p)]);
      v = std::isnan(v) ? 0.0 : std::clamp(v, static_cast<double>(range.first), static_cast<double>(range.second));
      o[i] = static_cast<int32_t>(v);
    }
  });
  auto r = castTensor(wide, outType);
  if (!r)
    return nodeError(n, "{}", r.status().message());
  return TensorList{r.take()};
}

Expected<TensorList> kDequantizeLinear(const Node &n, const InputList &in) {
  const Tensor &x = *in[0], &scale = *in[1];
  const Tensor *zp = optInput(in, 2);
  if (!isIntType(x.dtype()) && x.dtype() != DType::I4 && x.dtype() != DType::U4)
    return nodeError(n, "x type {} is not supported", dtypeStr(x.dtype()));
  if (zp && zp->dtype() != x.dtype())
    return nodeError(n, "zero point type {} differs from x type {}", dtypeStr(zp->dtype()), dtypeStr(x.dtype()));
  if (scale.dtype() != DType::F32)
    return nodeError(n, "scale must be a float type, got {}", dtypeStr(scale.dtype()));
  LLMOPT_ASSIGN_OR_RETURN(QuantLayout q, quantLayout(n, x, scale, zp));
  LLMOPT_ASSIGN_OR_RETURN(Tensor xi, castTensor(x, DType::I32));
  std::vector<int64_t> zps = zp ? zp->toInts() : std::vector<int64_t>(static_cast<size_t>(scale.numel()), 0);
  const float *s = dataOf<float>(scale);
  const int32_t *xv = dataOf<int32_t>(xi);
  Tensor y = Tensor::zeros(DType::F32, x.shape());
  float *o = mutableDataOf<float>(y);
  parallelFor(x.numel(), 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t p = q.paramIndex(i);
      o[i] = static_cast<float>(xv[i] - zps[static_cast<size_t>(p)]) * s[p];
    }
  });
  return TensorList{y};
}

Expected<TensorList> kDynamicQuantizeLinear(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  if (x.dtype() != DType::F32)
    return nodeError(n, "x must be f32, got {}", dtypeStr(x.dtype()));
  const float *xv = dataOf<float>(x);
  float lo = 0.f, hi = 0.f; // the range always includes 0
  for (int64_t i = 0; i < x.numel(); ++i) {
    lo = std::min(lo, xv[i]);
    hi = std::max(hi, xv[i]);
  }
  const float scale = (hi - lo) / 255.f;
  float zpf = scale == 0.f ? 0.f : std::nearbyint(std::clamp(0.f - lo / scale, 0.f, 255.f));
  const uint8_t zp = static_cast<uint8_t>(zpf);
  Tensor y = Tensor::zeros(DType::U8, x.shape());
  uint8_t *o = y.mutableData();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float v = scale == 0.f ? zpf : std::nearbyint(xv[i] / scale) + zpf;
    o[i] = static_cast<uint8_t>(std::clamp(v, 0.f, 255.f));
  }
  return TensorList{y, Tensor::scalar<float>(DType::F32, scale), Tensor::scalar<uint8_t>(DType::U8, zp)};
}

} // namespace

void addQuantKernels(KernelTable &t) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  t.push_back({OpKind::QuantizeLinear, kQuantizeLinear, 1, kMax, true});
  t.push_back({OpKind::DequantizeLinear, kDequantizeLinear, 1, kMax, true});
  t.push_back({OpKind::DynamicQuantizeLinear, kDynamicQuantizeLinear});
  addMatMulNBitsKernel(t);
}

} // namespace llmopt::interp

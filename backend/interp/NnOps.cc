// Neural-network kernels: LayerNormalization, RMS norms (SimplifiedLayerNormalization,
// RMSNormalization), ORT's Skip*LayerNormalization, and the GELU family.
#include <cmath>

#include "backend/interp/Elementwise.h"

namespace llmopt::interp {
namespace {

/// `t` broadcast (numpy, unidirectional) to `shape`, as a contiguous tensor.
Expected<Tensor> expandTo(const Node &n, const Tensor &t, const Shape &shape, std::string_view what) {
  if (t.shape() == shape)
    return t;
  bool ok = t.shape().size() <= shape.size();
  const size_t off = shape.size() - std::min(shape.size(), t.shape().size());
  for (size_t i = 0; ok && i < t.shape().size(); ++i)
    ok = t.shape()[i] == 1 || t.shape()[i] == shape[off + i];
  if (!ok)
    return nodeError(n, "{} of shape {} does not broadcast to {}", what, shapeStr(t.shape()), shapeStr(shape));
  Shape strides(shape.size(), 0), cs = stridesOf(t.shape());
  for (size_t i = 0; i < t.shape().size(); ++i)
    strides[off + i] = t.shape()[i] == 1 ? 0 : cs[i];
  Tensor r = Tensor::zeros(t.dtype(), shape);
  copyStrided(t.data(), 0, shape, strides, r.mutableData(), elemBytes(t.dtype()));
  return r;
}

/// Normalizes rows of `len` elements: y = (x - mean) * invstd * scale + bias (or the
/// RMS form, without the mean). Statistics in double; mean / invstd per row if asked.
template <typename T>
void normRows(const T *x, int64_t rows, int64_t len, const T *scale, const T *bias, double eps,
              bool rms, T *y, float *meanOut, float *invOut) {
  parallelFor(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(len, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T *xr = x + r * len;
      double mean = 0, sq = 0;
      if (!rms) {
        for (int64_t i = 0; i < len; ++i)
          mean += xr[i];
        mean /= static_cast<double>(len);
      }
      for (int64_t i = 0; i < len; ++i) {
        const double d = xr[i] - mean;
        sq += d * d;
      }
      const double inv = 1.0 / std::sqrt(sq / static_cast<double>(len) + eps);
      T *yr = y + r * len;
      for (int64_t i = 0; i < len; ++i) {
        double v = (xr[i] - mean) * inv * static_cast<double>(scale[i]);
        if (bias)
          v += static_cast<double>(bias[i]);
        yr[i] = static_cast<T>(v);
      }
      if (meanOut)
        meanOut[r] = static_cast<float>(mean);
      if (invOut)
        invOut[r] = static_cast<float>(inv);
    }
  });
}

/// Shared body of LayerNormalization / SimplifiedLayerNormalization / RMSNormalization.
Expected<TensorList> norm(const Node &n, const Tensor &x, const Tensor &scale, const Tensor *bias,
                          bool rms, int64_t axisAttr, int statsOutputs) {
  LLMOPT_ASSIGN_OR_RETURN(int64_t axis, normalizeAxis(n, axisAttr, x.rank()));
  const Shape normShape(x.shape().begin() + axis, x.shape().end());
  Shape statShape = x.shape();
  for (size_t i = static_cast<size_t>(axis); i < statShape.size(); ++i)
    statShape[i] = 1;
  const int64_t len = numelOf(normShape), rows = len == 0 ? 0 : x.numel() / len;
  if (scale.dtype() != x.dtype() || (bias && bias->dtype() != x.dtype()))
    return nodeError(n, "scale and bias must have X's type {}", dtypeStr(x.dtype()));
  LLMOPT_ASSIGN_OR_RETURN(Tensor sc, expandTo(n, scale, normShape, "scale"));
  Tensor bi;
  if (bias) {
    LLMOPT_ASSIGN_OR_RETURN(bi, expandTo(n, *bias, normShape, "bias"));
  }
  const float eps = n.attrFloat("epsilon", 1e-5f);
  return visitFloat(n, x.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    Tensor y = Tensor::zeros(x.dtype(), x.shape());
    Tensor mean = Tensor::zeros(DType::F32, statShape), inv = Tensor::zeros(DType::F32, statShape);
    normRows<T>(dataOf<T>(x), rows, len, dataOf<T>(sc), bias ? dataOf<T>(bi) : nullptr, eps, rms,
                mutableDataOf<T>(y), mutableDataOf<float>(mean), mutableDataOf<float>(inv));
    if (statsOutputs == 2)
      return TensorList{y, mean, inv};
    if (statsOutputs == 1)
      return TensorList{y, inv};
    return TensorList{y};
  });
}

Expected<TensorList> kLayerNorm(const Node &n, const InputList &in) {
  return norm(n, *in[0], *in[1], optInput(in, 2), false, n.attrInt("axis", -1), 2);
}

Expected<TensorList> kSimplifiedLayerNorm(const Node &n, const InputList &in) {
  return norm(n, *in[0], *in[1], nullptr, true, n.attrInt("axis", -1), 1);
}

Expected<TensorList> kRMSNorm(const Node &n, const InputList &in) {
  return norm(n, *in[0], *in[1], nullptr, true, n.attrInt("axis", -1), 0);
}

/// com.microsoft::Skip[Simplified]LayerNormalization: s = input + skip (+ bias), then
/// the norm over the last axis. Outputs: y, mean, inv_std_var, s.
Expected<TensorList> skipNorm(const Node &n, const InputList &in, bool rms) {
  const Tensor &x = *in[0], &skip = *in[1], &gamma = *in[2];
  const Tensor *beta = rms ? nullptr : optInput(in, 3);
  const Tensor *bias = optInput(in, rms ? 3 : 4);
  if (skip.dtype() != x.dtype())
    return nodeError(n, "skip must have input's type {}", dtypeStr(x.dtype()));
  LLMOPT_ASSIGN_OR_RETURN(Tensor sk, expandTo(n, skip, x.shape(), "skip"));
  LLMOPT_ASSIGN_OR_RETURN(Tensor sum, visitFloat(n, x.dtype(), [&](auto tag) -> Expected<Tensor> {
    using T = decltype(tag);
    Tensor s = mapBinary<T, T, T>(x, sk, x.shape(), x.dtype(), [](T a, T b) { return a + b; });
    if (bias)
      s = mapBinary<T, T, T>(s, *bias, x.shape(), x.dtype(), [](T a, T b) { return a + b; });
    return s;
  }));
  LLMOPT_ASSIGN_OR_RETURN(TensorList r, norm(n, sum, gamma, beta, rms, -1, 2));
  r.push_back(sum);
  return r;
}

Expected<TensorList> kSkipLayerNorm(const Node &n, const InputList &in) { return skipNorm(n, in, false); }
Expected<TensorList> kSkipSimplifiedLayerNorm(const Node &n, const InputList &in) {
  return skipNorm(n, in, true);
}

template <typename T> T geluErf(T x) {
  return static_cast<T>(0.5 * x * (1.0 + std::erf(x * 0.70710678118654752440)));
}
template <typename T> T geluTanh(T x) {
  const double k = 0.79788456080286535588; // sqrt(2/pi)
  return static_cast<T>(0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x))));
}

Expected<TensorList> gelu(const Node &n, const Tensor &x, bool tanhForm) {
  return visitFloat(n, x.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    if (tanhForm)
      return TensorList{mapUnary<T, T>(x, x.dtype(), [](T v) { return geluTanh(v); })};
    return TensorList{mapUnary<T, T>(x, x.dtype(), [](T v) { return geluErf(v); })};
  });
}

Expected<TensorList> kGelu(const Node &n, const InputList &in) {
  const std::string approx = n.attrString("approximate", "none");
  if (approx != "none" && approx != "tanh")
    return nodeError(n, "approximate must be 'none' or 'tanh', got '{}'", approx);
  return gelu(n, *in[0], approx == "tanh");
}

Expected<TensorList> kMsGelu(const Node &n, const InputList &in) { return gelu(n, *in[0], false); }

Expected<TensorList> kFastGelu(const Node &n, const InputList &in) {
  const Tensor *bias = optInput(in, 1);
  if (!bias)
    return gelu(n, *in[0], true);
  const Tensor &x = *in[0];
  LLMOPT_ASSIGN_OR_RETURN(Shape s, broadcastShapes(n, {&x.shape(), &bias->shape()}));
  return visitFloat(n, x.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    return TensorList{mapBinary<T, T, T>(x, *bias, s, x.dtype(), [](T a, T b) { return geluTanh<T>(a + b); })};
  });
}

/// llmopt::SwiGLU: gate * sigmoid(gate) * up, broadcasting (fuse-swiglu).
Expected<TensorList> kSwiGLU(const Node &n, const InputList &in) {
  const Tensor &gate = *in[0], &up = *in[1];
  if (gate.dtype() != up.dtype())
    return nodeError(n, "gate and up must have one type, got {} and {}", dtypeStr(gate.dtype()),
                     dtypeStr(up.dtype()));
  LLMOPT_ASSIGN_OR_RETURN(Shape s, broadcastShapes(n, {&gate.shape(), &up.shape()}));
  return visitFloat(n, gate.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    return TensorList{mapBinary<T, T, T>(gate, up, s, gate.dtype(), [](T g, T u) {
      return static_cast<T>(g / (T(1) + std::exp(-g)) * u);
    })};
  });
}

} // namespace

void addNnKernels(KernelTable &t) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  t.push_back({OpKind::LayerNormalization, kLayerNorm, 1, kMax, true});
  t.push_back({OpKind::SimplifiedLayerNormalization, kSimplifiedLayerNorm, 1, kMax, true});
  t.push_back({OpKind::RMSNormalization, kRMSNorm, 1, kMax, true});
  t.push_back({OpKind::SkipLayerNormalization, kSkipLayerNorm, 1, kMax, true});
  t.push_back({OpKind::SkipSimplifiedLayerNormalization, kSkipSimplifiedLayerNorm, 1, kMax, true});
  t.push_back({OpKind::Gelu, kGelu, 20, kMax, true});
  t.push_back({OpKind::MsGelu, kMsGelu, 1, kMax, true});
  t.push_back({OpKind::FastGelu, kFastGelu, 1, kMax, true});
  t.push_back({OpKind::SwiGLU, kSwiGLU, 1, kMax, true});
}

} // namespace llmopt::interp

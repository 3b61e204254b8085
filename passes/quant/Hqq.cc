// HQQ's zero-point optimisation, per block, in scalar code.
#include "passes/quant/Hqq.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace llmopt::quantpass {

namespace {

constexpr int kIters = 20;
constexpr float kLpNorm = 0.7f, kBeta = 10.f, kKappa = 1.01f;

/// The generalised soft-thresholding operator for the l_p norm.
float shrink(float x, float beta) {
  const float ax = std::fabs(x);
  const float t = ax - (1.f / beta) * std::pow(ax + 1e-8f, kLpNorm - 1.f);
  return t > 0.f ? std::copysign(t, x) : 0.f;
}

} // namespace

quant::BlockParams hqqBlock(const float *x, int64_t n, int64_t stride, int bits,
                            bool integerZeroPoints) {
  const float qmax = static_cast<float>((1 << bits) - 1);
  float lo = std::numeric_limits<float>::max(), hi = -lo;
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, x[i * stride]);
    hi = std::max(hi, x[i * stride]);
  }
  const float range = hi - lo > 0.f ? hi - lo : qmax; // a constant block: scale 1
  const float s = std::min(qmax / range, 2e4f);       // inverse scale, clamped as HQQ does
  float z = std::roundf(-lo * s), bestZ = z, bestErr = std::numeric_limits<float>::max();
  float beta = kBeta;
  for (int it = 0; it < kIters; ++it) {
    double err = 0, zsum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float w = x[i * stride];
      const float wq = std::clamp(std::roundf(w * s + z), 0.f, qmax);
      const float e = w - (wq - z) / s;
      err += std::fabs(e);
      zsum += wq - (w - shrink(e, beta)) * s;
    }
    const float meanErr = static_cast<float>(err / static_cast<double>(n));
    if (!(meanErr < bestErr))
      break;
    bestErr = meanErr;
    bestZ = z;
    z = static_cast<float>(zsum / static_cast<double>(n));
    beta *= kKappa;
  }
  if (!integerZeroPoints)
    return {1.f / s, bestZ};
  const float zi = std::clamp(std::roundf(bestZ), 0.f, qmax);
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float w = x[i * stride];
    const float d = std::clamp(std::roundf(w * s + zi), 0.f, qmax) - zi;
    num += static_cast<double>(w) * d;
    den += static_cast<double>(d) * d;
  }
  const float refit = den > 0 ? static_cast<float>(num / den) : 0.f;
  return {refit > 0.f ? refit : 1.f / s, zi};
}

Expected<std::vector<quant::BlockParams>> hqqParams(const Tensor &w, const QuantEncoding &enc,
                                                    bool integerZeroPoints) {
  if (enc.symmetric)
    return errorf("HQQ optimises a zero point: it needs an asymmetric format");
  if (w.dtype() != DType::F32)
    return errorf("only f32 tensors are quantized, got {}", dtypeName(w.dtype()));
  LLMOPT_ASSIGN_OR_RETURN(quant::BlockIndexer ix, quant::BlockIndexer::make(w.shape(), enc));
  const float *x = reinterpret_cast<const float *>(w.data());
  std::vector<quant::BlockParams> out(static_cast<size_t>(ix.numScales()));
  std::vector<float> buf;
  for (int64_t s = 0; s < ix.numScales(); ++s) {
    const auto spans = ix.spans(s);
    if (spans.size() == 1) {
      out[static_cast<size_t>(s)] = hqqBlock(x + spans[0].start, spans[0].count, spans[0].stride,
                                             enc.bits, integerZeroPoints);
      continue;
    }
    buf.clear();
    for (const auto &sp : spans)
      for (int64_t j = 0; j < sp.count; ++j)
        buf.push_back(x[sp.start + j * sp.stride]);
    out[static_cast<size_t>(s)] =
        hqqBlock(buf.data(), static_cast<int64_t>(buf.size()), 1, enc.bits, integerZeroPoints);
  }
  return out;
}

} // namespace llmopt::quantpass

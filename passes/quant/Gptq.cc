// GPTQ: see Gptq.h for the algorithm and how it follows the reference.
#include "passes/quant/Gptq.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <Eigen/Core>

#include "backend/interp/Linalg.h"
#include "passes/calib/InverseHessian.h"

namespace llmopt::quantpass {

using calib::MatD;

double hessianError(const float *a, const float *b, int64_t K, int64_t N,
                    const std::vector<double> &h) {
  std::vector<float> d(static_cast<size_t>(K * N)), hd(static_cast<size_t>(K * N));
  for (int64_t i = 0; i < K * N; ++i)
    d[static_cast<size_t>(i)] = a[i] - b[i];
  std::vector<float> hf(h.begin(), h.end());
  interp::gemm(hf.data(), K, d.data(), N, hd.data(), N, K, K, N);
  double s = 0;
  for (int64_t i = 0; i < K * N; ++i)
    s += static_cast<double>(hd[static_cast<size_t>(i)]) * d[static_cast<size_t>(i)];
  return s;
}

double hessianEnergy(const float *w, int64_t K, int64_t N, const std::vector<double> &h) {
  const std::vector<float> zeros(static_cast<size_t>(K * N), 0.f);
  return hessianError(w, zeros.data(), K, N, h);
}

double relativeHessianError(const float *original, const float *changed, int64_t K, int64_t N,
                            const std::vector<double> &h) {
  const double energy = hessianEnergy(original, K, N, h);
  return energy > 0 ? hessianError(original, changed, K, N, h) / energy : 0.0;
}

Expected<GptqFactor> gptqFactor(const std::vector<double> &h, int64_t K, const GptqOptions &o) {
  if (static_cast<int64_t>(h.size()) != K * K)
    return internalErrorf("GPTQ: Hessian has {} entries for K = {}", h.size(), K);
  GptqFactor f;
  f.K = K;
  MatD hm = Eigen::Map<const MatD>(h.data(), K, K);
  f.dead.assign(static_cast<size_t>(K), 0);
  for (int64_t k = 0; k < K; ++k)
    if (hm(k, k) == 0) {
      hm(k, k) = 1;
      f.dead[static_cast<size_t>(k)] = 1;
    }
  f.perm.resize(static_cast<size_t>(K));
  std::iota(f.perm.begin(), f.perm.end(), 0);
  if (o.actOrder) {
    std::stable_sort(f.perm.begin(), f.perm.end(),
                     [&](int64_t a, int64_t b) { return hm(a, a) > hm(b, b); });
    MatD hp(K, K);
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = 0; j < K; ++j)
        hp(i, j) = hm(f.perm[static_cast<size_t>(i)], f.perm[static_cast<size_t>(j)]);
    hm = std::move(hp);
  }
  f.damp = o.damp;
  LLMOPT_ASSIGN_OR_RETURN(MatD U, calib::inverseHessianFactor(hm, f.damp, "GPTQ"));
  f.u.assign(U.data(), U.data() + K * K);
  f.actOrder = o.actOrder;
  return f;
}

Expected<GptqResult> gptqQuantize(const Tensor &w, const std::vector<double> &h,
                                  const QuantEncoding &enc, const GptqOptions &o) {
  if (w.dtype() != DType::F32 || w.rank() != 2)
    return errorf("GPTQ quantizes 2-D f32 weights, got {}", toString(w.type()));
  LLMOPT_ASSIGN_OR_RETURN(GptqFactor f, gptqFactor(h, w.shape()[0], o));
  return gptqQuantize(w, f, h, enc, o);
}

namespace {
/// gptqQuantize with the block parameters fitted per block (`fixed` null) or given.
Expected<GptqResult> quantizeImpl(const Tensor &w, const GptqFactor &f,
                                  const std::vector<double> &h, const QuantEncoding &enc,
                                  const GptqOptions &o,
                                  const std::vector<quant::BlockParams> *fixed,
                                  bool floatZeroPoints) {
  if (w.dtype() != DType::F32 || w.rank() != 2)
    return errorf("GPTQ quantizes 2-D f32 weights, got {}", toString(w.type()));
  const int64_t K = w.shape()[0], N = w.shape()[1];
  if (f.K != K || f.actOrder != o.actOrder)
    return internalErrorf("GPTQ: factor for K = {} (act-order {}) used for K = {} (act-order {})",
                          f.K, f.actOrder, K, o.actOrder);
  if (enc.axis != 0 || enc.blockSize <= 0)
    return internalErrorf("GPTQ needs blocks along axis 0");
  const int64_t bs = enc.blockSize, nb = (K + bs - 1) / bs;
  const quant::IntRange range = quant::storedRange(enc.bits, enc.symmetric);
  const float *w0 = reinterpret_cast<const float *>(w.data());
  Eigen::Map<const MatD> U(f.u.data(), K, K);
  const std::vector<int64_t> &perm = f.perm;

  std::vector<float> W(w0, w0 + K * N);
  for (int64_t k = 0; k < K; ++k)
    if (f.dead[static_cast<size_t>(k)])
      std::fill(W.begin() + k * N, W.begin() + (k + 1) * N, 0.f);

  // Row order: natural, or decreasing H_kk (act-order) with the block parameters fixed up
  // front from the original weight.
  if (fixed && (o.actOrder || fixed->size() != static_cast<size_t>(nb * N)))
    return internalErrorf("GPTQ on a fixed grid: {} block parameters for {} blocks x {} columns "
                          "(act-order {})", fixed->size(), nb, N, o.actOrder);
  std::vector<quant::BlockParams> params =
      fixed ? *fixed : std::vector<quant::BlockParams>(static_cast<size_t>(nb * N));
  auto fitBlock = [&](const float *rows, int64_t blk) {
    if (fixed)
      return;
    const int64_t k0 = blk * bs, n = std::min(bs, K - k0);
    for (int64_t j = 0; j < N; ++j)
      params[static_cast<size_t>(blk * N + j)] =
          quant::rtnParams(rows + k0 * N + j, n, N, enc.bits, enc.symmetric);
  };
  if (o.actOrder) {
    for (int64_t b = 0; b < nb; ++b)
      fitBlock(W.data(), b);
    std::vector<float> wp(W.size());
    for (int64_t i = 0; i < K; ++i)
      std::copy_n(W.begin() + perm[static_cast<size_t>(i)] * N, N, wp.begin() + i * N);
    W = std::move(wp);
  }

  GptqResult res;
  res.dampUsed = f.damp;

  // Processing order is row i (original row perm[i]); W is kept in processing order.
  std::vector<float> err, uT;
  for (int64_t i1 = 0; i1 < K; i1 += o.batch) {
    const int64_t i2 = std::min(i1 + o.batch, K), count = i2 - i1;
    err.assign(static_cast<size_t>(count * N), 0.f);
    for (int64_t i = i1; i < i2; ++i) {
      const int64_t orig = perm[static_cast<size_t>(i)], blk = orig / bs;
      if (!o.actOrder && orig % bs == 0)
        fitBlock(W.data(), blk); // natural order: processing row == original row
      float *row = W.data() + i * N;
      float *e = err.data() + (i - i1) * N;
      const double d = U(i, i);
      for (int64_t j = 0; j < N; ++j) {
        const quant::BlockParams &p = params[static_cast<size_t>(blk * N + j)];
        const float q = quant::dequantizeValue(quant::quantizeValue(row[j], p, range), p);
        e[j] = static_cast<float>((row[j] - q) / d);
        row[j] = q;
      }
      calib::propagateInBatch(W.data(), K, N, U.data(), i, i2, e);
    }
    calib::updateAfterBatch(W.data(), K, N, U.data(), i1, i2, err.data(), uT);
  }

  // Back to natural row order; W now holds values on the quantization grid.
  std::vector<float> q(W.size());
  for (int64_t i = 0; i < K; ++i)
    std::copy_n(W.begin() + i * N, N, q.begin() + perm[static_cast<size_t>(i)] * N);
  Tensor qf = Tensor::fromVector(DType::F32, {K, N}, q);
  LLMOPT_ASSIGN_OR_RETURN(res.quantized, quant::quantizeWithParams(qf, enc, params, floatZeroPoints));

  if (!o.measure)
    return res;
  LLMOPT_ASSIGN_OR_RETURN(Tensor rtn, fixed ? quant::quantizeWithParams(w, enc, params, floatZeroPoints)
                                             : quant::quantizeRtn(w, enc));
  LLMOPT_ASSIGN_OR_RETURN(Tensor rtnF, quant::dequantize(rtn, enc));
  LLMOPT_ASSIGN_OR_RETURN(Tensor gptqF, quant::dequantize(res.quantized, enc));
  res.outputError = hessianError(w0, reinterpret_cast<const float *>(gptqF.data()), K, N, h);
  res.rtnOutputError = hessianError(w0, reinterpret_cast<const float *>(rtnF.data()), K, N, h);
  return res;
}

} // namespace

Expected<GptqResult> gptqQuantize(const Tensor &w, const GptqFactor &f,
                                  const std::vector<double> &h, const QuantEncoding &enc,
                                  const GptqOptions &o) {
  return quantizeImpl(w, f, h, enc, o, nullptr, false);
}

Expected<GptqResult> gptqQuantizeOnGrid(const Tensor &w, const GptqFactor &f,
                                        const std::vector<double> &h, const QuantEncoding &enc,
                                        const GptqOptions &o,
                                        const std::vector<quant::BlockParams> &params,
                                        bool floatZeroPoints) {
  return quantizeImpl(w, f, h, enc, o, &params, floatZeroPoints);
}

} // namespace llmopt::quantpass

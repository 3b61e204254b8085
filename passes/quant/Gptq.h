// GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative
// Pre-trained Transformers"), after the reference implementation (IST-DASLab/gptq,
// gptq.py: fasterquant). For a weight W [K, N] (our MatMul layout: row k = input channel
// k, the reference's column k) and the calibration Hessian H = X^T X:
//
//   dead channels (H_kk = 0): H_kk = 1, W[k, :] = 0
//   H += damp * mean(diag H) * I
//   U = chol(H^-1) (upper)                       the inverse Hessian's Cholesky factor
//   for each batch of `batch` rows [i1, i2):      lazy batch updates
//     for k in [i1, i2):
//       at the first row of a quantization block: the block's parameters (rtnParams per
//         output column) from the current, already updated rows of that block
//       q = quantize-dequantize(W[k, :]);  e = (W[k, :] - q) / U_kk;  W[k, :] = q
//       W[j, :] -= e * U_kj          for j in (k, i2)
//     W[i2:, :] -= U[i1:i2, i2:]^T E  (one GEMM for the batch)
//
// Differences from the reference, both small: block parameters come from the current rows
// (the reference reads the pre-batch copy when a block starts inside a batch), and when the
// Cholesky factorization fails the damping is raised tenfold and retried (up to 4 times)
// instead of failing. act-order (`actOrder`) processes rows by decreasing H_kk with *static*
// groups: every block's parameters are fixed from the original weight first, so blocks stay
// contiguous rows and the result exports as ordinary blocked int4 with no permutation.
#pragma once

#include <cstdint>
#include <vector>

#include "ir/QuantFormats.h"
#include "ir/Tensor.h"

namespace llmopt::quantpass {

struct GptqOptions {
  double damp = 0.01;  ///< percdamp: fraction of mean(diag H) added to the diagonal
  int64_t batch = 128; ///< rows per lazy batch update
  bool actOrder = false;
  bool measure = true; ///< fill GptqResult's output errors (costs two K x K x N products)
};

/// What one GPTQ run measured, in the calibration output's units (sum over rows).
struct GptqResult {
  Tensor quantized;
  double dampUsed = 0;
  /// tr(dW^T H dW) for the GPTQ result and for round-to-nearest with the same encoding:
  /// the squared output error over the calibration rows.
  double outputError = 0, rtnOutputError = 0;
};

/// The part of GPTQ that depends on the Hessian alone: dead channels, the row order and
/// the inverse Hessian's Cholesky factor. Weights that read the same activation (q, k, v;
/// gate, up) and every format tried for one weight share it.
struct GptqFactor {
  int64_t K = 0;
  std::vector<double> u;       ///< K x K upper factor, row-major, in processing order
  std::vector<int64_t> perm;   ///< processing row i is original row perm[i]
  std::vector<uint8_t> dead;   ///< H_kk == 0 (original order)
  double damp = 0;             ///< the damping used (raised if the factorization failed)
  bool actOrder = false;
};
Expected<GptqFactor> gptqFactor(const std::vector<double> &h, int64_t K, const GptqOptions &o);

/// Quantizes f32 `w` [K, N] per `enc` (blocked along axis 0) with Hessian `h` (K x K).
Expected<GptqResult> gptqQuantize(const Tensor &w, const std::vector<double> &h,
                                  const QuantEncoding &enc, const GptqOptions &o);
/// The same with the factor computed once (gptqFactor with the same options); `h` is read
/// only for the measured output errors (o.measure).
Expected<GptqResult> gptqQuantize(const Tensor &w, const GptqFactor &f,
                                  const std::vector<double> &h, const QuantEncoding &enc,
                                  const GptqOptions &o);
/// The same onto a fixed grid: `params` (blocks x N, block-major, as quant::storedParams
/// returns them; `floatZeroPoints` as in quant::quantizeWithParams) are used as given
/// instead of being fitted per block, so the result keeps a stored weight's scales and zero
/// points (distill-reconstruct rounds a refit weight back onto its grid with it).
/// act-order is not supported here (the rows go in natural order).
Expected<GptqResult> gptqQuantizeOnGrid(const Tensor &w, const GptqFactor &f,
                                        const std::vector<double> &h, const QuantEncoding &enc,
                                        const GptqOptions &o,
                                        const std::vector<quant::BlockParams> &params,
                                        bool floatZeroPoints);

/// tr(dW^T H dW) for dW = a - b (both f32 [K, N]) and `h` K x K: the summed squared
/// difference of X a and X b over the rows that built h.
double hessianError(const float *a, const float *b, int64_t K, int64_t N,
                    const std::vector<double> &h);
/// tr(W^T H W): the summed squared output X w, the scale hessianError is relative to.
double hessianEnergy(const float *w, int64_t K, int64_t N, const std::vector<double> &h);
/// hessianError(original, changed) / hessianEnergy(original) (0 when the energy is 0).
double relativeHessianError(const float *original, const float *changed, int64_t K, int64_t N,
                            const std::vector<double> &h);

} // namespace llmopt::quantpass

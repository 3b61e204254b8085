// SmoothQuant's scale migration (Xiao et al., 2023, "SmoothQuant: Accurate and Efficient
// Post-Training Quantization for Large Language Models"), after the reference
// (mit-han-lab/smoothquant, smoothquant/smooth.py: smooth_ln_fcs).
//
// For an activation X [.., K] read by MatMul weights W_i [K, N_i] (row k = input channel):
//   s_k = max(max|X_k|^alpha / max(max_i max_n |W_i[k, n]|, 1e-5)^(1 - alpha), 1e-5)
// then X -> X / s (folded into X's producer) and W_i rows *= s: the function is unchanged,
// and the per-channel outliers of X move into the weights, which quantize per column.
// max|X_k| is the calibration statistic (calib::ActStats::maxAbs). Unlike the reference, a
// channel that calibration never saw nonzero keeps s_k = 1 (the reference's clamp would
// give it 1e-5, i.e. multiply any unseen value by 1e5 before it is quantized).
//
// Where the 1/s goes (the first two are Awq.cc's folds; only what the pattern names may
// read the rescaled constants):
//   - X = Mul(a, c), c a constant of K elements (RMSNorm / LayerNorm weight): c /= s;
//   - X = Mul(a, b), b = MatMul(y, Wp), Wp [K', K] constant (SwiGLU's up projection feeding
//     the down projection): Wp[:, k] /= s_k;
//   - X = Add(Mul(a, g), beta), g and beta constants of K elements (LayerNorm with bias,
//     the reference's ln.weight / ln.bias): g /= s, beta /= s.
// X's other readers may only be Shape / Size (exporters read the shape of the normed
// hidden state), which do not see the scale. Anything else (attention output -> o_proj,
// a residual stream read by a non-MatMul) is left unscaled and counted.
#pragma once

#include <string>

#include "passes/Pass.h"
#include "passes/calib/Calibration.h"

namespace llmopt::quantpass {

/// What smoothQuant did, for the report line.
struct SmoothStats {
  int64_t candidates = 0; ///< activations read by the weights given
  int64_t normFolds = 0, biasNormFolds = 0, matmulFolds = 0;
  int64_t noFold = 0;     ///< candidates left unscaled (no foldable producer or other readers)
  /// Geometric means over the smoothed activations of max_k m_k / mean_k m_k, m_k the
  /// calibration max|X_k|: how far the worst channel sticks out, before and after.
  double outlierBefore = 1, outlierAfter = 1;
  int64_t smoothed() const { return normFolds + biasNormFolds + matmulFolds; }
  /// "12 of 16 activations smoothed (alpha 0.50: 8 into norm weights, ...)".
  std::string summary(double alpha) const;
};

/// Migrates activation outliers into every foldable group of weights that `isWeight`
/// accepts (constant 2-D f32 MatMul B's that will be quantized), using the per-channel
/// max|x| of `stats` (keyed by the MatMul's A input). The graph computes the same function
/// up to float rounding; weights and folded constants are replaced by new constants.
/// With `onGroup`, each smoothed group's final weights are handed over as soon as no
/// other fold can touch them (groups are applied in reverse topological order), so a
/// caller can quantize and free them one layer at a time.
using GroupCallback = std::function<Status(const std::vector<Value *> &weights)>;
Expected<SmoothStats> smoothQuant(Graph &g, const calib::Stats &stats, double alpha,
                                  const std::function<bool(const Value *)> &isWeight,
                                  const GroupCallback &onGroup = nullptr);

} // namespace llmopt::quantpass

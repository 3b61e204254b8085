// AWQ (Lin et al., 2023, "AWQ: Activation-aware Weight Quantization"), after the reference
// (mit-han-lab/llm-awq, awq/quantize/auto_scale.py: auto_scale_block / _search_module_scale).
//
// For an activation X read by a group of MatMul weights W_i [K, N_i], a per-channel scale
// s (K) turns X W_i into (X / s)(diag(s) W_i); quantizing diag(s) W_i instead of W_i
// protects the channels where |x| is large. As in the reference, the search tries
//   s = mean|x|^alpha, alpha = j / grid for j = 0 .. grid-1, clamped >= 1e-4 and divided by
//   sqrt(max s * min s),
// and keeps the alpha with the least error. The error is where this differs: the reference
// runs the block forward on the calibration samples; here it is the exact squared output
// error over the same rows, from the calibration Hessian H = X^T X:
//   sum_i tr(dW_i^T H dW_i),  dW_i = W_i - diag(1/s) Q(diag(s) W_i)
// (alpha = 0 is s = 1, plain round-to-nearest, so the chosen scale never does worse on it).
//
// The 1/s must be folded into whatever produces X, so no op is added at run time:
//   - X = Mul(a, c) with constant c of K elements (RMSNorm/LayerNorm's weight): c /= s;
//   - X = Mul(a, b) where b = MatMul(y, Wp) with a constant Wp [K', K] read only there and
//     b read only by that Mul (SwiGLU's up projection feeding the down projection):
//     Wp[:, k] /= s_k.
// Activations with any other producer, or read by anything but the group's MatMuls, are
// left unscaled (the reference skips the same cases, e.g. v_proj -> o_proj under GQA).
// The reference's clipping search (auto_clip) is not done.
#pragma once

#include <functional>
#include <string>

#include "passes/Pass.h"

namespace llmopt::quantpass {

struct AwqOptions {
  int64_t grid = 20;
};

/// Searches and applies AWQ scales to every foldable activation's weights (the graph's
/// function is unchanged up to rounding); the weights are then quantized by RTN with the
/// same `encodingFor`. Returns a report fragment.
Expected<std::string> awqScale(Model &m, AnalysisManager &am, const AwqOptions &o,
                               const std::function<QuantEncoding(int64_t, int64_t)> &encodingFor);

} // namespace llmopt::quantpass

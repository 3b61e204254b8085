// Per-channel activation scaling that leaves a graph's function unchanged: X -> X / s is
// folded into the op that produces X, and the weights that read X take s on their rows
// (W_i[k, :] *= s_k, our MatMul layout [K, N]). AWQ (Awq.h) and SmoothQuant (SmoothQuant.h)
// choose s differently and share these folds:
//   Mul(a, c), c a constant of K elements (RMSNorm / LayerNorm weight)   => c /= s
//   Mul(a, MatMul(y, Wp)), Wp [K', K] constant (SwiGLU's up projection
//     feeding the down projection)                                       => Wp[:, k] /= s_k
//   Add(Mul(a, g), beta), g and beta constants of K elements (LayerNorm
//     with bias)                                                         => g /= s, beta /= s
// Each folded constant must be read only by the op the pattern names. X's other readers may
// only be Shape / Size, which do not see the scale.
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "ir/Graph.h"

namespace llmopt::quantpass {

/// Where an activation's 1/s goes.
struct ScaleFold {
  enum class Kind { Vector, Columns, VectorAndBias };
  Kind kind = Kind::Vector;
  Value *constant = nullptr; ///< c (Vector), Wp (Columns) or g (VectorAndBias)
  Value *bias = nullptr;     ///< beta (VectorAndBias)
};

/// How the producer of `x` (K channels) can absorb 1/s, if one of the patterns above fits.
std::optional<ScaleFold> findScaleFold(const Value *x, int64_t K);

/// Readers that see only the shape of a value, not its elements.
bool readsShapeOnly(const Node *n);

/// The distinct weights the MatMuls reading `x` multiply it by, as the graph has them now.
std::vector<Value *> scaledWeights(const Value *x);

/// True when every reader of `x` is a MatMul reading it as A with a weight `isWeight`
/// accepts, or a shape-only reader, and every MatMul user of those weights reads `x`.
bool isScalable(const Value *x, const std::function<bool(const Value *)> &isWeight);

/// W_i rows *= s for each of `ws`; the fold's constant(s) take 1/s. Weights and folded
/// constants are replaced by new constants (the old ones are left unused).
void applyScale(Graph &g, const std::vector<Value *> &ws, const ScaleFold &fold,
                const std::vector<double> &s);

} // namespace llmopt::quantpass

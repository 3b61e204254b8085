// fuse-layernorm: lift the decomposed layer norm into one LayerNormalization.
#pragma once

#include "passes/Pass.h"

namespace llmopt {

/// LayerNorm as torch exports it below opset 17, y = (x - mean) / sqrt(var + eps) * g + b:
///
///   %m  = ReduceMean(%x, axes=[-1])
///   %d  = Sub(%x, %m)
///   %v  = ReduceMean(Pow(%d, 2), axes=[-1])
///   %s  = Sqrt(Add(%v, eps))
///   %y  = Add(Mul(Div(%d, %s), %g), %b)   =>   %y = LayerNormalization(%x, %g, %b, axis=-1, epsilon=eps)
///
/// Mul/Add operands in either order; without the final Add the bias is left out. `g`, `b`
/// and `eps` must be constants (g, b vectors), both means over the last axis only.
/// LayerNormalization is standard from opset 17; --target=onnx decomposes it below that.
class FuseLayerNormPass : public Pass {
public:
  std::string_view name() const override { return "fuse-layernorm"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
};

} // namespace llmopt

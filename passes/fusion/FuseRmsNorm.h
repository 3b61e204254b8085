// fuse-rmsnorm: lift the decomposed RMS norm into one SimplifiedLayerNormalization.
#pragma once

#include "passes/Pass.h"

namespace llmopt {

/// RMSNorm as exporters write HF's LlamaRMSNorm, y = w * x / sqrt(mean(x^2, -1) + eps):
///
///   %sq = Pow(%x, 2)                  (or Mul(%x, %x))
///   %ms = ReduceMean(%sq, axes=[-1])  (keepdims)
///   %v  = Add(%ms, eps)
///   %r  = Sqrt(%v)
///   %i  = Div(1, %r)                  (or Reciprocal(%r); or %n = Div(%x, %r))
///   %n  = Mul(%x, %i)
///   %y  = Mul(%w, %n)         =>    %y = SimplifiedLayerNormalization(%x, %w, axis=-1, epsilon=eps)
///
/// Every Mul/Add may have its operands in either order. `w` and `eps` must be constants
/// (w a vector), the mean over the last axis only, and each intermediate read once.
/// --target=ort writes the op as it is (ORT runs it in the default domain); --target=onnx
/// writes RMSNormalization at opset 23, the decomposition below that.
class FuseRmsNormPass : public Pass {
public:
  std::string_view name() const override { return "fuse-rmsnorm"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
};

} // namespace llmopt

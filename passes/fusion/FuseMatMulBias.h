// fuse-matmul-bias: lift MatMul + constant bias into one llmopt::MatMulBias.
#pragma once

#include "passes/Pass.h"

namespace llmopt {

/// A linear layer with bias:
///
///   %m = MatMul(%x, %W)
///   %y = Add(%m, %b)           =>   %y = llmopt::MatMulBias(%x, %W, %b)
///
/// `W` a constant float [K, N] (not quantized: quantize before fusing), `b` a constant
/// vector [N], the MatMul read once; Add operands in either order. Both ONNX targets write
/// MatMul + Add back (ONNX Runtime fuses them itself where its kernels gain).
class FuseMatMulBiasPass : public Pass {
public:
  std::string_view name() const override { return "fuse-matmul-bias"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
};

} // namespace llmopt

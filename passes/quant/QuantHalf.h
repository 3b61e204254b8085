// quant-fp16 / quant-bf16: weights stored in 16 bits, compute kept in f32.
#pragma once

#include <utility>

#include "passes/Pass.h"

namespace llmopt {

/// Stores every weight in f16 (bf16) and reads it through a Cast back to f32, so all
/// compute (MatMuls, norms, softmax, residual sums) stays f32:
///
///   %w = const f32[64,192] [...]           %w = const f16[64,192] hex"..."
///   %y = MatMul(%x, %w)             =>     %w_f32 = Cast(%w) {to = 1}
///                                          %y = MatMul(%x, %w_f32)
///
/// A weight is an f32 constant of rank >= 2 read by MatMul, Gemm or Gather (as the
/// table), directly or through a Transpose (a tied LM head): one Cast serves all its
/// readers, so a tied embedding is stored once. Norm scales, biases and other 1-D
/// constants stay f32. f16 values beyond +-65504 are clamped to it and counted (bf16
/// shares f32's range: a value rounding to inf is clamped likewise); nonzero values that
/// round to 0 are counted as flushed. Measured on ONNX Runtime 1.32's CPU provider: it
/// has f16 kernels for MatMul, Gemm, Add, Mul, Softmax, LayerNormalization and more, but
/// none for bf16 MatMul, and its f16 MatMul is no faster than f32 on AVX2 machines; it
/// folds Cast(f16 initializer) at session start, so the model runs at f32 speed from a
/// file half the size. Keeping compute in f32 is therefore the CPU target's choice.
namespace quantpass {
/// Stores f32 constant `c` as `to` (f16 or bf16, out-of-range values clamped) read through
/// a Cast back to f32: the new constant takes c's name, c is left unused. Adds to the
/// clamped / flushed-to-zero counts; returns the bytes before and after.
Expected<std::pair<int64_t, int64_t>> storeNarrow(Graph &g, Value *c, DType to, int64_t &clamped,
                                                  int64_t &flushed);
} // namespace quantpass

class QuantHalfPass : public Pass {
public:
  explicit QuantHalfPass(DType to) : to_(to) {}
  std::string_view name() const override { return to_ == DType::F16 ? "quant-fp16" : "quant-bf16"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  DType to_;
};

class QuantFp16Pass : public QuantHalfPass {
public:
  QuantFp16Pass() : QuantHalfPass(DType::F16) {}
};
class QuantBf16Pass : public QuantHalfPass {
public:
  QuantBf16Pass() : QuantHalfPass(DType::BF16) {}
};

} // namespace llmopt

// quant-int4: block-wise weight-only quantization of MatMul weights.
#pragma once

#include "passes/Pass.h"
#include "passes/PassOptions.h"

namespace llmopt {

struct QuantInt4Options {
  int bits = 4;               ///< 2, 3 (both in 4-bit containers), 4 or 8
  int64_t block = 32;         ///< elements per scale along K: a power of 2 in [16, 256]
  bool symmetric = true;      ///< default: sym for rtn, asym for hqq
  std::string method = "rtn"; ///< rtn | hqq | gptq | awq (gptq and awq need --calib)
  double damp = 0.01;         ///< gptq: fraction of mean(diag H) added to H's diagonal
  bool actOrder = false;      ///< gptq: rows by decreasing H_kk, static groups
  int64_t awqGrid = 20;       ///< awq: grid points for the scale exponent in [0, 1)
};
Expected<QuantInt4Options> parseQuantInt4Options(const PassOptionList &opts);

/// Replaces every constant 2-D f32 MatMul weight W [K, N] (and Gemm's B, after turning
/// the Gemm into MatMul + Add) by a quantized constant with blocks of `block` along K:
///
///   %w = const f32[64,192] [...]
///   %y = MatMul(%x, %w)
///     =>
///   %w = const f32[64,192] q<i4,bits=4,axis=0,block=32,sym> hex"..." scales=tensor<...>
///   %y = MatMul(%x, %w)
///
/// The MatMul stays; the writer lowers it (MatMulNBits for --target=ort, DequantizeLinear
/// + MatMul for --target=onnx, whose opset 21 this pass sets). Skipped, and counted in
/// the report line: weights with K or N below 16, weights also read by non-MatMul ops,
/// non-f32 weights, Gemms with alpha/beta != 1 or transA. method=hqq keeps fractional
/// zero points for --target=ort and rounds them (refitting the scale) for --target=onnx.
class QuantInt4Pass : public Pass {
public:
  explicit QuantInt4Pass(QuantInt4Options o) : opts_(std::move(o)) {}
  std::string_view name() const override { return "quant-int4"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  QuantInt4Options opts_;
};

} // namespace llmopt

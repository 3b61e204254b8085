// quant-int8: weight-only int8 quantization of MatMul weights.
#pragma once

#include "passes/Pass.h"
#include "passes/PassOptions.h"

namespace llmopt {

struct QuantInt8Options {
  bool symmetric = true;
  int64_t block = 128; ///< --target=ort only: elements per scale along K
};
Expected<QuantInt8Options> parseQuantInt8Options(const PassOptionList &opts);

/// Replaces every constant 2-D f32 MatMul weight W [K, N] by an 8-bit quantized
/// constant; the layout follows what each target runs best:
///
///   --target=ort:   blocks of `block` along K (axis 0)  -> MatMulNBits bits=8
///                   %w = const f32[64,192] q<i8,bits=8,axis=0,block=64,sym>
///   --target=onnx:  one scale per output channel (axis 1, no blocks)
///                   -> DequantizeLinear(axis=1) + MatMul (opset 13, any runtime)
///                   %w = const f32[64,192] q<i8,bits=8,axis=1,block=0,sym>
///
/// Per channel is the portable ONNX form, which every runtime with opset 13 runs (ONNX
/// Runtime 1.32 also fuses it into MatMulNBits bits=8, repeating each channel's scale over
/// blocks of 32); blocked int8 for --target=onnx is quant-int4<bits=8>. The default block
/// 128 costs 0.25 bits per weight of scales (32 would cost 1.0) for an error that int8's
/// 255 levels already keep small. Skips as quant-int4.
class QuantInt8Pass : public Pass {
public:
  explicit QuantInt8Pass(QuantInt8Options o) : opts_(o) {}
  std::string_view name() const override { return "quant-int8"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  QuantInt8Options opts_;
};

} // namespace llmopt

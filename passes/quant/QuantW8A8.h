// quant-w8a8: SmoothQuant scale migration, int8 weights, int8 activations at run time.
#pragma once

#include "passes/Pass.h"
#include "passes/PassOptions.h"

namespace llmopt {

struct QuantW8A8Options {
  double smooth = 0.5;   ///< SmoothQuant's alpha (migration strength)
  bool noSmooth = false; ///< `nosmooth`: quantize without migration (needs no --calib)
  bool perTensor = false; ///< `act=tensor`: DynamicQuantizeMatMul; `act=block`: MatMulNBits
  int64_t block = 128;   ///< act=block: elements per weight scale and per activation scale
};
Expected<QuantW8A8Options> parseQuantW8A8Options(const PassOptionList &opts);

/// SmoothQuant (passes/quant/SmoothQuant.h) with the per-channel max|x| of --calib, then
/// every constant 2-D f32 MatMul weight W [K, N] becomes int8 and its activation is
/// quantized to int8 when the model runs. Two forms (docs/quantization.md has the
/// measurements behind the default):
///
///   act=block (default): W int8 in blocks of `block` along K, symmetric, the IR's
///     quantized constant  %w = const f32[64,192] q<i8,bits=8,axis=0,block=64,sym>
///     --target=ort:  com.microsoft::MatMulNBits bits=8 accuracy_level=4 (ORT quantizes
///                    each row of A to int8 per block at run time, int32 block dots)
///     --target=onnx: DequantizeLinear {axis=0, block_size} + MatMul (opset 21), which
///                    ORT fuses into the same MatMulNBits
///   act=tensor: W int8 per output column (symmetric, [-127, 127]), A quantized to uint8
///     per tensor at run time (ONNX DynamicQuantizeLinear), one int8 GEMM:
///     --target=ort:  %y = com.microsoft::DynamicQuantizeMatMul(%x, %w_i8, %w_scale)
///     --target=onnx: %q, %s, %z = DynamicQuantizeLinear(%x)
///                    %y = Mul(Cast<to=f32>(MatMulInteger(%q, %w_i8, %z)), Mul(%s, %w_scale))
///                    (opset 11; ORT fuses it back into DynamicQuantizeMatMul)
///
/// Without --calib the pass fails unless `nosmooth`. Skips as quant-int8; activations
/// whose producer cannot absorb 1/s are quantized unsmoothed and counted.
class QuantW8A8Pass : public Pass {
public:
  explicit QuantW8A8Pass(QuantW8A8Options o) : opts_(o) {}
  std::string_view name() const override { return "quant-w8a8"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  QuantW8A8Options opts_;
};

} // namespace llmopt

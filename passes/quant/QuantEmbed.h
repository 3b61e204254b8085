// quant-embed: block-wise quantization of embedding tables (and a tied LM head).
#pragma once

#include "passes/Pass.h"
#include "passes/PassOptions.h"

namespace llmopt {

struct QuantEmbedOptions {
  int bits = 4;
  int64_t block = 32;
  bool symmetric = true;
  std::string method = "rtn";
};
Expected<QuantEmbedOptions> parseQuantEmbedOptions(const PassOptionList &opts);

/// Quantizes each embedding table E [V, H] read by Gather (axis 0) in blocks along H. A
/// tied LM head reads the same constant through a Transpose, so the table is quantized
/// once and stored once:
///
///   %e = const f32[256,64] [...]          %e = const f32[256,64] q<i4,bits=4,axis=1,block=32,sym>
///   %x = Gather(%e, %ids)                 %x = Gather(%e, %ids)
///   %t = Transpose(%e) {perm=[1,0]}  =>   %t = Transpose(%e) {perm=[1,0]}
///   %logits = MatMul(%h, %t)              %logits = MatMul(%h, %t)
///
/// The writer makes it GatherBlockQuantized + MatMulNBits over one set of initializers
/// (--target=ort) or DequantizeLinear + Gather and DequantizeLinear(Transpose(q)) +
/// MatMul (--target=onnx, opset 21 set here). A table read any other way, or with V or
/// H below 16, is left alone and counted. method=hqq uses integer zero points here
/// (GatherBlockQuantized takes no fractional ones).
class QuantEmbedPass : public Pass {
public:
  explicit QuantEmbedPass(QuantEmbedOptions o) : opts_(std::move(o)) {}
  std::string_view name() const override { return "quant-embed"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  QuantEmbedOptions opts_;
};

} // namespace llmopt

// Internal to the ONNX writer: writes the fused ops the fuse-* passes make (docs/fusion.md)
// as ops the target runs.
//
//   either target:  llmopt::SwiGLU(g, u)             => Mul(Mul(g, Sigmoid(g)), u)
//                   llmopt::MatMulBias(x, W, b)      => Add(MatMul(x, W), b)
//   target onnx:    SimplifiedLayerNormalization     => RMSNormalization (opset >= 23), else
//                                                       x * Reciprocal(Sqrt(ReduceMean(x^2) + eps)) * w
//                   LayerNormalization (opset < 17)  => the mean / variance decomposition
//                   com.microsoft::Gelu / FastGelu   => Gelu (opset >= 20), else erf / tanh forms
//                   RotaryEmbedding (4-D x)          => cos/sin rows Gathered at the positions,
//                                                       then x*cos + rotate(x)*sin on the halves
//                                                       (or the interleaved pairs)
//                   GroupQueryAttention,             => Reshape/Transpose heads, Concat the cache,
//                   MultiHeadAttention                  MatMul, scale, causal / padding mask,
//                                                       Softmax, MatMul (see lowerAttention)
// --target=ort writes ORT's contrib ops (and SimplifiedLayerNormalization) as they are.
#pragma once

#include "backend/onnx/QuantLowering.h"

namespace llmopt::onnxw {

class FusionLowering {
public:
  FusionLowering(const Model &m, const ExportOptions &opts, LoweringSink sink)
      : model_(m), opts_(opts), sink_(std::move(sink)) {}
  /// True when the lowering wrote node `n` (as other ops).
  Expected<bool> lowerNode(const Node &n);

private:
  struct Emit;
  Status lowerRope(Emit &e, const Node &n, int64_t opset);
  Status lowerAttention(Emit &e, const Node &n, int64_t opset);
  const Model &model_;
  const ExportOptions &opts_;
  LoweringSink sink_;
};

} // namespace llmopt::onnxw

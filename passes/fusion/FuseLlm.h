// fuse-llm: every fusion pass, in the order that lets each see what it needs.
#pragma once

#include "passes/Pass.h"

namespace llmopt {

/// Runs fuse-layernorm, fuse-rmsnorm, fuse-gelu, fuse-swiglu, fuse-rope, fuse-attention
/// and fuse-matmul-bias, in that order: the norms and activations first (their patterns
/// do not overlap), RoPE before attention (the attention matcher reads the rotated q/k
/// through RotaryEmbedding), and matmul-bias last so the projections the attention
/// matcher consumes are still plain MatMul + Add. Each pass writes its own report line.
/// With --target=onnx, fuse-attention is skipped (said in the report): the ONNX writer has
/// no standard form for GQA / MHA yet (RotaryEmbedding it writes back as standard ops).
class FuseLlmPass : public Pass {
public:
  std::string_view name() const override { return "fuse-llm"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
};

} // namespace llmopt

// fuse-swiglu: lift SiLU(gate) * up into one llmopt::SwiGLU.
#pragma once

#include "passes/Pass.h"

namespace llmopt {

/// The gated MLP activation of Llama-style models, SiLU exported as x * sigmoid(x):
///
///   %s = Sigmoid(%gate)
///   %a = Mul(%gate, %s)
///   %y = Mul(%a, %up)          =>   %y = llmopt::SwiGLU(%gate, %up)
///
/// Operands in either order; the Sigmoid and the first Mul read once. SwiGLU is llmopt's
/// own op (ONNX Runtime has none on CPU): it marks the gate/up pair for pruning and
/// codegen, and both ONNX targets write the three ops back.
class FuseSwiGluPass : public Pass {
public:
  std::string_view name() const override { return "fuse-swiglu"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
};

} // namespace llmopt

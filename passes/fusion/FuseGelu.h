// fuse-gelu: lift the erf and tanh forms of GELU into one op.
#pragma once

#include "passes/Pass.h"

namespace llmopt {

/// GELU as exporters write it, erf form (BERT) and tanh approximation (GPT-2):
///
///   %e = Erf(Div(%x, 1.4142135))              (or Mul(%x, 0.70710678))
///   %y = Mul(Mul(%x, Add(%e, 1)), 0.5)       =>   %y = com.microsoft::Gelu(%x)
///
///   %i = Add(%x, Mul(0.044715, Pow(%x, 3)))   (or Mul(%x, Mul(%x, %x)))
///   %t = Tanh(Mul(0.7978846, %i))
///   %y = Mul(Mul(%x, Add(%t, 1)), 0.5)       =>   %y = com.microsoft::FastGelu(%x)
///
/// The 0.5 may also sit on x (Mul(Mul(x, 0.5), ..)) or on the sum (Mul(x, Mul(.., 0.5)));
/// operands of Mul/Add in either order; constants within 1e-3 relative. --target=onnx
/// writes Gelu (approximate=none|tanh) at opset 20, the decomposition below that.
class FuseGeluPass : public Pass {
public:
  std::string_view name() const override { return "fuse-gelu"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
};

} // namespace llmopt

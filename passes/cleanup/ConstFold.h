// const-fold: evaluates nodes whose inputs are all constants.
#pragma once

#include <functional>

#include "passes/Pass.h"

namespace llmopt {

/// Replaces a node whose inputs are all constants (Constant nodes included) by the
/// constants the interpreter computes, keeping value names. Folding is skipped when it
/// would grow the model: an output over 4 KiB that is larger than the constants that
/// die with the node (DequantizeLinear of a weight, Cast of f16 weights to f32, Expand,
/// or Transpose of a tied embedding that the Gather still reads).
///
///   %s = const i64[2] [2, 8]
///   %t = Concat(%s, %u) {axis=0}    =>   %t = const i64[3] [2, 8, -1]
///   (%u = const i64[1] [-1])
class ConstFoldPass : public Pass {
public:
  std::string_view name() const override { return "const-fold"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
};

/// Folds every foldable node that `filter` accepts; returns how many were folded.
Expected<size_t> foldConstants(Graph &g, const std::function<bool(const Node &)> &filter);

} // namespace llmopt

// fold-shapes: turns shape computations on static dims into constants.
#pragma once

#include "passes/Pass.h"

namespace llmopt {

/// Infers shapes and the contents of small integer tensors, then replaces every
/// Shape / Size / Gather / Concat / ... result whose contents are all static numbers
/// by a constant. Values that depend on symbolic dims stay computed at run time.
///
///   %x: f32[2,8,64]
///   %s = Shape(%x)
///   %d = Gather(%s, %one) {axis=0}    =>   %d = const i64[] [8]
class FoldShapesPass : public Pass {
public:
  std::string_view name() const override { return "fold-shapes"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
};

/// What fold-shapes does, as a function (the fusion passes run it to read Slice bounds and
/// reshape targets that exporters compute from static dims): returns the nodes folded.
Expected<size_t> foldStaticShapes(Model &m);

/// Runs shape inference over the model (see passes/analysis/ShapeInference.h).
class InferShapesPass : public Pass {
public:
  std::string_view name() const override { return "infer-shapes"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
};

} // namespace llmopt

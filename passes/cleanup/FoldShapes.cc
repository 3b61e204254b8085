// fold-shapes: Shape/Size of static values become constants; the integer chains
// they fed are then folded by the constant folder.
#include "passes/cleanup/FoldShapes.h"

#include "passes/analysis/ShapeInference.h"
#include "passes/cleanup/Dce.h"

namespace llmopt {

namespace {


/// Replaces node results whose contents are statically known (Shape, Size and the
/// integer arithmetic on them) by constants that keep the values' names.
size_t foldKnown(Graph &g, const KnownValueMap &known) {
  size_t folded = 0;
  for (Node *n : g.nodeList()) {
    for (Graph *sg : n->subgraphs())
      folded += foldKnown(*sg, known);
    if (n->numOutputs() != 1 || !n->subgraphs().empty())
      continue;
    Value *out = n->output();
    const Type &t = out->type();
    if (!t.isTensor() || !t.isStaticShape() || t.rank() > 1 ||
        (t.elem != DType::I64 && t.elem != DType::I32))
      continue;
    auto values = knownInts(out, known);
    if (!values || static_cast<int64_t>(values->size()) != (t.rank() == 0 ? 1 : t.staticShape()[0]))
      continue;
    Tensor c = t.elem == DType::I64
                   ? Tensor::fromVector(DType::I64, t.staticShape(), *values)
                   : Tensor::fromVector(DType::I32, t.staticShape(),
                                        std::vector<int32_t>(values->begin(), values->end()));
    g.replaceWithConstant(out, std::move(c));
    g.eraseNode(n);
    ++folded;
  }
  return folded;
}

} // namespace

Expected<size_t> foldStaticShapes(Model &m) {
  size_t total = 0;
  for (int round = 0; round < 8; ++round) {
    KnownValueMap known;
    ShapeInferenceOptions so;
    so.knownValues = &known;
    LLMOPT_ASSIGN_OR_RETURN(ShapeInferenceResult r, inferShapes(m, so));
    (void)r;
    size_t folded = foldKnown(m.graph(), known);
    total += folded;
    if (folded == 0)
      break;
    eliminateDeadCode(m.graph());
  }
  return total;
}

Expected<PreservedAnalyses> FoldShapesPass::run(Model &m, AnalysisManager &am) {
  LLMOPT_ASSIGN_OR_RETURN(size_t total, foldStaticShapes(m));
  if (!total)
    return PreservedAnalyses::all();
  am.context().reportLines.push_back(fmt::format("fold-shapes: folded {} nodes", total));
  return PreservedAnalyses::none();
}

Expected<PreservedAnalyses> InferShapesPass::run(Model &m, AnalysisManager &am) {
  LLMOPT_ASSIGN_OR_RETURN(ShapeInferenceResult r, inferShapes(m));
  am.context().reportLines.push_back(fmt::format("infer-shapes: typed {} values, refined {}",
                                                 r.valuesTyped, r.valuesRefined));
  if (!r.unknownOps.empty())
    am.context().reportLines.push_back(fmt::format("infer-shapes: no rule for {} op kinds",
                                                   r.unknownOps.size()));
  return r.valuesTyped + r.valuesRefined ? PreservedAnalyses::none() : PreservedAnalyses::all();
}

} // namespace llmopt

// const-fold: evaluates constant nodes with the reference interpreter.
#include "passes/cleanup/ConstFold.h"

#include "backend/interp/Interpreter.h"
#include "passes/cleanup/Dce.h"

namespace llmopt {

namespace {

constexpr size_t kAlwaysFoldBytes = 4096;

bool foldable(const Node &n) {
  if (!n.subgraphs().empty() || n.opType().rfind("Random", 0) == 0)
    return false;
  for (const Value *in : n.inputs())
    if (in && (!in->isConstant() || in->type().quant || in->isGraphInput()))
      return false; // a graph input with a default can be overridden at run time
  return interp::canEvaluate(n);
}

} // namespace

Expected<size_t> foldConstants(Graph &g, const std::function<bool(const Node &)> &filter) {
  size_t folded = 0;
  for (Node *n : g.nodeList()) {
    for (Graph *sg : n->subgraphs()) {
      LLMOPT_ASSIGN_OR_RETURN(size_t inner, foldConstants(*sg, filter));
      folded += inner;
    }
    if (!foldable(*n) || !filter(*n))
      continue;
    std::vector<const Tensor *> ins;
    // Bytes that die with this node: constants only it reads.
    size_t freedBytes = 0;
    for (const Value *in : n->inputs()) {
      ins.push_back(in ? in->constant().get() : nullptr);
      if (in && !in->isGraphOutput() && in->users().size() == 1)
        freedBytes += in->constant()->nbytes();
    }
    auto outs = interp::evaluateNode(*n, ins);
    if (!outs || outs->size() != n->numOutputs())
      continue; // e.g. an op version the interpreter lacks: leave it for run time
    size_t outBytes = 0;
    for (const Tensor &t : *outs)
      outBytes += t.nbytes();
    if (outBytes > kAlwaysFoldBytes && outBytes > freedBytes)
      continue;
    for (size_t i = 0; i < n->numOutputs() && i < outs->size(); ++i) {
      Value *old = n->output(i);
      if (!old->hasUses() && !old->isGraphOutput())
        continue;
      g.replaceWithConstant(old, std::move((*outs)[i]));
    }
    g.eraseNode(n);
    ++folded;
  }
  return folded;
}

Expected<PreservedAnalyses> ConstFoldPass::run(Model &m, AnalysisManager &am) {
  LLMOPT_ASSIGN_OR_RETURN(size_t folded, foldConstants(m.graph(), [](const Node &) { return true; }));
  if (!folded)
    return PreservedAnalyses::all();
  eliminateDeadCode(m.graph());
  am.context().reportLines.push_back(fmt::format("const-fold: folded {} nodes", folded));
  return PreservedAnalyses::none();
}

} // namespace llmopt

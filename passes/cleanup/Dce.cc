// dce: removes unused nodes bottom-up so whole dead chains go in one sweep.
#include "passes/cleanup/Dce.h"

namespace llmopt {

static bool isDead(const Node *n) {
  for (const Value *out : n->outputs())
    if (out->hasUses() || out->isGraphOutput())
      return false;
  return true;
}

size_t eliminateDeadCode(Graph &g) {
  size_t removed = 0;
  std::vector<Node *> nodes = g.nodeList();
  // Reverse program order: a node's users are visited (and removed) before it.
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    Node *n = *it;
    if (isDead(n)) {
      g.eraseNode(n);
      ++removed;
      continue;
    }
    for (Graph *sg : n->subgraphs())
      removed += eliminateDeadCode(*sg);
  }
  g.removeUnusedConstants();
  return removed;
}

Expected<PreservedAnalyses> DcePass::run(Model &m, AnalysisManager &am) {
  const size_t constantsBefore = m.graph().constants().size();
  size_t removed = eliminateDeadCode(m.graph());
  const size_t constantsRemoved = constantsBefore - m.graph().constants().size();
  if (removed == 0 && constantsRemoved == 0)
    return PreservedAnalyses::all();
  am.context().reportLines.push_back(
      fmt::format("dce: removed {} nodes, {} constants", removed, constantsRemoved));
  return PreservedAnalyses::none();
}

} // namespace llmopt

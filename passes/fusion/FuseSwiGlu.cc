// fuse-swiglu: the matcher and the rewrite.
#include "passes/fusion/FuseSwiGlu.h"

#include "passes/fusion/FusionCommon.h"

namespace llmopt {

using namespace fusion;
using namespace fusion::pat;

namespace {

Outcome tryFuse(Node *root, MatchLog &log) {
  Value *gate = nullptr, *up = nullptr;
  // Mul(Mul(gate, Sigmoid(gate)), up)  =>  llmopt::SwiGLU(gate, up)
  auto silu = op(OpKind::Mul, val(&gate), op(OpKind::Sigmoid, val(&gate)).anchorOnEntry()).commute();
  if (!matchRoot(root, op(OpKind::Mul, silu, val(&up)).commute(), log))
    return log.anchored ? Outcome::Rejected : Outcome::NoMatch;
  replaceWith(root, OpKind::SwiGLU, {gate, up});
  ensureOpset(*root->graph()->model(), "llmopt");
  return Outcome::Fused;
}

} // namespace

Expected<PreservedAnalyses> FuseSwiGluPass::run(Model &m, AnalysisManager &am) {
  return runFusion(m, am, OpKind::Mul, tryFuse, name(), "SwiGLU");
}

} // namespace llmopt

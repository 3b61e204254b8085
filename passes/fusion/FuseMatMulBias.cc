// fuse-matmul-bias: the matcher and the rewrite.
#include "passes/fusion/FuseMatMulBias.h"

#include "passes/fusion/FusionCommon.h"

namespace llmopt {

using namespace fusion;
using namespace fusion::pat;

namespace {

Outcome tryFuse(Node *root, MatchLog &log) {
  Value *x = nullptr, *w = nullptr, *b = nullptr;
  // Add(MatMul(x, W), b)  =>  llmopt::MatMulBias(x, W, b)
  // The constant first: residual Adds of a MatMul are not near-misses.
  auto mm = op(OpKind::MatMul, val(&x), val(&w)).anchorOnEntry();
  if (!matchRoot(root, op(OpKind::Add, constant(&b), mm).commute(), log))
    return log.anchored ? Outcome::Rejected : Outcome::NoMatch;
  auto reject = [&](std::string why) { return log.fail(std::move(why)), Outcome::Rejected; };
  if (!w->isConstant() || w->type().quant || w->constant()->shape().size() != 2 ||
      !isFloat(w->constant()->dtype()))
    return reject(fmt::format("weight '{}' is not a constant float matrix", w->name()));
  if (!isVectorConst(b))
    return reject(fmt::format("bias '{}' is not a constant vector", b->name()));
  if (b->constant()->numel() != w->constant()->shape()[1] || b->constant()->dtype() != w->constant()->dtype())
    return reject(fmt::format("bias '{}' does not match the weight's columns", b->name()));
  replaceWith(root, OpKind::MatMulBias, {x, w, b});
  ensureOpset(*root->graph()->model(), "llmopt");
  return Outcome::Fused;
}

} // namespace

Expected<PreservedAnalyses> FuseMatMulBiasPass::run(Model &m, AnalysisManager &am) {
  return runFusion(m, am, OpKind::Add, tryFuse, name(), "MatMul+bias");
}

} // namespace llmopt

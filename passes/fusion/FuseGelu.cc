// fuse-gelu: the matchers (erf and tanh inner terms, three placements of the 0.5) and the rewrite.
#include "passes/fusion/FuseGelu.h"

#include "passes/fusion/FusionCommon.h"

namespace llmopt {

using namespace fusion;
using namespace fusion::pat;

namespace {

/// The three placements of the 0.5 around x * (1 + inner): Mul(Mul(x, E), 0.5),
/// Mul(x, Mul(E, 0.5)), Mul(Mul(x, 0.5), E) — each Mul commuted.
template <typename E> auto halfTimes(Value **x, const E &onePlus) {
  return oneOf(op(OpKind::Mul, op(OpKind::Mul, val(x), onePlus).commute(), scalarEq(0.5f)).commute(),
               op(OpKind::Mul, val(x), op(OpKind::Mul, onePlus, scalarEq(0.5f)).commute()).commute(),
               op(OpKind::Mul, op(OpKind::Mul, val(x), scalarEq(0.5f)).commute(), onePlus).commute());
}

Outcome tryFuse(Node *root, MatchLog &log) {
  Value *x = nullptr;
  // Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)  =>  com.microsoft::Gelu(x)
  auto erfArg = oneOf(op(OpKind::Div, val(&x), scalarEq(1.41421356f)),
                      op(OpKind::Mul, val(&x), scalarEq(0.70710678f)).commute());
  auto erfForm = op(OpKind::Add, op(OpKind::Erf, erfArg).anchorOnEntry(), scalarEq(1)).commute();
  if (matchRoot(root, halfTimes(&x, erfForm), log)) {
    replaceWith(root, OpKind::MsGelu, {x});
    ensureOpset(*root->graph()->model(), "com.microsoft");
    return Outcome::Fused;
  }
  const bool erfNearMiss = log.anchored;
  const std::string erfWhy = log.why;
  // Mul(Mul(x, Add(Tanh(Mul(Add(x, Mul(Pow(x, 3), 0.044715)), sqrt(2/pi))), 1)), 0.5)  =>  FastGelu(x)
  x = nullptr;
  auto cube = oneOf(op(OpKind::Pow, val(&x), scalarEq(3)),
                    op(OpKind::Mul, val(&x), op(OpKind::Mul, val(&x), val(&x))).commute());
  auto inner = op(OpKind::Add, val(&x), op(OpKind::Mul, cube, scalarEq(0.044715f)).commute()).commute();
  auto tanhArg = op(OpKind::Mul, inner, scalarEq(0.7978845608f)).commute();
  auto tanhForm = op(OpKind::Add, op(OpKind::Tanh, tanhArg).anchorOnEntry(), scalarEq(1)).commute();
  if (matchRoot(root, halfTimes(&x, tanhForm), log)) {
    replaceWith(root, OpKind::FastGelu, {x});
    ensureOpset(*root->graph()->model(), "com.microsoft");
    return Outcome::Fused;
  }
  if (log.anchored)
    return Outcome::Rejected;
  if (erfNearMiss)
    return log.fail(erfWhy), Outcome::Rejected;
  return Outcome::NoMatch;
}

} // namespace

Expected<PreservedAnalyses> FuseGeluPass::run(Model &m, AnalysisManager &am) {
  return runFusion(m, am, OpKind::Mul, tryFuse, name(), "GELU");
}

} // namespace llmopt

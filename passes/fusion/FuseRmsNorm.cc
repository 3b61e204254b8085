// fuse-rmsnorm: the matcher and the rewrite.
#include "passes/fusion/FuseRmsNorm.h"

#include "passes/fusion/FusionCommon.h"

namespace llmopt {

using namespace fusion;
using namespace fusion::pat;

namespace {

Outcome tryFuse(Node *root, MatchLog &log, size_t &withSkip) {
  Value *x = nullptr, *w = nullptr;
  float eps = 0;
  // Mul(w, Mul(x, Div(1, Sqrt(Add(ReduceMean(Pow(x, 2)), eps)))))  =>  SimplifiedLayerNormalization(x, w)
  auto square = oneOf(op(OpKind::Pow, val(&x), scalarEq(2)), op(OpKind::Mul, val(&x), val(&x)).uses(1));
  auto mean = op(OpKind::ReduceMean, square).anchor().where(lastAxisOnly);
  auto root2 = op(OpKind::Sqrt, op(OpKind::Add, mean, scalar(&eps, "epsilon")).commute());
  auto inv = oneOf(op(OpKind::Div, scalarEq(1), root2), op(OpKind::Reciprocal, root2));
  auto normed = oneOf(op(OpKind::Mul, val(&x), inv).commute(), op(OpKind::Div, val(&x), root2));
  auto p = op(OpKind::Mul, val(&w), normed).commute();
  if (!matchRoot(root, p, log))
    return log.anchored ? Outcome::Rejected : Outcome::NoMatch;
  if (!isVectorConst(w))
    return log.fail(fmt::format("scale '{}' is not a constant vector", w->name())), Outcome::Rejected;
  if (w->constant()->dtype() != x->type().elem && x->type().elem != DType::Undefined)
    return log.fail(fmt::format("scale '{}' has another type than the input", w->name())), Outcome::Rejected;
  if (Node *add = residualAdd(x)) {
    Node *f = fuseWithResidual(root, add, OpKind::SkipSimplifiedLayerNormalization, {w});
    f->setAttr(Attribute::makeFloat("epsilon", eps));
    ++withSkip;
    return Outcome::Fused;
  }
  Node *f = replaceWith(root, OpKind::SimplifiedLayerNormalization, {x, w});
  f->setAttr(Attribute::makeInt("axis", -1));
  f->setAttr(Attribute::makeFloat("epsilon", eps));
  return Outcome::Fused;
}

} // namespace

Expected<PreservedAnalyses> FuseRmsNormPass::run(Model &m, AnalysisManager &am) {
  size_t withSkip = 0;
  const size_t lifted = prepare(m);
  FusionStats st = fuseEach(m.graph(), OpKind::Mul,
                            [&](Node *n, MatchLog &log) { return tryFuse(n, log, withSkip); });
  if (withSkip)
    st.note = fmt::format("({} with their residual Add: SkipSimplifiedLayerNormalization)", withSkip);
  return finish(m, am, st, name(), "RMSNorm", lifted);
}

} // namespace llmopt

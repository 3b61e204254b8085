// fuse-layernorm: the matcher and the rewrite.
#include "passes/fusion/FuseLayerNorm.h"

#include "passes/cleanup/Dce.h"
#include "passes/fusion/FusionCommon.h"

namespace llmopt {

using namespace fusion;
using namespace fusion::pat;

namespace {

/// Div(d, Sqrt(Add(ReduceMean(Pow(d, 2)), eps))) with d = Sub(x, ReduceMean(x)); binds x, eps.
auto normalized(Value **x, Value **d, float *eps) {
  auto centered = op(OpKind::Sub, val(x), op(OpKind::ReduceMean, val(x)).where(lastAxisOnly)).uses(2).named(d).anchorOnEntry();
  auto square = oneOf(op(OpKind::Pow, val(d), scalarEq(2)), op(OpKind::Mul, val(d), val(d)));
  auto var = op(OpKind::ReduceMean, square).where(lastAxisOnly);
  auto stddev = op(OpKind::Sqrt, op(OpKind::Add, var, scalar(eps, "epsilon")).commute());
  return op(OpKind::Div, centered, stddev);
}

Outcome tryFuse(Node *root, MatchLog &log, size_t &withSkip) {
  Value *x = nullptr, *d = nullptr, *g = nullptr, *b = nullptr;
  float eps = 0;
  // Add(Mul(Div(d, Sqrt(Add(ReduceMean(Pow(d, 2)), eps))), g), b)  =>  LayerNormalization(x, g, b)
  auto scaled = op(OpKind::Mul, normalized(&x, &d, &eps), val(&g)).commute();
  auto withBias = op(OpKind::Add, scaled, val(&b)).commute();
  bool ok = root->is(OpKind::Add) ? matchRoot(root, withBias, log) : matchRoot(root, scaled, log);
  if (!ok)
    return log.anchored ? Outcome::Rejected : Outcome::NoMatch;
  for (Value *v : {g, b})
    if (v && !isVectorConst(v))
      return log.fail(fmt::format("scale or bias '{}' is not a constant vector", v->name())), Outcome::Rejected;
  if (Node *add = residualAdd(x)) {
    Node *f = fuseWithResidual(root, add, OpKind::SkipLayerNormalization,
                               b ? std::vector<Value *>{g, b} : std::vector<Value *>{g});
    f->setAttr(Attribute::makeFloat("epsilon", eps));
    ++withSkip;
    return Outcome::Fused;
  }
  std::vector<Value *> ins{x, g};
  if (b)
    ins.push_back(b);
  Node *f = replaceWith(root, OpKind::LayerNormalization, ins);
  f->setAttr(Attribute::makeInt("axis", -1));
  f->setAttr(Attribute::makeFloat("epsilon", eps));
  return Outcome::Fused;
}

} // namespace

Expected<PreservedAnalyses> FuseLayerNormPass::run(Model &m, AnalysisManager &am) {
  const size_t lifted = prepare(m);
  // With a bias first; dce then drops the Mul roots inside fused Adds.
  size_t withSkip = 0;
  auto fuse = [&](Node *n, MatchLog &log) { return tryFuse(n, log, withSkip); };
  FusionStats st = fuseEach(m.graph(), OpKind::Add, fuse);
  eliminateDeadCode(m.graph());
  // Near-misses were reported by the Add sweep; a Mul sweep would count them twice.
  st.found += fuseEach(m.graph(), OpKind::Mul, fuse).found;
  if (withSkip)
    st.note = fmt::format("({} with their residual Add: SkipLayerNormalization)", withSkip);
  return finish(m, am, st, name(), "LayerNorm", lifted);
}

} // namespace llmopt

// Folding per-channel activation scales into the op that produces the activation: see
// ScaleFold.h.
#include "passes/quant/ScaleFold.h"

#include "passes/quant/QuantCommon.h"

#include <algorithm>

namespace llmopt::quantpass {
namespace {

bool onlyUse(const Value *v, const Node *n) {
  return v->uses().size() == 1 && v->uses().front().user == n && !v->isGraphOutput();
}

/// A constant f32 vector of K elements (last dim K) that only `user` reads.
bool isChannelVector(const Value *c, int64_t K, const Node *user) {
  return c && c->isConstant() && !c->type().quant && !c->isGraphInput() &&
         c->constant()->dtype() == DType::F32 && c->constant()->numel() == K &&
         c->constant()->rank() >= 1 && c->constant()->shape().back() == K && onlyUse(c, user);
}

Tensor copyF32(const Tensor &t) {
  return Tensor::fromBytes(DType::F32, t.shape(), t.data(), t.nbytes());
}

/// c / s along the last axis (K = s.size()).
Tensor divideLastAxis(const Tensor &c0, const std::vector<double> &s) {
  Tensor c = copyF32(c0);
  float *d = reinterpret_cast<float *>(c.mutableData());
  const int64_t K = static_cast<int64_t>(s.size()), n = c.numel();
  for (int64_t i = 0; i < n; ++i)
    d[i] = static_cast<float>(d[i] / s[static_cast<size_t>(i % K)]);
  return c;
}

} // namespace

// Mul(a, c), c [K]                                  => c /= s
// Mul(a, MatMul(y, Wp)), Wp [K', K]                 => Wp[:, k] /= s_k
// Add(Mul(a, g), beta), g and beta [K]              => g /= s, beta /= s
std::optional<ScaleFold> findScaleFold(const Value *x, int64_t K) {
  const Node *p = x->producer();
  if (!p || p->numInputs() != 2)
    return std::nullopt;
  if (p->is(OpKind::Mul)) {
    for (unsigned i = 0; i < 2; ++i)
      if (isChannelVector(p->input(i), K, p))
        return ScaleFold{ScaleFold::Kind::Vector, p->input(i), nullptr};
    for (unsigned i = 0; i < 2; ++i) {
      const Value *b = p->input(i);
      const Node *mm = b ? b->producer() : nullptr;
      if (!mm || !mm->is(OpKind::MatMul) || !onlyUse(b, p))
        continue;
      Value *wp = mm->input(1);
      if (wp && wp->isConstant() && !wp->type().quant && !wp->isGraphInput() &&
          wp->constant()->dtype() == DType::F32 && wp->constant()->rank() == 2 &&
          wp->constant()->shape()[1] == K && onlyUse(wp, mm))
        return ScaleFold{ScaleFold::Kind::Columns, wp, nullptr};
    }
    return std::nullopt;
  }
  if (!p->is(OpKind::Add))
    return std::nullopt;
  for (unsigned i = 0; i < 2; ++i) {
    Value *beta = p->input(i);
    const Value *scaled = p->input(1 - i);
    const Node *mul = scaled ? scaled->producer() : nullptr;
    if (!isChannelVector(beta, K, p) || !mul || !mul->is(OpKind::Mul) || mul->numInputs() != 2 ||
        !onlyUse(scaled, p))
      continue;
    for (unsigned j = 0; j < 2; ++j)
      if (isChannelVector(mul->input(j), K, mul))
        return ScaleFold{ScaleFold::Kind::VectorAndBias, mul->input(j), beta};
  }
  return std::nullopt;
}

/// Readers that see only the shape of a value, not its elements.
bool readsShapeOnly(const Node *n) { return n->is(OpKind::Shape) || n->is(OpKind::Size); }

/// The distinct weights the MatMuls reading `x` multiply it by, as the graph has them now.
std::vector<Value *> scaledWeights(const Value *x) {
  std::vector<Value *> ws;
  for (const Use &u : x->uses())
    if (!readsShapeOnly(u.user) &&
        std::find(ws.begin(), ws.end(), u.user->input(1)) == ws.end())
      ws.push_back(u.user->input(1));
  return ws;
}

/// True when every reader of `x` is a MatMul reading it as A with a weight `isWeight`
/// accepts, or a shape-only reader, and every MatMul user of those weights reads `x`.
bool isScalable(const Value *x, const std::function<bool(const Value *)> &isWeight) {
  if (x->isGraphOutput() || x->isConstant())
    return false;
  bool any = false;
  for (const Use &u : x->uses()) {
    if (readsShapeOnly(u.user))
      continue;
    const Value *w = u.user->input(1);
    if (!u.user->is(OpKind::MatMul) || u.index != 0 || !isWeight(w))
      return false;
    for (const Use &wu : w->uses())
      if (wu.user->input(0) != x)
        return false; // a shared weight cannot take two activations' scales
    any = true;
  }
  return any;
}



/// `v`'s constant replaced by `scaled`, a copy computed from it: a mapped original's pages
/// are dropped now and the copy is spilled like it (a model streamed from disk keeps its
/// scaled weights in the page cache, not in RSS).
void replaceScaled(Graph &g, Value *v, Tensor scaled) {
  const Tensor &original = *v->constant();
  if (original.isMapped())
    original.mapping()->release(original.mappingOffset(), original.nbytes());
  Tensor kept = spillLikeOriginal(std::move(scaled), original);
  g.replaceWithConstant(v, std::move(kept));
}

/// W_i rows *= s; the producer's constant(s) take 1/s.
void applyScale(Graph &g, const std::vector<Value *> &ws, const ScaleFold &fold,
                const std::vector<double> &s) {
  const int64_t K = static_cast<int64_t>(s.size());
  for (Value *wv : ws) {
    Tensor w = copyF32(*wv->constant());
    float *d = reinterpret_cast<float *>(w.mutableData());
    const int64_t N = w.shape()[1];
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n)
        d[k * N + n] = static_cast<float>(d[k * N + n] * s[static_cast<size_t>(k)]);
    replaceScaled(g, wv, std::move(w));
  }
  // The producer may be a MatMul weight as large as W (an up projection): same treatment.
  replaceScaled(g, fold.constant, divideLastAxis(*fold.constant->constant(), s));
  if (fold.bias)
    replaceScaled(g, fold.bias, divideLastAxis(*fold.bias->constant(), s));
}

} // namespace llmopt::quantpass

// fuse-attention: the Softmax-centred matcher, the walks back to each projection (heads,
// RoPE, cache update, repeat_kv), the mask recognisers and the GQA / MHA rewrites.
#include "passes/fusion/FuseAttention.h"

#include <cmath>
#include <map>

#include "passes/fusion/FusionCommon.h"

namespace llmopt {

using namespace fusion;
using namespace fusion::pat;

namespace {

Node *producerOf(Value *v, OpKind k) {
  Node *n = v ? v->producer() : nullptr;
  return n && n->is(k) ? n : nullptr;
}

/// Axes of an Unsqueeze: the attribute before opset 13, the constant input after.
std::optional<std::vector<int64_t>> unsqueezeAxes(const Node *n) {
  if (n->hasAttr("axes"))
    return n->attrInts("axes");
  if (n->input(1) && n->input(1)->isConstant())
    return n->input(1)->constant()->toInts();
  return std::nullopt;
}

/// One of q, k, v traced back to its [B, S, heads*head] projection.
struct Side {
  Value *x3 = nullptr;
  int64_t heads = 0, head = 0;
  Node *rope = nullptr;                          ///< RotaryEmbedding on the [B,N,S,H] form
  Value *past = nullptr, *present = nullptr;     ///< cache update Concat(past, new)
  bool repeated = false;                         ///< went through repeat_kv
};

/// %v4 = Transpose(Reshape(%x3, [.., .., N, H]), [0,2,1,3]) => side.x3, heads, head.
bool splitHeads(Value *v4, Side &s) {
  Node *t = producerOf(v4, OpKind::Transpose);
  if (!t || t->attrInts("perm") != std::vector<int64_t>{0, 2, 1, 3})
    return false;
  Node *r = producerOf(t->input(0), OpKind::Reshape);
  if (!r || r->input(0)->type().rank() != 3)
    return false;
  s.heads = staticDim(r->output(), 2);
  s.head = staticDim(r->output(), 3);
  s.x3 = r->input(0);
  return r->output()->type().rank() == 4 && s.heads > 0 && s.head > 0;
}

/// [RotaryEmbedding](heads(x3)).
bool projected(Value *v, Side &s) {
  if (Node *rope = producerOf(v, OpKind::RotaryEmbedding)) {
    if (rope->attrInt("rotary_embedding_dim", 0) != 0)
      return false;
    s.rope = rope;
    v = rope->input(0);
  }
  return splitHeads(v, s);
}

/// repeat_kv([Concat(past, new, axis=2)]) back to the projection.
bool keyValue(Value *v, Side &s) {
  if (Node *r = producerOf(v, OpKind::Reshape)) {
    Node *e = producerOf(r->input(0), OpKind::Expand);
    Node *u = e ? producerOf(e->input(0), OpKind::Unsqueeze) : nullptr;
    if (!u || unsqueezeAxes(u) != std::vector<int64_t>{2})
      return false;
    v = u->input(0);
    s.repeated = true;
  }
  if (Node *c = producerOf(v, OpKind::Concat)) {
    if (c->numInputs() != 2 || c->attrInt("axis", 0) != 2 || !c->input(0)->isGraphInput())
      return false;
    s.past = c->input(0);
    s.present = c->output();
    v = c->input(1);
  }
  return projected(v, s);
}

/// A causal mask [Unsqueeze..](Where(LessOrEqual(Unsqueeze(Range(0, T), [0]),
/// Unsqueeze(Range(P, T), [1])), 0, -big)): returns T (the total length), or null.
Value *causalTotal(Value *mask) {
  while (Node *u = producerOf(mask, OpKind::Unsqueeze)) // [None, None] is two Unsqueezes
    mask = u->input(0);
  Node *w = producerOf(mask, OpKind::Where);
  if (!w)
    return nullptr;
  auto zero = scalarValue(w->input(1)), big = scalarValue(w->input(2));
  Node *le = producerOf(w->input(0), OpKind::LessOrEqual);
  if (!le || !zero || *zero != 0 || !big || *big > -1e4f)
    return nullptr;
  Node *uk = producerOf(le->input(0), OpKind::Unsqueeze), *uq = producerOf(le->input(1), OpKind::Unsqueeze);
  if (!uk || !uq || unsqueezeAxes(uk) != std::vector<int64_t>{0} || unsqueezeAxes(uq) != std::vector<int64_t>{1})
    return nullptr;
  Node *kr = producerOf(uk->input(0), OpKind::Range), *qr = producerOf(uq->input(0), OpKind::Range);
  if (!kr || !qr || kr->input(1) != qr->input(1))
    return nullptr;
  auto isInt = [](Value *v, int64_t want) {
    return v->isConstant() && v->constant()->numel() == 1 && v->constant()->getInt(0) == want;
  };
  if (!isInt(kr->input(0), 0) || !isInt(kr->input(2), 1) || !isInt(qr->input(2), 1))
    return nullptr;
  return kr->input(1);
}

/// A padding mask Mul(Sub(1, Cast(Unsqueeze(Unsqueeze(%m, [1]), [2]))), -big): returns %m
/// ([B, L]) and the fill value, or null.
Value *paddingMask(Value *mask, float *fill) {
  Node *mul = producerOf(mask, OpKind::Mul);
  if (!mul)
    return nullptr;
  for (int i = 0; i < 2; ++i) {
    auto big = scalarValue(mul->input(1 - i));
    Node *sub = producerOf(mul->input(i), OpKind::Sub);
    if (!big || *big > -1e4f || !sub || scalarValue(sub->input(0)) != 1.f)
      continue;
    Value *v = sub->input(1);
    if (Node *c = producerOf(v, OpKind::Cast))
      v = c->input(0);
    Node *u2 = producerOf(v, OpKind::Unsqueeze);
    Node *u1 = u2 ? producerOf(u2->input(0), OpKind::Unsqueeze) : nullptr;
    if (u1 && unsqueezeAxes(u1) == std::vector<int64_t>{1} && unsqueezeAxes(u2) == std::vector<int64_t>{2} &&
        u1->input(0)->type().rank() == 2) {
      *fill = *big;
      return u1->input(0);
    }
    if (u2 && unsqueezeAxes(u2) == std::vector<int64_t>{1, 2} && u2->input(0)->type().rank() == 2) {
      *fill = *big;
      return u2->input(0);
    }
  }
  return nullptr;
}

class AttentionFuser {
public:
  explicit AttentionFuser(Model &m) : m_(m), g_(m.graph()) {}

  Outcome tryFuse(Node *root, MatchLog &log) {
    Value *q = nullptr, *kAll = nullptr, *vAll = nullptr, *mask = nullptr;
    Node *kT = nullptr, *ctxT = nullptr, *sm = nullptr;
    float div = 0, mul = 0;
    // Reshape(Transpose(MatMul(Softmax(Add(Div(MatMul(q, Transpose(k)), c), mask)), v)))
    auto qk = op(OpKind::MatMul, val(&q), op(OpKind::Transpose, val(&kAll)).bind(&kT));
    auto scaled = oneOf(op(OpKind::Div, qk, scalar(&div, "scale divisor")),
                        op(OpKind::Mul, qk, scalar(&mul, "scale")).commute());
    // Float Casts around the Softmax (a wider-typed mask or softmax) only change precision.
    auto scores = oneOf(op(OpKind::Add, floatCasts(scaled), val(&mask)).commute(), floatCasts(scaled));
    auto probs = floatCasts(op(OpKind::Softmax, scores).bind(&sm).anchorOnEntry());
    // The context Transpose may also feed the Shape that computes the Reshape's target.
    auto p = op(OpKind::Reshape,
                op(OpKind::Transpose, op(OpKind::MatMul, probs, val(&vAll))).bind(&ctxT).anyUses());
    if (!matchRoot(root, p, log))
      return log.anchored ? Outcome::Rejected : Outcome::NoMatch;
    auto reject = [&](std::string why) { return log.fail(std::move(why)), Outcome::Rejected; };
    const int64_t axis = sm->attrInt("axis", -1);
    if ((axis != -1 && axis != 3) || sm->opsetVersion() < 13)
      return reject("Softmax is not over the last axis (opset >= 13)");
    if (ctxT->attrInts("perm") != std::vector<int64_t>{0, 2, 1, 3})
      return reject("the context is not transposed back with [0,2,1,3]");
    Side qs, ks, vs;
    if (kT->attrInts("perm") != std::vector<int64_t>{0, 1, 3, 2})
      return reject("the key is not transposed with [0,1,3,2]");
    if (!projected(q, qs) || !keyValue(kAll, ks) || !keyValue(vAll, vs))
      return reject("q/k/v are not [B, N, S, H] heads of a [B, S, N*H] projection");
    if (ks.heads != vs.heads || ks.head != qs.head || vs.head != qs.head || qs.heads % ks.heads ||
        (ks.past != nullptr) != (vs.past != nullptr) || vs.rope || (qs.rope != nullptr) != (ks.rope != nullptr))
      return reject("q/k/v heads, caches or RoPE do not agree");
    const float scale = div != 0 ? 1.f / div : mul != 0 ? mul : 1.f;
    if (Value *total = mask ? causalTotal(mask) : nullptr)
      return groupQuery(root, qs, ks, vs, total, scale);
    float fill = 0;
    Value *pad = mask ? paddingMask(mask, &fill) : nullptr;
    if (mask && !pad)
      return reject("the mask is neither causal nor a key padding mask");
    if (ks.repeated || ks.past || qs.heads != ks.heads || qs.rope)
      return reject("a padding-mask attention with GQA, a cache or RoPE (MultiHeadAttention path)");
    return multiHead(root, qs, ks, vs, pad, fill, scale);
  }

private:
  Value *rope3d(Side &s, Node *before) {
    Node *r = g_.addNode(OpKind::RotaryEmbedding,
                         {s.x3, s.rope->input(1), s.rope->input(2), s.rope->input(3)}, 1,
                         uniqueNodeName(g_, s.rope->name() + "_bsd"), before);
    r->setAttr(Attribute::makeInt("interleaved", s.rope->attrInt("interleaved", 0)));
    r->output()->setType(s.x3->type());
    return r->output();
  }

  Node *add(OpKind k, std::vector<Value *> ins, Node *before, const std::string &nm) {
    return g_.addNode(k, std::move(ins), 1, uniqueNodeName(g_, "/attention/" + nm), before);
  }

  /// seqlens_k = Expand(Cast(T - 1, i32), [B]) and total = Cast(T, i32), once per T.
  std::pair<Value *, Value *> lengths(Value *total, Value *x3, Node *before) {
    auto it = lengths_.find(total);
    if (it != lengths_.end())
      return it->second;
    Value *one = g_.addConstant(g_.freshName("attn_one"), Tensor::scalar<int64_t>(DType::I64, 1));
    Value *tm1 = add(OpKind::Sub, {total, one}, before, "total_minus_1")->output();
    Node *c = add(OpKind::Cast, {tm1}, before, "seqlens_i32");
    c->setAttr(Attribute::makeInt("to", static_cast<int64_t>(DType::I32)));
    Node *shape = add(OpKind::Shape, {x3}, before, "batch");
    shape->setAttr(Attribute::makeInt("end", 1));
    Value *seqlens = add(OpKind::Expand, {c->output(), shape->output()}, before, "seqlens_k")->output();
    Node *t = add(OpKind::Cast, {total}, before, "total_i32");
    t->setAttr(Attribute::makeInt("to", static_cast<int64_t>(DType::I32)));
    return lengths_[total] = {seqlens, t->output()};
  }

  Outcome groupQuery(Node *root, Side &qs, Side &ks, Side &vs, Value *total, float scale) {
    Value *q3 = qs.rope ? rope3d(qs, root) : qs.x3;
    Value *k3 = ks.rope ? rope3d(ks, root) : ks.x3;
    auto [seqlens, tot] = lengths(total, qs.x3, root);
    Node *f = replaceWith(root, OpKind::GroupQueryAttention, {q3, k3, vs.x3, ks.past, vs.past, seqlens, tot});
    f->setAttr(Attribute::makeInt("num_heads", qs.heads));
    f->setAttr(Attribute::makeInt("kv_num_heads", ks.heads));
    f->setAttr(Attribute::makeFloat("scale", scale));
    for (Side *s : {&ks, &vs}) {
      Value *present = f->addOutput();
      if (s->present) {
        present->setType(s->present->type());
        g_.replaceAllUsesWith(s->present, present);
      }
    }
    ensureOpset(m_, "com.microsoft");
    return Outcome::Fused;
  }

  Outcome multiHead(Node *root, Side &qs, Side &ks, Side &vs, Value *pad, float fill, float scale) {
    Value *kpm = pad;
    if (pad && pad->type().elem != DType::I32) { // one Cast per mask, shared by the layers
      Value *&cast = masks_[pad];
      if (!cast) {
        Node *c = add(OpKind::Cast, {pad}, root, "key_padding_mask");
        c->setAttr(Attribute::makeInt("to", static_cast<int64_t>(DType::I32)));
        cast = c->output();
      }
      kpm = cast;
    }
    std::vector<Value *> ins{qs.x3, ks.x3, vs.x3};
    if (kpm)
      ins.insert(ins.end(), {nullptr, kpm}); // no bias, then key_padding_mask
    Node *f = replaceWith(root, OpKind::MultiHeadAttention, ins);
    f->setAttr(Attribute::makeInt("num_heads", qs.heads));
    f->setAttr(Attribute::makeFloat("scale", scale));
    if (pad)
      f->setAttr(Attribute::makeFloat("mask_filter_value", fill));
    ensureOpset(m_, "com.microsoft");
    return Outcome::Fused;
  }

  Model &m_;
  Graph &g_;
  std::map<Value *, std::pair<Value *, Value *>> lengths_;
  std::map<Value *, Value *> masks_;
};

} // namespace

Expected<PreservedAnalyses> FuseAttentionPass::run(Model &m, AnalysisManager &am) {
  AttentionFuser fuser(m);
  return runFusion(m, am, OpKind::Reshape, [&](Node *n, MatchLog &log) { return fuser.tryFuse(n, log); },
                   name(), "attention");
}

} // namespace llmopt

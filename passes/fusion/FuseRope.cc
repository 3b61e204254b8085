// fuse-rope: the rotate-half matcher, the cos/sin source check and the shared caches.
#include "passes/fusion/FuseRope.h"

#include <limits>
#include <map>
#include <tuple>

#include "passes/fusion/FusionCommon.h"

namespace llmopt {

using namespace fusion;
using namespace fusion::pat;

namespace {

/// Constant inputs (or pre-opset-10 attributes) of a Slice as ints; nullopt if unknown.
std::optional<std::vector<int64_t>> sliceArg(const Node &n, size_t input, const char *attr) {
  if (n.hasAttr(attr))
    return n.attrInts(attr);
  const Value *v = n.input(input);
  if (!v)
    return std::nullopt;
  if (!v->isConstant())
    return std::nullopt;
  return v->constant()->toInts();
}

/// A Slice over axis `last` (or -1) from `start` with `step`, ending at `end` (`toEnd`:
/// at `end` or beyond).
bool slicesLast(const Node &n, int64_t start, int64_t end, bool toEnd, int64_t step, int64_t last) {
  auto st = sliceArg(n, 1, "starts"), en = sliceArg(n, 2, "ends"), ax = sliceArg(n, 3, "axes");
  auto steps = sliceArg(n, 4, "steps");
  if (!st || !en || !ax || st->size() != 1 || en->size() != 1 || ax->size() != 1)
    return false;
  if (steps ? steps->size() != 1 || (*steps)[0] != step : step != 1)
    return false;
  if ((*ax)[0] != -1 && (*ax)[0] != last)
    return false;
  if ((*st)[0] != start)
    return false;
  return toEnd ? (*en)[0] >= end : (*en)[0] == end;
}

/// Axes of an Unsqueeze: the attribute before opset 13, the constant input after.
std::optional<std::vector<int64_t>> unsqueezeAxes(const Node &n) {
  return n.hasAttr("axes") ? std::optional(n.attrInts("axes")) : sliceArg(n, 1, "axes");
}

/// %d = Reshape(Concat(Unsqueeze(%v, [-1]), Unsqueeze(%v, [-1]), axis=-1), [.., 2 * last])
/// (every entry of %v twice in a row, as `torch.stack((v, v), -1).flatten(-2)` writes it):
/// returns %v, or null.
Value *interleavedTwice(Value *d) {
  Node *r = d ? d->producer() : nullptr;
  Node *cat = r && r->is(OpKind::Reshape) ? r->input(0)->producer() : nullptr;
  if (!cat || !cat->is(OpKind::Concat) || cat->numInputs() != 2)
    return nullptr;
  Node *u0 = cat->input(0)->producer(), *u1 = cat->input(1)->producer();
  if (!u0 || !u1 || !u0->is(OpKind::Unsqueeze) || !u1->is(OpKind::Unsqueeze) || u0->input(0) != u1->input(0))
    return nullptr;
  Value *v = u0->input(0);
  const int64_t rank = v->type().rank(), axis = cat->attrInt("axis", 0);
  for (Node *u : {u0, u1})
    if (auto ax = unsqueezeAxes(*u); !ax || ax->size() != 1 || ((*ax)[0] != -1 && (*ax)[0] != rank))
      return nullptr;
  if (rank <= 0 || (axis != -1 && axis != rank) || d->type().rank() != rank ||
      staticDim(d, rank - 1) <= 0 || staticDim(d, rank - 1) != 2 * staticDim(v, rank - 1))
    return nullptr;
  return v;
}

/// %c = [Unsqueeze](Cos|Sin(Concat(%f, %f, axis=-1))): returns %f, or null. Interleaved:
/// %c = [Unsqueeze](Cos|Sin(interleavedTwice(%f))) or [Unsqueeze](interleavedTwice(Cos|Sin(%f))).
Value *duplicatedFreqs(Value *c, OpKind trig, bool interleaved) {
  Node *n = c->producer();
  if (n && n->is(OpKind::Unsqueeze))
    n = n->input(0)->producer();
  if (interleaved) {
    if (n && n->is(trig))
      return interleavedTwice(n->input(0));
    Value *t = n ? interleavedTwice(n->output(0)) : nullptr;
    return t && t->producer() && t->producer()->is(trig) ? t->producer()->input(0) : nullptr;
  }
  if (!n || !n->is(trig))
    return nullptr;
  Node *cat = n->input(0)->producer();
  if (!cat || !cat->is(OpKind::Concat) || cat->numInputs() != 2 || cat->input(0) != cat->input(1))
    return nullptr;
  int64_t axis = cat->attrInt("axis", 0), rank = cat->input(0)->type().rank();
  if (axis != -1 && !(rank > 0 && axis == rank - 1))
    return nullptr;
  return cat->input(0);
}

struct Caches {
  Value *pos, *cos, *sin;
};

class RopeFuser {
public:
  explicit RopeFuser(Model &m) : m_(m) {}

  Outcome tryFuse(Node *root, MatchLog &log) {
    Value *x = nullptr, *cos = nullptr, *sin = nullptr, *x1 = nullptr, *x2 = nullptr, *pairs = nullptr;
    Node *cat = nullptr;
    // Add(Mul(x, cos), Mul(Concat(Neg(Slice(x, h:)), Slice(x, :h)), sin))  =>  RotaryEmbedding
    auto halves = op(OpKind::Concat, op(OpKind::Neg, op(OpKind::Slice, val(&x)).named(&x2)),
                     op(OpKind::Slice, val(&x)).named(&x1))
                      .bind(&cat)
                      .anchor();
    // Interleaved: the rotation is Reshape(Concat(Unsqueeze(Neg(Slice(x, 1::2)), -1),
    // Unsqueeze(Slice(x, 0::2), -1), axis=-1), [.., H])  =>  RotaryEmbedding {interleaved=1}
    auto everyTwo = op(OpKind::Reshape,
                       op(OpKind::Concat,
                          op(OpKind::Unsqueeze, op(OpKind::Neg, op(OpKind::Slice, val(&x)).named(&x2))),
                          op(OpKind::Unsqueeze, op(OpKind::Slice, val(&x)).named(&x1)))
                           .bind(&cat)
                           .anchor())
                        .named(&pairs);
    auto p = op(OpKind::Add, op(OpKind::Mul, oneOf(halves, everyTwo), val(&sin)).commute(),
                op(OpKind::Mul, val(&x), val(&cos)).commute())
                 .commute();
    if (!matchRoot(root, p, log))
      return log.anchored ? Outcome::Rejected : Outcome::NoMatch;
    auto reject = [&](std::string why) { return log.fail(std::move(why)), Outcome::Rejected; };
    const int64_t rank = x->type().rank(), head = staticDim(x, rank - 1);
    if (rank != 4 || head <= 0 || head % 2)
      return reject(fmt::format("'{}' is not [B, N, S, H] with a known even H", x->name()));
    const int64_t half = head / 2;
    const bool interleaved = pairs != nullptr;
    if (interleaved) {
      for (Value *u : {cat->input(0), cat->input(1)})
        if (auto ax = unsqueezeAxes(*u->producer()); !ax || ax->size() != 1 || ((*ax)[0] != -1 && (*ax)[0] != rank))
          return reject("the rotation's Unsqueezes do not add a last axis");
      if (cat->attrInt("axis", 0) != -1 && cat->attrInt("axis", 0) != rank)
        return reject("the rotation's Concat is not over the last axis");
      if (pairs->type().rank() != rank || staticDim(pairs, rank - 1) != head)
        return reject(fmt::format("the rotated pairs of '{}' are not reshaped back to [.., H]", x->name()));
      if (!slicesLast(*x1->producer(), 0, head - 1, true, 2, rank - 1) ||
          !slicesLast(*x2->producer(), 1, head, true, 2, rank - 1))
        return reject(fmt::format("the Slices of '{}' are not its even and odd entries", x->name()));
    } else {
      if (cat->attrInt("axis", 0) != -1 && cat->attrInt("axis", 0) != rank - 1)
        return reject("the rotation's Concat is not over the last axis");
      if (!slicesLast(*x1->producer(), 0, half, false, 1, rank - 1) ||
          !slicesLast(*x2->producer(), half, head, true, 1, rank - 1))
        return reject(fmt::format("the Slices of '{}' are not its two halves", x->name()));
    }
    Caches c{};
    Value *f = duplicatedFreqs(cos, OpKind::Cos, interleaved);
    if (f && f == duplicatedFreqs(sin, OpKind::Sin, interleaved)) {
      // cos broadcasts as [1, 1, S, H]: only the sequence axis may vary.
      if (cos->type().rank() != 4 || staticDim(cos, 0) != 1 || staticDim(cos, 1) != 1 ||
          sin->type().rank() != 4 || staticDim(sin, 0) != 1 || staticDim(sin, 1) != 1)
        return reject("cos/sin are not [1, 1, S, H] (per-batch positions or another layout)");
      if (staticDim(f, f->type().rank() - 1) != half)
        return reject("the frequency tensor is not [.., S, H/2]");
      c = caches(f, half);
    } else if (auto t = tables(cos, sin, half, interleaved)) {
      c = *t;
    } else {
      return reject(interleaved ? "cos/sin are neither Cos/Sin of one frequency tensor repeated "
                                  "pairwise nor rows of constant tables with equal pairs"
                                : "cos/sin are neither Cos/Sin of one duplicated frequency tensor "
                                  "nor rows of constant tables with equal halves");
    }
    Node *rope = replaceWith(root, OpKind::RotaryEmbedding, {x, c.pos, c.cos, c.sin});
    rope->setAttr(Attribute::makeInt("interleaved", interleaved ? 1 : 0));
    ensureOpset(m_, "com.microsoft");
    return Outcome::Fused;
  }

private:
  /// Position offset 0 and the [S, H/2] cos / sin caches of `f`, made once per `f`
  /// (just after f's producer, so every user is dominated).
  Caches caches(Value *f, int64_t half) {
    auto it = caches_.find(f);
    if (it != caches_.end())
      return it->second;
    Graph &g = m_.graph();
    Node *at = f->producer() ? nextNode(f->producer()) : g.nodeList().front();
    Value *shape = g.addConstant(g.freshName("rope_cache_shape"),
                                 Tensor::fromVector<int64_t>(DType::I64, {2}, {-1, half}));
    Value *pos = g.addConstant(g.freshName("rope_position_offset"),
                               Tensor::fromVector<int64_t>(DType::I64, {1}, {0}));
    auto cache = [&](OpKind trig, const char *nm) {
      Node *t = g.addNode(trig, {f}, 1, uniqueNodeName(g, std::string("/rope/") + nm), at);
      Node *r = g.addNode(OpKind::Reshape, {t->output(), shape}, 1,
                          uniqueNodeName(g, std::string("/rope/") + nm + "_cache"), at);
      t->output()->setType(f->type());
      r->output()->setName(g.freshName(std::string(nm) + "_cache"));
      return r->output();
    };
    Caches c{pos, cache(OpKind::Cos, "cos"), cache(OpKind::Sin, "sin")};
    caches_.emplace(f, c);
    return c;
  }

  /// Older HF exports: %cos = Unsqueeze(Gather(%cos_table, %position_ids), [1]) with a
  /// constant [P, H] table whose halves are equal (interleaved: whose entries 2i and 2i+1
  /// are; likewise %sin, same positions). The caches are the tables' first halves (even
  /// entries); position_ids pass through.
  std::optional<Caches> tables(Value *cos, Value *sin, int64_t half, bool interleaved) {
    auto rows = [](Value *c) -> Node * {
      Node *n = c->producer();
      if (n && n->is(OpKind::Unsqueeze)) {
        if (unsqueezeAxes(*n) != std::vector<int64_t>{1})
          return nullptr;
        n = n->input(0)->producer();
      }
      return n && n->is(OpKind::Gather) && n->attrInt("axis", 0) == 0 && n->input(0)->isConstant()
                 ? n
                 : nullptr;
    };
    Node *gc = rows(cos), *gs = rows(sin);
    if (!gc || !gs || gc->input(1) != gs->input(1) || gc->input(1)->type().rank() != 2 ||
        gc->input(1)->type().elem != DType::I64)
      return std::nullopt;
    auto key = std::make_tuple(gc->input(0), gs->input(0), interleaved);
    if (auto it = tables_.find(key); it != tables_.end())
      return Caches{gc->input(1), it->second.first, it->second.second};
    auto firstHalf = [&](const Tensor &t) -> std::optional<Tensor> {
      if (t.dtype() != DType::F32 || t.rank() != 2 || t.shape()[1] != 2 * half)
        return std::nullopt;
      const std::vector<float> v = t.toFloats();
      std::vector<float> out;
      for (int64_t r = 0; r < t.shape()[0]; ++r)
        for (int64_t i = 0; i < half; ++i) {
          const int64_t at = r * 2 * half + (interleaved ? 2 * i : i), twin = at + (interleaved ? 1 : half);
          const float a = v[static_cast<size_t>(at)];
          if (a != v[static_cast<size_t>(twin)])
            return std::nullopt;
          out.push_back(a);
        }
      return Tensor::fromVector<float>(DType::F32, {t.shape()[0], half}, out);
    };
    auto ct = firstHalf(*gc->input(0)->constant()), st = firstHalf(*gs->input(0)->constant());
    if (!ct || !st)
      return std::nullopt;
    Graph &g = m_.graph();
    Value *cc = g.addConstant(g.freshName("cos_cache"), std::move(*ct));
    Value *sc = g.addConstant(g.freshName("sin_cache"), std::move(*st));
    tables_[key] = {cc, sc};
    return Caches{gc->input(1), cc, sc};
  }

  static Node *nextNode(Node *n) {
    auto list = n->graph()->nodeList();
    for (size_t i = 0; i + 1 < list.size(); ++i)
      if (list[i] == n)
        return list[i + 1];
    return nullptr;
  }

  Model &m_;
  std::map<Value *, Caches> caches_;
  std::map<std::tuple<Value *, Value *, bool>, std::pair<Value *, Value *>> tables_;
};

} // namespace

Expected<PreservedAnalyses> FuseRopePass::run(Model &m, AnalysisManager &am) {
  RopeFuser fuser(m);
  return runFusion(m, am, OpKind::Add, [&](Node *n, MatchLog &log) { return fuser.tryFuse(n, log); },
                   name(), "RoPE");
}

} // namespace llmopt

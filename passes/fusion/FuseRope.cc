// fuse-rope: the rotate-half matcher, the cos/sin source check and the shared caches.
#include "passes/fusion/FuseRope.h"

#include <limits>
#include <map>

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

/// A Slice over the last axis (of a rank-`rank` input), step 1, from `start` to `end`
/// (`end` < 0: to the end).
bool slicesLast(const Node &n, int64_t start, int64_t end, int64_t last) {
  auto st = sliceArg(n, 1, "starts"), en = sliceArg(n, 2, "ends"), ax = sliceArg(n, 3, "axes");
  auto steps = sliceArg(n, 4, "steps");
  if (!st || !en || !ax || st->size() != 1 || en->size() != 1 || ax->size() != 1)
    return false;
  if (steps && (steps->size() != 1 || (*steps)[0] != 1))
    return false;
  if ((*ax)[0] != -1 && (*ax)[0] != last)
    return false;
  if ((*st)[0] != start)
    return false;
  return end < 0 ? (*en)[0] >= 2 * start : (*en)[0] == end;
}

/// %c = [Unsqueeze](Cos|Sin(Concat(%f, %f, axis=-1))): returns %f, or null.
Value *duplicatedFreqs(Value *c, OpKind trig) {
  Node *n = c->producer();
  if (n && n->is(OpKind::Unsqueeze))
    n = n->input(0)->producer();
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
    Value *x = nullptr, *cos = nullptr, *sin = nullptr, *x1 = nullptr, *x2 = nullptr;
    // Add(Mul(x, cos), Mul(Concat(Neg(Slice(x, h:)), Slice(x, :h)), sin))  =>  RotaryEmbedding
    auto rotated = op(OpKind::Concat, op(OpKind::Neg, op(OpKind::Slice, val(&x)).named(&x2)),
                      op(OpKind::Slice, val(&x)).named(&x1))
                       .anchor();
    auto p = op(OpKind::Add, op(OpKind::Mul, rotated, val(&sin)).commute(),
                op(OpKind::Mul, val(&x), val(&cos)).commute())
                 .commute();
    if (!matchRoot(root, p, log))
      return log.anchored ? Outcome::Rejected : Outcome::NoMatch;
    auto reject = [&](std::string why) { return log.fail(std::move(why)), Outcome::Rejected; };
    const int64_t rank = x->type().rank(), head = staticDim(x, rank - 1);
    if (rank != 4 || head <= 0 || head % 2)
      return reject(fmt::format("'{}' is not [B, N, S, H] with a known even H", x->name()));
    const int64_t half = head / 2;
    Node *cat = x1->uses().front().user;
    if (cat->attrInt("axis", 0) != -1 && cat->attrInt("axis", 0) != rank - 1)
      return reject("the rotation's Concat is not over the last axis");
    if (!slicesLast(*x1->producer(), 0, half, rank - 1) ||
        !slicesLast(*x2->producer(), half, -1, rank - 1))
      return reject(fmt::format("the Slices of '{}' are not its two halves", x->name()));
    Caches c{};
    Value *f = duplicatedFreqs(cos, OpKind::Cos);
    if (f && f == duplicatedFreqs(sin, OpKind::Sin)) {
      // cos broadcasts as [1, 1, S, H]: only the sequence axis may vary.
      if (cos->type().rank() != 4 || staticDim(cos, 0) != 1 || staticDim(cos, 1) != 1 ||
          sin->type().rank() != 4 || staticDim(sin, 0) != 1 || staticDim(sin, 1) != 1)
        return reject("cos/sin are not [1, 1, S, H] (per-batch positions or another layout)");
      if (staticDim(f, f->type().rank() - 1) != half)
        return reject("the frequency tensor is not [.., S, H/2]");
      c = caches(f, half);
    } else if (auto t = tables(cos, sin, half)) {
      c = *t;
    } else {
      return reject("cos/sin are neither Cos/Sin of one duplicated frequency tensor nor rows "
                    "of constant tables with equal halves");
    }
    Node *rope = replaceWith(root, OpKind::RotaryEmbedding, {x, c.pos, c.cos, c.sin});
    rope->setAttr(Attribute::makeInt("interleaved", 0));
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
  /// constant [P, H] table whose halves are equal (likewise %sin, same positions). The
  /// caches are the tables' first halves; position_ids pass through.
  std::optional<Caches> tables(Value *cos, Value *sin, int64_t half) {
    auto rows = [](Value *c) -> Node * {
      Node *n = c->producer();
      if (n && n->is(OpKind::Unsqueeze)) {
        auto axes = n->hasAttr("axes") ? std::optional(n->attrInts("axes"))
                                       : sliceArg(*n, 1, "axes");
        if (axes != std::vector<int64_t>{1})
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
    auto key = std::make_pair(gc->input(0), gs->input(0));
    if (auto it = tables_.find(key); it != tables_.end())
      return Caches{gc->input(1), it->second.first, it->second.second};
    auto firstHalf = [&](const Tensor &t) -> std::optional<Tensor> {
      if (t.dtype() != DType::F32 || t.rank() != 2 || t.shape()[1] != 2 * half)
        return std::nullopt;
      const std::vector<float> v = t.toFloats();
      std::vector<float> out;
      for (int64_t r = 0; r < t.shape()[0]; ++r)
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[static_cast<size_t>(r * 2 * half + i)];
          if (a != v[static_cast<size_t>(r * 2 * half + half + i)])
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
  std::map<std::pair<Value *, Value *>, std::pair<Value *, Value *>> tables_;
};

} // namespace

Expected<PreservedAnalyses> FuseRopePass::run(Model &m, AnalysisManager &am) {
  RopeFuser fuser(m);
  return runFusion(m, am, OpKind::Add, [&](Node *n, MatchLog &log) { return fuser.tryFuse(n, log); },
                   name(), "RoPE");
}

} // namespace llmopt

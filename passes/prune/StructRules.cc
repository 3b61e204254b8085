// Structured-pruning dependency analysis: the per-op rules that carry a value's tracked
// axes (channels, heads, positions within a head, the GQA repeat) to a node's outputs.
#include <algorithm>

#include <fmt/format.h>

#include "passes/prune/StructTracker.h"

namespace llmopt::structprune::detail {

std::string Tracker::broadcastRule(Node *n, Track &out) {
  const std::optional<Dims> od = dims(n->output());
  if (!od)
    return fmt::format("the shape of '{}' is unknown", n->output()->name());
  const int64_t R = static_cast<int64_t>(od->size());
  out = Track::none(R);
  struct Opd {
    unsigned idx;
    const Track *t;
    std::optional<Dims> d;
    int64_t off;
  };
  std::vector<Opd> ops;
  for (unsigned i = 0; i < n->numInputs(); ++i) {
    Value *v = n->input(i);
    if (!v)
      continue;
    Opd o{i, live(v), dims(v), 0};
    const int64_t r = o.t ? o.t->rank() : o.d ? static_cast<int64_t>(o.d->size()) : -1;
    if (r < 0 || r > R)
      return fmt::format("the rank of '{}' is unknown", v->name());
    o.off = R - r;
    ops.push_back(std::move(o));
  }
  int outSpace = -1;
  for (int64_t j = 0; j < R; ++j) {
    const Opd *first = nullptr;
    for (const Opd &o : ops) {
      const int64_t a = j - o.off;
      if (!o.t || a < 0 || o.t->role(a) == Role::None)
        continue;
      if (!first) {
        first = &o;
        out.roles[static_cast<size_t>(j)] = o.t->role(a);
        out.reps[static_cast<size_t>(j)] = o.t->rep(a);
        if (outSpace < 0)
          outSpace = find(o.t->space);
        continue;
      }
      const int64_t fa = j - first->off;
      int sp = -1;
      int64_t rep = 1;
      std::string e = relate(first->t->space, first->t->role(fa), first->t->rep(fa), o.t->space,
                             o.t->role(a), o.t->rep(a), n, sp, rep);
      if (!e.empty())
        return e;
      if (o.t->role(a) != Role::Inner) {
        outSpace = sp;
        out.reps[static_cast<size_t>(j)] = rep;
      }
    }
  }
  // Operands without the channels must broadcast over them (or be constants sliced with them).
  for (int64_t j = 0; j < R; ++j) {
    const Role role = out.roles[static_cast<size_t>(j)];
    if (role == Role::None || role == Role::Inner)
      continue;
    for (const Opd &o : ops) {
      const int64_t a = j - o.off;
      if (a < 0 || (o.t && o.t->role(a) != Role::None))
        continue;
      if (o.d && isOne((*o.d)[static_cast<size_t>(a)]))
        continue;
      if (!o.t && constantTensor(n->input(o.idx)) &&
          (role == Role::Flat || (role == Role::Unit && out.reps[static_cast<size_t>(j)] == 1))) {
        slices_.push_back({n, o.idx, a, role, outSpace});
        continue;
      }
      return fmt::format("'{}' ({}) combines {} with '{}', which is not derived from them", n->name(),
                         n->qualifiedOpType(), roleName(role), n->input(o.idx)->name());
    }
  }
  for (const Opd &o : ops)
    if (o.t && find(o.t->space) != find(outSpace)) {
      const int a = find(o.t->space), b = find(outSpace);
      const bool linked = std::any_of(links_.begin(), links_.end(), [&](const Link &l) {
        return (find(l.q) == a && find(l.kv) == b) || (find(l.q) == b && find(l.kv) == a);
      });
      if (!linked)
        return fmt::format("'{}' ({}) combines two unrelated channel groups", n->name(),
                           n->qualifiedOpType());
    }
  out.space = outSpace;
  return "";
}

std::string Tracker::matmulRule(Node *n, Track &out) {
  Value *A = n->input(0), *B = n->input(1);
  const Track *ta = live(A), *tb = live(B);
  const std::optional<Dims> da = dims(A), db = dims(B), od = dims(n->output());
  const int64_t ra = ta ? ta->rank() : da ? static_cast<int64_t>(da->size()) : -1;
  const int64_t rb = tb ? tb->rank() : db ? static_cast<int64_t>(db->size()) : -1;
  if (ra < 2 || rb < 2 || !od)
    return fmt::format("MatMul '{}' has an operand of rank < 2 or unknown shape", n->name());
  const int64_t R = static_cast<int64_t>(od->size());
  out = Track::none(R);
  int outSpace = find(ta ? ta->space : tb->space);
  bool relatedAB = false;
  auto role = [](const Track *t, int64_t a) { return t && a >= 0 ? t->role(a) : Role::None; };
  auto rep = [](const Track *t, int64_t a) { return t && a >= 0 ? t->rep(a) : int64_t{1}; };
  for (int64_t j = 0; j + 2 < R; ++j) {
    const int64_t ia = j - (R - ra), ib = j - (R - rb);
    const Role x = role(ta, ia), y = role(tb, ib);
    if (x == Role::None && y == Role::None)
      continue;
    if (x != Role::None && y != Role::None) {
      int sp = -1;
      int64_t r = 1;
      std::string e = relate(ta->space, x, rep(ta, ia), tb->space, y, rep(tb, ib), n, sp, r);
      if (!e.empty())
        return e;
      out.roles[static_cast<size_t>(j)] = x;
      out.reps[static_cast<size_t>(j)] = r;
      if (x != Role::Inner)
        outSpace = sp;
      relatedAB = true;
      continue;
    }
    const bool onA = x != Role::None;
    const int64_t other = onA ? ib : ia;
    const std::optional<Dims> &dother = onA ? db : da;
    if (other >= 0 && (!dother || !isOne((*dother)[static_cast<size_t>(other)])))
      return fmt::format("MatMul '{}' has {} on one operand's batch axis only", n->name(),
                         roleName(onA ? x : y));
    out.roles[static_cast<size_t>(j)] = onA ? x : y;
    out.reps[static_cast<size_t>(j)] = onA ? rep(ta, ia) : rep(tb, ib);
  }
  out.roles[static_cast<size_t>(R - 2)] = role(ta, ra - 2);
  out.reps[static_cast<size_t>(R - 2)] = rep(ta, ra - 2);
  out.roles[static_cast<size_t>(R - 1)] = role(tb, rb - 1);
  out.reps[static_cast<size_t>(R - 1)] = rep(tb, rb - 1);
  const Role ca = role(ta, ra - 1), cb = role(tb, rb - 2);
  if ((ca != Role::None || cb != Role::None) && (ca != Role::Inner || cb != Role::Inner))
    return fmt::format("MatMul '{}' contracts {}", n->name(),
                       roleName(ca != Role::None ? ca : cb));
  if (ta && tb && !relatedAB && find(ta->space) != find(tb->space))
    return fmt::format("MatMul '{}' multiplies two unrelated channel groups", n->name());
  out.space = outSpace;
  return "";
}

std::string Tracker::reshapeRule(Node *n, const Track &t, Track &out, bool hasShape) {
  const std::optional<Dims> in = dims(n->input(0)), od = dims(n->output());
  if (!in || !od || static_cast<int64_t>(in->size()) != t.rank())
    return fmt::format("the shapes around '{}' are unknown", n->name());
  const Dims &I = *in, &O = *od;
  out = Track::none(static_cast<int64_t>(O.size()));
  out.space = t.space;
  auto known = [](const Dim &d) { return d.kind != Dim::Kind::Unknown; };
  size_t i = 0, j = 0;
  while (i < I.size() || j < O.size()) {
    size_t ie = i, je = j;
    if (i < I.size() && j < O.size() && known(I[i]) && I[i] == O[j]) {
      ie = i + 1;
      je = j + 1;
    } else if (i < I.size() && j < O.size() && I[i].isStatic() && O[j].isStatic()) {
      int64_t pi = I[i].value, pj = O[j].value;
      ie = i + 1;
      je = j + 1;
      while (pi != pj) {
        if (pi < pj && ie < I.size() && I[ie].isStatic())
          pi *= I[ie++].value;
        else if (pj < pi && je < O.size() && O[je].isStatic())
          pj *= O[je++].value;
        else
          return fmt::format("cannot follow the axes through '{}'", n->name());
      }
    } else if (i < I.size() && isOne(I[i])) {
      ie = i + 1;
    } else if (j < O.size() && isOne(O[j])) {
      je = j + 1;
    } else {
      return fmt::format("cannot follow the axes through '{}'", n->name());
    }
    std::vector<size_t> ins, outs;
    bool roled = false;
    for (size_t a = i; a < ie; ++a) {
      roled = roled || t.roles[a] != Role::None;
      if (t.roles[a] != Role::None || !isOne(I[a]))
        ins.push_back(a);
    }
    for (size_t b = j; b < je; ++b)
      if (!isOne(O[b]))
        outs.push_back(b);
    if (roled) {
      auto r = [&](size_t k) { return t.roles[ins[k]]; };
      if (ins.size() == 1 && outs.size() == 1) {
        out.roles[outs[0]] = r(0);
        out.reps[outs[0]] = t.reps[ins[0]];
      } else if (ins.size() == 1 && outs.size() == 2 && r(0) == Role::Flat) {
        Space &sp = space(t.space);
        const int64_t D = O[outs[1]].value;
        if (!sp.split) {
          sp.split = true;
          sp.unitSize = D;
        } else if (sp.unitSize != D) {
          return fmt::format("'{}' splits heads of {} where {} was found before", n->name(), D,
                             sp.unitSize);
        }
        out.roles[outs[0]] = Role::Unit;
        out.roles[outs[1]] = Role::Inner;
      } else if (ins.size() == 2 && outs.size() == 1 && r(0) == Role::Unit &&
                 t.reps[ins[0]] == 1 && (r(1) == Role::Inner || r(1) == Role::Rep)) {
        out.roles[outs[0]] = r(1) == Role::Inner ? Role::Flat : Role::Unit;
        out.reps[outs[0]] = r(1) == Role::Inner ? 1 : t.reps[ins[1]];
      } else {
        return fmt::format("'{}' regroups channels in a way the analysis does not follow",
                           n->name());
      }
    }
    i = ie;
    j = je;
  }
  if (!hasShape)
    return "";
  const bool allowZero = n->attrInt("allowzero", 0) != 0;
  for (size_t b = 0; b < O.size(); ++b) {
    if (!pruned(out.roles[b]))
      continue;
    const bool zeroKeeps = !allowZero && b < I.size() && t.roles[b] == out.roles[b] &&
                           t.reps[b] == out.reps[b] && I[b] == O[b];
    std::string e = elementSite(n, 1, static_cast<int64_t>(b), O[b].value, out.roles[b],
                                out.reps[b], t.space, true, zeroKeeps);
    if (!e.empty())
      return fmt::format("the target shape of '{}': {}", n->name(), e);
  }
  return "";
}

std::string Tracker::expandRule(Node *n, const Track &t, Track &out) {
  const std::optional<Dims> in = dims(n->input(0)), od = dims(n->output());
  if (!in || !od || od->size() < in->size())
    return fmt::format("the shapes around '{}' are unknown", n->name());
  const int64_t R = static_cast<int64_t>(od->size()), off = R - static_cast<int64_t>(in->size());
  const Dims &O = *od;
  out = Track::none(R);
  out.space = t.space;
  for (int64_t j = 0; j < R; ++j) {
    const int64_t a = j - off;
    const Role r = t.role(a);
    const size_t uj = static_cast<size_t>(j);
    std::string e;
    if (r != Role::None) {
      if (!((*in)[static_cast<size_t>(a)] == O[uj]))
        return fmt::format("'{}' broadcasts {}", n->name(), roleName(r));
      out.roles[uj] = r;
      out.reps[uj] = t.rep(a);
      if (pruned(r))
        e = elementSite(n, 1, j, O[uj].value, r, t.rep(a), t.space, false, false);
    } else if ((a < 0 || isOne((*in)[static_cast<size_t>(a)])) && O[uj].isStatic() &&
               O[uj].value > 1 && j > 0 && out.roles[uj - 1] == Role::Unit &&
               out.reps[uj - 1] == 1) {
      // The GQA repeat: [b, G, 1, t, D] -> [b, G, R, t, D].
      out.roles[uj] = Role::Rep;
      out.reps[uj] = O[uj].value;
      e = elementSite(n, 1, j, O[uj].value, Role::Rep, O[uj].value, t.space, false, false);
    }
    if (!e.empty())
      return fmt::format("the target shape of '{}': {}", n->name(), e);
  }
  return "";
}

std::string Tracker::concatRule(Node *n, Track &out) {
  const std::optional<Dims> od = dims(n->output());
  if (!od)
    return fmt::format("the shape of '{}' is unknown", n->name());
  const int64_t R = static_cast<int64_t>(od->size());
  int64_t axis = n->attrInt("axis", 0);
  axis = axis < 0 ? axis + R : axis;
  const Track *first = nullptr;
  out = Track::none(R);
  for (Value *v : n->inputs()) {
    const Track *t = live(v);
    if (!t)
      continue;
    if (t->rank() != R)
      return fmt::format("'{}' concatenates values of different ranks", n->name());
    if (pruned(t->role(axis)))
      return fmt::format("'{}' concatenates along {}", n->name(), roleName(t->role(axis)));
    if (!first) {
      first = t;
      out = *t;
      continue;
    }
    for (int64_t a = 0; a < R; ++a) {
      if (t->role(a) == Role::None && first->role(a) == Role::None)
        continue;
      int sp = -1;
      int64_t rep = 1;
      std::string e = relate(first->space, first->role(a), first->rep(a), t->space, t->role(a),
                             t->rep(a), n, sp, rep);
      if (!e.empty())
        return e;
      if (t->role(a) != Role::Inner)
        out.space = sp;
    }
  }
  out.space = find(out.space);
  // Operands not derived from the channels: a graph input (a KV cache) is adopted.
  for (Value *v : n->inputs()) {
    if (!v || live(v))
      continue;
    const std::optional<Dims> d = dims(v);
    if (!v->isGraphInput() || !d || static_cast<int64_t>(d->size()) != R)
      return fmt::format("'{}' concatenates {} with '{}', which is not derived from them",
                         n->name(), roleName(Role::Unit), v->name());
    for (int64_t a = 0; a < R; ++a) {
      if (!pruned(out.role(a)))
        continue;
      if (!((*d)[static_cast<size_t>(a)] == (*od)[static_cast<size_t>(a)]))
        return fmt::format("graph input '{}' does not match '{}'", v->name(), n->name());
      SizeSite s;
      s.kind = SizeSite::Kind::InputDim;
      s.value = v;
      s.index = a;
      s.role = out.role(a);
      s.rep = out.rep(a);
      s.space = out.space;
      sites_.push_back(s);
    }
    setTrack(v, out);
  }
  return "";
}

std::string Tracker::shapeRule(Node *n, const Track &t) {
  const int64_t r = t.rank();
  auto clampAxis = [&](int64_t a) { return std::clamp<int64_t>(a < 0 ? a + r : a, 0, r); };
  const int64_t start = clampAxis(n->attrInt("start", 0)), end = clampAxis(n->attrInt("end", r));
  Value *s = n->output();
  if (s->isGraphOutput())
    return fmt::format("the shape of '{}' is a graph output", n->input(0)->name());
  for (const Use &u : s->uses()) {
    Node *user = u.user;
    std::vector<int64_t> read;
    if (isOp(user, "Gather") && u.index == 0) {
      auto idx = intsOf(user->input(1));
      if (!idx)
        return fmt::format("'{}' reads a computed dimension of '{}'", user->name(),
                           n->input(0)->name());
      for (int64_t x : *idx)
        read.push_back(start + (x < 0 ? x + (end - start) : x));
    } else if (isOp(user, "Slice") && u.index == 0) {
      auto st = intsOf(user->input(1)), en = intsOf(user->input(2));
      if (!st || !en || st->size() != 1 || en->size() != 1)
        return fmt::format("'{}' slices a shape with computed bounds", user->name());
      const int64_t len = end - start;
      auto c = [&](int64_t x) { return std::clamp<int64_t>(x < 0 ? x + len : x, 0, len); };
      for (int64_t x = c((*st)[0]); x < c((*en)[0]); ++x)
        read.push_back(start + x);
    } else {
      return fmt::format("the shape of '{}' is read by '{}' ({})", n->input(0)->name(),
                         user->name(), user->qualifiedOpType());
    }
    for (int64_t x : read)
      if (pruned(t.role(x)))
        return fmt::format("'{}' reads the number of {} from the shape of '{}' (fold-shapes "
                         "before prune-struct turns static sizes into constants)",
                         user->name(), roleName(t.role(x)), n->input(0)->name());
  }
  return "";
}

std::string Tracker::axesRule(Node *n, const Track &t, Track &out) {
  const int64_t r = t.rank();
  auto norm = [](int64_t a, int64_t rank) { return a < 0 ? a + rank : a; };
  out = t;
  if (isOp(n, "Transpose")) {
    std::vector<int64_t> perm = n->attrInts("perm");
    if (perm.empty())
      for (int64_t a = r - 1; a >= 0; --a)
        perm.push_back(a);
    if (static_cast<int64_t>(perm.size()) != r)
      return fmt::format("'{}' has a bad perm", n->name());
    for (int64_t j = 0; j < r; ++j) {
      out.roles[static_cast<size_t>(j)] = t.role(perm[static_cast<size_t>(j)]);
      out.reps[static_cast<size_t>(j)] = t.rep(perm[static_cast<size_t>(j)]);
    }
    return "";
  }
  if (isOp(n, "Unsqueeze") || isOp(n, "Squeeze")) {
    const bool unsq = isOp(n, "Unsqueeze");
    auto axes = axesOf(n, 1, "axes");
    if (!axes)
      return fmt::format("'{}' has computed axes", n->name());
    const int64_t R = unsq ? r + static_cast<int64_t>(axes->size()) : r;
    std::set<int64_t> ax;
    for (int64_t a : *axes)
      ax.insert(norm(a, R));
    if (!unsq && ax.empty()) {
      const std::optional<Dims> d = dims(n->input(0));
      if (!d)
        return fmt::format("'{}' squeezes unknown axes", n->name());
      for (int64_t a = 0; a < r; ++a)
        if (isOne((*d)[static_cast<size_t>(a)]))
          ax.insert(a);
    }
    Track o;
    o.space = t.space;
    int64_t src = 0;
    for (int64_t j = 0; j < (unsq ? R : r); ++j) {
      if (unsq && ax.count(j)) {
        o.roles.push_back(Role::None);
        o.reps.push_back(1);
        continue;
      }
      if (!unsq && ax.count(j)) {
        if (t.role(j) != Role::None)
          return fmt::format("'{}' squeezes {}", n->name(), roleName(t.role(j)));
        continue;
      }
      const int64_t a = unsq ? src++ : j;
      o.roles.push_back(t.role(a));
      o.reps.push_back(t.rep(a));
    }
    out = std::move(o);
    return "";
  }
  // Ops that work along some axes and keep the rest: those axes must not be pruned ones.
  std::vector<int64_t> along;
  bool keep = true; // the axes stay (false: they are removed, as Reduce* with keepdims=0)
  if (isOp(n, "Slice")) {
    std::optional<std::vector<int64_t>> st, en, ax, sp;
    if (n->opsetVersion() != 0 && n->opsetVersion() < 10) {
      st = n->attrInts("starts");
      en = n->attrInts("ends");
      ax = n->hasAttr("axes") ? n->attrInts("axes") : std::vector<int64_t>{};
    } else {
      st = intsOf(n->input(1));
      en = intsOf(n->input(2));
      ax = n->input(3) ? intsOf(n->input(3)) : std::vector<int64_t>{};
      sp = n->input(4) ? intsOf(n->input(4)) : std::vector<int64_t>{};
    }
    if (!st || !en || !ax || (sp && !sp->empty() && sp->size() != st->size()))
      return fmt::format("'{}' has computed bounds", n->name());
    const std::optional<Dims> d = dims(n->input(0));
    for (size_t k = 0; k < st->size(); ++k) {
      const int64_t a = ax->empty() ? static_cast<int64_t>(k) : norm((*ax)[k], r);
      if (!pruned(t.role(a)))
        continue;
      const int64_t dim = d ? (*d)[static_cast<size_t>(a)].value : -1;
      const bool full = (*st)[k] == 0 && dim > 0 && (*en)[k] >= dim &&
                        (!sp || sp->empty() || (*sp)[k] == 1);
      if (!full)
        return fmt::format("'{}' slices {}", n->name(), roleName(t.role(a)));
    }
    return "";
  }
  if (isOp(n, "Gather")) {
    const int64_t a = norm(n->attrInt("axis", 0), r);
    if (pruned(t.role(a)))
      return fmt::format("'{}' gathers along {}", n->name(), roleName(t.role(a)));
    const int64_t ir = n->input(1)->type().rank();
    if (ir < 0)
      return fmt::format("the indices of '{}' have unknown rank", n->name());
    Track o;
    o.space = t.space;
    for (int64_t j = 0; j < r; ++j) {
      if (j == a) {
        for (int64_t k = 0; k < ir; ++k) {
          o.roles.push_back(Role::None);
          o.reps.push_back(1);
        }
        continue;
      }
      o.roles.push_back(t.role(j));
      o.reps.push_back(t.rep(j));
    }
    out = std::move(o);
    return "";
  }
  if (isOp(n, "Softmax") || isOp(n, "LogSoftmax")) {
    const bool old = n->opsetVersion() != 0 && n->opsetVersion() < 13;
    const int64_t a = norm(n->attrInt("axis", old ? 1 : -1), r);
    for (int64_t j = a; j < (old ? r : a + 1); ++j)
      along.push_back(j);
  } else if (isOp(n, "Split")) {
    along.push_back(norm(n->attrInt("axis", 0), r));
  } else if (isOp(n, "LayerNormalization")) {
    for (int64_t j = norm(n->attrInt("axis", -1), r); j < r; ++j)
      along.push_back(j);
    for (size_t i = 1; i < n->numInputs(); ++i) { // scale / bias broadcast over the rest
      const std::optional<Dims> d = dims(n->input(i));
      if (!d)
        return fmt::format("the shape of '{}' is unknown", n->input(i)->name());
      for (int64_t j = 0; j < r; ++j) {
        const int64_t k = j - (r - static_cast<int64_t>(d->size()));
        if (k >= 0 && pruned(t.role(j)) && !isOne((*d)[static_cast<size_t>(k)]))
          return fmt::format("'{}' has a per-channel parameter", n->name());
      }
    }
  } else { // Reduce*
    std::optional<std::vector<int64_t>> axes =
        n->hasAttr("axes") ? std::optional(n->attrInts("axes"))
        : (n->numInputs() > 1 && n->input(1)) ? intsOf(n->input(1))
                                              : std::optional(std::vector<int64_t>{});
    if (!axes)
      return fmt::format("'{}' has computed axes", n->name());
    if (axes->empty() && !n->attrInt("noop_with_empty_axes", 0))
      for (int64_t j = 0; j < r; ++j)
        along.push_back(j);
    for (int64_t a : *axes)
      along.push_back(norm(a, r));
    keep = n->attrInt("keepdims", 1) != 0;
  }
  for (int64_t a : along)
    if (pruned(t.role(a)))
      return fmt::format("'{}' ({}) works across {}", n->name(), n->qualifiedOpType(),
                         roleName(t.role(a)));
  if (!keep) {
    Track o;
    o.space = t.space;
    for (int64_t j = 0; j < r; ++j)
      if (std::find(along.begin(), along.end(), j) == along.end()) {
        o.roles.push_back(t.role(j));
        o.reps.push_back(t.rep(j));
      }
    out = std::move(o);
  } else {
    for (int64_t a : along)
      if (a >= 0 && a < r && t.role(a) != Role::Inner) {
        out.roles[static_cast<size_t>(a)] = Role::None;
      }
  }
  return "";
}

} // namespace llmopt::structprune::detail

// Dependency analysis for structured pruning: channel tracking (see StructDeps.h).
#include "passes/prune/StructDeps.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include <boost/graph/adjacency_list.hpp>
#include <boost/graph/connected_components.hpp>
#include <fmt/format.h>

#include "ir/GraphAlgorithms.h"
#include "passes/prune/StructTracker.h"

namespace llmopt::structprune {

const Tensor *constantTensor(const Value *v) {
  if (!v)
    return nullptr;
  if (v->isConstant())
    return v->constant().get();
  const Node *p = v->producer();
  if (p && p->domain().empty() && p->opType() == "Constant") {
    const Attribute *a = p->attr("value");
    if (a && a->kind == Attribute::Kind::Tensor && a->t)
      return a->t.get();
  }
  return nullptr;
}

std::string StructInfo::spaceName(int s) const {
  const Space &sp = spaces[static_cast<size_t>(s)];
  return sp.columns.empty() ? fmt::format("space {}", s) : sp.columns.front()->name();
}

namespace detail {

int Tracker::unite(int a, int b, const Node *at) {
  a = find(a);
  b = find(b);
  if (a == b)
    return a;
  Space &x = spaces_[static_cast<size_t>(a)], &y = spaces_[static_cast<size_t>(b)];
  if (x.channels != y.channels || (x.split && y.split && x.unitSize != y.unitSize)) {
    const std::string why = fmt::format("'{}' joins {} channels with {} of another weight",
                                        at->name(), x.channels, y.channels);
    block(a, why);
    block(b, why);
    return -1;
  }
  parent_[static_cast<size_t>(b)] = a;
  x.columns.insert(x.columns.end(), y.columns.begin(), y.columns.end());
  x.rows.insert(x.rows.end(), y.rows.begin(), y.rows.end());
  if (y.split) {
    x.split = true;
    x.unitSize = y.unitSize;
  }
  if (x.blocked.empty() && !y.blocked.empty()) {
    x.blocked = y.blocked;
    x.unknownNode = y.unknownNode;
  }
  return a;
}

std::string Tracker::relate(int sa, Role ra, int64_t pa, int sb, Role rb, int64_t pb,
                            const Node *at, int &outSpace, int64_t &outRep) {
  if (ra != rb)
    return fmt::format("one operand's axis holds {}, another's {}", roleName(ra), roleName(rb));
  outRep = 1;
  switch (ra) {
  case Role::Flat:
    outSpace = unite(sa, sb, at);
    return outSpace < 0 ? "mismatched channel counts" : "";
  case Role::Rep:
    if (pa != pb)
      return "different GQA repeats";
    outSpace = unite(sa, sb, at);
    outRep = pa;
    return outSpace < 0 ? "mismatched channel counts" : "";
  case Role::Unit:
    if (pa == pb) {
      outSpace = unite(sa, sb, at);
      outRep = pa;
      return outSpace < 0 ? "mismatched head counts" : "";
    }
    if (pa != 1 && pb != 1)
      return "two repeated head axes with different repeats";
    {
      const int q = find(pa == 1 ? sa : sb), kv = find(pa == 1 ? sb : sa);
      const int64_t rep = pa == 1 ? pb : pa;
      if (space(q).channels != space(kv).channels * rep)
        return fmt::format("{} query channels do not match {} key/value channels repeated {}x",
                           space(q).channels, space(kv).channels, rep);
      links_.push_back({q, kv, rep});
      outSpace = q;
    }
    return "";
  default:
    outSpace = find(sa);
    return "";
  }
}

bool Tracker::isWeight(const Value *w) const {
  if (!w || !w->isConstant() || w->type().rank() != 2 || !isFloat(w->type().elem))
    return false;
  for (const Use &u : w->uses())
    if (!u.user->is(OpKind::MatMul) || u.index != 1)
      return false;
  return !w->isGraphOutput();
}

void Tracker::startColumns(Node *mm) {
  Value *w = mm->input(1);
  const int64_t n = w->constant()->shape()[1];
  auto it = weightSpace_.find(w);
  const int s = it != weightSpace_.end() ? find(it->second) : newSpace(w, n);
  weightSpace_[w] = s;
  const std::optional<Dims> d = dims(mm->output());
  if (!d || d->empty() || !d->back().isStatic() || d->back().value != n) {
    block(s, fmt::format("the shape of '{}' is unknown", mm->output()->name()));
    return;
  }
  Track t = Track::none(static_cast<int64_t>(d->size()));
  t.space = s;
  t.roles.back() = Role::Flat;
  setTrack(mm->output(), std::move(t));
}

// MatMul(x, W) with x's last axis a space's channels: W's rows are that space's.
void Tracker::consumeRows(Node *mm, const Track &a) {
  Value *w = mm->input(1);
  for (int64_t i = 0; i + 1 < a.rank(); ++i)
    if (a.role(i) != Role::None) {
      fail(mm, fmt::format("MatMul '{}' reads {} on an axis other than its contraction",
                           mm->name(), roleName(a.role(i))));
      rowReaders_[w].push_back(-1);
      return;
    }
  if (a.roles.back() != Role::Flat) {
    fail(mm, fmt::format("MatMul '{}' contracts {}", mm->name(), roleName(a.roles.back())));
    rowReaders_[w].push_back(-1);
    return;
  }
  Space &sp = space(a.space);
  if (std::find(sp.rows.begin(), sp.rows.end(), w) == sp.rows.end())
    sp.rows.push_back(w);
  rowReaders_[w].push_back(find(a.space));
}

void Tracker::fail(Node *n, const std::string &why, bool unknown) {
  for (Value *in : n->inputs())
    if (const Track *t = live(in))
      block(t->space, why, unknown ? n : nullptr);
}

std::optional<std::vector<int64_t>> Tracker::intsOf(const Value *v) const {
  if (const Tensor *t = constantTensor(v))
    if (isIntegralDType(t->dtype()) && t->rank() <= 1)
      return t->toInts();
  return knownInts(v, known_);
}

std::optional<std::vector<int64_t>> Tracker::axesOf(Node *n, unsigned operand, const char *attr) {
  if (n->hasAttr(attr))
    return n->attrInts(attr);
  if (n->input(operand))
    return intsOf(n->input(operand));
  return std::vector<int64_t>{};
}

// Finds the integer constant that holds element j of operand `operand` of n (through
// Concat pieces and an Unsqueeze of a scalar) and records it as a site.
std::string Tracker::elementSite(Node *n, unsigned operand, int64_t j, int64_t oldSize, Role role,
                                 int64_t rep, int space, bool reshape, bool zeroKeeps) {
  Node *holder = n;
  unsigned op = operand;
  int64_t idx = j;
  for (int depth = 0; depth < 16; ++depth) {
    Value *v = holder->input(op);
    if (const Tensor *t = constantTensor(v)) {
      if (!isIntegralDType(t->dtype()) || idx >= t->numel())
        return fmt::format("'{}' is not an integer shape", v->name());
      const int64_t val = t->getInt(idx);
      if ((reshape && val == -1) || (zeroKeeps && val == 0) || (!reshape && val == 1))
        return "";
      if (val != oldSize)
        return fmt::format("'{}' holds {} where {} was expected", v->name(), val, oldSize);
      SizeSite s;
      s.kind = SizeSite::Kind::Element;
      s.node = holder;
      s.operand = op;
      s.index = idx;
      s.role = role;
      s.rep = rep;
      s.space = space;
      sites_.push_back(s);
      return "";
    }
    Node *p = v ? v->producer() : nullptr;
    if (p && isOp(p, "Concat") && p->attrInt("axis", 0) == 0) {
      int64_t off = 0;
      bool found = false;
      for (unsigned k = 0; k < p->numInputs() && !found; ++k) {
        const std::optional<Dims> d = dims(p->input(k));
        if (!d || d->size() != 1 || !(*d)[0].isStatic())
          return fmt::format("the length of '{}' is unknown", p->input(k)->name());
        const int64_t len = (*d)[0].value;
        if (idx < off + len) {
          holder = p;
          op = k;
          idx -= off;
          found = true;
        }
        off += len;
      }
      if (!found)
        return fmt::format("'{}' is shorter than expected", v->name());
      continue;
    }
    if (p && isOp(p, "Unsqueeze") && idx == 0 && p->input(0) && p->input(0)->type().rank() == 0) {
      holder = p;
      op = 0;
      continue;
    }
    if (auto vals = intsOf(v); vals && idx < static_cast<int64_t>(vals->size())) {
      const int64_t val = (*vals)[static_cast<size_t>(idx)];
      if ((reshape && val == -1) || (zeroKeeps && val == 0) || (!reshape && val == 1))
        return "";
    }
    return fmt::format("size {} of '{}' is computed at run time, not a constant", oldSize,
                       v ? v->name() : std::string("?"));
  }
  return "shape computation too deep";
}


// ---------------------------------------------------------------- node rules

void Tracker::visit(Node *n) {
  // MatMul(x, W): W's columns start a space; x's channels (if tracked) end in W's rows.
  if (n->is(OpKind::MatMul) && isWeight(n->input(1))) {
    if (const Track *a = live(n->input(0)))
      consumeRows(n, *a);
    else
      rowReaders_[n->input(1)].push_back(-1);
    startColumns(n);
    return;
  }
  bool any = false;
  for (Value *in : n->inputs())
    any = any || live(in);
  if (!any)
    return;
  const Track *t0 = live(n->input(0));
  const bool onlyFirst = !isElementwise(n) && !n->is(OpKind::MatMul) && !isOp(n, "Concat");
  if (onlyFirst)
    for (size_t i = 1; i < n->numInputs(); ++i)
      if (live(n->input(i)))
        return fail(n, fmt::format("'{}' ({}) reads channels as a shape, index or parameter",
                                   n->name(), n->qualifiedOpType()));
  Track out;
  std::string why;
  if (isOp(n, "Shape")) {
    why = t0 ? shapeRule(n, *t0) : "";
    if (!why.empty())
      fail(n, why);
    return;
  }
  if (isElementwise(n))
    why = broadcastRule(n, out);
  else if (n->is(OpKind::MatMul))
    why = matmulRule(n, out);
  else if (isOp(n, "Concat"))
    why = concatRule(n, out);
  else if (!t0)
    why = fmt::format("'{}' ({}) reads channels through an operand other than its data",
                      n->name(), n->qualifiedOpType());
  else if (isOp(n, "Reshape"))
    why = reshapeRule(n, *t0, out, true);
  else if (isOp(n, "Flatten"))
    why = reshapeRule(n, *t0, out, false);
  else if (isOp(n, "Expand"))
    why = expandRule(n, *t0, out);
  else if (isOp(n, "Transpose") || isOp(n, "Unsqueeze") || isOp(n, "Squeeze") ||
           isOp(n, "Slice") || isOp(n, "Gather") || isOp(n, "Softmax") ||
           isOp(n, "LogSoftmax") || isOp(n, "Split") || isOp(n, "LayerNormalization") ||
           (n->domain().empty() && n->opType().rfind("Reduce", 0) == 0))
    why = axesRule(n, *t0, out);
  else
    return fail(n,
                fmt::format("'{}' ({}) is an op the dependency analysis does not know", n->name(),
                            n->qualifiedOpType()),
                /*unknown=*/true);
  if (!why.empty())
    return fail(n, why.find('\'') == std::string::npos
                       ? fmt::format("{} at '{}' ({})", why, n->name(), n->qualifiedOpType())
                       : why);
  if (std::none_of(out.roles.begin(), out.roles.end(), [](Role r) { return r != Role::None; }))
    return;
  const bool allOutputs = isOp(n, "Split") || isOp(n, "Dropout");
  for (size_t i = 0; i < n->numOutputs(); ++i) {
    if (i == 0 || allOutputs) {
      setTrack(n->output(i), out);
    } else if (n->output(i)->hasUses() || n->output(i)->isGraphOutput()) {
      return fail(n, fmt::format("output {} of '{}' is used", i, n->name()));
    }
  }
}

// ---------------------------------------------------------------- groups

void Tracker::finish(StructInfo &info) {
  for (Value *o : g_.outputs()) {
    const Track *t = live(o);
    if (!t)
      continue;
    if (std::find(t->roles.begin(), t->roles.end(), Role::Flat) != t->roles.end()) {
      block(t->space, fmt::format("they reach the graph output '{}'", o->name()));
      continue;
    }
    for (int64_t a = 0; a < t->rank(); ++a)
      if (pruned(t->role(a))) {
        SizeSite s;
        s.kind = SizeSite::Kind::OutputDim;
        s.value = o;
        s.index = a;
        s.role = t->role(a);
        s.rep = t->rep(a);
        s.space = t->space;
        sites_.push_back(s);
      }
  }
  for (const auto &[w, readers] : rowReaders_) {
    std::set<int> roots;
    bool untracked = false;
    for (int r : readers)
      if (r < 0)
        untracked = true;
      else
        roots.insert(find(r));
    if (!roots.empty() && (untracked || roots.size() > 1))
      for (int r : roots)
        block(r, fmt::format("'{}' is also read by another MatMul", w->name()));
  }
  // Groups: the spaces GQA links connect (Boost connected components over the roots).
  const size_t n = spaces_.size();
  boost::adjacency_list<boost::vecS, boost::vecS, boost::undirectedS> ug(n);
  for (const Link &l : links_)
    boost::add_edge(static_cast<size_t>(find(l.q)), static_cast<size_t>(find(l.kv)), ug);
  std::vector<int> comp(n);
  boost::connected_components(ug, comp.data());
  std::map<int, std::vector<int>> members;
  for (size_t s = 0; s < n; ++s)
    if (find(static_cast<int>(s)) == static_cast<int>(s))
      members[comp[s]].push_back(static_cast<int>(s));
  std::vector<std::vector<int>> groups;
  for (auto &[c, m] : members)
    groups.push_back(m);
  std::sort(groups.begin(), groups.end(),
            [](const auto &a, const auto &b) { return a.front() < b.front(); });

  info.spaces = spaces_;
  auto note = [&](const std::vector<int> &m, const std::string &why) {
    for (int s : m) {
      Space &sp = info.spaces[static_cast<size_t>(s)];
      if (sp.blocked.empty())
        sp.blocked = why;
      info.notes.push_back(fmt::format("{}: {}", info.spaceName(s), sp.blocked));
    }
  };
  for (const std::vector<int> &m : groups) {
    if (std::any_of(m.begin(), m.end(), [&](int s) { return !spaces_[static_cast<size_t>(s)].blocked.empty(); })) {
      note(m, "coupled with a group that cannot be pruned");
      continue;
    }
    const bool split = std::any_of(m.begin(), m.end(), [&](int s) { return spaces_[static_cast<size_t>(s)].split; });
    if (!split) {
      const Space &sp = spaces_[static_cast<size_t>(m[0])];
      if (m.size() != 1 || sp.rows.empty())
        note(m, "no weight reads these channels");
      else
        info.mlps.push_back({m[0]});
      continue;
    }
    std::set<int> qs, kvs;
    int64_t rep = 0;
    bool bad = false;
    for (const Link &l : links_) {
      const int q = find(l.q), kv = find(l.kv);
      if (comp[static_cast<size_t>(q)] != comp[static_cast<size_t>(m[0])])
        continue;
      qs.insert(q);
      kvs.insert(kv);
      bad = bad || (rep && rep != l.rep);
      rep = l.rep;
    }
    AttentionGroup a;
    const int64_t D = spaces_[static_cast<size_t>(m[0])].unitSize;
    for (int s : m)
      bad = bad || !spaces_[static_cast<size_t>(s)].split || spaces_[static_cast<size_t>(s)].unitSize != D;
    if (qs.empty()) {
      bad = bad || m.size() != 1;
      a.q = m[0];
      a.rep = 1;
    } else {
      bad = bad || qs.size() != 1 || kvs.count(*qs.begin()) || kvs.size() + 1 != m.size();
      a.q = *qs.begin();
      a.kv.assign(kvs.begin(), kvs.end());
      a.rep = rep;
    }
    const Space &q = spaces_[static_cast<size_t>(a.q)];
    a.headDim = D;
    a.heads = q.units();
    a.kvHeads = a.kv.empty() ? a.heads : spaces_[static_cast<size_t>(a.kv[0])].units();
    bad = bad || q.rows.empty() || a.heads != a.kvHeads * a.rep;
    for (int kv : a.kv)
      bad = bad || !spaces_[static_cast<size_t>(kv)].rows.empty() ||
            spaces_[static_cast<size_t>(kv)].units() != a.kvHeads;
    if (bad) {
      note(m, "an attention structure the analysis does not follow");
      continue;
    }
    info.attns.push_back(a);
  }
  for (SizeSite s : sites_) {
    s.space = find(s.space);
    info.sites.push_back(s);
  }
  for (ConstSlice c : slices_) {
    c.space = find(c.space);
    info.slices.push_back(c);
  }
  for (Value *v : order_)
    info.tracked.emplace_back(v, find(tracks_[v].space));
}

StructInfo Tracker::run() {
  Expected<std::vector<Node *>> order = topologicalOrder(g_);
  for (Node *n : order ? *order : g_.nodeList())
    visit(n);
  StructInfo info;
  finish(info);
  return info;
}

} // namespace detail

StructInfo analyzeStructure(Graph &g, const KnownValueMap &known) {
  detail::Tracker t(g, known);
  return t.run();
}

} // namespace llmopt::structprune

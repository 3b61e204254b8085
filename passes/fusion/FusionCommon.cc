// The fusion passes' shared match loop, rewrite step and report line.
#include "passes/fusion/FusionCommon.h"

#include <set>

#include "passes/analysis/ShapeInference.h"
#include "passes/cleanup/Dce.h"
#include "passes/cleanup/FoldShapes.h"

namespace llmopt::fusion {

size_t FusionStats::numRejected() const {
  size_t n = 0;
  for (const auto &[why, k] : rejected)
    n += k;
  return n;
}

std::string FusionStats::line(std::string_view pass, std::string_view what) const {
  std::string s = fmt::format("{}: {} {} fused{}", pass, found, what, note.empty() ? "" : " " + note);
  if (rejected.empty())
    return s;
  s += fmt::format("; {} near-miss{} rejected:", numRejected(), numRejected() == 1 ? "" : "es");
  // Reasons differing only in the names they quote count as one (the first one shown).
  std::vector<std::pair<std::string, size_t>> groups; // first reason, count
  std::map<std::string, size_t> index;
  for (const auto &[why, k] : rejected) {
    std::string key;
    bool quoted = false;
    for (char c : why) {
      if (c == '\'')
        quoted = !quoted;
      else if (!quoted)
        key += c;
    }
    auto [it, fresh] = index.emplace(key, groups.size());
    if (fresh)
      groups.emplace_back(why, 0);
    groups[it->second].second += k;
  }
  for (const auto &[why, k] : groups)
    s += fmt::format(" {}{};", k > 1 ? fmt::format("{} x ", k) : "", why);
  s.pop_back();
  return s;
}

FusionStats fuseEach(Graph &g, OpKind kind, const std::function<Outcome(Node *, MatchLog &)> &tryFuse) {
  FusionStats st;
  for (Node *n : g.nodeList()) {
    if (!n->is(kind) || n->numOutputs() == 0)
      continue;
    Value *out = n->output(0);
    if (!out->hasUses() && !out->isGraphOutput())
      continue; // dead: consumed by an earlier fusion
    MatchLog log;
    switch (tryFuse(n, log)) {
    case Outcome::Fused: ++st.found; break;
    case Outcome::Rejected: ++st.rejected[log.why]; break;
    case Outcome::NoMatch: break;
    }
  }
  return st;
}

Node *replaceWith(Node *root, OpKind kind, std::vector<Value *> inputs, Node *before) {
  Graph &g = *root->graph();
  std::string scope = root->name();
  size_t slash = scope.rfind('/');
  scope = slash == std::string::npos ? std::string() : scope.substr(0, slash + 1);
  std::string name = scope.empty() ? std::string() : scope + std::string(opInfo(kind).name);
  Node *f = g.addNode(kind, std::move(inputs), 1, uniqueNodeName(g, name), before ? before : root);
  Value *old = root->output(0);
  f->output(0)->setType(old->type());
  f->output(0)->hadValueInfo = old->hadValueInfo;
  g.replaceAllUsesWith(old, f->output(0));
  return f;
}

std::string uniqueNodeName(const Graph &g, const std::string &base) {
  if (base.empty())
    return base;
  std::set<std::string_view> names;
  for (const auto &n : g.nodes())
    names.insert(n->name());
  std::string name = base;
  for (int k = 1; names.count(name); ++k)
    name = fmt::format("{}_{}", base, k);
  return name;
}

Node *residualAdd(Value *x) {
  Node *add = x->producer();
  if (!add || !add->is(OpKind::Add))
    return nullptr;
  Value *a = add->input(0), *b = add->input(1);
  if (a->isConstant() || b->isConstant() || a->type().rank() != 3 || !(a->type() == b->type()))
    return nullptr;
  return add;
}

Node *fuseWithResidual(Node *root, Node *add, OpKind kind, const std::vector<Value *> &rest) {
  Graph &g = *root->graph();
  Node *after = nullptr;
  auto list = g.nodeList();
  for (size_t i = 0; i + 1 < list.size() && !after; ++i)
    if (list[i] == add)
      after = list[i + 1];
  std::vector<Value *> ins{add->input(0), add->input(1)};
  ins.insert(ins.end(), rest.begin(), rest.end());
  Node *f = replaceWith(root, kind, ins, after);
  for (int i = 1; i < 4; ++i)
    f->addOutput();
  f->output(3)->setType(add->output()->type());
  g.replaceAllUsesWith(add->output(), f->output(3));
  ensureOpset(*g.model(), "com.microsoft");
  return f;
}

void ensureOpset(Model &m, const std::string &domain) {
  if (!m.opsets.count(domain))
    m.opsets[domain] = 1;
}

size_t prepare(Model &m) {
  Graph &g = m.graph();
  size_t lifted = 0;
  for (Node *n : g.nodeList()) {
    if (!n->is(OpKind::Constant) || n->output()->isGraphOutput())
      continue;
    std::optional<Tensor> t;
    if (const Attribute *a = n->attr("value"); a && a->kind == Attribute::Kind::Tensor && a->t)
      t = *a->t;
    else if (const Attribute *f = n->attr("value_float"))
      t = Tensor::scalar<float>(DType::F32, f->f);
    else if (const Attribute *i = n->attr("value_int"))
      t = Tensor::scalar<int64_t>(DType::I64, i->i);
    if (!t)
      continue;
    g.replaceWithConstant(n->output(), std::move(*t));
    g.eraseNode(n);
    ++lifted;
  }
  // Best effort: a failure leaves shapes unknown, which only makes matches fail.
  if (auto folded = foldStaticShapes(m))
    lifted += *folded;
  else
    (void)inferShapes(m);
  // torch writes a Cast for every `.to(dtype)`, also when the type does not change.
  for (Node *n : g.nodeList()) {
    if (!n->is(OpKind::Cast) || n->output()->isGraphOutput())
      continue;
    const Type &t = n->input(0)->type();
    if (!t.isTensor() || t.quant || static_cast<int64_t>(t.elem) != n->attrInt("to", -1))
      continue;
    g.replaceAllUsesWith(n->output(), n->input(0));
    g.eraseNode(n);
    ++lifted;
  }
  return lifted;
}

PreservedAnalyses finish(Model &m, AnalysisManager &am, const FusionStats &st,
                         std::string_view pass, std::string_view what, size_t lifted) {
  am.context().reportLines.push_back(st.line(pass, what));
  if (!st.found)
    return lifted ? PreservedAnalyses::none() : PreservedAnalyses::all();
  eliminateDeadCode(m.graph());
  return PreservedAnalyses::none();
}

PreservedAnalyses runFusion(Model &m, AnalysisManager &am, OpKind kind,
                            const std::function<Outcome(Node *, MatchLog &)> &tryFuse,
                            std::string_view pass, std::string_view what) {
  const size_t lifted = prepare(m);
  return finish(m, am, fuseEach(m.graph(), kind, tryFuse), pass, what, lifted);
}

int64_t staticDim(const Value *v, int64_t i) {
  const Type &t = v->type();
  if (!t.dims || i < 0 || i >= t.rank())
    return -1;
  const Dim &d = (*t.dims)[static_cast<size_t>(i)];
  return d.kind == Dim::Kind::Static ? d.value : -1;
}

bool isVectorConst(const Value *v) {
  return v && v->isConstant() && !v->type().quant && v->constant()->shape().size() == 1 &&
         isFloat(v->constant()->dtype());
}

} // namespace llmopt::fusion

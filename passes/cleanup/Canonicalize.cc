// canonicalize: one sweep of local rewrites per graph, repeated until stable.
#include "passes/cleanup/Canonicalize.h"

#include <numeric>

#include "passes/cleanup/Dce.h"

namespace llmopt {
namespace {

/// Forwards `out` to `in` when that keeps the graph interface intact: a graph output
/// may only be forwarded to a value that can take over its name.
bool forward(Graph &g, Value *out, Value *in) {
  if (out->isGraphOutput() &&
      (in->isGraphInput() || in->isGraphOutput() || in->isConstant() || in->graph() != &g))
    return false;
  g.replaceAllUsesWith(out, in);
  return true;
}

const Tensor *constInput(const Node *n, size_t i) {
  const Value *v = n->input(i);
  return v && v->isConstant() ? v->constant().get() : nullptr;
}

/// Axes of Squeeze/Unsqueeze: the attribute before opset 13, the input after.
std::optional<std::vector<int64_t>> axesOf(const Node *n) {
  if (n->hasAttr("axes"))
    return n->attrInts("axes");
  if (const Tensor *t = constInput(n, 1))
    return t->toInts();
  return std::nullopt;
}

bool noOp(Graph &g, Node *n) {
  // Identity(x) => x
  if (n->is(OpKind::Identity))
    return forward(g, n->output(), n->input(0));
  // Dropout(x) => x, when no training_mode input and the mask is unused.
  if (n->is(OpKind::Dropout)) {
    if (n->numInputs() > 2 && n->input(2))
      return false;
    if (n->numOutputs() > 1 && (n->output(1)->hasUses() || n->output(1)->isGraphOutput()))
      return false;
    return forward(g, n->output(), n->input(0));
  }
  // Cast(x: T, to=T) => x
  if (n->is(OpKind::Cast)) {
    const Type &t = n->input(0)->type();
    if (!t.isTensor() || t.quant || static_cast<int64_t>(t.elem) != n->attrInt("to", -1))
      return false;
    return forward(g, n->output(), n->input(0));
  }
  return false;
}

bool transposes(Graph &g, Node *n) {
  if (!n->is(OpKind::Transpose) || !n->hasAttr("perm"))
    return false;
  std::vector<int64_t> q = n->attrInts("perm");
  std::vector<int64_t> iota(q.size());
  std::iota(iota.begin(), iota.end(), 0);
  // Transpose(x, identity) => x
  if (q == iota)
    return forward(g, n->output(), n->input(0));
  // Transpose(Transpose(x, p), q) => Transpose(x, p∘q): out[i] = x[p[q[i]]]
  Node *inner = n->input(0)->producer();
  if (!inner || !inner->is(OpKind::Transpose) || !inner->hasAttr("perm"))
    return false;
  std::vector<int64_t> p = inner->attrInts("perm");
  if (p.size() != q.size())
    return false;
  std::vector<int64_t> pq(q.size());
  for (size_t i = 0; i < q.size(); ++i)
    pq[i] = p[static_cast<size_t>(q[i])];
  n->setInput(0, inner->input(0));
  n->setAttr(Attribute::makeInts("perm", pq));
  return true;
}

bool reshapes(Graph &g, Node *n) {
  if (!n->is(OpKind::Reshape) || n->numInputs() < 2)
    return false;
  const Tensor *shape = constInput(n, 1);
  if (!shape)
    return false;
  std::vector<int64_t> s = shape->toInts();
  // Reshape(x: static S, s) with s == S => x
  const Type &in = n->input(0)->type();
  if (in.isStaticShape() && in.staticShape() == s && !n->hasAttr("allowzero"))
    return forward(g, n->output(), n->input(0));
  // Reshape(Reshape(x, s1), s2) => Reshape(x, s2): s2 must not copy dims (0) from
  // the intermediate shape.
  Node *inner = n->input(0)->producer();
  if (!inner || !inner->is(OpKind::Reshape) || std::count(s.begin(), s.end(), 0) > 0)
    return false;
  n->setInput(0, inner->input(0));
  return true;
}

bool squeezePair(Graph &g, Node *n) {
  // Squeeze(Unsqueeze(x, a), a) => x
  if (!n->is(OpKind::Squeeze))
    return false;
  Node *inner = n->input(0)->producer();
  if (!inner || !inner->is(OpKind::Unsqueeze))
    return false;
  auto a = axesOf(inner), b = axesOf(n);
  if (!a || !b || *a != *b || a->empty())
    return false;
  for (int64_t ax : *a)
    if (ax < 0) // negative axes resolve against different ranks
      return false;
  return forward(g, n->output(), inner->input(0));
}

size_t sweep(Graph &g) {
  size_t changes = 0;
  for (Node *n : g.nodeList()) {
    for (Graph *sg : n->subgraphs())
      changes += sweep(*sg);
    if (noOp(g, n) || transposes(g, n) || reshapes(g, n) || squeezePair(g, n))
      ++changes;
  }
  return changes;
}

} // namespace

Expected<PreservedAnalyses> CanonicalizePass::run(Model &m, AnalysisManager &am) {
  size_t total = 0;
  for (int round = 0; round < 8; ++round) {
    size_t c = sweep(m.graph());
    total += c;
    if (c == 0)
      break;
    eliminateDeadCode(m.graph());
  }
  if (!total)
    return PreservedAnalyses::all();
  am.context().reportLines.push_back(fmt::format("canonicalize: {} rewrites", total));
  return PreservedAnalyses::none();
}

} // namespace llmopt

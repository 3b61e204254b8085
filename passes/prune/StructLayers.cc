// Structured pruning: residual branches and layers (see StructDeps.h, findLayers).
#include <algorithm>
#include <map>
#include <unordered_set>

#include "ir/GraphAlgorithms.h"
#include "passes/prune/StructDeps.h"

namespace llmopt::structprune {

namespace {

/// Nodes whose outputs `v` depends on (in `nodes` order positions >= lo).
std::unordered_set<const Node *> ancestorsOf(const Value *v) {
  std::unordered_set<const Node *> seen;
  std::vector<const Node *> stack;
  if (v->producer())
    stack.push_back(v->producer());
  while (!stack.empty()) {
    const Node *n = stack.back();
    stack.pop_back();
    if (!seen.insert(n).second)
      continue;
    for (const Value *in : n->inputs())
      if (in && in->producer())
        stack.push_back(in->producer());
  }
  return seen;
}

std::unordered_set<const Node *> descendantsOf(const Value *v) {
  std::unordered_set<const Node *> seen;
  std::vector<const Node *> stack;
  for (const Use &u : v->uses())
    stack.push_back(u.user);
  while (!stack.empty()) {
    const Node *n = stack.back();
    stack.pop_back();
    if (!seen.insert(n).second)
      continue;
    for (const Value *o : n->outputs())
      for (const Use &u : o->uses())
        stack.push_back(u.user);
  }
  return seen;
}

bool readsValue(const std::unordered_set<const Node *> &nodes, const Value *v) {
  return std::any_of(v->uses().begin(), v->uses().end(),
                     [&](const Use &u) { return nodes.count(u.user) > 0; });
}

} // namespace

std::vector<Layer> findLayers(Graph &g) {
  Expected<std::vector<Node *>> order = topologicalOrder(g);
  const std::vector<Node *> nodes = order ? *order : g.nodeList();
  struct Cand {
    Node *add;
    Value *stream, *branch;
  };
  // Residual Adds: out = Add(s, f(s)) with equal shapes, s read by the branch too.
  std::map<const Value *, Cand> byStream;
  std::vector<const Value *> streams;
  for (Node *n : nodes) {
    if (!n->is(OpKind::Add) || n->numInputs() != 2)
      continue;
    Value *x = n->input(0), *y = n->input(1);
    if (!x || !y || constantTensor(x) || constantTensor(y) || !x->type().dims ||
        x->type().dims != y->type().dims)
      continue;
    for (auto [s, b] : {std::pair{x, y}, std::pair{y, x}}) {
      if (s->uses().size() < 2 || !b->producer() || byStream.count(s))
        continue;
      if (readsValue(ancestorsOf(b), s)) {
        byStream.emplace(s, Cand{n, s, b});
        streams.push_back(s);
        break;
      }
    }
  }
  std::unordered_set<const Value *> addOuts;
  for (const auto &[s, c] : byStream)
    addOuts.insert(c.add->output());
  std::vector<Cand> best;
  for (const Value *s : streams) { // in graph order, so ties go to the first chain
    if (addOuts.count(s))
      continue;
    std::vector<Cand> chain;
    for (auto it = byStream.find(s); it != byStream.end();
         it = byStream.find(it->second.add->output()))
      chain.push_back(it->second);
    if (chain.size() > best.size())
      best = chain;
  }
  std::vector<ResidualBranch> branches;
  for (const Cand &c : best) {
    ResidualBranch br;
    br.add = c.add;
    br.stream = c.stream;
    const std::unordered_set<const Node *> anc = ancestorsOf(c.branch),
                                           desc = descendantsOf(c.stream);
    for (Node *n : nodes)
      if (anc.count(n) && desc.count(n))
        br.nodes.push_back(n);
    const std::unordered_set<const Node *> in(br.nodes.begin(), br.nodes.end());
    for (Node *n : br.nodes) {
      for (Value *v : n->inputs())
        if (v && v->isConstant() && isFloat(v->type().elem) && !v->isGraphOutput() &&
            std::all_of(v->uses().begin(), v->uses().end(),
                        [&](const Use &u) { return in.count(u.user) > 0; }) &&
            std::find(br.weights.begin(), br.weights.end(), v) == br.weights.end())
          br.weights.push_back(v);
      br.attention = br.attention || (n->is(OpKind::MatMul) && !constantTensor(n->input(0)) &&
                                      !constantTensor(n->input(1)));
    }
    for (Value *o : g.outputs())
      if (o->producer() && in.count(o->producer()))
        br.outputs.push_back(o);
    branches.push_back(std::move(br));
  }
  bool pairs = !branches.empty() && branches.size() % 2 == 0;
  for (size_t i = 0; i < branches.size(); ++i)
    pairs = pairs && branches[i].attention == (i % 2 == 0);
  std::vector<Layer> layers;
  for (size_t i = 0; i < branches.size(); i += pairs ? 2 : 1) {
    Layer l;
    l.branches.push_back(branches[i]);
    if (pairs)
      l.branches.push_back(branches[i + 1]);
    layers.push_back(std::move(l));
  }
  return layers;
}

} // namespace llmopt::structprune

// cse: value numbering keyed by (op, inputs, attributes), per graph in program order.
#include "passes/cleanup/Cse.h"

#include <unordered_map>

namespace llmopt {
namespace {

bool isRandom(const Node *n) {
  const std::string &t = n->opType();
  return t.rfind("Random", 0) == 0 || t == "Multinomial" || t == "Bernoulli" || t == "Dropout";
}

/// A key that is equal for nodes computing the same thing; empty = not mergeable.
std::string nodeKey(const Node *n) {
  if (isRandom(n) || !n->subgraphs().empty())
    return {};
  std::string k = n->domain() + "::" + n->opType() + "(";
  for (const Value *v : n->inputs())
    k += fmt::format("{},", static_cast<const void *>(v));
  k += fmt::format(")#{}", n->numOutputs());
  for (const Attribute &a : n->attributes()) {
    k += "|" + a.name + ":" + std::string(attrKindName(a.kind)) + "=";
    switch (a.kind) {
    case Attribute::Kind::Float: k += fmt::format("{}", a.f); break;
    case Attribute::Kind::Int: k += std::to_string(a.i); break;
    case Attribute::Kind::String: k += fmt::format("{}:{}", a.s.size(), a.s); break;
    case Attribute::Kind::Floats: for (float f : a.floats) k += fmt::format("{},", f); break;
    case Attribute::Kind::Ints: for (int64_t i : a.ints) k += fmt::format("{},", i); break;
    case Attribute::Kind::Strings:
      for (const auto &s : a.strings) k += fmt::format("{}:{},", s.size(), s);
      break;
    case Attribute::Kind::Tensor: k += fmt::format("{:x}", a.t->hash()); break;
    case Attribute::Kind::Tensors: for (const auto &t : a.tensors) k += fmt::format("{:x},", t->hash()); break;
    default:
      for (const auto &b : a.opaque) k += fmt::format("{}:{},", b.size(), b);
      break;
    }
  }
  return k;
}

bool sameAttributes(const Node *a, const Node *b) {
  // Tensor attributes were compared by hash; confirm bytes before merging.
  for (const Attribute &x : a->attributes()) {
    const Attribute *y = b->attr(x.name);
    if (x.kind == Attribute::Kind::Tensor && !(y && y->t && x.t->sameContents(*y->t)))
      return false;
  }
  return true;
}

bool canReplace(const Node *dup) {
  for (const Value *out : dup->outputs())
    if (out->isGraphOutput())
      return false;
  return true;
}

size_t cseGraph(Graph &g) {
  size_t merged = 0;
  // Constants first: identical data (a common export artefact) becomes one value.
  std::unordered_map<uint64_t, std::vector<Value *>> byHash;
  for (Value *c : g.constants()) {
    if (c->isGraphInput() || c->isGraphOutput() || c->type().quant)
      continue;
    auto &bucket = byHash[c->constant()->hash()];
    Value *same = nullptr;
    for (Value *cand : bucket)
      if (cand->constant()->sameContents(*c->constant())) {
        same = cand;
        break;
      }
    if (!same) {
      bucket.push_back(c);
      continue;
    }
    g.replaceAllUsesWith(c, same);
    ++merged;
  }
  g.removeUnusedConstants();
  std::unordered_map<std::string, Node *> seen;
  for (Node *n : g.nodeList()) {
    for (Graph *sg : n->subgraphs())
      merged += cseGraph(*sg);
    std::string key = nodeKey(n);
    if (key.empty())
      continue;
    auto [it, inserted] = seen.emplace(key, n);
    if (inserted || !sameAttributes(n, it->second) || !canReplace(n))
      continue;
    for (size_t i = 0; i < n->numOutputs(); ++i)
      g.replaceAllUsesWith(n->output(i), it->second->output(i));
    g.eraseNode(n);
    ++merged;
  }
  return merged;
}

} // namespace

Expected<PreservedAnalyses> CsePass::run(Model &m, AnalysisManager &am) {
  size_t merged = cseGraph(m.graph());
  if (!merged)
    return PreservedAnalyses::all();
  am.context().reportLines.push_back(fmt::format("cse: merged {} duplicates", merged));
  return PreservedAnalyses::none();
}

} // namespace llmopt

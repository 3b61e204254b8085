// Verifier: every check states what was expected and where it failed.
#include "ir/Verifier.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "ir/GraphAlgorithms.h"

namespace llmopt {
namespace {

constexpr int64_t kMaxDim = int64_t(1) << 40; // larger declared dims are corrupt input

std::string where(const Node *n) {
  return fmt::format("node '{}' ({})", n->name(), n->qualifiedOpType());
}

class Verifier {
public:
  explicit Verifier(const Model *m) : model_(m) {}

  Status graph(const Graph &g, const std::unordered_set<const Value *> &outerVisible) {
    std::unordered_set<const Value *> visible = outerVisible;
    for (Value *v : g.values()) {
      LLMOPT_RETURN_IF_ERROR(value(g, v));
      if (!v->producer())
        visible.insert(v);
    }
    for (Value *in : g.inputs())
      if (in->graph() != &g)
        return errorf("graph '{}': input '{}' belongs to another graph", g.name(), in->name());
    LLMOPT_ASSIGN_OR_RETURN(auto order, topologicalOrder(g));
    (void)order;
    for (const auto &owned : g.nodes()) {
      const Node *n = owned.get();
      LLMOPT_RETURN_IF_ERROR(node(g, n, visible));
      for (Graph *sg : n->subgraphs()) {
        if (sg->parentNode() != n)
          return internalErrorf("graph '{}': subgraph '{}' of {} has a stale parent", g.name(),
                                sg->name(), where(n));
        LLMOPT_RETURN_IF_ERROR(graph(*sg, visible));
      }
      for (Value *out : n->outputs())
        visible.insert(out);
    }
    for (size_t i = 0; i < g.outputs().size(); ++i) {
      const Value *o = g.outputs()[i];
      if (!o)
        return errorf("graph '{}': output #{} is missing", g.name(), i);
      if (!visible.count(o))
        return errorf("graph '{}': output '{}' is not defined in this graph or an enclosing one",
                      g.name(), o->name());
    }
    return Status::ok();
  }

private:
  Status value(const Graph &g, const Value *v) {
    if (!v->name().empty()) {
      if (!names_.insert(v->name()).second)
        return errorf("graph '{}': value name '{}' is defined more than once", g.name(), v->name());
    }
    for (const Use &u : v->uses()) {
      if (u.index >= u.user->numInputs() || u.user->input(u.index) != v)
        return internalErrorf("value '{}': use list entry does not match {} input #{}", v->name(),
                              where(u.user), u.index);
    }
    if (v->producer() && (v->producerIndex() >= v->producer()->numOutputs() ||
                          v->producer()->output(v->producerIndex()) != v))
      return internalErrorf("value '{}': producer link is broken", v->name());
    if (v->isConstant()) {
      if (v->producer())
        return errorf("value '{}' is both a constant and the output of {}", v->name(),
                      where(v->producer()));
      const Tensor &t = *v->constant();
      const Type &ty = v->type();
      if (!ty.isTensor() || !ty.isStaticShape() || ty.staticShape() != t.shape())
        return errorf("constant '{}': declared type {} does not match its data {}", v->name(),
                      toString(ty), toString(t.type()));
      if (!ty.quant && ty.elem != t.dtype())
        return errorf("constant '{}': declared element type {} but data is {}", v->name(),
                      dtypeName(ty.elem), dtypeName(t.dtype()));
    }
    if (v->type().dims)
      for (const Dim &d : *v->type().dims)
        if (d.isStatic() && (d.value < 0 || d.value > kMaxDim))
          return errorf("value '{}': dimension {} is out of range [0, 2^40]", v->name(), d.value);
    return Status::ok();
  }

  Status node(const Graph &g, const Node *n, const std::unordered_set<const Value *> &visible) {
    if (n->graph() != &g)
      return internalErrorf("{} is listed in graph '{}' but points elsewhere", where(n), g.name());
    if (n->kind() != OpKind::Opaque) {
      const OpInfo &info = opInfo(n->kind());
      const int nin = static_cast<int>(n->numInputs());
      const int nout = static_cast<int>(n->numOutputs());
      // Trailing omitted optional inputs do not count against the minimum.
      int present = nin;
      while (present > 0 && !n->input(static_cast<size_t>(present - 1)))
        --present;
      if (present < info.minInputs || (info.maxInputs >= 0 && nin > info.maxInputs))
        return errorf("{}: has {} inputs, expected {}..{}", where(n), nin, info.minInputs,
                      info.maxInputs < 0 ? std::string("any") : std::to_string(info.maxInputs));
      if (nout < info.minOutputs || (info.maxOutputs >= 0 && nout > info.maxOutputs))
        return errorf("{}: has {} outputs, expected {}..{}", where(n), nout, info.minOutputs,
                      info.maxOutputs < 0 ? std::string("any") : std::to_string(info.maxOutputs));
    }
    for (size_t i = 0; i < n->numInputs(); ++i) {
      const Value *in = n->input(i);
      if (!in)
        continue;
      if (!visible.count(in))
        return errorf("{}: input #{} '{}' is not defined before it is used", where(n), i,
                      in->name());
      if (std::find(in->uses().begin(), in->uses().end(), Use{const_cast<Node *>(n),
                                                               static_cast<unsigned>(i)}) ==
          in->uses().end())
        return internalErrorf("{}: input #{} '{}' lacks a use-list entry", where(n), i, in->name());
    }
    for (const Value *out : n->outputs())
      if (out->graph() != &g || out->producer() != n)
        return internalErrorf("{}: output '{}' is not owned by it", where(n), out->name());
    for (const Attribute &a : n->attributes()) {
      if (a.kind == Attribute::Kind::Graph && !a.g)
        return errorf("{}: graph attribute '{}' is empty", where(n), a.name);
      if (a.kind == Attribute::Kind::Tensor && !a.t)
        return errorf("{}: tensor attribute '{}' is empty", where(n), a.name);
    }
    if (model_ && !model_->opsets.count(n->domain()))
      return errorf("{}: domain '{}' has no opset import in the model", where(n),
                    n->domain().empty() ? "ai.onnx" : n->domain());
    return Status::ok();
  }

  const Model *model_;
  std::unordered_set<std::string> names_;
};

} // namespace

Status verify(const Model &model) {
  Verifier v(&model);
  return v.graph(model.graph(), {});
}

Status verify(const Graph &graph) {
  Verifier v(graph.model());
  return v.graph(graph, {});
}

} // namespace llmopt

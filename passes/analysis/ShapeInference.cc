// The shape inference driver: walks graphs in program order, runs each op's rule,
// merges the result into the declared type, and handles If / Loop / Scan bodies.
#include "passes/analysis/ShapeInference.h"

#include <set>

#include <fmt/format.h>

#include "passes/analysis/ShapeRules.h"

namespace llmopt {
namespace {

using namespace shape;

const std::unordered_map<std::string, Rule> &ruleTable() {
  static const std::unordered_map<std::string, Rule> table = [] {
    std::unordered_map<std::string, Rule> m;
    for (auto rules : {elementwiseRules(), mathRules(), tensorRules(), shapeOpRules(), nnRules()})
      for (const RuleEntry &r : rules)
        m.emplace(std::string(r.domain) + "::" + std::string(r.op), r.fn);
    return m;
  }();
  return table;
}

bool isUntyped(const Type &t) {
  return t.kind == Type::Kind::Unknown ||
         (t.isTensor() && t.elem == DType::Undefined && !t.dims);
}

/// The information two types share (If branches, loop-carried values).
Type joinTypes(const Type &a, const Type &b) {
  if (a == b)
    return a;
  if (a.kind != b.kind || !a.isTensor())
    return a.kind == Type::Kind::Unknown && b.isTensor() ? Type::tensor(b.elem)
           : b.kind == Type::Kind::Unknown && a.isTensor() ? Type::tensor(a.elem)
                                                           : Type::unknown();
  Type out = Type::tensor(a.elem == b.elem ? a.elem : DType::Undefined);
  if (a.dims && b.dims && a.dims->size() == b.dims->size()) {
    Dims d;
    for (size_t i = 0; i < a.dims->size(); ++i)
      d.push_back((*a.dims)[i] == (*b.dims)[i] ? (*a.dims)[i] : Dim::unknown());
    out.dims = std::move(d);
  }
  return out;
}

class Inferencer {
public:
  Inferencer(Model &m, const ShapeInferenceOptions &o) : model_(m), opts_(o) {}

  Expected<ShapeInferenceResult> run() {
    LLMOPT_RETURN_IF_ERROR(inferGraph(model_.graph()));
    res_.unknownOps.assign(unknown_.begin(), unknown_.end());
    if (opts_.knownValues)
      for (auto &[v, k] : known_)
        (*opts_.knownValues)[v] = k.elems;
    return res_;
  }

private:
  Status inferGraph(Graph &g) {
    for (Value *v : g.constants())
      seedConstant(v);
    for (Node *n : g.nodeList())
      LLMOPT_RETURN_IF_ERROR(inferNode(*n));
    return Status::ok();
  }

  void seedConstant(const Value *v) {
    if (v->type().quant)
      return; // the stored integers are not the logical values
    if (auto k = knownOfTensor(*v->constant()))
      known_[v] = std::move(*k);
  }

  Status inferNode(Node &n) {
    if (n.domain().empty()) {
      if (n.opType() == "If")
        return inferIf(n);
      if (n.opType() == "Loop")
        return inferLoop(n);
      if (n.opType() == "Scan")
        return inferScan(n);
    }
    for (Graph *g : n.subgraphs())
      LLMOPT_RETURN_IF_ERROR(inferGraph(*g));
    const auto &table = ruleTable();
    auto it = table.find(n.domain() + "::" + n.opType());
    if (it == table.end()) {
      unknown_.insert(n.qualifiedOpType());
      return Status::ok();
    }
    InferContext ctx(n, known_);
    LLMOPT_RETURN_IF_ERROR(it->second(ctx));
    return apply(n, ctx.outTypes, ctx.outKnown);
  }

  /// Merges inferred output types into the node's outputs and records known values.
  Status apply(Node &n, const std::vector<Type> &types,
               const std::vector<std::optional<KnownValue>> &knowns) {
    for (size_t i = 0; i < n.numOutputs() && i < types.size(); ++i) {
      Value *v = n.output(i);
      const Type old = v->type();
      LLMOPT_ASSIGN_OR_RETURN(Type merged, merge(n, *v, old, types[i]));
      if (!(merged == old)) {
        (isUntyped(old) ? res_.valuesTyped : res_.valuesRefined)++;
        v->setType(std::move(merged));
      }
      if (i < knowns.size() && knowns[i])
        known_[v] = *knowns[i];
    }
    return Status::ok();
  }

  Expected<Type> merge(const Node &n, const Value &v, const Type &old, const Type &inf) {
    auto conflict = [&]() -> Status {
      return errorf("shape inference: node '{}' ({}): output '{}' is declared {} but inferred {}",
                    n.name(), n.qualifiedOpType(), v.name(), toString(old), toString(inf));
    };
    if (inf.kind == Type::Kind::Unknown)
      return old;
    if (old.kind == Type::Kind::Unknown)
      return inf;
    if (old.kind != inf.kind)
      return conflict();
    if (!old.isTensor() && old.kind != Type::Kind::SparseTensor)
      return old.inner ? old : inf;
    Type out = old;
    if (old.elem == DType::Undefined)
      out.elem = inf.elem;
    else if (inf.elem != DType::Undefined && inf.elem != old.elem && !old.quant)
      return conflict();
    if (!inf.dims)
      return out;
    if (!old.dims) {
      out.dims = inf.dims;
      return out;
    }
    if (old.dims->size() != inf.dims->size())
      return conflict();
    for (size_t i = 0; i < old.dims->size(); ++i) {
      const Dim &o = (*old.dims)[i], &d = (*inf.dims)[i];
      Dim &r = (*out.dims)[i];
      if (o.isStatic()) {
        if (d.isStatic() && d.value != o.value)
          return conflict();
      } else if (d.isStatic() || o.kind == Dim::Kind::Unknown ||
                 (opts_.replaceSymbols && d.kind == Dim::Kind::Symbolic)) {
        if (d.kind != Dim::Kind::Unknown)
          r = d;
      }
    }
    return out;
  }

  /// Gives a subgraph input the outer type when it has none (or less).
  void seedInput(Value *v, const Type &t) {
    if (!v || t.kind == Type::Kind::Unknown)
      return;
    const Type &old = v->type();
    if (isUntyped(old)) {
      v->setType(t);
      return;
    }
    if (old.isTensor() && t.isTensor() && !old.dims && t.dims) {
      Type nt = old;
      nt.dims = t.dims;
      if (nt.elem == DType::Undefined)
        nt.elem = t.elem;
      v->setType(nt);
    }
  }

  Graph *subgraph(Node &n, std::string_view attr) {
    Attribute *a = n.attr(attr);
    return a && a->g ? a->g.get() : nullptr;
  }

  // If: each branch is inferred; outputs take what both branches agree on, or the
  // taken branch's types when the condition is a known constant.
  Status inferIf(Node &n) {
    Graph *thenG = subgraph(n, "then_branch"), *elseG = subgraph(n, "else_branch");
    if (!thenG || !elseG)
      return errorf("shape inference: node '{}' (If): missing then_branch / else_branch", n.name());
    LLMOPT_RETURN_IF_ERROR(inferGraph(*thenG));
    LLMOPT_RETURN_IF_ERROR(inferGraph(*elseG));
    std::optional<bool> cond;
    if (auto it = known_.find(n.input(0)); n.input(0) && it != known_.end()) {
      if (auto v = it->second.ints(); v && v->size() == 1)
        cond = (*v)[0] != 0;
    }
    std::vector<Type> types(n.numOutputs());
    std::vector<std::optional<KnownValue>> knowns(n.numOutputs());
    for (size_t i = 0; i < n.numOutputs(); ++i) {
      if (i >= thenG->outputs().size() || i >= elseG->outputs().size())
        break;
      const Value *a = thenG->outputs()[i], *b = elseG->outputs()[i];
      if (cond) {
        const Value *taken = *cond ? a : b;
        types[i] = taken->type();
        if (auto it = known_.find(taken); it != known_.end())
          knowns[i] = it->second;
        continue;
      }
      types[i] = joinTypes(a->type(), b->type());
      auto ka = known_.find(a), kb = known_.find(b);
      if (ka != known_.end() && kb != known_.end() && ka->second.elems == kb->second.elems)
        knowns[i] = ka->second;
    }
    return apply(n, types, knowns);
  }

  // Loop(M, cond, v...): body(iter, cond, v...) -> (cond, v..., scan...). Loop-carried
  // values may change shape between iterations, so the body sees their element type
  // and rank only; scan outputs gain a leading trip-count dim.
  Status inferLoop(Node &n) {
    Graph *body = subgraph(n, "body");
    if (!body)
      return errorf("shape inference: node '{}' (Loop): missing body", n.name());
    const auto &bin = body->inputs();
    if (bin.size() >= 1) {
      seedInput(bin[0], Type::tensorOf(DType::I64, {}));
      // The iteration number as a symbol: slices like x[i : i+1] get a static length.
      const std::string &name = bin[0]->name();
      known_[bin[0]] = KnownValue{{DimExpr::symbol(name.empty() ? "loop_iter" : name)}, true};
    }
    if (bin.size() >= 2)
      seedInput(bin[1], Type::tensorOf(DType::Bool, {}));
    size_t numCarried = n.numInputs() >= 2 ? n.numInputs() - 2 : 0;
    for (size_t k = 0; k < numCarried && 2 + k < bin.size(); ++k) {
      Type t = n.input(2 + k) ? n.input(2 + k)->type() : Type::unknown();
      if (t.isTensor() && t.dims)
        for (Dim &d : *t.dims)
          d = Dim::unknown();
      seedInput(bin[2 + k], t);
    }
    LLMOPT_RETURN_IF_ERROR(inferGraph(*body));
    const auto &bout = body->outputs();
    Dim trip = Dim::unknown();
    if (n.input(0) && !n.input(1))
      if (auto it = known_.find(n.input(0)); it != known_.end())
        if (auto v = it->second.ints(); v && v->size() == 1 && (*v)[0] >= 0)
          trip = Dim::of((*v)[0]);
    std::vector<Type> types(n.numOutputs());
    for (size_t i = 0; i < n.numOutputs() && 1 + i < bout.size(); ++i) {
      const Type &bt = bout[1 + i]->type();
      if (i < numCarried) {
        Type init = n.input(2 + i) ? n.input(2 + i)->type() : Type::unknown();
        types[i] = joinTypes(init, bt);
      } else if (bt.isTensor()) {
        types[i] = Type::tensor(bt.elem);
        if (bt.dims) {
          Dims d{trip};
          d.insert(d.end(), bt.dims->begin(), bt.dims->end());
          types[i].dims = std::move(d);
        }
      }
    }
    return apply(n, types, {});
  }

  // Scan (opset >= 9): states keep their type; each scan input is seen one slice at a
  // time (its scan axis removed); scan outputs gain the sequence length at their axis.
  // Opset 8 adds a leading batch axis and an optional sequence_lens input.
  Status inferScan(Node &n) {
    Graph *body = subgraph(n, "body");
    if (!body)
      return errorf("shape inference: node '{}' (Scan): missing body", n.name());
    InferContext c(n, known_);
    const bool v8 = c.opset < 9;
    const size_t first = v8 ? 1 : 0;
    const size_t numScanIn = static_cast<size_t>(n.attrInt("num_scan_inputs", 0));
    if (n.numInputs() < first + numScanIn)
      return c.error("fewer inputs than num_scan_inputs");
    const size_t numState = n.numInputs() - first - numScanIn;
    std::vector<int64_t> inAxes = n.attrInts("scan_input_axes"), outAxes = n.attrInts("scan_output_axes");
    const auto &bin = body->inputs();
    DimExpr seqLen, batch;
    for (size_t k = 0; k < numState + numScanIn && k < bin.size(); ++k) {
      size_t idx = first + k;
      if (!c.dims(idx)) {
        seedInput(bin[k], Type::tensor(c.elem(idx)));
        continue;
      }
      SymShape d = *c.dims(idx);
      if (v8 && !d.empty()) {
        batch = d[0];
        d.erase(d.begin());
      }
      if (k >= numState && !d.empty()) {
        size_t j = k - numState;
        int64_t ax = v8 ? 0 : (j < inAxes.size() ? inAxes[j] : 0);
        LLMOPT_ASSIGN_OR_RETURN(ax, c.axis(ax, static_cast<int64_t>(d.size())));
        if (j == 0)
          seqLen = d[ax];
        d.erase(d.begin() + ax);
      }
      Type t = Type::tensor(c.elem(idx), toDims(d));
      seedInput(bin[k], t);
    }
    LLMOPT_RETURN_IF_ERROR(inferGraph(*body));
    const auto &bout = body->outputs();
    std::vector<Type> types(n.numOutputs());
    for (size_t i = 0; i < n.numOutputs() && i < bout.size(); ++i) {
      const Type &bt = bout[i]->type();
      if (!bt.isTensor() || !bt.dims) {
        types[i] = bt.isTensor() ? Type::tensor(bt.elem) : Type::unknown();
        continue;
      }
      SymShape d = toSymShape(*bt.dims);
      if (i >= numState) {
        size_t j = i - numState;
        int64_t ax = v8 ? 0 : (j < outAxes.size() ? outAxes[j] : 0);
        LLMOPT_ASSIGN_OR_RETURN(ax, c.axis(ax, static_cast<int64_t>(d.size()) + 1));
        d.insert(d.begin() + ax, seqLen);
      }
      if (v8)
        d.insert(d.begin(), batch);
      types[i] = Type::tensor(bt.elem, toDims(d));
    }
    return apply(n, types, {});
  }

  Model &model_;
  ShapeInferenceOptions opts_;
  ShapeInferenceResult res_;
  KnownMap known_;
  std::set<std::string> unknown_;
};

} // namespace

Expected<ShapeInferenceResult> inferShapes(Model &m) { return inferShapes(m, {}); }

Expected<ShapeInferenceResult> inferShapes(Model &m, const ShapeInferenceOptions &opts) {
  Inferencer inf(m, opts);
  return inf.run();
}

std::optional<std::vector<int64_t>> knownInts(const Value *v, const KnownValueMap &known) {
  auto it = known.find(v);
  if (it == known.end())
    return std::nullopt;
  std::vector<int64_t> out;
  for (const DimExpr &e : it->second) {
    auto c = e.asConstant();
    if (!c)
      return std::nullopt;
    out.push_back(*c);
  }
  return out;
}

} // namespace llmopt

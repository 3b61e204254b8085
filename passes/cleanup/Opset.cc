// opset conversion: per-op adapters that move arguments between attributes and
// constant inputs at the versions where ONNX changed them.
#include "passes/cleanup/Opset.h"

#include <set>

namespace llmopt {

Expected<OpsetOptions> parseOpsetOptions(const PassOptionList &opts) {
  OptionReader r("opset", opts);
  OpsetOptions o;
  LLMOPT_ASSIGN_OR_RETURN(o.to, r.getInt("to", 21, 7, 23));
  LLMOPT_RETURN_IF_ERROR(r.finish());
  return o;
}

namespace {

/// An i64 constant input made from an attribute list.
Value *intsConstant(Graph &g, const Node *n, const std::string &what,
                    const std::vector<int64_t> &v) {
  return g.addConstant(g.freshName(n->name().empty() ? what : n->name() + "_" + what),
                       Tensor::fromVector(DType::I64, {static_cast<int64_t>(v.size())}, v));
}

/// Moves attribute `attr` (ints) into input slot `slot`.
void attrToInput(Graph &g, Node *n, const std::string &attr, size_t slot) {
  const Attribute *a = n->attr(attr);
  if (!a)
    return;
  Value *c = intsConstant(g, n, attr, a->ints);
  n->removeAttr(attr);
  while (n->numInputs() < slot)
    n->addInput(nullptr);
  if (n->numInputs() == slot)
    n->addInput(c);
  else
    n->setInput(slot, c);
}

/// Moves constant input `slot` into attribute `attr`; fails if it is not constant.
Status inputToAttr(Node *n, const std::string &attr, size_t slot) {
  Value *v = n->input(slot);
  if (!v)
    return Status::ok();
  if (!v->isConstant())
    return errorf("opset: node '{}' ({}): input #{} must be constant to become attribute '{}' "
                  "at the lower opset",
                  n->name(), n->opType(), slot, attr);
  n->setAttr(Attribute::makeInts(attr, v->constant()->toInts()));
  n->setInput(slot, nullptr);
  while (n->numInputs() > 0 && !n->input(n->numInputs() - 1))
    n->truncateInputs(n->numInputs() - 1);
  return Status::ok();
}

/// Moves a float attribute to a scalar constant input (Clip min/max, Pad value).
void floatAttrToInput(Graph &g, Node *n, const std::string &attr, size_t slot, DType dt) {
  const Attribute *a = n->attr(attr);
  if (!a)
    return;
  float f = a->f;
  Tensor t = dt == DType::F64 ? Tensor::scalar<double>(dt, f) : Tensor::scalar<float>(DType::F32, f);
  Value *c = g.addConstant(g.freshName(n->name() + "_" + attr), std::move(t));
  n->removeAttr(attr);
  while (n->numInputs() <= slot)
    n->addInput(nullptr);
  n->setInput(slot, c);
}

const std::set<std::string> kReduce18 = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                                         "ReduceL1", "ReduceL2", "ReduceLogSum",
                                         "ReduceLogSumExp", "ReduceSumSquare"};

/// Ops whose changes between versions need a rewrite this pass does not have. Version
/// bumps that only added types or optional inputs/attributes with the old behaviour as
/// default (Cast 19 saturate, Q/DQ 19/21 float8 and blocks, Pad 18/19) need none.
struct Unhandled {
  const char *op;
  int version;
};
constexpr Unhandled kUnhandled[] = {
    {"Upsample", 10},           {"Resize", 11},
    {"Resize", 13},             {"BatchNormalization", 9},
    {"BatchNormalization", 14}, {"BatchNormalization", 15},
    {"Scan", 9},                {"TopK", 10},
    {"GroupNormalization", 21}, {"LayerNormalization", 17}};

Status upgrade(Graph &g, Node *n, int64_t from, int64_t to) {
  auto crosses = [&](int64_t v) { return from < v && to >= v; };
  const std::string &op = n->opType();
  if (op == "ReduceSum" && crosses(13))
    attrToInput(g, n, "axes", 1);
  else if (kReduce18.count(op) && crosses(18))
    attrToInput(g, n, "axes", 1);
  else if (op == "Split" && (crosses(13) || crosses(18))) {
    if (crosses(13))
      attrToInput(g, n, "split", 1);
    // From 18 an equal split states its part count.
    if (crosses(18) && !n->input(1) && !n->hasAttr("num_outputs"))
      n->setAttr(Attribute::makeInt("num_outputs", static_cast<int64_t>(n->numOutputs())));
  } else if ((op == "Squeeze" || op == "Unsqueeze") && crosses(13))
    attrToInput(g, n, "axes", 1);
  else if (op == "Clip" && crosses(11)) {
    DType dt = n->input(0)->type().isTensor() ? n->input(0)->type().elem : DType::F32;
    floatAttrToInput(g, n, "min", 1, dt);
    floatAttrToInput(g, n, "max", 2, dt);
  } else if (op == "Pad" && crosses(11)) {
    attrToInput(g, n, "pads", 1);
    floatAttrToInput(g, n, "value", 2, DType::F32);
  } else if (op == "Slice" && crosses(10)) {
    std::vector<int64_t> starts = n->attrInts("starts"), ends = n->attrInts("ends");
    std::vector<int64_t> axes = n->attrInts("axes");
    n->removeAttr("starts");
    n->removeAttr("ends");
    n->addInput(intsConstant(g, n, "starts", starts));
    n->addInput(intsConstant(g, n, "ends", ends));
    if (!axes.empty()) {
      n->removeAttr("axes");
      n->addInput(intsConstant(g, n, "axes", axes));
    }
  } else if (op == "Dropout" && crosses(12)) {
    n->removeAttr("ratio"); // inference: ratio is irrelevant to the result
  } else {
    for (const Unhandled &u : kUnhandled)
      if (op == u.op && crosses(u.version))
        return errorf("opset: node '{}' ({}) changed meaning at opset {}; converting it from {} to "
                      "{} is not supported",
                      n->name(), op, u.version, from, to);
  }
  return Status::ok();
}

Status downgrade(Node *n, int64_t from, int64_t to) {
  auto crosses = [&](int64_t v) { return to < v && from >= v; };
  const std::string &op = n->opType();
  if (op == "ReduceSum" && crosses(13))
    return inputToAttr(n, "axes", 1);
  if (kReduce18.count(op) && crosses(18))
    return inputToAttr(n, "axes", 1);
  if (op == "Split" && crosses(18))
    n->removeAttr("num_outputs");
  if (op == "Split" && crosses(13))
    return inputToAttr(n, "split", 1);
  if ((op == "Squeeze" || op == "Unsqueeze") && crosses(13))
    return inputToAttr(n, "axes", 1);
  if ((op == "Clip" && crosses(11)) || (op == "Pad" && crosses(11)) ||
      (op == "Slice" && crosses(10)))
    return errorf("opset: node '{}' ({}): converting down to opset {} is not supported", n->name(),
                  op, to);
  for (const Unhandled &u : kUnhandled)
    if (op == u.op && crosses(u.version))
      return errorf("opset: node '{}' ({}) changed meaning at opset {}; converting it from {} to {} "
                    "is not supported",
                    n->name(), op, u.version, from, to);
  return Status::ok();
}

Status convertGraph(Graph &g, int64_t from, int64_t to) {
  for (Node *n : g.nodeList()) {
    for (Graph *sg : n->subgraphs())
      LLMOPT_RETURN_IF_ERROR(convertGraph(*sg, from, to));
    if (!n->domain().empty())
      continue;
    if (to > from)
      LLMOPT_RETURN_IF_ERROR(upgrade(g, n, from, to));
    else
      LLMOPT_RETURN_IF_ERROR(downgrade(n, from, to));
  }
  return Status::ok();
}

/// The IR version a given default-domain opset requires (ONNX's release table).
int64_t minIrVersion(int64_t opset) {
  if (opset >= 23) return 11;
  if (opset >= 21) return 10;
  if (opset >= 19) return 9;
  if (opset >= 15) return 8;
  if (opset >= 13) return 7;
  return 3;
}

} // namespace

Expected<PreservedAnalyses> OpsetPass::run(Model &m, AnalysisManager &am) {
  const int64_t from = m.opsetVersion("");
  const int64_t to = opts_.to;
  if (from == to)
    return PreservedAnalyses::all();
  if (from == 0)
    return errorf("opset: the model imports no default-domain opset");
  LLMOPT_RETURN_IF_ERROR(convertGraph(m.graph(), from, to));
  m.opsets[""] = to;
  if (to > from)
    m.irVersion = std::max(m.irVersion, minIrVersion(to));
  else if (to <= 17 && m.irVersion > 8)
    m.irVersion = 8; // what opset-17 tooling (libonnx 1.12) reads
  am.context().reportLines.push_back(fmt::format("opset: converted {} -> {}", from, to));
  return PreservedAnalyses::none();
}

} // namespace llmopt

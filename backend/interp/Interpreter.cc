// The interpreter's entry points: the kernel table keyed by OpKind, node evaluation
// (with f16/bf16 widening) and graph execution with liveness-based freeing.
#include "backend/interp/Interpreter.h"

#include <exception>
#include <unordered_map>
#include <unordered_set>

#include "backend/interp/Kernel.h"
#include "ir/QuantFormats.h"

namespace llmopt::interp {
namespace {

struct Registry {
  std::vector<std::vector<KernelDef>> byKind;
  Registry() {
    KernelTable t;
    addElementwiseKernels(t);
    addShapeKernels(t);
    addMovementKernels(t);
    addReduceKernels(t);
    addNnKernels(t);
    addMatMulKernels(t);
    addQuantKernels(t);
    addIndexKernels(t);
    addContribKernels(t);
    addAttentionKernels(t);
    byKind.resize(static_cast<size_t>(OpKind::NumOps));
    for (const KernelDef &d : t)
      byKind[static_cast<size_t>(d.kind)].push_back(d);
  }
};

const Registry &registry() {
  static const Registry r;
  return r;
}

const KernelDef *findKernel(const Node &n) {
  if (n.kind() == OpKind::Opaque || n.kind() >= OpKind::NumOps)
    return nullptr;
  const int64_t v = opsetOf(n);
  for (const KernelDef &d : registry().byKind[static_cast<size_t>(n.kind())])
    if (v >= d.minVersion && v <= d.maxVersion)
      return &d;
  return nullptr;
}

Status unsupported(const Node &n) {
  bool otherVersions = n.kind() != OpKind::Opaque && n.kind() < OpKind::NumOps &&
                       !registry().byKind[static_cast<size_t>(n.kind())].empty();
  if (otherVersions)
    return errorf("unsupported op {} at opset {} (node '{}')", n.qualifiedOpType(),
                  n.opsetVersion(), n.name());
  return errorf("unsupported op {} (node '{}')", n.qualifiedOpType(), n.name());
}

Expected<TensorList> callKernel(const KernelDef &k, const Node &n, const InputList &in) {
  try {
    if (!k.halfAsFloat)
      return k.fn(n, in);
    DType half = DType::Undefined;
    for (const Tensor *t : in)
      if (t && isHalfType(t->dtype())) {
        half = t->dtype();
        break;
      }
    if (half == DType::Undefined)
      return k.fn(n, in);
    std::vector<Tensor> wide;
    wide.reserve(in.size());
    InputList widened;
    for (const Tensor *t : in) {
      if (t && isHalfType(t->dtype())) {
        wide.push_back(widenHalf(*t));
        widened.push_back(&wide.back());
      } else {
        widened.push_back(t);
      }
    }
    LLMOPT_ASSIGN_OR_RETURN(TensorList outs, k.fn(n, widened));
    for (Tensor &o : outs)
      if (o.dtype() == DType::F32) {
        LLMOPT_ASSIGN_OR_RETURN(o, castTensor(o, half));
      }
    return outs;
  } catch (const std::exception &e) {
    return nodeError(n, "kernel failed: {}", e.what());
  }
}

/// The f32 value of a quantized constant (ir/QuantFormats.h defines the layout).
Expected<Tensor> dequantizeConstant(const Value &v) {
  auto t = quant::dequantize(*v.constant(), *v.type().quant);
  if (!t)
    return t.status().withContext("quantized constant '" + v.name() + "'");
  return t;
}

Status checkInput(const Value &v, size_t i, const Tensor &t) {
  const Type &ty = v.type();
  if (!ty.isTensor())
    return Status::ok();
  if (ty.elem != DType::Undefined && ty.elem != t.dtype())
    return errorf("graph input '{}' (#{}) expects {}, got {}", v.name(), i, dtypeStr(ty.elem),
                  dtypeStr(t.dtype()));
  if (!ty.dims)
    return Status::ok();
  const Dims &d = *ty.dims;
  bool ok = static_cast<int64_t>(d.size()) == t.rank();
  for (size_t j = 0; ok && j < d.size(); ++j)
    ok = !d[j].isStatic() || d[j].value == t.shape()[j];
  if (!ok)
    return errorf("graph input '{}' (#{}) expects shape {}, got {}", v.name(), i, toString(ty),
                  shapeStr(t.shape()));
  return Status::ok();
}

} // namespace

bool canEvaluate(const Node &n) { return findKernel(n) != nullptr; }

Expected<std::vector<Tensor>> evaluateNode(const Node &n, const std::vector<const Tensor *> &inputs) {
  const KernelDef *k = findKernel(n);
  if (!k)
    return unsupported(n);
  const OpInfo &info = opInfo(n.kind());
  for (int i = 0; i < info.minInputs; ++i) {
    const bool present = static_cast<size_t>(i) < inputs.size() && inputs[static_cast<size_t>(i)];
    if (!present && !(i < 32 && (k->optionalInputs >> i) & 1u))
      return nodeError(n, "input {} is required but missing", i);
  }
  if (inputs.size() < static_cast<size_t>(info.minInputs))
    return nodeError(n, "takes at least {} inputs, got {}", info.minInputs, inputs.size());
  if (info.maxInputs >= 0 && inputs.size() > static_cast<size_t>(info.maxInputs))
    return nodeError(n, "takes at most {} inputs, got {}", info.maxInputs, inputs.size());
  return callKernel(*k, n, inputs);
}

Expected<std::vector<Tensor>> run(const Graph &g, const std::vector<Tensor> &inputs,
                                  const RunOptions &opts) {
  ThreadBudgetScope budget(opts.threads);
  const std::vector<Node *> nodes = g.nodeList();
  for (const Node *n : nodes)
    if (!canEvaluate(*n))
      return unsupported(*n);

  const auto &gin = g.inputs();
  if (inputs.size() > gin.size())
    return errorf("graph '{}' has {} inputs, {} given", g.name(), gin.size(), inputs.size());
  std::unordered_map<const Value *, Tensor> env;
  for (size_t i = 0; i < gin.size(); ++i) {
    const Value *v = gin[i];
    if (i < inputs.size()) {
      LLMOPT_RETURN_IF_ERROR(checkInput(*v, i, inputs[i]));
      env[v] = inputs[i];
      if (opts.onValue)
        LLMOPT_RETURN_IF_ERROR(opts.onValue(*v, inputs[i]));
    } else if (!v->isConstant()) {
      return errorf("graph input '{}' (#{}) has no value: pass it (only inputs with an "
                    "initializer may be left out)", v->name(), i);
    }
  }

  std::unordered_set<const Value *> outputs(g.outputs().begin(), g.outputs().end());
  std::unordered_map<const Value *, size_t> lastUse;
  for (size_t idx = 0; idx < nodes.size(); ++idx)
    for (const Value *v : nodes[idx]->inputs())
      if (v)
        lastUse[v] = idx;

  InputList ins;
  for (size_t idx = 0; idx < nodes.size(); ++idx) {
    const Node &n = *nodes[idx];
    ins.clear();
    for (const Value *v : n.inputs()) {
      if (!v) {
        ins.push_back(nullptr);
        continue;
      }
      auto it = env.find(v);
      if (it != env.end()) {
        ins.push_back(&it->second);
      } else if (v->isConstant() && v->type().quant) {
        // A quantized constant stands for its dequantized f32 value; it is decoded at
        // first use and freed after its last, like any intermediate.
        LLMOPT_ASSIGN_OR_RETURN(Tensor t, dequantizeConstant(*v));
        ins.push_back(&env.emplace(v, std::move(t)).first->second);
      } else if (v->isConstant()) {
        ins.push_back(v->constant().get());
      } else {
        return internalErrorf("{}: input '{}' is used before it is computed", nodeLabel(n), v->name());
      }
    }
    LLMOPT_ASSIGN_OR_RETURN(TensorList res, evaluateNode(n, ins));
    for (size_t o = 0; o < n.numOutputs(); ++o) {
      const Value *v = n.output(o);
      const bool needed = v->hasUses() || outputs.count(v);
      if (o >= res.size()) {
        if (needed)
          return nodeError(n, "produced no value for output #{} '{}'", o, v->name());
        continue;
      }
      if (!needed)
        continue;
      Tensor &t = env[v] = std::move(res[o]);
      if (opts.onValue)
        LLMOPT_RETURN_IF_ERROR(opts.onValue(*v, t));
    }
    for (const Value *v : n.inputs()) {
      if (!v || lastUse[v] != idx || outputs.count(v))
        continue;
      env.erase(v);
      if (opts.releaseMappedConstants && v->isConstant()) {
        const Tensor &c = *v->constant();
        if (c.isMapped())
          c.mapping()->release(c.mappingOffset(), c.nbytes());
      }
    }
  }

  std::vector<Tensor> result;
  for (const Value *v : g.outputs()) {
    auto it = env.find(v);
    if (it != env.end()) {
      result.push_back(it->second);
    } else if (v->isConstant() && v->type().quant) {
      LLMOPT_ASSIGN_OR_RETURN(Tensor t, dequantizeConstant(*v));
      result.push_back(std::move(t));
    } else if (v->isConstant()) {
      result.push_back(*v->constant());
    } else {
      return errorf("graph output '{}' has no value", v->name());
    }
  }
  return result;
}

} // namespace llmopt::interp

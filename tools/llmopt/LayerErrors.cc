// Per-layer output errors measured after the pipeline, against the original model.
#include "tools/llmopt/LayerErrors.h"

#include <algorithm>
#include <optional>
#include <unordered_map>

#include "frontend/ModelLoader.h"
#include "ir/QuantFormats.h"
#include "passes/calib/Calibration.h"
#include "passes/quant/Gptq.h"

namespace llmopt {
namespace {

struct Changed {
  std::string name;
  Tensor original;            ///< f32 [K, N]
  std::vector<float> now;     ///< the pipeline's values, f32 [K, N]
};

/// The pipeline's weight `name` as f32 values, if it still has the original's shape.
std::optional<std::vector<float>> valuesNow(const Value &v, const std::vector<int64_t> &shape) {
  const Tensor &t = *v.constant();
  if (t.shape() != shape)
    return std::nullopt;
  if (v.type().quant) {
    auto f = quant::dequantize(t, *v.type().quant);
    if (!f)
      return std::nullopt;
    return f->toFloats();
  }
  if (!isFloat(t.dtype()))
    return std::nullopt;
  return t.toFloats();
}

} // namespace

Status measureLayerErrors(const std::string &input, const Model &changed, const PassContext &ctx,
                          std::map<std::string, double> &errors) {
  std::unordered_map<std::string, const Value *> after;
  for (Value *c : changed.graph().constants())
    after.emplace(c->name(), c);
  LLMOPT_ASSIGN_OR_RETURN(auto original, loadModel(input));
  const Graph &g = original->graph();

  // Weight -> the activation it multiplies; weights read with several activations are left out.
  std::unordered_map<const Value *, std::vector<Changed>> byAct;
  std::unordered_map<const Value *, const Value *> actOf;
  for (const Node *n : g.nodeList()) {
    if (n->kind() != OpKind::MatMul || n->numInputs() != 2 || !n->input(0) || !n->input(1))
      continue;
    const Value *w = n->input(1);
    if (!w->isConstant() || w->type().quant || w->constant()->dtype() != DType::F32 ||
        w->constant()->rank() != 2)
      continue;
    auto [it, fresh] = actOf.emplace(w, n->input(0));
    if (!fresh && it->second != n->input(0))
      it->second = nullptr;
  }
  for (const auto &[w, act] : actOf) {
    auto a = after.find(w->name());
    if (!act || errors.count(w->name()) || a == after.end())
      continue;
    const Tensor &t = *w->constant();
    auto now = valuesNow(*a->second, t.shape());
    if (!now || std::equal(now->begin(), now->end(), t.view<float>().begin()))
      continue;
    byAct[act].push_back({w->name(), t, std::move(*now)});
  }
  if (byAct.empty())
    return Status::ok();

  LLMOPT_ASSIGN_OR_RETURN(auto windows, calib::loadWindows(ctx));
  // Activations in graph order, grouped so their K x K double Hessians fit the budget.
  std::vector<std::vector<const Value *>> groups(1);
  size_t groupBytes = 0;
  const size_t budget = static_cast<size_t>(ctx.calibMemoryMiB) << 20;
  for (const Value *act : calib::matmulWeightInputs(g)) {
    auto it = byAct.find(act);
    if (it == byAct.end())
      continue;
    const auto K = static_cast<size_t>(it->second.front().original.shape()[0]);
    if (!groups.back().empty() && groupBytes + K * K * 8 > budget) {
      groups.emplace_back();
      groupBytes = 0;
    }
    groups.back().push_back(act);
    groupBytes += K * K * 8;
  }
  for (const auto &group : groups) {
    if (group.empty())
      continue;
    LLMOPT_ASSIGN_OR_RETURN(calib::Stats st,
                            calib::collect(*original, windows, group, true, ctx.threads));
    for (const Value *act : group) {
      const calib::ActStats *as = st.find(act);
      if (!as || !as->hasHessian())
        continue;
      for (const Changed &c : byAct[act])
        errors[c.name] = quantpass::relativeHessianError(
            c.original.view<float>().data(), c.now.data(), c.original.shape()[0],
            c.original.shape()[1], as->hessian);
    }
  }
  return Status::ok();
}

} // namespace llmopt

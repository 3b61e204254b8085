// quant-int4: option parsing and the per-weight encoding choice.
#include "passes/quant/QuantInt4.h"

#include <cmath>
#include <unordered_map>

#include "ir/Progress.h"
#include "passes/calib/Calibration.h"
#include "passes/quant/Awq.h"
#include "passes/quant/Gptq.h"
#include "passes/quant/QuantCommon.h"

namespace llmopt {

Expected<QuantInt4Options> parseQuantInt4Options(const PassOptionList &opts) {
  OptionReader r("quant-int4", opts);
  QuantInt4Options o;
  LLMOPT_ASSIGN_OR_RETURN(std::string bits, r.getChoice("bits", {"2", "3", "4", "8"}, "4"));
  o.bits = std::stoi(bits);
  LLMOPT_ASSIGN_OR_RETURN(o.block, quantpass::readBlock(r, "quant-int4", 32));
  LLMOPT_ASSIGN_OR_RETURN(std::string mode, r.getChoice("mode", {"sym", "asym"}, ""));
  LLMOPT_ASSIGN_OR_RETURN(o.method, quantpass::readMethod(r));
  LLMOPT_ASSIGN_OR_RETURN(o.damp, r.getDouble("damp", 0.01, 0.0, 10.0));
  LLMOPT_ASSIGN_OR_RETURN(o.actOrder, r.getFlag("actorder", false));
  LLMOPT_ASSIGN_OR_RETURN(o.awqGrid, r.getInt("grid", 20, 1, 100));
  LLMOPT_RETURN_IF_ERROR(r.finish());
  if (o.actOrder && o.method != "gptq")
    return errorf("pass 'quant-int4': option 'actorder' applies to method=gptq only");
  if (o.method == "hqq" && mode == "sym")
    return errorf("pass 'quant-int4': method=hqq optimises a zero point and needs asym (the "
                  "default for hqq); drop 'sym'");
  o.symmetric = mode.empty() ? o.method != "hqq" : mode == "sym";
  return o;
}

namespace {

/// GPTQ over every MatMul weight, calibration Hessians streamed in groups (Calibration.h).
/// A weight read by MatMuls with different inputs has no single Hessian: it gets RTN.
Expected<quantpass::WeightQuantStats>
quantizeGptq(Model &m, AnalysisManager &am, const QuantInt4Options &o,
             const std::function<QuantEncoding(int64_t, int64_t)> &encodingFor,
             std::string &detail) {
  Graph &g = m.graph();
  quantpass::WeightQuantStats st;
  st.gemms = quantpass::gemmsToMatMuls(g, st.skips);
  const std::vector<quantpass::MatMulWeight> weights = quantpass::findMatMulWeights(g, 16, st.skips);
  std::unordered_map<const Value *, std::vector<size_t>> byAct;
  std::vector<size_t> mixed;
  for (size_t i = 0; i < weights.size(); ++i) {
    const Value *a = weights[i].users.front()->input(0);
    bool same = true;
    for (const Node *u : weights[i].users)
      same = same && u->input(0) == a;
    if (same)
      byAct[a].push_back(i);
    else
      mixed.push_back(i);
  }
  std::vector<const Value *> acts;
  for (const Value *a : calib::matmulWeightInputs(g))
    if (byAct.count(a))
      acts.push_back(a);
  quantpass::GptqOptions go;
  go.damp = o.damp;
  go.actOrder = o.actOrder;
  double logRatio = 0, maxDamp = 0;
  int64_t measured = 0, quantized = 0;
  Progress progress("gptq", static_cast<int64_t>(weights.size() - mixed.size()), "weights");
  LLMOPT_RETURN_IF_ERROR(calib::forEachHessianGroup(
      m, am, acts, "quant-int4", [&](calib::Stats &s) -> Status {
        for (const Value *a : acts) {
          const calib::ActStats *as = s.find(a);
          if (!as)
            continue;
          // One factorization per activation: q, k, v (gate, up) share it.
          LLMOPT_ASSIGN_OR_RETURN(quantpass::GptqFactor factor,
                                  quantpass::gptqFactor(as->hessian, as->channels, go));
          for (size_t i : byAct[a]) {
            const quantpass::MatMulWeight &w = weights[i];
            const Tensor &t = *w.weight->constant();
            const QuantEncoding enc = encodingFor(t.shape()[0], t.shape()[1]);
            auto r = quantpass::gptqQuantize(t, factor, as->hessian, enc, go);
            if (!r)
              return r.status().withContext("weight '" + w.weight->name() + "'");
            if (r->rtnOutputError > 0 && r->outputError > 0) {
              logRatio += std::log(r->outputError / r->rtnOutputError);
              ++measured;
            }
            maxDamp = std::max(maxDamp, r->dampUsed);
            if (go.measure && r->outputError >= 0) {
              const double energy = quantpass::hessianEnergy(t.view<float>().data(), t.shape()[0],
                                                             t.shape()[1], as->hessian);
              if (energy > 0)
                am.context().layerErrors[w.weight->name()] = r->outputError / energy;
            }
            quantpass::installQuantized(g, w, std::move(r->quantized), enc, st);
            progress.update(++quantized);
          }
        }
        return Status::ok();
      }));
  for (size_t i : mixed) {
    const quantpass::MatMulWeight &w = weights[i];
    const Tensor &t = *w.weight->constant();
    const QuantEncoding enc = encodingFor(t.shape()[0], t.shape()[1]);
    LLMOPT_ASSIGN_OR_RETURN(Tensor q, quant::quantizeRtn(t, enc));
    quantpass::installQuantized(g, w, std::move(q), enc, st);
  }
  detail = fmt::format("; calibration output error vs RTN {:.3f}x (geometric mean over {} "
                       "weights), damp {}{}{}",
                       measured ? std::exp(logRatio / static_cast<double>(measured)) : 1.0,
                       measured, o.damp, maxDamp > o.damp ? fmt::format(" (raised to {} for some)", maxDamp) : "",
                       mixed.empty() ? "" : fmt::format("; {} weights with several inputs got RTN", mixed.size()));
  return st;
}

} // namespace

Expected<PreservedAnalyses> QuantInt4Pass::run(Model &m, AnalysisManager &am) {
  if ((opts_.method == "gptq" || opts_.method == "awq") && am.context().calibPath.empty())
    return quantpass::calibrationMethodError("quant-int4", opts_.method, am.context());
  const bool onnx = am.context().target == "onnx";
  auto encodingFor = [&](int64_t K, int64_t) {
    return QuantEncoding{quant::storageType(opts_.bits, opts_.symmetric), opts_.bits, 0,
                         quantpass::effectiveBlock(opts_.block, K), opts_.symmetric};
  };
  quantpass::WeightQuantStats st;
  std::string detail;
  if (opts_.method == "gptq") {
    LLMOPT_ASSIGN_OR_RETURN(st, quantizeGptq(m, am, opts_, encodingFor, detail));
  } else {
    quantpass::Method method = quantpass::Method::Rtn;
    if (opts_.method == "hqq") {
      method = quantpass::Method::Hqq;
      detail = onnx ? "; zero points rounded, scales refit (DequantizeLinear needs integers)"
                    : "; fractional zero points (MatMulNBits f32 zero_points)";
    } else if (opts_.method == "awq") {
      quantpass::AwqOptions ao;
      ao.grid = opts_.awqGrid;
      LLMOPT_ASSIGN_OR_RETURN(detail, quantpass::awqScale(m, am, ao, encodingFor));
    }
    LLMOPT_ASSIGN_OR_RETURN(st, quantpass::quantizeMatMulWeights(m.graph(), encodingFor, method, onnx,
                                                                      am.context().threads));
  }
  const std::string format = fmt::format("{}, {}-bit{} {}, block {}", opts_.method, opts_.bits,
                                         opts_.bits < 4 ? " in 4-bit containers" : "",
                                         opts_.symmetric ? "sym" : "asym", opts_.block);
  am.context().reportLines.push_back(
      fmt::format("quant-int4 ({}{}): {}{}", format, opts_.actOrder ? ", act-order" : "",
                  st.summary(), detail));
  if (st.weights == 0 && st.gemms == 0)
    return PreservedAnalyses::all();
  LLMOPT_ASSIGN_OR_RETURN(bool converted, quantpass::ensureOnnxOpset(m, am, 21));
  (void)converted;
  return PreservedAnalyses::none();
}

} // namespace llmopt

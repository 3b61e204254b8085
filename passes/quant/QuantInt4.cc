// quant-int4: option parsing and the per-weight encoding choice.
#include "passes/quant/QuantInt4.h"

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
  LLMOPT_RETURN_IF_ERROR(r.finish());
  if (o.method == "hqq" && mode == "sym")
    return errorf("pass 'quant-int4': method=hqq optimises a zero point and needs asym (the "
                  "default for hqq); drop 'sym'");
  o.symmetric = mode.empty() ? o.method != "hqq" : mode == "sym";
  return o;
}

Expected<PreservedAnalyses> QuantInt4Pass::run(Model &m, AnalysisManager &am) {
  if (opts_.method == "gptq" || opts_.method == "awq")
    return quantpass::calibrationMethodError("quant-int4", opts_.method, am.context());
  const bool onnx = am.context().target == "onnx";
  const quantpass::Method method =
      opts_.method == "hqq" ? quantpass::Method::Hqq : quantpass::Method::Rtn;
  auto encodingFor = [&](int64_t K, int64_t) {
    return QuantEncoding{quant::storageType(opts_.bits, opts_.symmetric), opts_.bits, 0,
                         quantpass::effectiveBlock(opts_.block, K), opts_.symmetric};
  };
  LLMOPT_ASSIGN_OR_RETURN(quantpass::WeightQuantStats st,
                          quantpass::quantizeMatMulWeights(m.graph(), encodingFor, method, onnx));
  const std::string format = fmt::format("{}, {}-bit{} {}, block {}", opts_.method, opts_.bits,
                                         opts_.bits < 4 ? " in 4-bit containers" : "",
                                         opts_.symmetric ? "sym" : "asym", opts_.block);
  std::string line = fmt::format("quant-int4 ({}): {}", format, st.summary());
  if (method == quantpass::Method::Hqq)
    line += onnx ? "; zero points rounded, scales refit (DequantizeLinear needs integers)"
                 : "; fractional zero points (MatMulNBits f32 zero_points)";
  am.context().reportLines.push_back(line);
  if (st.weights == 0 && st.gemms == 0)
    return PreservedAnalyses::all();
  LLMOPT_ASSIGN_OR_RETURN(bool converted, quantpass::ensureOnnxOpset(m, am, 21));
  (void)converted;
  return PreservedAnalyses::none();
}

} // namespace llmopt

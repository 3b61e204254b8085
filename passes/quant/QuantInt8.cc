// quant-int8: option parsing and the per-target encoding choice.
#include "passes/quant/QuantInt8.h"

#include "passes/quant/QuantCommon.h"

namespace llmopt {

Expected<QuantInt8Options> parseQuantInt8Options(const PassOptionList &opts) {
  OptionReader r("quant-int8", opts);
  QuantInt8Options o;
  LLMOPT_ASSIGN_OR_RETURN(std::string mode, r.getChoice("mode", {"sym", "asym"}, "sym"));
  o.symmetric = mode == "sym";
  LLMOPT_ASSIGN_OR_RETURN(o.block, quantpass::readBlock(r, "quant-int8", 128));
  LLMOPT_RETURN_IF_ERROR(r.finish());
  return o;
}

Expected<PreservedAnalyses> QuantInt8Pass::run(Model &m, AnalysisManager &am) {
  const bool onnx = am.context().target == "onnx";
  auto encodingFor = [&](int64_t K, int64_t) {
    const DType storage = quant::storageType(8, opts_.symmetric);
    if (onnx)
      return QuantEncoding{storage, 8, 1, 0, opts_.symmetric};
    return QuantEncoding{storage, 8, 0, quantpass::effectiveBlock(opts_.block, K), opts_.symmetric};
  };
  LLMOPT_ASSIGN_OR_RETURN(
      quantpass::WeightQuantStats st,
      quantpass::quantizeMatMulWeights(m.graph(), encodingFor, quantpass::Method::Rtn, true,
                                       am.context().threads));
  am.context().reportLines.push_back(
      fmt::format("quant-int8 ({}, {}): {}", opts_.symmetric ? "sym" : "asym",
                  onnx ? std::string("per output channel") : fmt::format("block {}", opts_.block),
                  st.summary()));
  if (st.weights == 0 && st.gemms == 0)
    return PreservedAnalyses::all();
  LLMOPT_ASSIGN_OR_RETURN(bool converted, quantpass::ensureOnnxOpset(m, am, 13));
  (void)converted;
  return PreservedAnalyses::none();
}

} // namespace llmopt

// quant-embed: find Gather tables (and their tied LM head), quantize them in place.
#include "passes/quant/QuantEmbed.h"

#include "passes/quant/QuantCommon.h"

namespace llmopt {

Expected<QuantEmbedOptions> parseQuantEmbedOptions(const PassOptionList &opts) {
  OptionReader r("quant-embed", opts);
  QuantEmbedOptions o;
  LLMOPT_ASSIGN_OR_RETURN(std::string bits, r.getChoice("bits", {"2", "3", "4", "8"}, "4"));
  o.bits = std::stoi(bits);
  LLMOPT_ASSIGN_OR_RETURN(o.block, quantpass::readBlock(r, "quant-embed", 32));
  LLMOPT_ASSIGN_OR_RETURN(std::string mode, r.getChoice("mode", {"sym", "asym"}, ""));
  LLMOPT_ASSIGN_OR_RETURN(o.method, quantpass::readMethod(r));
  LLMOPT_RETURN_IF_ERROR(r.finish());
  if (o.method == "hqq" && mode == "sym")
    return errorf("pass 'quant-embed': method=hqq optimises a zero point and needs asym (the "
                  "default for hqq); drop 'sym'");
  o.symmetric = mode.empty() ? o.method != "hqq" : mode == "sym";
  return o;
}


Expected<PreservedAnalyses> QuantEmbedPass::run(Model &m, AnalysisManager &am) {
  if (opts_.method == "gptq" || opts_.method == "awq")
    return quantpass::calibrationMethodError("quant-embed", opts_.method, am.context());
  Graph &g = m.graph();
  int64_t tables = 0, tied = 0, skipped = 0, params = 0, before = 0, after = 0;
  for (const quantpass::EmbeddingTable &e : quantpass::findEmbeddingTables(g, 16, skipped)) {
    Value *c = e.table;
    const Tensor &t = *c->constant();
    const QuantEncoding enc =
        quantpass::tableEncoding(opts_.bits, opts_.block, opts_.symmetric, t.shape()[1]);
    const quantpass::Method method =
        opts_.method == "hqq" ? quantpass::Method::Hqq : quantpass::Method::Rtn;
    auto q = quantpass::quantizeTensor(t, enc, method, /*integerZeroPoints=*/true);
    if (!q)
      return q.status().withContext("quant-embed: table '" + c->name() + "'");
    ++tables;
    tied += e.tied;
    params += t.numel();
    before += quantpass::storedBytes(t);
    after += quantpass::storedBytes(*q);
    quantpass::replaceWithQuantized(g, c, q.take(), enc);
  }
  g.removeUnusedConstants();
  am.context().reportLines.push_back(fmt::format(
      "quant-embed ({}, {}-bit {}, block {}): {} tables{}, {} -> {} bytes ({:.2f} bits per weight); "
      "skipped {} (read by other ops, or V or H < 16)",
      opts_.method, opts_.bits, opts_.symmetric ? "sym" : "asym", opts_.block, tables,
      tied ? fmt::format(" ({} tied with an LM head, stored once)", tied) : std::string(), before,
      after, params ? 8.0 * static_cast<double>(after) / static_cast<double>(params) : 0.0, skipped));
  if (tables == 0)
    return PreservedAnalyses::all();
  LLMOPT_ASSIGN_OR_RETURN(bool converted, quantpass::ensureOnnxOpset(m, am, 21));
  (void)converted;
  return PreservedAnalyses::none();
}

} // namespace llmopt

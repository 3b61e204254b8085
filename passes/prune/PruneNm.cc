// prune-nm: option parsing and the dispatch to magnitude, Wanda or SparseGPT masks.
#include "passes/prune/PruneNm.h"

#include "passes/prune/SparseGpt.h"
#include "passes/prune/Wanda.h"

namespace llmopt {

Expected<PruneNmOptions> parsePruneNmOptions(const PassOptionList &opts) {
  OptionReader r("prune-nm", opts);
  PruneNmOptions o;
  LLMOPT_ASSIGN_OR_RETURN(o.pattern, prunepass::readNm(r, "prune-nm"));
  LLMOPT_ASSIGN_OR_RETURN(o.method,
                          r.getChoice("method", {"magnitude", "wanda", "sparsegpt"}, "magnitude"));
  LLMOPT_RETURN_IF_ERROR(r.finish());
  return o;
}

Expected<PreservedAnalyses> PruneNmPass::run(Model &m, AnalysisManager &am) {
  const prunepass::Pattern &p = opts_.pattern;
  const std::string head = fmt::format("prune-nm ({}, method={})", p.describe(), opts_.method);
  if (opts_.method != "magnitude" && am.context().calibPath.empty())
    return prunepass::calibrationError("prune-nm", opts_.method);
  if (opts_.method == "wanda")
    return prunepass::runWanda(m, am, p, "prune-nm", head);
  if (opts_.method == "sparsegpt")
    return prunepass::runSparseGpt(m, am, p, {}, "prune-nm", head);
  Graph &g = m.graph();
  prunepass::PruneStats st;
  for (const quantpass::MatMulWeight &w : prunepass::collectWeights(g, st))
    prunepass::installPruned(w, prunepass::pruneMagnitude(*w.weight->constant(), p), st);
  return prunepass::finish(am, head, st, "; no calibration (scores |w|)");
}

} // namespace llmopt

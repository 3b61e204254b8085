// fuse-llm: the fusion pipeline.
#include "passes/fusion/FuseLlm.h"

#include <memory>

#include "passes/fusion/FuseAttention.h"
#include "passes/fusion/FuseGelu.h"
#include "passes/fusion/FuseLayerNorm.h"
#include "passes/fusion/FuseMatMulBias.h"
#include "passes/fusion/FuseRmsNorm.h"
#include "passes/fusion/FuseRope.h"
#include "passes/fusion/FuseSwiGlu.h"

namespace llmopt {

Expected<PreservedAnalyses> FuseLlmPass::run(Model &m, AnalysisManager &am) {
  std::unique_ptr<Pass> passes[] = {
      std::make_unique<FuseLayerNormPass>(), std::make_unique<FuseRmsNormPass>(),
      std::make_unique<FuseGeluPass>(),      std::make_unique<FuseSwiGluPass>(),
      std::make_unique<FuseRopePass>(),      std::make_unique<FuseAttentionPass>(),
      std::make_unique<FuseMatMulBiasPass>(),
  };
  bool changed = false;
  for (auto &p : passes) {
    LLMOPT_ASSIGN_OR_RETURN(PreservedAnalyses pa, p->run(m, am));
    if (!pa.areAllPreserved()) {
      changed = true;
      am.invalidate(pa);
    }
  }
  return changed ? PreservedAnalyses::none() : PreservedAnalyses::all();
}

} // namespace llmopt

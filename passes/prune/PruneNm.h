// prune-nm: N:M semi-structured sparsity along the input dimension.
#pragma once

#include <string>

#include "passes/Pass.h"
#include "passes/PassOptions.h"
#include "passes/prune/PruneCommon.h"

namespace llmopt {

struct PruneNmOptions {
  prunepass::Pattern pattern;       ///< n, m (n < m); default 2:4
  std::string method = "magnitude"; ///< magnitude | wanda | sparsegpt (the last two need --calib)
};
Expected<PruneNmOptions> parsePruneNmOptions(const PassOptionList &opts);

/// In every constant 2-D f32 MatMul weight W [K, N], keeps at most n nonzeros in every m
/// consecutive input channels (rows k..k+m-1) of each output column: the layout sparse
/// tensor cores and 2:4 kernels read (a weight [out, in] in torch terms has its groups
/// along `in`). Which entries survive: the largest |w| (magnitude), the largest
/// |w| * ||X_k|| (wanda), or SparseGPT's W^2 / U_kk^2 with the kept weights updated
/// (sparsegpt, blocks of 128 rows). When K is not a multiple of m, the last, shorter group
/// keeps at most n too.
///
///   %w = const f32[4,1] [0.1, -3, 2, 0.5]     (one group of 4 in one column)
///     => prune-nm<n=2;m=4>
///   %w = const f32[4,1] [0, -3, 2, 0]
class PruneNmPass : public Pass {
public:
  explicit PruneNmPass(PruneNmOptions o) : opts_(std::move(o)) {}
  std::string_view name() const override { return "prune-nm"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  PruneNmOptions opts_;
};

} // namespace llmopt

// prune-sparsegpt: SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models
// Can Be Accurately Pruned in One-Shot"), after the reference implementation
// (IST-DASLab/sparsegpt, sparsegpt.py: fasterprune). For W [K, N] (our MatMul layout: row
// k = input channel k, the reference's column k) and the calibration Hessian H = X^T X:
//
//   dead channels (H_kk = 0): H_kk = 1, W[k, :] = 0
//   H += damp * mean(diag H) * I
//   U = chol(H^-1) (upper)                       the inverse Hessian's Cholesky factor
//   for each block of `blocksize` rows [i1, i2):
//     unstructured: mask = the lowest W[k, n]^2 / U_kk^2 over the whole block (rows x N)
//     for k in [i1, i2):
//       N:M: at k % m == 0, in each column, mask the (m - n) lowest W^2 / U_kk^2 of rows
//            k..k+m (the current, already updated values)
//       q = W[k, :] with the masked entries zeroed;  e = (W[k, :] - q) / U_kk;  W[k, :] = q
//       W[j, :] -= e * U_kj          for j in (k, i2)         (OBS update of the rest)
//     W[i2:, :] -= U[i1:i2, i2:]^T E  (the lazy update: one GEMM per block)
//
// Differences from the reference, all small: the unstructured mask of a block prunes
// exactly its share of floor(sparsity * K * N) (blocks carry the rounding, so the layer
// hits the requested count; the reference's `<= thresh` prunes one extra per block);
// ties go to the lower position; for N:M, `n` is what is *kept* (the reference's prunen
// is what it prunes; the same for 2:4) and the block is rounded up to a multiple of m; a
// failed Cholesky raises the damping tenfold and retries (as our GPTQ does).
#pragma once

#include <vector>

#include "passes/Pass.h"
#include "passes/PassOptions.h"
#include "passes/prune/PruneCommon.h"

namespace llmopt {

struct PruneSparseGptOptions {
  double sparsity = 0.5;   ///< fraction zeroed, in [0, 1)
  int64_t blockSize = 128; ///< input channels per mask-selection block and lazy update
  double damp = 0.01;      ///< percdamp: fraction of mean(diag H) added to the diagonal
};
Expected<PruneSparseGptOptions> parsePruneSparseGptOptions(const PassOptionList &opts);

/// SparseGPT over every constant 2-D f32 MatMul weight; needs --calib. The kept weights
/// change too (they absorb the pruned ones' contribution):
///
///   %w = const f32[128,64] [...]
///     => prune-sparsegpt<sparsity=0.5>
///   %w = const f32[128,64] [...]        half zero, the rest updated
class PruneSparseGptPass : public Pass {
public:
  explicit PruneSparseGptPass(PruneSparseGptOptions o) : opts_(o) {}
  std::string_view name() const override { return "prune-sparsegpt"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  PruneSparseGptOptions opts_;
};

namespace prunepass {

struct SparseGptSettings {
  int64_t blockSize = 128;
  double damp = 0.01;
};
struct SparseGptResult {
  Tensor pruned;
  double dampUsed = 0;
};

/// Prunes f32 `w` [K, N] to pattern `p` with Hessian `h` (K x K, row-major).
Expected<SparseGptResult> pruneSparseGpt(const Tensor &w, const std::vector<double> &h,
                                         const Pattern &p, const SparseGptSettings &s);

/// Runs SparseGPT (pattern `p`) over the model's weights, Hessians streamed in groups;
/// `pass` is named in errors and calibration lines, `head` starts the report line.
Expected<PreservedAnalyses> runSparseGpt(Model &m, AnalysisManager &am, const Pattern &p,
                                         const SparseGptSettings &s, const std::string &pass,
                                         const std::string &head);

} // namespace prunepass
} // namespace llmopt

// prune-wanda: Wanda (Sun, Liu, Bair, Kolter 2023, "A Simple and Effective Pruning Approach
// for Large Language Models"), after the reference implementation (locuslab/wanda,
// lib/prune.py: prune_wanda). For W [K, N] and the calibration activations X [rows, K]
// that reach it:
//
//   score[k, n] = |W[k, n]| * ||X[:, k]||_2
//   unstructured: in every output column n, zero the floor(sparsity * K) lowest scores
//   N:M:          in every group of m consecutive input channels of a column, zero the
//                 (m - n) lowest scores
//
// No weight update. Ties go to the lower input channel (the reference's stable sort).
// Differences from the reference: the norms come from one calibration run of the model as
// it stands when the pass starts (the reference re-runs each decoder block on the outputs
// of the already pruned blocks before it), and for n:m `n` is what is *kept* (the
// reference's 2:4 prunes its first number, which for 2:4 is the same).
#pragma once

#include <span>

#include "passes/Pass.h"
#include "passes/PassOptions.h"
#include "passes/prune/PruneCommon.h"

namespace llmopt {

struct PruneWandaOptions {
  double sparsity = 0.5; ///< fraction of each output's inputs zeroed, in [0, 1)
};
Expected<PruneWandaOptions> parsePruneWandaOptions(const PassOptionList &opts);

/// Wanda over every constant 2-D f32 MatMul weight; needs --calib:
///
///   %w = const f32[4,2] [1, 1, 1, 1, 1, 1, 1, 1]    ||X[:, k]|| = 4, 1, 3, 2
///     => prune-wanda<sparsity=0.5>
///   %w = const f32[4,2] [1, 1, 0, 0, 1, 1, 0, 0]
class PruneWandaPass : public Pass {
public:
  explicit PruneWandaPass(PruneWandaOptions o) : opts_(o) {}
  std::string_view name() const override { return "prune-wanda"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  PruneWandaOptions opts_;
};

namespace prunepass {

/// Wanda's mask on f32 w [K, N] with per-input-channel activation norms (K of them).
Tensor pruneWanda(const Tensor &w, std::span<const double> norms, const Pattern &p);

/// Runs Wanda (pattern `p`) over the model's weights with the cached calibration
/// statistics; `pass` is named in errors, `head` starts the report line.
Expected<PreservedAnalyses> runWanda(Model &m, AnalysisManager &am, const Pattern &p,
                                     const std::string &pass, const std::string &head);

} // namespace prunepass
} // namespace llmopt

// prune-magnitude: zero the smallest-|w| entries of MatMul weights.
#pragma once

#include <string>
#include <vector>

#include "passes/Pass.h"
#include "passes/PassOptions.h"

namespace llmopt {

struct PruneMagnitudeOptions {
  double sparsity = 0.5;       ///< fraction of entries zeroed, in [0, 1)
  std::string scope = "layer"; ///< layer: per weight; global: one threshold over all weights
};
Expected<PruneMagnitudeOptions> parsePruneMagnitudeOptions(const PassOptionList &opts);

/// Zeroes, in every constant 2-D f32 MatMul weight (Gemm's B after Gemm => MatMul + Add),
/// the floor(sparsity * K * N) entries of least |w| (scope=layer), or the floor(sparsity *
/// total) least over all those weights together (scope=global, so layers end up with
/// different sparsities). Ties go to the lower position (row-major, weights in graph
/// order), so the count is exact and the output deterministic. Weights stay dense f32:
///
///   %w = const f32[4,2] [0.1, -2, 0.3, 4, -0.5, 6, 7, -0.05]
///     => prune-magnitude<sparsity=0.5>
///   %w = const f32[4,2] [0, -2, 0, 4, 0, 6, 7, 0]
class PruneMagnitudePass : public Pass {
public:
  explicit PruneMagnitudePass(PruneMagnitudeOptions o) : opts_(std::move(o)) {}
  std::string_view name() const override { return "prune-magnitude"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  PruneMagnitudeOptions opts_;
};

namespace prunepass {

/// scope=global: entries whose |w| lies below `key` are pruned, and the first `ties`
/// entries equal to it (weights in order, then row-major), floor(sparsity * total) in all.
struct MagnitudeCut {
  uint32_t key = 0; ///< |w|'s bits (see the .cc): they sort as |w| does
  int64_t ties = 0;
};
/// The cut over all `weights` together. Memory: one 64K-entry histogram (radix select).
MagnitudeCut globalMagnitudeCut(const std::vector<const Tensor *> &weights, double sparsity);
/// The next weight (in the order the cut was computed over) pruned by `cut`; uses up ties.
Tensor applyMagnitudeCut(const Tensor &w, MagnitudeCut &cut);

} // namespace prunepass
} // namespace llmopt

// distill-reconstruct: layer-wise closed-form refit of a compressed model to its teacher.
#pragma once

#include <string>
#include <vector>

#include "passes/Pass.h"
#include "passes/PassOptions.h"

namespace llmopt {

struct DistillReconstructOptions {
  std::string teacher;         ///< teacher=FILE: the uncompressed model (.onnx/.llir/.onnxtxt)
  bool allLayers = true;       ///< layers=all: every linear layer of the model
  std::vector<int64_t> layers; ///< layers=0,3,5: the linear layers of these blocks only
  double ridge = -1;           ///< l = ridge * mean(diag(Xs^T Xs)); -1: auto (cross-validated)
  bool bias = true;            ///< bias correction (bias=false: off)
  bool dense = false;          ///< dense: refit zero entries too (no pruning mask to keep)
  bool residual = false;       ///< residual: layers added to the residual stream (o, down)
                               ///< also make up the stream's drift from the teacher's
  bool gptqRound = true;       ///< round=gptq: a refit quantized weight goes back onto its
                               ///< grid with GPTQ's error feedback (round=rtn: to nearest)
};
Expected<DistillReconstructOptions> parseDistillReconstructOptions(const PassOptionList &opts);

/// For each linear layer (MatMul(X, W), W a constant float [K, N] read by that MatMul
/// only; with layers=0,3,5 those of these blocks), in topological order, refits W so the student's layer reproduces the
/// teacher's on the --calib data:
///
///   W = argmin ||Xs W - Xt Wt||^2 + l ||W - W0||^2   per output column, over its nonzeros
///
/// Xs: the student's own input to the layer, with every earlier layer already refit (the
/// error does not compound); Xt, Wt: the teacher's input and weight (same weight name, in
/// teacher=FILE); W0: the layer's weight before the fit, which the ridge pulls towards, so
/// with few calibration rows the fit moves only as far as the data supports. ridge=auto
/// (default) picks l per weight by two-fold cross-validation over even / odd windows among
/// 1e-3..10 x mean(diag(Xs^T Xs)), or keeps W0 when that scores better. Normal equations
/// Xs^T Xs, Xs^T Xt are summed over the windows; layers whose inputs do not depend on each
/// other (q, k, v; gate, up) share one pass over the data (a stage). Pruned entries stay zero
/// (the mask is kept; `dense`: refit them too); columns prune-struct removed are matched to
/// the teacher's by their values. A bias Add(MatMul, b) gets b += mean(Xt Wt - Xs W). A
/// quantized W is dequantized, refit densely and rounded back onto its own grid (the stored
/// scales and zero points) by GPTQ with the student's Hessian Xs^T Xs: since
/// ||Xs Q - Y||^2 = ||Xs (Q - W*)||^2 + const for the least-squares W*, the rounding that
/// keeps Xs Q nearest Xs W* is the one GPTQ approximates (round=rtn: to nearest). With
/// `residual`, o / down projections fit Xt Wt plus the residual stream's drift from the
/// teacher's. Memory: one stage's K x K sums and the teacher's inputs for as many stages as
/// fit in --calib-memory.
///
///   %y = MatMul(%x, %w)   (w 50% zero)  =>  %y = MatMul(%x, %w')  (same zeros, refit values)
class DistillReconstructPass : public Pass {
public:
  explicit DistillReconstructPass(DistillReconstructOptions o) : opts_(std::move(o)) {}
  std::string_view name() const override { return "distill-reconstruct"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  DistillReconstructOptions opts_;
};

} // namespace llmopt

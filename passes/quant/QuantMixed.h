// quant-mixed: per-weight precision under a bits-per-weight budget.
//
// 1. Sensitivity. For every constant 2-D f32 MatMul weight W [K, N] and every candidate
//    format c (2, 3, 4, 8 bits in blocks along K of each size in `blocks`, symmetric or
//    asymmetric per `mode` (both with mode=both), or 16 = f16 storage), quantize W with the
//    pass's method (rtn, or gptq with the calibration Hessian) and measure the error:
//      metric=hessian   tr(dW^T H dW): the squared output error over the calibration rows
//                       (H = X^T X of the weight's input, Calibration.h)
//      metric=relative  the same divided by tr(W^T H W), the layer's output energy
//      metric=weight    ||dW||^2 (data-free: no --calib needed with method=rtn)
//      metric=kl        end to end: the weight alone quantized in the probe format (4 bits,
//                       or the largest candidate below), the model's mean KL vs the
//                       unquantized logits on `probe-windows` (2) calibration windows of
//                       128 tokens (relative
//                       output error for models without `logits`); the other formats'
//                       errors are that KL times their Hessian error over the probe's. One
//                       forward pass per weight and window.
//    With `embed`, each embedding table E [V, H] (read by Gather, possibly also the tied LM
//    head; quant-embed's tables) is a candidate too, in blocks along H, quantized by RTN:
//    its error is ||dE||^2 (metric=weight) or, with metric=kl, the end-to-end response of
//    the probe format scaled as above (a table has no input Hessian, so hessian/relative
//    refuse `embed`).
// 2. Allocation. Minimise the summed error subject to
//      bytes(allocated weights) <= bpw * params / 8 - bytes(everything else),
//    where params counts every initializer's logical elements and bytes are what the ONNX
//    file stores (2-bit values packed 4 to a byte for --target=ort, 4-bit containers for
//    2/3-bit otherwise; f32 scales; packed zero points). A multiple-choice knapsack solved
//    by its Lagrangian: each weight takes argmin(error + lambda * bytes), lambda found by
//    bisection so the budget holds, then the spare bytes go to the upgrades with the best
//    error saved per byte.
// 3. The chosen format is applied to each weight; the report lists the allocation
//    (weights per format, bytes, bpw achieved) and `--report` shows each weight's format.
#pragma once

#include "passes/Pass.h"
#include "passes/PassOptions.h"

namespace llmopt {

struct QuantMixedOptions {
  double bpw = 4.5;                                ///< whole-model bits per parameter
  std::vector<int64_t> candidates{2, 3, 4, 8, 16}; ///< formats to choose from
  int64_t block = 128;                             ///< block along K for 2..8 bits
  std::vector<int64_t> blocks; ///< blocks to choose from (each with each bit width); {block}
  bool symmetric = true;
  bool asymToo = false; ///< mode=both: each format symmetric and asymmetric (zero points)
  std::string method = "gptq"; ///< rtn | gptq
  std::string metric = "hessian"; ///< hessian | relative | weight | kl
  int64_t probeWindows = 2; ///< metric=kl: calibration windows (of 128 tokens) per probe
  bool probeAll = false; ///< metric=kl, probe=all: every format probed end to end
  bool embed = false; ///< also allocate the embedding tables (and a tied LM head)
};
Expected<QuantMixedOptions> parseQuantMixedOptions(const PassOptionList &opts);

namespace quantpass {
/// One weight's options for allocateFormats: bytes and error per candidate format.
struct FormatChoice {
  std::vector<int64_t> bytes;
  std::vector<double> error;
  int64_t picked = -1; ///< set by allocateFormats
};
/// Picks one format per weight so the bytes fit `budget` with little summed error (the
/// Lagrangian + greedy fill in FormatAllocator.cc; never worse than the best uniform choice
/// that fits).
/// Every weight needs the same number of formats, at least one. False when the smallest
/// formats exceed the budget.
bool allocateFormats(std::vector<FormatChoice> &cs, double budget);
} // namespace quantpass

class QuantMixedPass : public Pass {
public:
  explicit QuantMixedPass(QuantMixedOptions o) : opts_(std::move(o)) {}
  std::string_view name() const override { return "quant-mixed"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  QuantMixedOptions opts_;
};

} // namespace llmopt

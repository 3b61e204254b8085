// The report's per-layer output error for weights a pipeline changed without measuring it.
#pragma once

#include <map>
#include <string>

#include "ir/Graph.h"
#include "passes/Pass.h"

namespace llmopt {

/// For every 2-D f32 MatMul weight of the model at `input` that `changed` (the pipeline's
/// result) holds under the same name and shape but with other values, and that `errors`
/// has no entry for: the relative output error tr(dW^T H dW) / tr(W^T H W), H = X^T X the
/// Hessian of the weight's input in the *original* model on the --calib windows. The
/// original is loaded again (its weights are mapped, not copied) and run once per group
/// of Hessians that fits ctx.calibMemoryMiB. Quantized weights are compared dequantized.
Status measureLayerErrors(const std::string &input, const Model &changed, const PassContext &ctx,
                          std::map<std::string, double> &errors);

} // namespace llmopt

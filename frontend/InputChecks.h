// Checks on a loaded model that the IR verifier does not make, because they concern
// input from outside rather than invariants passes keep: weights are finite numbers,
// ai.onnx ops exist, the graph computes something.
#pragma once

#include <string>

#include "ir/Graph.h"

namespace llmopt {

/// Refuses (with a message naming `source` and the node or tensor):
/// - a top-level graph with no outputs;
/// - NaN in any floating-point initializer, and +-Inf in one of rank >= 2 (a weight;
///   scalars and vectors may hold -inf as a mask fill value);
/// - an op in the ai.onnx domain that neither llmopt nor ONNX defines at the model's
///   opset (checked only up to the newest opset the linked libonnx knows).
/// Mapped weight pages are released after they are scanned.
Status checkInputModel(const Model &m, const std::string &source);

} // namespace llmopt

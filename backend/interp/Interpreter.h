// The reference interpreter: evaluates IR nodes and whole graphs on concrete tensors.
#pragma once

#include <functional>
#include <vector>

#include "ir/Graph.h"
#include "ir/Status.h"
#include "ir/Tensor.h"

namespace llmopt::interp {

/// Evaluates one node on concrete inputs (null for omitted optional inputs), following
/// the semantics of node->opsetVersion() (the latest known when the node has no model).
/// Errors: "unsupported op X" (naming domain::op and the node) for ops it lacks;
/// messages naming the node and the input at fault for bad inputs.
Expected<std::vector<Tensor>> evaluateNode(const Node &n, const std::vector<const Tensor *> &inputs);

/// True when the node's op (at its opset version) has a kernel.
bool canEvaluate(const Node &n);

struct RunOptions {
  int threads = 0; ///< Worker threads for large kernels; 0 = all hardware threads.
  /// Called with every graph input and every node output that is used or is a graph
  /// output, as soon as it is computed (before later nodes run); an error stops the run.
  /// Calibration reads activations through it.
  std::function<Status(const Value &, const Tensor &)> onValue;
  /// Drop the pages of a constant mapped from external data after its last reader in
  /// this run (they are read back from the file when touched again): a pass over a model
  /// larger than RAM keeps about one layer's weights resident. Calibration sets it.
  bool releaseMappedConstants = false;
};

/// Runs a graph: `inputs` bind graph inputs in order (an input left out takes its
/// initializer value when it has one). Intermediate tensors are freed after their
/// last use. Returns the graph outputs in order.
Expected<std::vector<Tensor>> run(const Graph &g, const std::vector<Tensor> &inputs,
                                  const RunOptions &opts = {});

} // namespace llmopt::interp

// The IR verifier: SSA well-formedness, use lists, arity, types, acyclicity.
#pragma once

#include "ir/Graph.h"

namespace llmopt {

/// Checks `model` and returns the first problem found, naming the graph, node and
/// value involved. Passes run it after every pass under --verify-each.
Status verify(const Model &model);
/// Checks one graph tree (used for graphs outside a model, e.g. in tests).
Status verify(const Graph &graph);

} // namespace llmopt

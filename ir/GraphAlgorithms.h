// Graph algorithms over the IR through Boost.Graph: dependency snapshot, topological
// order, cycle detection, weakly connected components.
#pragma once

#include <vector>

#include <boost/graph/adjacency_list.hpp>

#include "ir/Graph.h"

namespace llmopt {

/// A Boost.Graph snapshot of one graph's data dependencies: vertex i is nodes[i];
/// an edge u->v means v reads a value u produces (captures by subgraphs included).
struct DependencyGraph {
  using BGraph = boost::adjacency_list<boost::vecS, boost::vecS, boost::bidirectionalS>;
  BGraph g;
  std::vector<Node *> nodes;
  static DependencyGraph build(const Graph &graph);
};

/// Nodes in a topological order (stable: program order among ready nodes), or an
/// error naming a node that lies on a cycle.
Expected<std::vector<Node *>> topologicalOrder(const Graph &graph);

/// Connected components of the dependency graph ignoring direction; result[i] is
/// the component id of nodes[i] of the snapshot.
std::vector<int> connectedComponents(const DependencyGraph &dg);

} // namespace llmopt

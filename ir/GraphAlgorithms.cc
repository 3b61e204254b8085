// Dependency snapshots and Boost.Graph-based orderings.
#include "ir/GraphAlgorithms.h"

#include <queue>
#include <unordered_map>

#include <boost/graph/connected_components.hpp>
#include <boost/graph/strong_components.hpp>
#include <boost/graph/undirected_graph.hpp>

namespace llmopt {

// Values a node reads, including those its subgraphs capture from outside them.
static void collectReads(const Node *n, std::vector<Value *> &out) {
  for (Value *v : n->inputs())
    if (v)
      out.push_back(v);
  for (Graph *sg : n->subgraphs())
    sg->walk([&](Node *inner) {
      for (Value *v : inner->inputs())
        if (v)
          out.push_back(v);
    });
}

DependencyGraph DependencyGraph::build(const Graph &graph) {
  DependencyGraph dg;
  dg.nodes = graph.nodeList();
  dg.g = BGraph(dg.nodes.size());
  std::unordered_map<const Node *, size_t> index;
  for (size_t i = 0; i < dg.nodes.size(); ++i)
    index[dg.nodes[i]] = i;
  std::vector<Value *> reads;
  for (size_t i = 0; i < dg.nodes.size(); ++i) {
    reads.clear();
    collectReads(dg.nodes[i], reads);
    for (Value *v : reads) {
      Node *p = v->producer();
      if (!p)
        continue;
      auto it = index.find(p);
      if (it != index.end())
        boost::add_edge(it->second, i, dg.g);
    }
  }
  return dg;
}

Expected<std::vector<Node *>> topologicalOrder(const Graph &graph) {
  DependencyGraph dg = DependencyGraph::build(graph);
  const size_t n = dg.nodes.size();
  // Kahn's algorithm with a min-heap on program position keeps the order stable,
  // which boost::topological_sort (DFS order) would not.
  std::vector<size_t> indeg(n, 0);
  for (size_t v = 0; v < n; ++v)
    indeg[v] = boost::in_degree(v, dg.g);
  std::priority_queue<size_t, std::vector<size_t>, std::greater<>> ready;
  for (size_t v = 0; v < n; ++v)
    if (indeg[v] == 0)
      ready.push(v);
  std::vector<Node *> order;
  order.reserve(n);
  while (!ready.empty()) {
    size_t u = ready.top();
    ready.pop();
    order.push_back(dg.nodes[u]);
    for (auto [e, end] = boost::out_edges(u, dg.g); e != end; ++e) {
      size_t v = boost::target(*e, dg.g);
      if (--indeg[v] == 0)
        ready.push(v);
    }
  }
  if (order.size() != n) {
    // Name a node that sits on a cycle: one in a strongly connected component of size > 1
    // (or with a self-loop).
    std::vector<int> comp(n);
    int count = boost::strong_components(dg.g, comp.data());
    std::vector<int> size(static_cast<size_t>(count), 0);
    for (int c : comp)
      ++size[static_cast<size_t>(c)];
    for (size_t v = 0; v < n; ++v) {
      bool selfLoop = boost::edge(v, v, dg.g).second;
      if (indeg[v] > 0 && (size[static_cast<size_t>(comp[v])] > 1 || selfLoop)) {
        const Node *bad = dg.nodes[v];
        return errorf("graph '{}' has a cycle through node '{}' ({})", graph.name(), bad->name(),
                      bad->qualifiedOpType());
      }
    }
    return errorf("graph '{}' has a cycle", graph.name());
  }
  return order;
}

std::vector<int> connectedComponents(const DependencyGraph &dg) {
  using UGraph = boost::adjacency_list<boost::vecS, boost::vecS, boost::undirectedS>;
  UGraph u(dg.nodes.size());
  for (auto [e, end] = boost::edges(dg.g); e != end; ++e)
    boost::add_edge(boost::source(*e, dg.g), boost::target(*e, dg.g), u);
  std::vector<int> comp(dg.nodes.size());
  if (!comp.empty())
    boost::connected_components(u, comp.data());
  return comp;
}

} // namespace llmopt

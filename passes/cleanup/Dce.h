// dce: dead code elimination.
#pragma once

#include "passes/Pass.h"

namespace llmopt {

/// Removes nodes none of whose results are used (by a node or a graph output), at
/// every subgraph depth, then constants nothing reads. Graph inputs stay.
///
///   %a = Mul(%x, %x)          ; unused
///   %b = Add(%x, %w)          =>   %b = Add(%x, %w)
///   return %b                      return %b
class DcePass : public Pass {
public:
  std::string_view name() const override { return "dce"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
};

/// The work of DcePass on one graph tree; returns the number of nodes removed.
size_t eliminateDeadCode(Graph &g);

} // namespace llmopt

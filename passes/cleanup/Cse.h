// cse: common subexpression elimination.
#pragma once

#include "passes/Pass.h"

namespace llmopt {

/// Merges nodes with the same op, attributes and inputs, and constants with the same
/// type and bytes. Nodes with subgraphs or random outputs are left alone, and a value
/// that is a graph output is never merged away (its name is part of the interface).
///
///   %a = Shape(%x)                 %a = Shape(%x)
///   %b = Shape(%x)           =>    %c = Add(%a, %a)
///   %c = Add(%a, %b)
class CsePass : public Pass {
public:
  std::string_view name() const override { return "cse"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
};

} // namespace llmopt

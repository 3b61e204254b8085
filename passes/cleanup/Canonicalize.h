// canonicalize: local simplifications that put the graph in a normal form.
#pragma once

#include "passes/Pass.h"

namespace llmopt {

/// Rewrites, each checked cheapest-first:
///   Identity(x)                              => x
///   Dropout(x) (inference, mask unused)      => x
///   Cast(x: T, to=T)                         => x
///   Transpose(Transpose(x, p), q)            => Transpose(x, p∘q)   (or x if identity)
///   Transpose(x, identity perm)              => x
///   Reshape(Reshape(x, s1), s2)              => Reshape(x, s2)      (s2 constant, no 0 entries)
///   Reshape(x: static S, s) with s == S      => x
///   Squeeze(Unsqueeze(x, a), a)              => x                   (constant, equal axes)
/// A removed value that is a graph output keeps an Identity so output names stay.
class CanonicalizePass : public Pass {
public:
  std::string_view name() const override { return "canonicalize"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
};

} // namespace llmopt

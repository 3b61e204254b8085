// distill-expose: a teacher graph that also outputs its hidden states and logits.
#pragma once

#include <vector>

#include "passes/Pass.h"
#include "passes/PassOptions.h"

namespace llmopt {

struct DistillExposeOptions {
  bool allHidden = true;       ///< hidden=all (the default)
  std::vector<int64_t> hidden; ///< hidden=0,3,5; empty with allHidden=false: hidden=none
  bool logits = true;          ///< logits (logits=false to leave them out)
};
Expected<DistillExposeOptions> parseDistillExposeOptions(const PassOptionList &opts);

/// Adds graph outputs for the chosen block outputs (the residual stream after block N,
/// blocks found as prune-struct<unit=layer> finds them) and the logits, under stable
/// names, and lists them in metadata_props (llmopt.distill.outputs / .hidden / .blocks).
/// The computation is unchanged; existing outputs stay first, in order.
///
///   %h1 = Add(%h0, %attn0)                          %h1 = Add(%h0, %attn0)
///   %h2 = Add(%h1, %mlp0)        => hidden=0;logits  %h2 = Add(%h1, %mlp0)
///   ...                                              %teacher.hidden.0 = Identity(%h2)
///   return %logits                                   %teacher.logits = Identity(%logits)
///                                                    return %logits, %teacher.hidden.0, %teacher.logits
class DistillExposePass : public Pass {
public:
  explicit DistillExposePass(DistillExposeOptions o) : opts_(std::move(o)) {}
  std::string_view name() const override { return "distill-expose"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  DistillExposeOptions opts_;
};

} // namespace llmopt

// opset<to=N>: converts the default-domain opset version.
#pragma once

#include "passes/PassOptions.h"
#include "passes/Pass.h"

namespace llmopt {

struct OpsetOptions {
  int64_t to = 21;
};
Expected<OpsetOptions> parseOpsetOptions(const PassOptionList &opts);

/// Moves every default-domain node to opset `to`, rewriting ops whose signature
/// changed on the way (attribute <-> input moves), e.g. at 13 and 18:
///
///   ReduceMean(%x) {axes=[-1]}     ; opset 17
///   =>  ReduceMean(%x, %axes)      ; opset 18, %axes = const i64[1] [-1]
///
/// Handled: ReduceSum (13), other Reduce* (18), Split (13: split; 18: num_outputs
/// where needed), Squeeze/Unsqueeze (13), Clip (11), Pad (11), Slice (10),
/// Dropout (12), and the IR version the target opset needs (21 => IR 10).
/// An op whose semantics changed in a way with no rewrite here is an error naming it.
class OpsetPass : public Pass {
public:
  explicit OpsetPass(OpsetOptions o) : opts_(o) {}
  std::string_view name() const override { return "opset"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  OpsetOptions opts_;
};

} // namespace llmopt

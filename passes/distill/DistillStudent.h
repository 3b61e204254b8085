// distill-student: a smaller student built from the teacher (fewer blocks, narrower).
#pragma once

#include <vector>

#include "passes/Pass.h"
#include "passes/PassOptions.h"

namespace llmopt {

struct DistillStudentOptions {
  std::vector<int64_t> keep; ///< keep=0,2,4: the teacher blocks the student keeps
  double ratio = -1;         ///< ratio=R: drop round(R * blocks) blocks, keep the rest evenly spaced
  double width = 0;          ///< width=W: then prune-struct<unit=head,channel;ratio=W>
};
Expected<DistillStudentOptions> parseDistillStudentOptions(const PassOptionList &opts);

/// Builds a student initialised from the teacher's weights: removes the blocks not kept
/// (prune-struct<unit=layer;drop=layer<i>,..>: the residual branches and their KV cache
/// inputs/outputs go, the stream passes through), then optionally shrinks heads and MLP
/// channels (prune-struct<unit=head,channel;ratio=W>, magnitude metric). `ratio` keeps
/// blocks floor(i * L / n) for i < n = L - round(R * L) (DistilBERT's every other block
/// for R = 0.5). Metadata: llmopt.distill.layer_map = "0:0,1:2" (student:teacher block)
/// and llmopt.distill.blocks = the teacher's block count.
///
///   4 blocks, keep=0,2    =>   Add chain of blocks 0 and 2; blocks 1 and 3 gone
class DistillStudentPass : public Pass {
public:
  explicit DistillStudentPass(DistillStudentOptions o) : opts_(std::move(o)) {}
  std::string_view name() const override { return "distill-student"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  DistillStudentOptions opts_;
};

} // namespace llmopt

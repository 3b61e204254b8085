// distill-targets: the teacher's soft labels on the --calib data, written to a file.
#pragma once

#include <string>

#include "passes/Pass.h"
#include "passes/PassOptions.h"

namespace llmopt {

struct DistillTargetsOptions {
  int64_t topk = 32;
  double temperature = 2.0;
  std::string out; ///< the soft-label file (required)
};
Expected<DistillTargetsOptions> parseDistillTargetsOptions(const PassOptionList &opts);

/// Runs the model (the teacher) in the reference interpreter over the --calib windows, one
/// window at a time, and streams per position the input token and the top-k of
/// log softmax(logits / T) to `out` (SoftLabels.h, docs/formats.md), through a temporary
/// file renamed into place. The header's model hash is an FNV-1a over the model's
/// constants (names and bytes), so a file can be checked against the model it came from.
/// The model is not changed.
///
///   distill-targets<topk=32;temperature=2;out=t.soft> --calib kjv.txt --tokenizer tok.json
///   => t.soft: 64-byte header, then 8 + 8*32 bytes per calibration position
class DistillTargetsPass : public Pass {
public:
  explicit DistillTargetsPass(DistillTargetsOptions o) : opts_(std::move(o)) {}
  std::string_view name() const override { return "distill-targets"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  DistillTargetsOptions opts_;
};

/// FNV-1a 64 over every constant's name and bytes, in graph order (the soft-label header's
/// model hash).
uint64_t modelWeightsHash(const Model &m);

} // namespace llmopt

// quant-mixed's end-to-end probe (metric=kl): the model's response to one weight's
// quantization error, measured by running the interpreter on a few calibration windows.
#pragma once

#include <string>
#include <vector>

#include "ir/Graph.h"
#include "ir/Status.h"

namespace llmopt::quantpass {

/// The first graph output is compared with the unquantized model's on a few short
/// windows: mean KL(p_ref || p) over positions when it is `logits`, else the relative
/// squared error.
class EndToEndProbe {
public:
  /// Runs the model once per window (at most `maxWindows`, each cut to 128 tokens) for the
  /// reference outputs.
  static Expected<EndToEndProbe> make(const Model &m, const std::vector<std::vector<int64_t>> &windows,
                                      size_t maxWindows, int threads);
  /// The response with `w`'s data replaced by `deq` (restored afterwards).
  Expected<double> probe(Value *w, std::vector<float> deq);
  /// "2 windows of 128 tokens".
  std::string what() const;

private:
  static constexpr size_t kTokens = 128;
  Expected<Tensor> first(const std::vector<Tensor> &in) const;

  const Model *model_ = nullptr;
  int threads_ = 0;
  bool kl_ = true;
  std::vector<std::vector<Tensor>> inputs_;
  std::vector<Tensor> refs_;
};

} // namespace llmopt::quantpass

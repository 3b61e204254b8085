// Calibration: statistics of the activations that reach each weight, collected by running
// the reference interpreter over calibration data (--calib). GPTQ, AWQ, SmoothQuant,
// Wanda, SparseGPT and the mixed-precision sensitivity all read them.
//
// The data is a text file tokenized with --tokenizer, or a `.ids` file of token ids
// (whitespace separated). It is cut into --calib-samples windows of --calib-seqlen tokens,
// spread evenly over the file without overlap (fewer when the file is short: the report
// line says how many). Every window is one [1, seqlen] forward pass; graph inputs are fed
// by name (input_ids; attention_mask ones; position_ids 0..n-1; token_type_ids zeros).
//
// Per watched activation X (a MatMul's A input, flattened to rows x K) the statistics are
// sums over every row of every window: sum |x|, sum x^2 and max |x| per channel, and
// optionally the Hessian proxy H = X^T X (K x K, double). Each window's X^T X is computed
// in 64-row chunks whose f32 products are added to the double sum in a fixed order, so the
// result does not depend on the thread count.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "ir/Graph.h"
#include "passes/Pass.h"

namespace llmopt::calib {

/// Statistics of one activation over all calibration rows.
struct ActStats {
  int64_t channels = 0;
  int64_t rows = 0;               ///< rows (tokens) accumulated
  std::vector<double> sumAbs;     ///< per channel: sum |x|
  std::vector<double> sumSq;      ///< per channel: sum x^2
  std::vector<float> maxAbs;      ///< per channel: max |x|
  std::vector<double> hessian;    ///< channels x channels, row-major: sum x x^T; may be empty

  double meanAbs(int64_t k) const { return rows ? sumAbs[static_cast<size_t>(k)] / rows : 0; }
  /// ||X[:, k]||_2 over all rows (Wanda's activation norm).
  double norm(int64_t k) const;
  bool hasHessian() const { return !hessian.empty(); }
};

/// Statistics per watched activation, and where they came from.
struct Stats {
  std::unordered_map<const Value *, ActStats> acts;
  int64_t windows = 0, tokens = 0;
  std::string source; ///< "FILE: 32 windows x 512 tokens"
  /// forEachHessianGroup: this group holds every value asked for (one pass over the data),
  /// so a caller may keep the statistics (move them out) for later use.
  bool complete = false;
  const ActStats *find(const Value *v) const {
    auto it = acts.find(v);
    return it == acts.end() ? nullptr : &it->second;
  }
};

/// The token windows --calib describes (see the file comment). Errors name the file and
/// say what was expected (a missing --tokenizer for text, a bad id, too little data).
Expected<std::vector<std::vector<int64_t>>> loadWindows(const PassContext &ctx);

/// Graph inputs for one window of token ids, fed by name as the file comment says.
Expected<std::vector<Tensor>> makeInputs(const Graph &g, const std::vector<int64_t> &ids);

/// Runs `m` over `windows` once and returns statistics for `values` (each a tensor whose
/// last dimension is its channel count: static in its type, or the K of a 2-D constant
/// MatMul weight that multiplies it), with Hessians when `hessians`.
Expected<Stats> collect(const Model &m, const std::vector<std::vector<int64_t>> &windows,
                        const std::vector<const Value *> &values, bool hessians, int threads);

/// The activations worth watching: the A input of every MatMul whose B is a 2-D constant
/// (f32 or already quantized), in the order the graph first reads them.
std::vector<const Value *> matmulWeightInputs(const Graph &g);

/// The cached analysis: per-channel statistics (no Hessians) of every value
/// matmulWeightInputs returns, over the --calib windows. Errors when --calib is not given.
struct ActivationStatsAnalysis {
  static inline char ID;
  using Result = Stats;
  static Expected<Result> run(Model &m, AnalysisManager &am);
};

/// Hessians for `values`, in groups whose K x K doubles fit ctx.calibMemoryMiB: each group
/// is one pass over the data, run just before `fn` handles it, so a pass that changes
/// weights group by group calibrates later groups on its earlier changes (GPTQ's and
/// SparseGPT's sequential order). A value too large for the budget on its own is a group
/// of one. Adds a report line with windows, groups and time.
Status forEachHessianGroup(Model &m, AnalysisManager &am, const std::vector<const Value *> &values,
                           const std::string &pass, const std::function<Status(Stats &)> &fn);

} // namespace llmopt::calib

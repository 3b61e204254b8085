// What the unstructured and N:M pruning passes share: the sparsity pattern, choosing the
// lowest-scored entries of a weight, installing a pruned weight, and the report line.
//
// Weights are MatMul's B, W [K, N] (row k = input channel k, column n = output n): the
// transpose of the references' torch Linear [out, in]. "Per output" means per column
// here, and N:M groups run down a column (m consecutive input channels).
#pragma once

#include <span>
#include <string>
#include <vector>

#include "passes/Pass.h"
#include "passes/PassOptions.h"
#include "passes/quant/QuantCommon.h"

namespace llmopt::prunepass {

/// Which entries a mask may keep: a fraction of each comparison set (unstructured), or at
/// most n nonzeros in every m consecutive input channels of each output (N:M, m > 0).
struct Pattern {
  double sparsity = 0.5;
  int64_t n = 0, m = 0;
  bool nm() const { return m > 0; }
  /// "50% unstructured" or "2:4".
  std::string describe() const;
};

/// Reads `sparsity=F` for `pass`: a fraction in [0, 1).
Expected<double> readSparsity(OptionReader &r, const std::string &pass);
/// Reads `n=N;m=M` (1 <= n < m <= 256) into an N:M pattern.
Expected<Pattern> readNm(OptionReader &r, const std::string &pass);

/// The error for a pass (or one of its methods, when `method` is not empty) that needs
/// --calib when none was given.
Status calibrationError(const std::string &pass, const std::string &method = "");

/// Positions of the `count` smallest `keys`, ties to the lower position, NaN as largest;
/// in increasing position order. The set is unique, so the result is deterministic.
std::vector<int64_t> smallest(std::span<const float> keys, int64_t count);
/// The same into `idx`, reusing its storage (for the many small N:M groups).
void smallestInto(std::span<const float> keys, int64_t count, std::vector<int64_t> &idx);

/// How many of `total` entries of a set to prune for `sparsity`: floor(sparsity * total)
/// (computed so that 0.5 * 4 is exactly 2).
int64_t pruneCount(double sparsity, int64_t total);

/// Where a score mask compares entries: over the whole weight, or within each output.
enum class Scope { Weight, Output };

/// Zeroes the entries of f32 w [K, N] with the lowest `scores` (K * N, row-major like w):
/// pruneCount(p.sparsity, set size) per set of `scope`, or for N:M in every group of m
/// rows of a column the (size - n) lowest. Returns the pruned copy.
Tensor pruneByScore(const Tensor &w, std::span<const float> scores, const Pattern &p, Scope scope);
/// Magnitude pruning of one weight: scores |w|.
Tensor pruneMagnitude(const Tensor &w, const Pattern &p, Scope scope = Scope::Weight);

/// Zero entries of an f32 tensor, and their fraction.
int64_t countZeros(const Tensor &t);
double zeroFraction(const Tensor &t);
/// Whether f32 w [K, N] has at most n nonzeros in every group of m rows of each column.
bool satisfiesNm(const Tensor &w, int64_t n, int64_t m);

/// What a pruning pass did, for its report line.
struct PruneStats {
  int64_t weights = 0, params = 0, zeros = 0, gemms = 0;
  double minSparsity = 1, maxSparsity = 0;
  quantpass::SkipCounts skips;
  /// "28 weights, 61440 of 122880 parameters zero (50.00%), per weight 50.00%..50.00%;
  /// skipped: none".
  std::string summary() const;
};

/// The weights a pruning pass works on: constant 2-D f32 MatMul weights (Gemms with a
/// constant B turned into MatMul first), as quant-int4 finds them but of any size.
std::vector<quantpass::MatMulWeight> collectWeights(Graph &g, PruneStats &st);

/// Gives `w`'s constant the data `pruned` (f32, same shape), counts it in `st`, and frees
/// the original.
void installPruned(const quantpass::MatMulWeight &w, Tensor pruned, PruneStats &st);

/// The report line "PASS (DETAIL): SUMMARY[EXTRA]" and what the pass preserved.
PreservedAnalyses finish(AnalysisManager &am, const std::string &head, const PruneStats &st,
                         const std::string &extra);

} // namespace llmopt::prunepass

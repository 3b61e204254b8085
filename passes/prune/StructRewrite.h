// The rewrite half of structured pruning: physically removes units found by the dependency
// analysis (StructDeps.h) from weights, sliced constants and size constants, and removes
// whole residual branches.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "passes/prune/StructDeps.h"

namespace llmopt::structprune {

/// What to keep of one space: the units (heads or channels) in increasing order, and the
/// GQA repeat after pruning (key/value spaces and Rep sizes read it).
struct SpaceCut {
  std::vector<int64_t> keptUnits;
  int64_t repAfter = 1;
};

/// What the rewrite did, for the report line.
struct RewriteStats {
  int64_t weights = 0;        ///< weights sliced
  int64_t quantDirect = 0;    ///< quantized weights sliced without re-quantizing
  int64_t quantRequant = 0;   ///< quantized weights whose blocked axis was cut
  int64_t blocksRequant = 0, blocksTotal = 0; ///< blocks of those re-quantized / in all
  int64_t sizeConstants = 0;  ///< integer constants rewritten (Reshape / Expand targets)
  int64_t slicedConstants = 0;
  int64_t graphDims = 0;      ///< dims of graph inputs / outputs changed
};

/// Keeps the entries `keep` (increasing) along `axis` of any dense tensor (sub-byte
/// types included); side data (scales, zero points) is not copied.
Tensor sliceTensor(const Tensor &t, int64_t axis, const std::vector<int64_t> &keep);

/// Slices weight `w` (f32 or quantized) along `axis`. A quantized weight blocked along
/// another axis (or per channel / per tensor) is sliced directly, with its scales and zero
/// points; one blocked along `axis` keeps the blocks that survive whole bit for bit and
/// re-quantizes the others round-to-nearest with the same encoding.
Status sliceWeight(Value *w, int64_t axis, const std::vector<int64_t> &keep, RewriteStats &st);

/// Applies `cuts` (by space id) to every weight, sliced constant and constant size site of
/// `info`. Graph input / output dims are left to applyGraphDims (after types are restored).
Status applyCuts(Graph &g, const StructInfo &info, const std::map<int, SpaceCut> &cuts,
                 RewriteStats &st);

/// Sets the graph input / output dims the sites of `info` name, for `cuts`.
void applyGraphDims(const StructInfo &info, const std::map<int, SpaceCut> &cuts,
                    RewriteStats &st);

/// Removes residual branches: their Add yields the stream, graph outputs only they produce
/// (their KV cache) are dropped, then dead code, then graph inputs nothing reads any more.
/// Returns the names of the graph inputs and outputs removed.
std::vector<std::string> removeBranches(Graph &g, const std::vector<const ResidualBranch *> &branches);

} // namespace llmopt::structprune

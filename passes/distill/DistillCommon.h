// What the distill-* passes share: the transformer blocks of a model (prune-struct's layer
// analysis), the logits output, index lists and the metadata keys they write.
#pragma once

#include <string>
#include <vector>

#include "ir/Graph.h"
#include "passes/Pass.h"
#include "passes/prune/StructDeps.h"

namespace llmopt::distill {

/// Metadata keys (docs/distillation.md lists what each holds).
inline constexpr const char *kMetaOutputs = "llmopt.distill.outputs";   ///< exposed outputs
inline constexpr const char *kMetaHidden = "llmopt.distill.hidden";     ///< their block indices
inline constexpr const char *kMetaBlocks = "llmopt.distill.blocks";     ///< the teacher's block count
inline constexpr const char *kMetaLayerMap = "llmopt.distill.layer_map"; ///< student:teacher block pairs

/// The transformer blocks of a model, in order, as prune-struct<unit=layer> finds them
/// (structprune::findLayers: the residual branches along the longest chain of residual
/// Adds, attention + MLP pairs). A block's output, the residual stream after it, is the
/// Add of its last branch; `types` are the inferred types of those outputs.
struct Blocks {
  std::vector<structprune::Layer> layers;
  std::vector<Value *> outputs;
  std::vector<Type> types;
};

/// Infers shapes (the graph's declared types are restored afterwards) and finds the
/// blocks; an error names `pass` when shape inference fails or no block chain exists.
Expected<Blocks> findBlocks(Model &m, const std::string &pass);

/// The logits: the graph output named `logits`, else the only float graph output of rank
/// 3; an error naming `pass` otherwise.
Expected<Value *> findLogits(Graph &g, const std::string &pass);

/// Checks a list of block indices (`key` of `pass`) against `count` blocks: each in
/// [0, count), increasing, no repeats.
Status checkIndices(const std::vector<int64_t> &idx, int64_t count, const std::string &pass,
                    const std::string &key);

/// The --calib windows; without --calib an error naming `pass` and what it needs them for.
Expected<std::vector<std::vector<int64_t>>> calibWindows(const PassContext &ctx, const std::string &pass,
                                                         const std::string &purpose);

/// "0,3,5".
std::string joinInts(const std::vector<int64_t> &v);

} // namespace llmopt::distill

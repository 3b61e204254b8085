// llmopt's own shape and type inference over the IR, for every opset the IR carries
// (ONNX's shape inference in libonnx stops at the opsets it was built with).
//
// Example: the reshape torch exporters write for attention heads
//   s  = Shape(x : f32[batch,seq,768])          s  = [batch, seq, 768]  (known values)
//   b  = Unsqueeze(Gather(s, 0), [0])           b  = [batch]
//   t  = Unsqueeze(Gather(s, 1), [0])           t  = [seq]
//   sh = Concat(b, t, [12], [-1])               sh = [batch, seq, 12, -1]
//   y  = Reshape(x, sh)                         y  : f32[batch,seq,12,64]
#pragma once

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "ir/Graph.h"
#include "passes/analysis/DimExpr.h"

namespace llmopt {

struct ShapeInferenceResult {
  /// Node outputs that had no type before and have one now.
  size_t valuesTyped = 0;
  /// Node outputs whose existing type gained information (elem, rank or dims).
  size_t valuesRefined = 0;
  /// Qualified op types (`Conv`, `com.microsoft::Attention`) with no rule; their
  /// outputs were left as they were. Sorted, each once.
  std::vector<std::string> unknownOps;
};

/// Statically known contents of small integer tensors, by value.
using KnownValueMap = std::unordered_map<const Value *, std::vector<DimExpr>>;

/// `v`'s contents when `known` holds every element as a number; nullopt otherwise.
std::optional<std::vector<int64_t>> knownInts(const Value *v, const KnownValueMap &known);

struct ShapeInferenceOptions {
  /// When an output already has a symbolic dim and inference derives another one,
  /// take the derived symbol (ties dims to the graph inputs' symbols). Off: a
  /// declared symbol is kept. Static dims are never replaced either way.
  bool replaceSymbols = false;
  /// If set, receives the known integer values (e.g. what each Shape/Gather/Concat
  /// of a shape computation evaluates to, with symbols for dynamic dims).
  KnownValueMap *knownValues = nullptr;
};

/// Infers element types and (symbolic) shapes for every node output in program order,
/// in the main graph and subgraphs; refines existing types when more is known, never
/// contradicts a static dim already declared (a conflict is an error naming node,
/// value, both shapes). Unknown/opaque ops leave outputs as they are.
Expected<ShapeInferenceResult> inferShapes(Model &m);
Expected<ShapeInferenceResult> inferShapes(Model &m, const ShapeInferenceOptions &opts);

} // namespace llmopt

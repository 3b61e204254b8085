// Internal to shape inference: the context a per-op rule sees, shared helpers, and
// the rule tables (one per op family, in ShapeRules*.cc).
#pragma once

#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ir/Graph.h"
#include "passes/analysis/DimExpr.h"

namespace llmopt::shape {

/// The contents of a small integer (or bool) tensor, as expressions; `scalar` when
/// the tensor has rank 0.
struct KnownValue {
  std::vector<DimExpr> elems;
  bool scalar = false;
  /// All entries are numbers.
  std::optional<std::vector<int64_t>> ints() const;
};
using KnownMap = std::unordered_map<const Value *, KnownValue>;

/// Tensors with more elements than this are not tracked as known values.
inline constexpr size_t kMaxKnownElems = 1024;

/// Integer and bool element types (the ones whose values are tracked).
bool isIntegral(DType d);
/// The contents of a small integral tensor of rank <= 1; nullopt otherwise.
std::optional<KnownValue> knownOfTensor(const Tensor &t);
/// Opset assumed when the model does not say (a node outside a model).
inline constexpr int64_t kDefaultOpset = 21;

/// What one rule invocation sees: the node, its inputs' types as expressions, known
/// input values; and what it fills in: output types and known output values.
class InferContext {
public:
  InferContext(Node &n, const KnownMap &known);

  Node &node;
  /// The node's opset version for its domain (kDefaultOpset when unknown).
  int64_t opset;

  size_t numInputs() const { return node.numInputs(); }
  bool has(size_t i) const { return node.input(i) != nullptr; }
  const Type &type(size_t i) const;
  DType elem(size_t i) const { return type(i).elem; }
  /// Dims of input i; nullopt when absent or of unknown rank.
  const std::optional<SymShape> &dims(size_t i) const { return inDims_.at(i); }
  int64_t rank(size_t i) const { return dims(i) ? static_cast<int64_t>(dims(i)->size()) : -1; }
  const KnownValue *known(size_t i) const;
  /// The known value of input i when every entry is a number.
  std::optional<std::vector<int64_t>> ints(size_t i) const;
  /// The contents of input i as numbers when it is an initializer or a Constant node's
  /// output of at most kMaxKnownElems elements (any numeric type), else known ints.
  std::optional<std::vector<double>> reals(size_t i) const;

  int64_t attrInt(std::string_view n, int64_t dflt) const { return node.attrInt(n, dflt); }
  bool hasAttr(std::string_view n) const { return node.hasAttr(n); }
  std::vector<int64_t> attrInts(std::string_view n) const { return node.attrInts(n); }

  size_t numOutputs() const { return node.numOutputs(); }
  void setTensor(size_t i, DType elem, std::optional<SymShape> dims);
  void setType(size_t i, Type t);
  void setKnown(size_t i, KnownValue v);
  /// Copies input `in`'s type (elem and dims) to output `out`.
  void passThrough(size_t out = 0, size_t in = 0) { setTensor(out, elem(in), dims(in)); }

  /// An error naming the node.
  Status error(const std::string &msg) const;
  /// Normalises an axis against `rank` (negative counts from the end); error when out of range.
  Expected<int64_t> axis(int64_t a, int64_t rank) const;

  std::vector<Type> outTypes;
  std::vector<std::optional<KnownValue>> outKnown;

private:
  const KnownMap &known_;
  std::vector<std::optional<SymShape>> inDims_;
};

using Rule = Status (*)(InferContext &);
struct RuleEntry {
  std::string_view domain;
  std::string_view op;
  Rule fn;
};

std::span<const RuleEntry> elementwiseRules();
std::span<const RuleEntry> mathRules();
std::span<const RuleEntry> tensorRules();
std::span<const RuleEntry> shapeOpRules();
std::span<const RuleEntry> nnRules();

// ---- helpers shared by the rule files ----

/// Numpy broadcasting of two dims: equal -> it; 1 vs d -> d; n vs symbol -> n;
/// differing symbols -> unknown. nullopt on a static mismatch.
std::optional<DimExpr> broadcastDim(const DimExpr &a, const DimExpr &b);
/// Broadcasts shapes (nullopt entries: unknown rank -> result rank unknown).
Expected<std::optional<SymShape>> broadcast(const InferContext &c,
                                            const std::vector<const std::optional<SymShape> *> &shapes);
/// Two dims that must be equal: prefers a static value, then a symbol; nullopt if
/// two static values differ.
std::optional<DimExpr> unifyDim(const DimExpr &a, const DimExpr &b);
/// The first defined element type among the given inputs.
DType firstElem(const InferContext &c, std::initializer_list<size_t> inputs);
/// Axes from the `axes` attribute (before `inputSince`) or from input `inputIdx`
/// (falling back to a stray attribute); nullopt when they are an input whose value is
/// not known. `present` reports whether any axes were given at all.
std::optional<std::vector<int64_t>> axesOf(const InferContext &c, int64_t inputSince,
                                           size_t inputIdx, bool *present);
/// Applies an elementwise integer op to known values (numpy broadcasting of a
/// scalar or equal-length vectors).
std::optional<KnownValue> combineKnown(const KnownValue &a, const KnownValue &b,
                                       DimExpr (*fn)(const DimExpr &, const DimExpr &));

} // namespace llmopt::shape

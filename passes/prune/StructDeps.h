// Dependency analysis for structured pruning: which MatMul weight columns and rows must be
// removed together (MLP channels, attention heads with their GQA groups, whole residual
// blocks), and every other place in the graph whose size follows them.
//
// Channels are tracked forward from each MatMul weight W [K, N]: its output's last axis
// indexes the weight's N columns (a *space*). Every op a tracked value reaches either keeps
// the channels apart (elementwise ops, Transpose, Reshape into heads, Softmax over another
// axis, attention MatMuls over the head axis, RoPE's Slice/Concat inside a head, the GQA
// repeat), or consumes them as the rows of another weight (down_proj, o_proj). What an
// axis of a tracked value indexes is its Role:
//
//   q = MatMul(x, Wq)              [b, s, H*D]      Flat   (channel c = h*D + d)
//   Reshape(q, [b, s, H, D])       [b, s, H, D]     Unit (h), Inner (d): D fixes the head size
//   k' = Unsqueeze+Expand(k)       [b, G, R, t, D]  Unit (g), Rep (r)
//   Reshape(k', [b, G*R, t, D])    [b, H, t, D]     Unit repeated R times: index h means g = h / R
//   MatMul(q, Transpose(k'))       Unit(q) meets Unit(k, R): q head h goes with kv head h / R
//
// Spaces whose values meet on an axis are merged (gate and up columns; q columns and o rows);
// a repeated Unit meeting a plain one links a key/value space to its query space (GQA). A
// space that meets anything the analysis cannot prove channel-preserving (a reduction over
// its axis, an operand not indexed by it, a graph output other than a KV cache, an op the
// analysis does not know) is blocked; the last case is an error for the pass, which names
// the node. Needs inferred shapes on the graph (inferShapes) and the known shape values.
#pragma once

#include <string>
#include <vector>

#include "ir/Graph.h"
#include "passes/analysis/ShapeInference.h"

namespace llmopt::structprune {

/// What an axis of a tracked value indexes, for a space of C = U * D channels.
enum class Role : uint8_t {
  None,  ///< not the space's channels
  Flat,  ///< channel c in [0, C)
  Unit,  ///< unit (head) u in [0, U), or with a repeat R: index i stands for unit i / R
  Inner, ///< position d in [0, D) within a unit (never pruned)
  Rep,   ///< the GQA repeat index r in [0, R) (between Expand and the merging Reshape)
};

/// A size in the graph that changes with a space's kept units: an element of an integer
/// constant read by a node (Reshape / Expand targets, Concat pieces), or a dimension of a
/// graph input / output (a KV cache).
struct SizeSite {
  enum class Kind : uint8_t { Element, InputDim, OutputDim };
  Kind kind = Kind::Element;
  Node *node = nullptr;   ///< Element: the node reading the constant
  unsigned operand = 0;   ///< Element: which of its operands
  Value *value = nullptr; ///< InputDim / OutputDim: the graph input or output
  int64_t index = 0;      ///< element or dimension index
  Role role = Role::Flat; ///< Flat: channels; Unit: units (times the repeat); Rep: repeat
  int64_t rep = 1;        ///< Unit: the GQA repeat folded into the axis (1: none)
  int space = -1;
};

/// A constant operand indexed by a space along `axis` (a bias on a projection's output,
/// a per-head constant): sliced with the space.
struct ConstSlice {
  Node *node = nullptr;
  unsigned operand = 0;
  int64_t axis = 0;
  Role role = Role::Flat; ///< Flat: sliced by channels; Unit: by units
  int space = -1;
};

/// A set of C channels pruned together: the output columns of `columns`, read as the rows
/// of `rows`.
struct Space {
  std::vector<Value *> columns; ///< weights W [K, C] whose outputs are the channels
  std::vector<Value *> rows;    ///< weights W [C, N] whose inputs are the channels
  int64_t channels = 0;
  int64_t unitSize = 1; ///< D: 1 for channels, head_dim once a Reshape splits heads
  bool split = false;
  std::string blocked; ///< why the space cannot be pruned; empty when it can
  std::string unknownNode; ///< set when an op the analysis does not know blocked it
  int64_t units() const { return channels / unitSize; }
};

/// MLP channels: one space of unitSize 1.
struct MlpGroup {
  int space = -1;
};

/// Attention heads: the query space `q` (q columns and o rows; also k and v without GQA)
/// and the key/value spaces whose head g goes with query heads g*rep .. g*rep+rep-1.
struct AttentionGroup {
  int q = -1;
  std::vector<int> kv;
  int64_t heads = 0, kvHeads = 0, headDim = 0, rep = 1;
};

/// A residual branch `out = Add(stream, f(stream))` and the nodes only it computes.
struct ResidualBranch {
  Node *add = nullptr;
  Value *stream = nullptr;
  std::vector<Node *> nodes;     ///< descendants of stream that are ancestors of f(stream)
  std::vector<Value *> weights;  ///< float constants only these nodes read
  std::vector<Value *> outputs;  ///< graph outputs they produce (a KV cache)
  bool attention = false;        ///< holds a MatMul of two activations
};

/// A removable layer: consecutive residual branches (attention + MLP in a decoder).
struct Layer {
  std::vector<ResidualBranch> branches;
};

/// What analyzeStructure found. Space ids in sites and slices are canonical (merged).
struct StructInfo {
  std::vector<Space> spaces;
  std::vector<MlpGroup> mlps;         ///< in graph order
  std::vector<AttentionGroup> attns;  ///< in graph order
  std::vector<SizeSite> sites;
  std::vector<ConstSlice> slices;
  /// Values whose shape follows a space (node outputs, adopted graph inputs), with it.
  std::vector<std::pair<Value *, int>> tracked;
  std::vector<std::string> notes;     ///< blocked column spaces: "W: reason"
  /// The first column weight of a space, for messages.
  std::string spaceName(int s) const;
};

/// Tracks every MatMul weight's channels through `g` (types inferred, `known` from the
/// same inference) and returns the prunable groups.
StructInfo analyzeStructure(Graph &g, const KnownValueMap &known);

/// The residual branches along the longest chain of residual Adds, grouped into layers
/// (attention + MLP pairs when the chain alternates, else one branch per layer).
std::vector<Layer> findLayers(Graph &g);

/// Types of the graph's non-constant values, restored after shape inference served the
/// analysis (the rewrite changes sizes; the output keeps what the input declared).
struct TypeSnapshot {
  std::vector<std::pair<Value *, Type>> saved;
  explicit TypeSnapshot(const Graph &g) {
    for (Value *v : g.values())
      if (!v->isConstant())
        saved.emplace_back(v, v->type());
  }
  void restore() {
    for (auto &[v, t] : saved)
      v->setType(t);
    saved.clear();
  }
};

/// Reads a small integer constant (initializer or Constant node output).
const Tensor *constantTensor(const Value *v);

} // namespace llmopt::structprune

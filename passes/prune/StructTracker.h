// Internal to the structured-pruning dependency analysis (StructDeps.cc, StructRules.cc):
// the per-value Track of what each axis indexes, and the Tracker that propagates tracks
// through the graph node by node.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "passes/prune/StructDeps.h"

namespace llmopt::structprune::detail {

inline bool isOp(const Node *n, std::string_view name) {
  return n->domain().empty() && n->opType() == name;
}

inline bool isIntegralDType(DType d) {
  switch (d) {
  case DType::I8: case DType::I16: case DType::I32: case DType::I64:
  case DType::U8: case DType::U16: case DType::U32: case DType::U64:
    return true;
  default:
    return false;
  }
}

inline bool isOne(const Dim &d) { return d.isStatic() && d.value == 1; }

/// Ops that map each element to one element of the same index (operands broadcast).
inline bool isElementwise(const Node *n) {
  static const std::set<std::string, std::less<>> ops = {
      "Abs", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Exp", "Log",
      "Tanh", "Erf", "Sigmoid", "Relu", "Gelu", "Cos", "Sin", "Floor", "Ceil", "Round", "Sign",
      "Max", "Min", "Clip", "Where", "Identity", "Cast", "Softplus", "Softsign", "Elu", "Selu",
      "LeakyRelu", "HardSigmoid", "HardSwish", "Mish", "Mean", "Sum", "Equal", "Less",
      "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Not", "PRelu", "IsNaN", "IsInf",
      "Dropout", "Celu", "ThresholdedRelu"};
  if (n->domain().empty())
    return ops.count(n->opType()) > 0;
  return n->domain() == "com.microsoft" &&
         (n->opType() == "FastGelu" || n->opType() == "Gelu" || n->opType() == "QuickGelu" ||
          n->opType() == "BiasGelu");
}

/// Roles of one tracked value, per axis; reps[a] is a Unit's repeat or a Rep's R.
struct Track {
  int space = -1;
  std::vector<Role> roles;
  std::vector<int64_t> reps;
  int64_t rank() const { return static_cast<int64_t>(roles.size()); }
  Role role(int64_t a) const { return a >= 0 && a < rank() ? roles[static_cast<size_t>(a)] : Role::None; }
  int64_t rep(int64_t a) const { return a >= 0 && a < rank() ? reps[static_cast<size_t>(a)] : 1; }
  static Track none(int64_t rank) {
    Track t;
    t.roles.assign(static_cast<size_t>(rank), Role::None);
    t.reps.assign(static_cast<size_t>(rank), 1);
    return t;
  }
};

inline bool pruned(Role r) { return r == Role::Flat || r == Role::Unit || r == Role::Rep; }

inline const char *roleName(Role r) {
  switch (r) {
  case Role::Flat: return "channels";
  case Role::Unit: return "heads";
  case Role::Inner: return "positions within a head";
  case Role::Rep: return "the GQA repeat";
  default: return "nothing";
  }
}

class Tracker {
public:
  Tracker(Graph &g, const KnownValueMap &known) : g_(g), known_(known) {}
  StructInfo run();

private:
  // ---- spaces
  int find(int s) {
    while (parent_[static_cast<size_t>(s)] != s)
      s = parent_[static_cast<size_t>(s)] = parent_[static_cast<size_t>(parent_[static_cast<size_t>(s)])];
    return s;
  }
  Space &space(int s) { return spaces_[static_cast<size_t>(find(s))]; }
  bool liveSpace(int s) { return s >= 0 && space(s).blocked.empty(); }
  void block(int s, const std::string &why, const Node *unknown = nullptr) {
    Space &sp = space(s);
    if (!sp.blocked.empty())
      return;
    sp.blocked = why;
    if (unknown)
      sp.unknownNode = unknown->name().empty() ? unknown->qualifiedOpType() : unknown->name();
  }
  int newSpace(Value *w, int64_t channels) {
    spaces_.emplace_back();
    spaces_.back().columns.push_back(w);
    spaces_.back().channels = channels;
    parent_.push_back(static_cast<int>(parent_.size()));
    return static_cast<int>(spaces_.size()) - 1;
  }
  int unite(int a, int b, const Node *at);
  /// Relates two operands' roles on one axis (merging or linking their spaces); sets the
  /// output's role, repeat and space. Returns an error text or "".
  std::string relate(int sa, Role ra, int64_t pa, int sb, Role rb, int64_t pb, const Node *at,
                     int &outSpace, int64_t &outRep);

  // ---- tracks
  const Track *live(const Value *v) {
    auto it = tracks_.find(v);
    if (it == tracks_.end() || !liveSpace(it->second.space))
      return nullptr;
    return &it->second;
  }
  void setTrack(Value *v, Track t) {
    t.space = find(t.space);
    tracks_[v] = std::move(t);
    order_.push_back(v);
  }
  std::optional<Dims> dims(const Value *v) const {
    if (!v || !v->type().dims)
      return std::nullopt;
    return *v->type().dims;
  }

  // ---- node rules
  void visit(Node *n);
  bool isWeight(const Value *w) const;
  void startColumns(Node *mm);
  void consumeRows(Node *mm, const Track &a);
  void fail(Node *n, const std::string &why, bool unknown = false);
  std::string broadcastRule(Node *n, Track &out);
  std::string matmulRule(Node *n, Track &out);
  std::string reshapeRule(Node *n, const Track &t, Track &out, bool hasShape);
  std::string expandRule(Node *n, const Track &t, Track &out);
  std::string concatRule(Node *n, Track &out);
  std::string shapeRule(Node *n, const Track &t);
  std::string axesRule(Node *n, const Track &t, Track &out);
  std::string elementSite(Node *n, unsigned operand, int64_t j, int64_t oldSize, Role role,
                          int64_t rep, int space, bool reshape, bool zeroKeeps);
  std::optional<std::vector<int64_t>> intsOf(const Value *v) const;
  std::optional<std::vector<int64_t>> axesOf(Node *n, unsigned operand, const char *attr);

  void finish(StructInfo &info);

  Graph &g_;
  const KnownValueMap &known_;
  std::vector<int> parent_;
  std::vector<Space> spaces_;
  struct Link {
    int q, kv;
    int64_t rep;
  };
  std::vector<Link> links_;
  std::unordered_map<const Value *, Track> tracks_;
  std::vector<Value *> order_;
  std::unordered_map<const Value *, int> weightSpace_;
  std::unordered_map<const Value *, std::vector<int>> rowReaders_; // weight -> spaces (-1: untracked)
  std::vector<SizeSite> sites_;
  std::vector<ConstSlice> slices_;
};

} // namespace llmopt::structprune::detail

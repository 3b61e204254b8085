// A small declarative matcher for the fusion passes, in the style of LLVM's PatternMatch:
// a pattern is a tree of value matchers written as it reads in the comment above it.
//
//   Value *x = nullptr, *w = nullptr; float eps = 0;
//   auto p = op(OpKind::Mul, constant(&w), op(OpKind::Div, val(&x), ...)).commute();
//   MatchLog log;
//   if (matchRoot(node, p, log)) ...      else if (log.anchored) near-miss: log.why
//
// Each op() checks the producer's kind, then its operands (both orders with commute()),
// then its where() predicate and its use count (one consumer unless uses(n) / anyUses() says otherwise), so that
// a structurally complete match that fails only on a second consumer is reported as a
// near-miss. val(&x) binds x on first sight and requires the same value afterwards;
// bindings made by a failed alternative are rolled back before the next is tried. There is
// no backtracking across siblings: write first the operand that binds values most tightly.
// An anchor() op marks where a failure starts to count as a near-miss (once its operands
// matched; anchorOnEntry(): once its kind did); the first reason any later check gives is
// kept for the report.
#pragma once

#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "ir/Graph.h"

namespace llmopt::fusion {

/// What one match attempt found: the first check that said no, whether it got past an
/// anchor (a sub-pattern distinctive enough that a failure after it is a near-miss), and
/// the bindings to roll back when an alternative fails.
struct MatchLog {
  std::string why;
  bool anchored = false;
  std::vector<std::pair<Value **, Value *>> journal;
  const Value *root = nullptr; ///< the matched root's value: any number of consumers

  /// Records why a check said no. After the anchor matched, the first such reason is
  /// kept: later alternatives tried on the way back up would only hide it.
  bool fail(std::string reason) {
    if (!frozen)
      why = std::move(reason);
    frozen = frozen || anchored;
    return false;
  }
  bool frozen = false;
  size_t mark() const { return journal.size(); }
  void rollback(size_t to) {
    while (journal.size() > to) {
      *journal.back().first = journal.back().second;
      journal.pop_back();
    }
  }
};

/// Users of `v` (graph outputs count as a use).
int useCount(const Value *v);
/// A float scalar constant (any float type, one element), or nullopt.
std::optional<float> scalarValue(const Value *v);
/// Axes of a Reduce* node: the attribute before opset 18, the constant input after.
std::optional<std::vector<int64_t>> reduceAxes(const Node &n);
/// True when `n` reduces over exactly the last axis of its input (axes [-1] or
/// [rank-1] with a known rank) and keeps the reduced dim.
bool reducesLastAxis(const Node &n);
/// reducesLastAxis() as a where() predicate, with the reason when it says no.
bool lastAxisOnly(const Node &n, MatchLog &log);

namespace pat {

/// Any value; binds it (first sight) or requires the bound one (afterwards).
struct ValP {
  Value **slot;
  bool match(Value *v, MatchLog &log) const {
    if (!v)
      return log.fail("operand missing");
    if (!slot)
      return true;
    if (*slot)
      return *slot == v || log.fail(fmt::format("'{}' is not '{}' matched before", v->name(), (*slot)->name()));
    log.journal.emplace_back(slot, *slot);
    *slot = v;
    return true;
  }
};
inline ValP val(Value **slot = nullptr) { return {slot}; }

/// A constant (initializer), not quantized; optionally bound.
struct ConstP {
  Value **slot;
  bool match(Value *v, MatchLog &log) const {
    if (!v || !v->isConstant())
      return log.fail(fmt::format("'{}' is not a constant", v ? v->name() : ""));
    if (v->type().quant)
      return log.fail(fmt::format("'{}' is a quantized constant", v->name()));
    return ValP{slot}.match(v, log);
  }
};
inline ConstP constant(Value **slot = nullptr) { return {slot}; }

/// A one-element float constant; `want` set: within a relative `tol` of it.
struct ScalarP {
  float *out = nullptr;
  std::optional<float> want;
  float tol = 1e-3f;
  const char *what = "constant";
  bool match(Value *v, MatchLog &log) const {
    std::optional<float> s = v ? scalarValue(v) : std::nullopt;
    if (!s)
      return log.fail(fmt::format("{} '{}' is not a constant scalar", what, v ? v->name() : ""));
    if (want && std::fabs(*s - *want) > tol * std::max(1.f, std::fabs(*want)))
      return log.fail(fmt::format("{} is {}, expected {}", what, *s, *want));
    if (out)
      *out = *s;
    return true;
  }
};
/// A scalar constant, its value stored in `out`.
inline ScalarP scalar(float *out, const char *what = "constant") { return {out, std::nullopt, 0, what}; }
/// A scalar constant equal to `want` (relative tolerance `tol`).
inline ScalarP scalarEq(float want, float tol = 1e-3f) { return {nullptr, want, tol, "constant"}; }

/// A node of kind `kind` producing the value, with operand patterns `Ps` (the first
/// sizeof...(Ps) inputs). Built by op(); refined by the chained setters.
template <typename... Ps> struct OpP {
  OpKind kind = OpKind::Opaque;
  std::tuple<Ps...> operands;
  bool commutative = false;
  int maxUses = 1; ///< -1: any number of consumers
  enum class Anchor { None, Entry, Operands } anchorAt = Anchor::None;
  Node **slot = nullptr;
  Value **value = nullptr; ///< binds (or requires) the produced value, as val() does
  std::function<bool(const Node &, MatchLog &)> pred;

  OpP commute() const { OpP p = *this; p.commutative = true; return p; }
  OpP uses(int n) const { OpP p = *this; p.maxUses = n; return p; }
  OpP anyUses() const { return uses(-1); }
  /// Near-misses start once this op's operands matched (its where() and use checks count).
  OpP anchor() const { OpP p = *this; p.anchorAt = Anchor::Operands; return p; }
  /// Near-misses start as soon as this op's kind matched.
  OpP anchorOnEntry() const { OpP p = *this; p.anchorAt = Anchor::Entry; return p; }
  OpP bind(Node **n) const { OpP p = *this; p.slot = n; return p; }
  OpP named(Value **v) const { OpP p = *this; p.value = v; return p; }
  OpP where(std::function<bool(const Node &, MatchLog &)> f) const { OpP p = *this; p.pred = std::move(f); return p; }

  bool match(Value *v, MatchLog &log) const {
    Node *n = v ? v->producer() : nullptr;
    if (!n || !n->is(kind) || n->numInputs() < sizeof...(Ps))
      return log.fail(fmt::format("'{}' is not {}", v ? v->name() : "", opInfo(kind).name));
    if (anchorAt == Anchor::Entry)
      log.anchored = true;
    size_t m = log.mark();
    bool ok = inOrder(n, false, log, std::index_sequence_for<Ps...>{});
    if (!ok && commutative) {
      log.rollback(m);
      ok = inOrder(n, true, log, std::index_sequence_for<Ps...>{});
    }
    if (!ok)
      return false;
    if (anchorAt == Anchor::Operands)
      log.anchored = true;
    if (pred && !pred(*n, log))
      return false;
    if (maxUses >= 0 && v != log.root && useCount(v) > maxUses)
      return log.fail(fmt::format("'{}' ({}) has another consumer", v->name(), opInfo(kind).name));
    if (slot)
      *slot = n;
    return !value || ValP{value}.match(v, log);
  }

private:
  template <size_t... I>
  bool inOrder(Node *n, bool swap, MatchLog &log, std::index_sequence<I...>) const {
    auto in = [&](size_t i) { return n->input(swap && sizeof...(Ps) == 2 ? 1 - i : i); };
    return (std::get<I>(operands).match(in(I), log) && ...);
  }
};

template <typename... Ps> OpP<Ps...> op(OpKind k, Ps... ps) {
  OpP<Ps...> p;
  p.kind = k;
  p.operands = std::make_tuple(std::move(ps)...);
  return p;
}

/// The first of several alternatives that matches.
template <typename... Ps> struct OneOfP {
  std::tuple<Ps...> alts;
  bool match(Value *v, MatchLog &log) const {
    return std::apply(
        [&](const auto &...a) {
          size_t m = log.mark();
          return ((log.rollback(m), a.match(v, log)) || ...);
        },
        alts);
  }
};
template <typename... Ps> OneOfP<Ps...> oneOf(Ps... ps) {
  OneOfP<Ps...> p;
  p.alts = std::make_tuple(std::move(ps)...);
  return p;
}

/// `p` behind any number of Casts between float types, each with one consumer: an
/// exporter running a Softmax or a mask in a wider type (torch 1.13 writes the scores'
/// Cast to f64 when the mask was built from Python floats). The caller's pattern fixes the
/// types at both ends (a MatMul of the probabilities takes them back in v's type).
template <typename P> struct FloatCastsP {
  P inner;
  bool match(Value *v, MatchLog &log) const {
    for (Node *n = v ? v->producer() : nullptr; n && n->is(OpKind::Cast); n = v->producer()) {
      if (!isFloat(v->type().elem) || !isFloat(n->input(0)->type().elem))
        break;
      if (v != log.root && useCount(v) > 1)
        return log.fail(fmt::format("'{}' (Cast) has another consumer", v->name()));
      v = n->input(0);
    }
    return inner.match(v, log);
  }
};
template <typename P> FloatCastsP<P> floatCasts(P p) { return {std::move(p)}; }

} // namespace pat

/// Matches pattern `p` against node `n`'s first output (the root may have any number of
/// consumers: it is what the fused node replaces).
template <typename P> bool matchRoot(Node *n, const P &p, MatchLog &log) {
  log = MatchLog{};
  if (n->numOutputs() == 0)
    return false;
  log.root = n->output(0);
  if (!p.match(n->output(0), log))
    return false;
  log.why.clear(); // alternatives that failed on the way do not explain a later rejection
  log.frozen = false;
  return true;
}

} // namespace llmopt::fusion

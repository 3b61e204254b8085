// What the fusion passes share: the match loop with its found / near-miss counts (the
// --report line), and the rewrite step that puts a fused node in place of a pattern.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "passes/Pass.h"
#include "passes/fusion/Pattern.h"

namespace llmopt::fusion {

/// Instances fused and near-misses rejected (by reason) by one pass.
struct FusionStats {
  size_t found = 0;
  std::map<std::string, size_t> rejected;
  std::string note; ///< appended to the count (`(60 with the residual Add)`)
  size_t numRejected() const;
  /// `fuse-rmsnorm: 61 fused; 1 near-miss rejected: 'x' has another consumer`
  std::string line(std::string_view pass, std::string_view what) const;
};

enum class Outcome { NoMatch, Fused, Rejected };

/// Tries `tryFuse` on every live node of `kind` in `g`, in program order (nodes whose
/// results are dead after an earlier fusion are skipped). A Rejected outcome is counted
/// under `log.why`.
FusionStats fuseEach(Graph &g, OpKind kind, const std::function<Outcome(Node *, MatchLog &)> &tryFuse);

/// Adds a node of `kind` just before `root` (or `before`), named after root's scope (`/a/b/Mul_3` ->
/// `/a/b/<opname>`), makes it take over root's first output (type and uses), and
/// returns it. The replaced nodes are left for dce.
Node *replaceWith(Node *root, OpKind kind, std::vector<Value *> inputs, Node *before = nullptr);

/// `base`, or `base_1`, `base_2`, ... : a node name no node of `g` has (ORT rejects
/// models with two nodes of one name).
std::string uniqueNodeName(const Graph &g, const std::string &base);

/// x = Add(a, b) of two same-shaped rank-3 non-constant values (a residual sum), or null.
Node *residualAdd(Value *x);

/// Replaces the norm ending at `root` whose input is `add`'s sum by a com.microsoft
/// Skip*LayerNormalization(a, b, rest...) placed right after the Add (the sum's other
/// readers may come before the norm's last op); its output 3 (the sum) takes over the
/// Add's other readers.
Node *fuseWithResidual(Node *root, Node *add, OpKind kind, const std::vector<Value *> &rest);

/// Imports `domain` (version 1) into the model if it is not yet.
void ensureOpset(Model &m, const std::string &domain);

/// Readies the main graph for matching: Constant nodes become constants (exporters write
/// scalars and Slice bounds that way; the matchers read constants), shape arithmetic on
/// static dims is folded (torch computes RoPE's Slice bounds from Shape(x)[-1] / 2), shapes
/// are inferred (best effort: an unknown rank or dim only makes a match fail) and Casts
/// to their input's own type are dropped (torch writes one per `.to(dtype)`). Returns how
/// many nodes it removed.
size_t prepare(Model &m);

/// Reports the pass's line, runs dce when something changed and says what was kept
/// (`lifted`: prepare() changed the graph even if nothing fused).
PreservedAnalyses finish(Model &m, AnalysisManager &am, const FusionStats &st,
                         std::string_view pass, std::string_view what, size_t lifted = 0);

/// prepare(), fuseEach() over nodes of `kind`, finish(): a whole single-sweep pass.
PreservedAnalyses runFusion(Model &m, AnalysisManager &am, OpKind kind,
                            const std::function<Outcome(Node *, MatchLog &)> &tryFuse,
                            std::string_view pass, std::string_view what);

/// Dimension `i` of `v`'s type when it is a known number, else -1.
int64_t staticDim(const Value *v, int64_t i);

/// True for a float tensor constant of rank 1 (a norm's scale or a bias).
bool isVectorConst(const Value *v);

} // namespace llmopt::fusion

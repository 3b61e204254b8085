// Choosing what prune-struct removes: unit scores, candidates relative to their group, the
// greedy selection under a parameter budget, units named by drop=, and the cuts a choice
// makes (GQA-consistent). See PruneStruct.h for the metrics and rules.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "passes/calib/Calibration.h"
#include "passes/prune/PruneStruct.h"
#include "passes/prune/StructDeps.h"
#include "passes/prune/StructRewrite.h"

namespace llmopt::structprune {

inline constexpr const char *kPass = "prune-struct";

/// "a,b,c" -> {"a", "b", "c"}.
std::vector<std::string> splitList(const std::string &s);

/// A unit named in drop=: attn<i>.kv<g>, attn<i>.q<h>, mlp<i>.c<j>, layer<i>.
struct UnitId {
  enum Kind { KvGroup, QueryHead, Channel, LayerUnit } kind = Channel;
  int64_t group = 0, index = 0;
};
std::optional<UnitId> parseUnitId(const std::string &s);

/// |w| as f32 (dequantized when quantized).
std::vector<float> absWeights(const Value *w);
/// ||X[:, k]|| of the activations reaching `w` (every MatMul reading it); empty without
/// statistics.
std::vector<double> inputNorms(const Value *w, const calib::Stats *stats, int64_t K);

/// Which units go, per group.
struct Plan {
  std::vector<std::vector<bool>> mlp;     ///< per MLP group, per channel
  std::vector<std::vector<bool>> q, kv;   ///< per attention group, per query / KV head
  std::vector<bool> layers;
  std::string rule;                       ///< the GQA rule used, for the report
};
Plan emptyPlan(const StructInfo &info, size_t layers);

/// A removable candidate and its score per parameter relative to its group's mean.
struct Cand {
  int kind; // 0 MLP channel, 1 KV group (or MHA head), 2 round of query heads, 3 layer
  int64_t group, index;
  double score;
  int64_t params;
  double rel = 0;
  std::vector<int64_t> heads; // kind 2: one query head per KV group
};
/// Sets `rel` of cands[begin..] (one group): score per parameter over the group's mean.
void normalize(std::vector<Cand> &cands, size_t begin);
/// Greedy: lowest relative score first, until `target` parameters are gone; every group
/// keeps one unit, and rounds of query heads go in order. Returns the parameters removed.
int64_t select(std::vector<Cand> &cands, Plan &p, int64_t target);
/// Candidates of every MLP and attention group the options allow.
std::vector<Cand> unitCandidates(const StructInfo &info, const PruneStructOptions &o,
                                 const calib::Stats *stats);
/// The cuts a plan makes, checking GQA consistency (every kept KV group keeps the same
/// number of query heads; a removed KV group takes its query heads along).
Expected<std::map<int, SpaceCut>> planCuts(const StructInfo &info, const Plan &p);
/// Marks the units drop= names (already checked for syntax) in `p`.
Status planFromDrop(const std::vector<std::string> &ids, const StructInfo &info, Plan &p);

} // namespace llmopt::structprune

// prune-struct: structured pruning. Removes whole MLP channels, attention heads (GQA-aware)
// or residual layers found by the dependency analysis (StructDeps.h), and physically
// shrinks every tensor and size that depends on them, so the output is a smaller dense
// model. Units are ranked by a metric and removed, lowest first, until the parameters
// removed reach `ratio` of the model's (float) parameters:
//
//   magnitude   sum |w| over the unit's weight columns and rows
//   wanda       sum |w| * ||x_c|| over the rows that read the unit's channels c (o_proj,
//               down_proj; Wanda's structured form, --calib)
//   activation  mean |x| of the unit's outputs where the next weight reads them (--calib);
//               for layers, ||branch|| / ||residual stream||
//
// A unit's score is divided by its parameter count and by the mean of that over its group
// (one MLP, one attention, all layers), so units of different layers and kinds compete on
// relative importance. Every group keeps at least one unit.
//
// GQA (H query heads, G key/value heads, R = H / G): `gqa=kv` removes whole KV groups (a
// KV head with its R query heads); `gqa=query` removes the same number of query heads
// from every group (K and V stay). The report line names the rule.
//
//   %q = MatMul(%x, %wq: f32[64,64])      4 heads of 16
//   %s = Reshape(%q, Concat(b, s, [4], [16]))          => prune-struct<drop=attn0.q1> (MHA)
//   %o = MatMul(Reshape(.., [b, s, 64]), %wo: f32[64,64])
//
//   %wq: f32[64,48] (columns 16..31 gone), Concat(b, s, [3], [16]), [b, s, 48],
//   %wo: f32[48,64] (rows 16..31 gone); K / V likewise; KV-cache dims follow.
//
// Quantized weights (after quant-int4) are cut directly where whole output columns or
// whole blocks go; input rows that cut a block are re-quantized with the same encoding
// (round-to-nearest), which the report line counts: prune before quantizing.
#pragma once

#include <string>
#include <vector>

#include "passes/Pass.h"
#include "passes/PassOptions.h"

namespace llmopt {

struct PruneStructOptions {
  double ratio = 0.25;         ///< fraction of the model's parameters to remove, [0, 1)
  bool heads = true, channels = true, layers = false; ///< unit=
  std::string metric = "magnitude";                   ///< magnitude|wanda|activation
  std::string gqa = "kv";                             ///< kv|query
  /// Explicit units instead of a ratio: attn<i>.kv<g>, attn<i>.q<h>, mlp<i>.c<j>, layer<i>.
  std::vector<std::string> drop;
  std::string unitText = "head,channel";
};
Expected<PruneStructOptions> parsePruneStructOptions(const PassOptionList &opts);

class PruneStructPass : public Pass {
public:
  explicit PruneStructPass(PruneStructOptions o) : opts_(std::move(o)) {}
  std::string_view name() const override { return "prune-struct"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;

private:
  PruneStructOptions opts_;
};

} // namespace llmopt

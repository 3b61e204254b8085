// prune-struct: options and the pass: shape inference, analysis, plan, rewrite, report
// (see PruneStruct.h; the choice of units is in StructPlan.h).
#include "passes/prune/PruneStruct.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ir/QuantFormats.h"
#include "passes/analysis/ShapeInference.h"
#include "passes/calib/Calibration.h"
#include "passes/cleanup/Dce.h"
#include "passes/prune/StructDeps.h"
#include "passes/prune/StructPlan.h"
#include "passes/prune/StructRewrite.h"
#include "passes/quant/QuantCommon.h"

namespace llmopt {

using namespace structprune;

namespace {

int64_t floatParams(const Graph &g) {
  int64_t n = 0;
  for (Value *c : g.constants())
    if (isFloat(c->type().elem))
      n += c->constant()->numel();
  return n;
}

/// |w| as f32 (dequantized when quantized).
} // namespace

Expected<PruneStructOptions> parsePruneStructOptions(const PassOptionList &opts) {
  OptionReader r(kPass, opts);
  PruneStructOptions o;
  LLMOPT_ASSIGN_OR_RETURN(double ratio, r.getDouble("ratio", -1, 0.0, 1.0));
  LLMOPT_ASSIGN_OR_RETURN(o.unitText, r.getString("unit", "head,channel"));
  LLMOPT_ASSIGN_OR_RETURN(o.metric, r.getChoice("metric", {"magnitude", "wanda", "activation"}, "magnitude"));
  LLMOPT_ASSIGN_OR_RETURN(o.gqa, r.getChoice("gqa", {"kv", "query"}, "kv"));
  LLMOPT_ASSIGN_OR_RETURN(std::string drop, r.getString("drop", ""));
  LLMOPT_RETURN_IF_ERROR(r.finish());
  o.heads = o.channels = o.layers = false;
  for (const std::string &u : splitList(o.unitText)) {
    bool &flag = u == "head" ? o.heads : u == "channel" ? o.channels : o.layers;
    if ((u != "head" && u != "channel" && u != "layer") || flag)
      return errorf("pass '{}': option 'unit' has value '{}', expected head|channel|layer|head,channel",
                    kPass, o.unitText);
    flag = true;
  }
  if (o.layers && (o.heads || o.channels))
    return errorf("pass '{}': option 'unit' has value '{}': layer cannot be combined with head or "
                  "channel (run prune-struct twice)", kPass, o.unitText);
  if (ratio >= 1.0)
    return errorf("pass '{}': option 'ratio' has value '{}', expected a fraction in [0, 1)", kPass, ratio);
  if (!drop.empty()) {
    if (ratio >= 0)
      return errorf("pass '{}': give either ratio= or drop=, not both", kPass);
    for (const std::string &id : splitList(drop)) {
      std::optional<UnitId> u = parseUnitId(id);
      if (!u)
        return errorf("pass '{}': option 'drop' has entry '{}', expected attn<i>.kv<g>, "
                      "attn<i>.q<h>, mlp<i>.c<j> or layer<i>", kPass, id);
      const bool layer = u->kind == UnitId::LayerUnit, mlp = u->kind == UnitId::Channel;
      if ((layer && !o.layers) || (mlp && !o.channels) || (!layer && !mlp && !o.heads))
        return errorf("pass '{}': drop entry '{}' is not a unit of unit={}", kPass, id, o.unitText);
      o.drop.push_back(id);
    }
  }
  o.ratio = ratio < 0 ? 0.25 : ratio;
  return o;
}

namespace {

/// The unit (head / channel) path: analysis, plan, rewrite; returns the report details.
Expected<std::string> pruneUnits(Model &m, AnalysisManager &am, const PruneStructOptions &o,
                                 const KnownValueMap &known, TypeSnapshot &snap) {
  Graph &g = m.graph();
  const StructInfo info = analyzeStructure(g, known);
  for (const Space &sp : info.spaces)
    if (!sp.unknownNode.empty() && !sp.columns.empty())
      return errorf("pass '{}': cannot prove which weights the columns of '{}' are coupled with: "
                    "{}; nothing was pruned",
                    kPass, sp.columns.front()->name(), sp.blocked);
  if ((o.heads && info.attns.empty() && !o.channels) || (info.attns.empty() && info.mlps.empty()))
    return errorf("pass '{}': found no prunable {} (blocked: {})", kPass, o.unitText,
                  info.notes.empty() ? std::string("none") : info.notes.front());
  Plan plan = emptyPlan(info, 0);
  const calib::Stats *stats = nullptr;
  const int64_t total = floatParams(g);
  int64_t estimate = 0;
  if (!o.drop.empty()) {
    LLMOPT_RETURN_IF_ERROR(planFromDrop(o.drop, info, plan));
  } else {
    if (o.metric != "magnitude") {
      LLMOPT_ASSIGN_OR_RETURN(stats, am.get<calib::ActivationStatsAnalysis>(m));
    }
    std::vector<Cand> cands = unitCandidates(info, o, stats);
    const int64_t target = static_cast<int64_t>(std::ceil(o.ratio * static_cast<double>(total)));
    estimate = select(cands, plan, target);
    if (estimate < target)
      return errorf("pass '{}': option 'ratio' asks for {} of {} parameters, but unit={} can remove "
                    "at most {} (every group keeps one unit)",
                    kPass, target, total, o.unitText, estimate);
  }
  LLMOPT_ASSIGN_OR_RETURN(auto cuts, planCuts(info, plan));
  RewriteStats st;
  LLMOPT_RETURN_IF_ERROR(applyCuts(g, info, cuts, st));
  snap.restore();
  applyGraphDims(info, cuts, st);
  for (auto [v, s] : info.tracked)
    if (cuts.count(s) && !v->isGraphInput() && !v->isGraphOutput() && v->type().dims)
      v->mutableType().dims.reset();
  eliminateDeadCode(g);

  // Report: sizes per group, the GQA rule, what happened to quantized weights.
  std::vector<int64_t> heads, kvHeads, channels;
  bool gqa = false;
  for (size_t i = 0; i < info.attns.size(); ++i) {
    heads.push_back(std::count(plan.q[i].begin(), plan.q[i].end(), false));
    kvHeads.push_back(info.attns[i].kv.empty() ? heads.back() : static_cast<int64_t>(cuts.count(info.attns[i].kv[0]) ? cuts[info.attns[i].kv[0]].keptUnits.size() : info.attns[i].kvHeads));
    gqa = gqa || info.attns[i].rep > 1;
  }
  for (size_t i = 0; i < info.mlps.size(); ++i)
    channels.push_back(std::count(plan.mlp[i].begin(), plan.mlp[i].end(), false));
  const int64_t after = floatParams(g);
  std::string out = fmt::format("removed {} of {} parameters ({:.2f}%)", total - after, total,
                                100.0 * static_cast<double>(total - after) / static_cast<double>(total));
  if (o.heads && !info.attns.empty()) {
    const AttentionGroup &a0 = info.attns[0];
    out += fmt::format("; attention: {} groups, query heads {} of {}", info.attns.size(),
                       fmt::join(heads, ","), a0.heads);
    if (gqa)
      out += fmt::format(", KV heads {} of {}; GQA rule: {}", fmt::join(kvHeads, ","), a0.kvHeads,
                         o.gqa == "kv" && o.drop.empty()
                             ? fmt::format("whole KV groups (a KV head with its {} query heads)", a0.rep)
                         : o.drop.empty() ? std::string("the same number of query heads from every KV group")
                                          : std::string("as listed in drop="));
  }
  if (o.channels && !info.mlps.empty())
    out += fmt::format("; MLP: {} groups, channels {} of {}", info.mlps.size(),
                       fmt::join(channels, ","), info.spaces[static_cast<size_t>(info.mlps[0].space)].channels);
  out += fmt::format("; rewritten: {} weights, {} size constants, {} sliced constants, {} graph dims",
                     st.weights, st.sizeConstants, st.slicedConstants, st.graphDims);
  if (st.quantDirect || st.quantRequant)
    out += fmt::format("; quantized: {} cut directly (whole columns / blocks), {} re-quantized "
                       "where K was cut ({} of {} blocks, round-to-nearest, same encoding; "
                       "prune before quantizing to avoid this)",
                       st.quantDirect, st.quantRequant, st.blocksRequant, st.blocksTotal);
  if (stats)
    out += fmt::format("; calibration: {}", stats->source);
  return out;
}

/// Scores of whole layers.
Expected<std::vector<double>> layerScores(Model &m, AnalysisManager &am, const std::vector<Layer> &layers,
                                          const std::string &metric) {
  std::vector<double> scores(layers.size(), 0.0);
  if (metric == "activation") {
    LLMOPT_ASSIGN_OR_RETURN(auto windows, calib::loadWindows(am.context()));
    std::vector<const Value *> vals;
    for (const Layer &l : layers)
      for (const ResidualBranch &b : l.branches) {
        vals.push_back(b.stream);
        vals.push_back(b.add->input(b.add->input(0) == b.stream ? 1 : 0));
      }
    LLMOPT_ASSIGN_OR_RETURN(calib::Stats st, calib::collect(m, windows, vals, false, am.context().threads));
    auto energy = [&](const Value *v) {
      const calib::ActStats *s = st.find(v);
      return s ? std::accumulate(s->sumSq.begin(), s->sumSq.end(), 0.0) : 0.0;
    };
    for (size_t i = 0, k = 0; i < layers.size(); ++i)
      for (size_t b = 0; b < layers[i].branches.size(); ++b, k += 2) {
        const double e = energy(vals[k]);
        scores[i] += e > 0 ? std::sqrt(energy(vals[k + 1]) / e) : 0.0;
      }
    return scores;
  }
  const calib::Stats *stats = nullptr;
  if (metric == "wanda") {
    LLMOPT_ASSIGN_OR_RETURN(stats, am.get<calib::ActivationStatsAnalysis>(m));
  }
  for (size_t i = 0; i < layers.size(); ++i)
    for (const ResidualBranch &b : layers[i].branches)
      for (const Value *w : b.weights) {
        const std::vector<Node *> users = w->users();
        if (w->type().rank() != 2 || users.empty() ||
            !std::all_of(users.begin(), users.end(), [](Node *u) { return u->is(OpKind::MatMul); }))
          continue;
        const int64_t K = w->constant()->shape()[0], N = w->constant()->shape()[1];
        const std::vector<float> a = absWeights(w);
        const std::vector<double> nk = stats ? inputNorms(w, stats, K) : std::vector<double>{};
        for (int64_t k = 0; k < K; ++k)
          for (int64_t n = 0; n < N; ++n)
            scores[i] += a[static_cast<size_t>(k * N + n)] * (nk.empty() ? 1.0 : nk[static_cast<size_t>(k)]);
      }
  return scores;
}

Expected<std::string> pruneLayers(Model &m, AnalysisManager &am, const PruneStructOptions &o,
                                  TypeSnapshot &snap) {
  Graph &g = m.graph();
  const std::vector<Layer> layers = findLayers(g);
  if (layers.size() < 2)
    return errorf("pass '{}': unit=layer found {} residual layer(s); nothing to remove", kPass, layers.size());
  StructInfo none;
  Plan plan = emptyPlan(none, layers.size());
  const int64_t total = floatParams(g);
  std::vector<int64_t> params(layers.size(), 0);
  for (size_t i = 0; i < layers.size(); ++i)
    for (const ResidualBranch &b : layers[i].branches)
      for (const Value *w : b.weights)
        params[i] += w->constant()->numel();
  if (!o.drop.empty()) {
    LLMOPT_RETURN_IF_ERROR(planFromDrop(o.drop, none, plan));
    if (std::all_of(plan.layers.begin(), plan.layers.end(), [](bool b) { return b; }))
      return errorf("pass '{}': drop= removes every layer", kPass);
  } else {
    LLMOPT_ASSIGN_OR_RETURN(std::vector<double> s, layerScores(m, am, layers, o.metric));
    std::vector<Cand> cands;
    for (size_t i = 0; i < layers.size(); ++i)
      cands.push_back({3, 0, static_cast<int64_t>(i), s[i], params[i], 0, {}});
    normalize(cands, 0);
    const int64_t target = static_cast<int64_t>(std::ceil(o.ratio * static_cast<double>(total)));
    const int64_t got = select(cands, plan, target);
    if (got < target)
      return errorf("pass '{}': option 'ratio' asks for {} of {} parameters, but removing all "
                    "layers but one removes {}", kPass, target, total, got);
  }
  std::vector<const ResidualBranch *> branches;
  std::vector<size_t> gone;
  for (size_t i = 0; i < layers.size(); ++i)
    if (plan.layers[i]) {
      gone.push_back(i);
      for (const ResidualBranch &b : layers[i].branches)
        branches.push_back(&b);
    }
  snap.restore();
  const std::vector<std::string> io = removeBranches(g, branches);
  const int64_t after = floatParams(g);
  return fmt::format("removed {} of {} parameters ({:.2f}%): layers {} gone of {} ({} residual "
                     "branches){}",
                     total - after, total, 100.0 * static_cast<double>(total - after) / static_cast<double>(total),
                     fmt::join(gone, ","), layers.size(), branches.size(),
                     io.empty() ? std::string() : fmt::format("; graph inputs / outputs removed: {}", fmt::join(io, ", ")));
}

} // namespace

Expected<PreservedAnalyses> PruneStructPass::run(Model &m, AnalysisManager &am) {
  const std::string head =
      opts_.drop.empty()
          ? fmt::format("{} (ratio {:g}, unit={}, metric={})", kPass, opts_.ratio, opts_.unitText, opts_.metric)
          : fmt::format("{} (drop={}, unit={})", kPass, fmt::join(opts_.drop, ","), opts_.unitText);
  if (opts_.drop.empty() && opts_.ratio == 0) {
    am.context().reportLines.push_back(head + ": ratio 0, nothing removed");
    return PreservedAnalyses::all();
  }
  if (opts_.drop.empty() && opts_.metric != "magnitude" && am.context().calibPath.empty())
    return errorf("pass '{}': metric={} needs calibration data: pass --calib FILE (text with "
                  "--tokenizer, or a .ids file of token ids); without data use metric=magnitude",
                  kPass, opts_.metric);
  Graph &g = m.graph();
  quantpass::SkipCounts skips;
  quantpass::gemmsToMatMuls(g, skips);
  TypeSnapshot snap(g);
  KnownValueMap known;
  ShapeInferenceOptions so;
  so.knownValues = &known;
  if (Expected<ShapeInferenceResult> r = inferShapes(m, so); !r) {
    snap.restore();
    return r.status().withContext(fmt::format("pass '{}': shape inference", kPass));
  }
  Expected<std::string> detail = opts_.layers ? pruneLayers(m, am, opts_, snap)
                                              : pruneUnits(m, am, opts_, known, snap);
  if (!detail) {
    snap.restore();
    return detail.status();
  }
  am.context().reportLines.push_back(head + ": " + *detail);
  return PreservedAnalyses::none();
}

} // namespace llmopt

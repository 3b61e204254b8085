// prune-wanda: see Wanda.h for the algorithm and how it follows the reference.
#include "passes/prune/Wanda.h"

#include <cmath>
#include <unordered_set>

#include "passes/calib/Calibration.h"

namespace llmopt {

Expected<PruneWandaOptions> parsePruneWandaOptions(const PassOptionList &opts) {
  OptionReader r("prune-wanda", opts);
  PruneWandaOptions o;
  LLMOPT_ASSIGN_OR_RETURN(o.sparsity, prunepass::readSparsity(r, "prune-wanda"));
  LLMOPT_RETURN_IF_ERROR(r.finish());
  return o;
}

namespace prunepass {

Tensor pruneWanda(const Tensor &w, std::span<const double> norms, const Pattern &p) {
  const int64_t K = w.shape()[0], N = w.shape()[1];
  std::span<const float> v = w.view<float>();
  std::vector<float> scores(v.size());
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < N; ++j) {
      const size_t i = static_cast<size_t>(k * N + j);
      scores[i] = static_cast<float>(std::fabs(v[i]) * norms[static_cast<size_t>(k)]);
    }
  return pruneByScore(w, scores, p, Scope::Output);
}

namespace {

/// ||X[:, k]||_2 over every activation that reaches `w` (one for nearly every weight; a
/// weight shared by MatMuls with different inputs sees all their rows). Empty when some
/// input has no statistics.
std::vector<double> inputNorms(const quantpass::MatMulWeight &w, const calib::Stats &stats) {
  const int64_t K = w.weight->constant()->shape()[0];
  std::vector<double> sumSq(static_cast<size_t>(K), 0.0);
  std::unordered_set<const Value *> seen;
  for (const Node *u : w.users) {
    if (!seen.insert(u->input(0)).second)
      continue;
    const calib::ActStats *s = stats.find(u->input(0));
    if (!s || s->channels != K)
      return {};
    for (int64_t k = 0; k < K; ++k)
      sumSq[static_cast<size_t>(k)] += s->sumSq[static_cast<size_t>(k)];
  }
  for (double &x : sumSq)
    x = std::sqrt(x);
  return sumSq;
}

} // namespace

Expected<PreservedAnalyses> runWanda(Model &m, AnalysisManager &am, const Pattern &p,
                                     const std::string &pass, const std::string &head) {
  if (am.context().calibPath.empty())
    return calibrationError(pass);
  Graph &g = m.graph();
  PruneStats st;
  const std::vector<quantpass::MatMulWeight> weights = collectWeights(g, st);
  if (weights.empty())
    return finish(am, head, st, "");
  LLMOPT_ASSIGN_OR_RETURN(calib::Stats * stats, am.get<calib::ActivationStatsAnalysis>(m));
  int64_t fallback = 0;
  for (const quantpass::MatMulWeight &w : weights) {
    const std::vector<double> norms = inputNorms(w, *stats);
    const Tensor &t = *w.weight->constant();
    if (norms.empty()) {
      ++fallback;
      installPruned(w, pruneMagnitude(t, p, Scope::Output), st);
    } else {
      installPruned(w, pruneWanda(t, norms, p), st);
    }
  }
  return finish(am, head, st,
                fmt::format("; calibration: {} (activation norms)", stats->source) +
                    (fallback ? fmt::format("; {} weights without activation statistics pruned "
                                            "by magnitude per output",
                                            fallback)
                              : std::string()));
}

} // namespace prunepass

Expected<PreservedAnalyses> PruneWandaPass::run(Model &m, AnalysisManager &am) {
  prunepass::Pattern p;
  p.sparsity = opts_.sparsity;
  return prunepass::runWanda(m, am, p, "prune-wanda",
                             fmt::format("prune-wanda ({}, per output)", p.describe()));
}

} // namespace llmopt

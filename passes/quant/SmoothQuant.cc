// SmoothQuant scale migration and folding: see SmoothQuant.h.
#include "passes/quant/SmoothQuant.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include <fmt/format.h>

#include "passes/quant/ScaleFold.h"

namespace llmopt::quantpass {
namespace {

/// s_k = max(amax_k^alpha / max(wmax_k, 1e-5)^(1 - alpha), 1e-5), wmax_k the largest
/// |W_i[k, n]| over the group; 1 where calibration never saw the channel nonzero. Rounded to
/// f32, so that the weights and the folded constant use the same factor.
std::vector<double> migrationScales(const std::vector<float> &amax, const std::vector<Value *> &ws,
                                    double alpha) {
  const int64_t K = static_cast<int64_t>(amax.size());
  std::vector<double> wmax(amax.size(), 0.0), s(amax.size(), 1.0);
  for (const Value *wv : ws) {
    const Tensor &w = *wv->constant();
    const float *d = reinterpret_cast<const float *>(w.data());
    const int64_t N = w.shape()[1];
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n)
        wmax[static_cast<size_t>(k)] =
            std::max(wmax[static_cast<size_t>(k)], static_cast<double>(std::fabs(d[k * N + n])));
    if (w.isMapped()) // read back when the group is scaled: keep one group resident
      w.mapping()->release(w.mappingOffset(), w.nbytes());
  }
  for (size_t k = 0; k < s.size(); ++k) {
    if (amax[k] > 0)
      s[k] = std::max(std::pow(amax[k], alpha) / std::pow(std::max(wmax[k], 1e-5), 1.0 - alpha), 1e-5);
    s[k] = static_cast<double>(static_cast<float>(s[k]));
  }
  return s;
}

/// max_k m_k / mean_k m_k.
double outlierRatio(const std::vector<double> &m) {
  double mx = 0, sum = 0;
  for (double v : m) {
    mx = std::max(mx, v);
    sum += v;
  }
  return sum > 0 ? mx * static_cast<double>(m.size()) / sum : 1.0;
}

} // namespace

std::string SmoothStats::summary(double alpha) const {
  return fmt::format("{} of {} activations smoothed (alpha {:.2f}: {} into norm weights, {} into "
                     "norm weight + bias, {} into MatMul weights), {} without a foldable producer "
                     "left unscaled; worst channel max|x| / mean {:.1f} -> {:.1f} (geometric mean)",
                     smoothed(), candidates, alpha, normFolds, biasNormFolds, matmulFolds, noFold,
                     outlierBefore, outlierAfter);
}

Expected<SmoothStats> smoothQuant(Graph &g, const calib::Stats &stats, double alpha,
                                  const std::function<bool(const Value *)> &isWeight,
                                  const GroupCallback &onGroup) {
  SmoothStats st;
  double logBefore = 0, logAfter = 0;
  // The scales first, in topological order. A group's weights change only by its own row
  // scaling and by the column fold of an activation downstream of it, so here every group
  // is still as loaded and the scales are those of applying in this order.
  struct Planned {
    const Value *x;
    int64_t K;
    std::vector<double> s;
  };
  std::vector<Planned> plan;
  for (const Value *x : calib::matmulWeightInputs(g)) {
    // Match: every reader a MatMul with a quantizable weight, a producer that can take 1/s.
    const Value *first = nullptr;
    for (const Use &u : x->uses())
      if (!first && u.user->is(OpKind::MatMul) && u.index == 0 && isWeight(u.user->input(1)))
        first = u.user->input(1);
    if (!first)
      continue;
    ++st.candidates;
    const int64_t K = first->constant()->shape()[0];
    const calib::ActStats *as = stats.find(x);
    std::optional<ScaleFold> fold = isScalable(x, isWeight) ? findScaleFold(x, K) : std::nullopt;
    if (!fold || !as || as->channels != K) {
      ++st.noFold;
      continue;
    }
    std::vector<double> s = migrationScales(as->maxAbs, scaledWeights(x), alpha);
    std::vector<double> before(static_cast<size_t>(K)), after(static_cast<size_t>(K));
    for (size_t k = 0; k < s.size(); ++k) {
      before[k] = as->maxAbs[k];
      after[k] = as->maxAbs[k] / s[k];
    }
    logBefore += std::log(outlierRatio(before));
    logAfter += std::log(outlierRatio(after));
    plan.push_back({x, K, std::move(s)});
  }
  // Applied in reverse: when a group is scaled, every fold that touches its weights is
  // done, so `onGroup` can quantize them now and the f32 copies never pile up.
  for (auto it = plan.rbegin(); it != plan.rend(); ++it) {
    std::optional<ScaleFold> fold = findScaleFold(it->x, it->K);
    if (!fold)
      return internalErrorf("smoothQuant: the fold of '{}' vanished while applying",
                            it->x->name());
    applyScale(g, scaledWeights(it->x), *fold, it->s);
    ++(fold->kind == ScaleFold::Kind::Vector    ? st.normFolds
       : fold->kind == ScaleFold::Kind::Columns ? st.matmulFolds
                                                : st.biasNormFolds);
    if (onGroup)
      LLMOPT_RETURN_IF_ERROR(onGroup(scaledWeights(it->x)));
  }
  g.removeUnusedConstants();
  if (st.smoothed() > 0) {
    st.outlierBefore = std::exp(logBefore / static_cast<double>(st.smoothed()));
    st.outlierAfter = std::exp(logAfter / static_cast<double>(st.smoothed()));
  }
  return st;
}

} // namespace llmopt::quantpass

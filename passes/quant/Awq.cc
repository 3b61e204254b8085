// AWQ scale search and folding: see Awq.h.
#include "passes/quant/Awq.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <unordered_map>

#include <fmt/format.h>

#include "ir/QuantFormats.h"
#include "passes/calib/Calibration.h"
#include "passes/quant/Gptq.h"
#include "passes/quant/QuantCommon.h"
#include "passes/quant/ScaleFold.h"

namespace llmopt::quantpass {
namespace {

/// RTN of diag(s) w, mapped back: diag(1/s) Q(diag(s) w), as f32 [K, N].
Expected<std::vector<float>> scaledRtn(const Tensor &w, const std::vector<float> &s,
                                       const QuantEncoding &enc) {
  const int64_t K = w.shape()[0], N = w.shape()[1];
  const float *x = reinterpret_cast<const float *>(w.data());
  std::vector<float> sw(static_cast<size_t>(K * N));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n)
      sw[static_cast<size_t>(k * N + n)] = x[k * N + n] * s[static_cast<size_t>(k)];
  LLMOPT_ASSIGN_OR_RETURN(Tensor q, quant::quantizeRtn(Tensor::fromVector(DType::F32, {K, N}, sw), enc));
  LLMOPT_ASSIGN_OR_RETURN(Tensor d, quant::dequantize(q, enc));
  const float *dq = reinterpret_cast<const float *>(d.data());
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n)
      sw[static_cast<size_t>(k * N + n)] = dq[k * N + n] / s[static_cast<size_t>(k)];
  return sw;
}

} // namespace

Expected<std::string> awqScale(Model &m, AnalysisManager &am, const AwqOptions &o,
                               const std::function<QuantEncoding(int64_t, int64_t)> &encodingFor) {
  Graph &g = m.graph();
  SkipCounts skips;
  const int64_t gemms = gemmsToMatMuls(g, skips);
  (void)gemms;
  const std::vector<MatMulWeight> weights = findMatMulWeights(g, 16, skips);
  std::unordered_map<const Value *, const MatMulWeight *> weightOf;
  for (const MatMulWeight &w : weights)
    weightOf[w.weight] = &w;

  // Activations whose every reader is a MatMul with a weight this pass quantizes, and whose
  // producer can absorb 1/s (ScaleFold.h).
  auto isWeight = [&](const Value *w) { return w && weightOf.count(w) > 0; };
  std::vector<const Value *> groups;
  int64_t noFold = 0;
  for (const Value *x : calib::matmulWeightInputs(g)) {
    if (!isScalable(x, isWeight)) {
      ++noFold;
      continue;
    }
    const int64_t K = scaledWeights(x).front()->constant()->shape()[0];
    if (!findScaleFold(x, K)) {
      ++noFold;
      continue;
    }
    groups.push_back(x);
  }

  const std::vector<const Value *> &acts = groups;
  int64_t normFolds = 0, matmulFolds = 0;
  double logRatio = 0, alphaSum = 0;
  int64_t measured = 0;
  LLMOPT_RETURN_IF_ERROR(calib::forEachHessianGroup(
      m, am, acts, "quant-int4 awq", [&](calib::Stats &st) -> Status {
        for (const Value *x : groups) {
          const calib::ActStats *as = st.find(x);
          if (!as)
            continue;
          const int64_t K = as->channels;
          std::vector<float> xmean(static_cast<size_t>(K));
          for (int64_t k = 0; k < K; ++k)
            xmean[static_cast<size_t>(k)] = static_cast<float>(as->meanAbs(k));
          double best = std::numeric_limits<double>::infinity(), rtnErr = 0;
          std::vector<float> bestS(static_cast<size_t>(K), 1.f);
          int64_t bestJ = 0;
          for (int64_t j = 0; j < o.grid; ++j) {
            const double alpha = static_cast<double>(j) / static_cast<double>(o.grid);
            std::vector<float> s(static_cast<size_t>(K));
            float mx = 0, mn = std::numeric_limits<float>::infinity();
            for (int64_t k = 0; k < K; ++k) {
              float v = std::max(1e-4f, static_cast<float>(std::pow(xmean[static_cast<size_t>(k)], alpha)));
              s[static_cast<size_t>(k)] = v;
              mx = std::max(mx, v);
              mn = std::min(mn, v);
            }
            const float norm = std::sqrt(mx * mn);
            for (float &v : s)
              v /= norm;
            double err = 0;
            for (const Value *wv : scaledWeights(x)) {
              const Tensor &w = *wv->constant();
              const int64_t N = w.shape()[1];
              LLMOPT_ASSIGN_OR_RETURN(std::vector<float> dq, scaledRtn(w, s, encodingFor(K, N)));
              err += hessianError(reinterpret_cast<const float *>(w.data()), dq.data(), K, N,
                                  as->hessian);
            }
            if (j == 0)
              rtnErr = err;
            if (err < best) {
              best = err;
              bestS = s;
              bestJ = j;
            }
          }
          if (rtnErr > 0 && best > 0) {
            logRatio += std::log(best / rtnErr);
            ++measured;
          }
          alphaSum += static_cast<double>(bestJ) / static_cast<double>(o.grid);
          if (bestJ == 0)
            continue; // s = 1: nothing to fold
          // Apply: W_i rows *= s; the producer's constant takes 1/s. Both are looked up
          // again: an earlier group's fold may have replaced them.
          std::optional<ScaleFold> fold = findScaleFold(x, K);
          if (!fold)
            return internalErrorf("awq: the producer of '{}' stopped being foldable", x->name());
          applyScale(g, scaledWeights(x), *fold, std::vector<double>(bestS.begin(), bestS.end()));
          ++(fold->kind == ScaleFold::Kind::Columns ? matmulFolds : normFolds);
        }
        return Status::ok();
      }));
  g.removeUnusedConstants();
  return fmt::format("; awq: {} activations searched (grid {}, mean alpha {:.2f}), scales "
                     "folded into {} norm weights and {} MatMul weights, {} activations "
                     "without a foldable producer left unscaled; calibration output error vs "
                     "RTN {:.3f}x (geometric mean)",
                     groups.size(), o.grid,
                     groups.empty() ? 0.0 : alphaSum / static_cast<double>(groups.size()),
                     normFolds, matmulFolds, noFold,
                     measured ? std::exp(logRatio / static_cast<double>(measured)) : 1.0);
}

} // namespace llmopt::quantpass

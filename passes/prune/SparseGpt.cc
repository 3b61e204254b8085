// prune-sparsegpt: see SparseGpt.h for the algorithm and how it follows the reference.
#include "passes/prune/SparseGpt.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include <Eigen/Core>

#include "ir/Progress.h"
#include "passes/calib/Calibration.h"
#include "passes/calib/InverseHessian.h"
#include "passes/prune/Wanda.h"
#include "passes/quant/Gptq.h"

namespace llmopt {

Expected<PruneSparseGptOptions> parsePruneSparseGptOptions(const PassOptionList &opts) {
  OptionReader r("prune-sparsegpt", opts);
  PruneSparseGptOptions o;
  LLMOPT_ASSIGN_OR_RETURN(o.sparsity, prunepass::readSparsity(r, "prune-sparsegpt"));
  LLMOPT_ASSIGN_OR_RETURN(o.blockSize, r.getInt("blocksize", 128, 1, 65536));
  LLMOPT_ASSIGN_OR_RETURN(o.damp, r.getDouble("damp", 0.01, 0.0, 10.0));
  LLMOPT_RETURN_IF_ERROR(r.finish());
  return o;
}

namespace prunepass {
namespace {

using calib::MatD;

/// W^2 / U_kk^2, SparseGPT's saliency, of rows [k0, k0 + rows) of column `col` (or of all
/// columns when col < 0) into `keys`, row-major.
void saliency(const std::vector<float> &W, const MatD &U, int64_t N, int64_t k0, int64_t rows,
              int64_t col, std::vector<float> &keys) {
  const int64_t c0 = col < 0 ? 0 : col, cols = col < 0 ? N : 1;
  keys.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const double d = U(k0 + r, k0 + r);
    for (int64_t c = 0; c < cols; ++c) {
      const double x = W[static_cast<size_t>((k0 + r) * N + c0 + c)];
      keys[static_cast<size_t>(r * cols + c)] = static_cast<float>(x * x / (d * d));
    }
  }
}

} // namespace

Expected<SparseGptResult> pruneSparseGpt(const Tensor &w, const std::vector<double> &h,
                                         const Pattern &p, const SparseGptSettings &s) {
  if (w.dtype() != DType::F32 || w.rank() != 2)
    return errorf("SparseGPT prunes 2-D f32 weights, got {}", toString(w.type()));
  const int64_t K = w.shape()[0], N = w.shape()[1];
  if (static_cast<int64_t>(h.size()) != K * K)
    return internalErrorf("SparseGPT: Hessian has {} entries for K = {}", h.size(), K);
  const float *w0 = reinterpret_cast<const float *>(w.data());
  MatD hm = Eigen::Map<const MatD>(h.data(), K, K);
  std::vector<float> W(w0, w0 + K * N);
  for (int64_t k = 0; k < K; ++k)
    if (hm(k, k) == 0) {
      hm(k, k) = 1;
      std::fill(W.begin() + k * N, W.begin() + (k + 1) * N, 0.f);
    }
  SparseGptResult res;
  double damp = s.damp;
  LLMOPT_ASSIGN_OR_RETURN(MatD U, calib::inverseHessianFactor(hm, damp, "SparseGPT"));
  res.dampUsed = damp;

  // N:M groups start at multiples of m; blocks do too, so no group straddles two blocks.
  const int64_t bs = p.nm() ? (std::max<int64_t>(s.blockSize, 1) + p.m - 1) / p.m * p.m
                            : std::max<int64_t>(s.blockSize, 1);
  int64_t prunedSoFar = 0;
  std::vector<uint8_t> mask; // block rows x N, 1 = prune
  std::vector<float> err, uT, keys;
  std::vector<int64_t> idx;
  for (int64_t i1 = 0; i1 < K; i1 += bs) {
    const int64_t i2 = std::min(i1 + bs, K), count = i2 - i1;
    mask.assign(static_cast<size_t>(count * N), 0);
    if (!p.nm()) {
      // This block's share of floor(sparsity * K * N), chosen on the current weights.
      const int64_t target = pruneCount(p.sparsity, i2 * N) - prunedSoFar;
      saliency(W, U, N, i1, count, -1, keys);
      smallestInto(keys, target, idx);
      for (int64_t i : idx)
        mask[static_cast<size_t>(i)] = 1;
      prunedSoFar += target;
    }
    err.assign(static_cast<size_t>(count * N), 0.f);
    for (int64_t i = i1; i < i2; ++i) {
      if (p.nm() && i % p.m == 0) {
        const int64_t len = std::min(p.m, i2 - i);
        for (int64_t j = 0; j < N; ++j) {
          saliency(W, U, N, i, len, j, keys);
          smallestInto(keys, std::max<int64_t>(0, len - p.n), idx);
          for (int64_t r : idx)
            mask[static_cast<size_t>((i - i1 + r) * N + j)] = 1;
        }
      }
      float *row = W.data() + i * N;
      float *e = err.data() + (i - i1) * N;
      const uint8_t *mrow = mask.data() + (i - i1) * N;
      const double d = U(i, i);
      for (int64_t j = 0; j < N; ++j)
        if (mrow[j]) {
          e[j] = static_cast<float>(row[j] / d);
          row[j] = 0.f;
        }
      calib::propagateInBatch(W.data(), K, N, U.data(), i, i2, e);
    }
    calib::updateAfterBatch(W.data(), K, N, U.data(), i1, i2, err.data(), uT);
  }
  res.pruned = Tensor::fromVector(DType::F32, {K, N}, W);
  return res;
}

namespace {

/// Weights grouped by the one activation all their MatMuls read (q, k and v share one).
struct ByInput {
  std::vector<const Value *> acts; ///< in the order calibration meets them
  std::unordered_map<const Value *, std::vector<size_t>> weights;
};

ByInput groupByInput(const Graph &g, const std::vector<quantpass::MatMulWeight> &weights) {
  ByInput b;
  for (size_t i = 0; i < weights.size(); ++i) {
    const Value *a = weights[i].users.front()->input(0);
    const bool same = std::all_of(weights[i].users.begin(), weights[i].users.end(),
                                  [&](const Node *u) { return u->input(0) == a; });
    if (same)
      b.weights[a].push_back(i);
  }
  for (const Value *a : calib::matmulWeightInputs(g))
    if (b.weights.count(a))
      b.acts.push_back(a);
  return b;
}

/// tr(dW^T H dW) of SparseGPT's result against magnitude's and Wanda's masks with the same
/// pattern (Wanda's norms are sqrt(H_kk)): log ratios, for the report's geometric means.
void compareErrors(const Tensor &w, const Tensor &pruned, const std::vector<double> &h,
                   const Pattern &p, double &logVsMag, double &logVsWanda, int64_t &measured) {
  const int64_t K = w.shape()[0], N = w.shape()[1];
  std::vector<double> norms(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k)
    norms[static_cast<size_t>(k)] = std::sqrt(h[static_cast<size_t>(k * K + k)]);
  const float *w0 = reinterpret_cast<const float *>(w.data());
  auto error = [&](const Tensor &t) {
    return quantpass::hessianError(w0, reinterpret_cast<const float *>(t.data()), K, N, h);
  };
  const double e = error(pruned), mag = error(pruneMagnitude(w, p)),
               wanda = error(pruneWanda(w, norms, p));
  if (e > 0 && mag > 0 && wanda > 0) {
    logVsMag += std::log(e / mag);
    logVsWanda += std::log(e / wanda);
    ++measured;
  }
}

} // namespace

Expected<PreservedAnalyses> runSparseGpt(Model &m, AnalysisManager &am, const Pattern &p,
                                         const SparseGptSettings &s, const std::string &pass,
                                         const std::string &head) {
  if (am.context().calibPath.empty())
    return calibrationError(pass);
  Graph &g = m.graph();
  PruneStats st;
  const std::vector<quantpass::MatMulWeight> weights = collectWeights(g, st);
  const ByInput by = groupByInput(g, weights);
  std::vector<uint8_t> done(weights.size(), 0);
  double logVsMag = 0, logVsWanda = 0, maxDamp = 0;
  int64_t measured = 0;
  std::string source = "none (no weights to prune)";
  int64_t pruned = 0, total = 0;
  for (const auto &kv : by.weights)
    total += static_cast<int64_t>(kv.second.size());
  Progress progress(pass, total, "weights");
  LLMOPT_RETURN_IF_ERROR(
      calib::forEachHessianGroup(m, am, by.acts, pass, [&](const calib::Stats &stats) -> Status {
        source = stats.source;
        for (const Value *a : by.acts) {
          const calib::ActStats *as = stats.find(a);
          if (!as)
            continue;
          for (size_t i : by.weights.at(a)) {
            const quantpass::MatMulWeight &w = weights[i];
            const Tensor &t = *w.weight->constant();
            auto r = pruneSparseGpt(t, as->hessian, p, s);
            if (!r)
              return r.status().withContext("weight '" + w.weight->name() + "'");
            compareErrors(t, r->pruned, as->hessian, p, logVsMag, logVsWanda, measured);
            am.context().layerErrors[w.weight->name()] = quantpass::relativeHessianError(
                t.view<float>().data(), r->pruned.view<float>().data(), t.shape()[0], t.shape()[1],
                as->hessian);
            maxDamp = std::max(maxDamp, r->dampUsed);
            installPruned(w, std::move(r->pruned), st);
            done[i] = 1;
            progress.update(++pruned);
          }
        }
        return Status::ok();
      }));
  // Weights whose MatMuls read different inputs have no single Hessian.
  int64_t fallback = 0;
  for (size_t i = 0; i < weights.size(); ++i)
    if (!done[i]) {
      installPruned(weights[i], pruneMagnitude(*weights[i].weight->constant(), p), st);
      ++fallback;
    }
  auto geo = [&](double l) { return measured ? std::exp(l / static_cast<double>(measured)) : 1.0; };
  const std::string extra = fmt::format(
      "; calibration: {} (Hessians); output error tr(dW^T H dW) vs magnitude {:.3f}x, vs "
      "Wanda {:.3f}x (geometric means over {} weights); damp {}{}{}",
      source, geo(logVsMag), geo(logVsWanda), measured, s.damp,
      maxDamp > s.damp ? fmt::format(" (raised to {} for some)", maxDamp) : "",
      fallback ? fmt::format("; {} weights with several inputs pruned by magnitude", fallback)
               : "");
  return finish(am, head, st, extra);
}

} // namespace prunepass

Expected<PreservedAnalyses> PruneSparseGptPass::run(Model &m, AnalysisManager &am) {
  prunepass::Pattern p;
  p.sparsity = opts_.sparsity;
  return prunepass::runSparseGpt(
      m, am, p, {opts_.blockSize, opts_.damp}, "prune-sparsegpt",
      fmt::format("prune-sparsegpt ({}, block {})", p.describe(), opts_.blockSize));
}

} // namespace llmopt

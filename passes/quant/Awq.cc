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

namespace llmopt::quantpass {
namespace {

/// Where the 1/s of an activation goes.
struct Fold {
  Value *constant = nullptr; ///< the constant to rescale
  bool columns = false;      ///< false: c[k] /= s_k (K elements); true: Wp[:, k] /= s_k
};

bool onlyUse(const Value *v, const Node *n) {
  return v->uses().size() == 1 && v->uses().front().user == n && !v->isGraphOutput();
}

int64_t numel(const Value *v) { return v->constant()->numel(); }

/// How the producer of `x` (K channels) can absorb 1/s, if it can.
std::optional<Fold> findFold(const Value *x, int64_t K) {
  const Node *p = x->producer();
  if (!p || !p->is(OpKind::Mul) || p->numInputs() != 2)
    return std::nullopt;
  for (unsigned i = 0; i < 2; ++i) {
    Value *c = p->input(i);
    if (c && c->isConstant() && !c->type().quant && c->constant()->dtype() == DType::F32 &&
        numel(c) == K && c->constant()->rank() >= 1 && c->constant()->shape().back() == K &&
        onlyUse(c, p) && !c->isGraphInput())
      return Fold{c, false};
  }
  for (unsigned i = 0; i < 2; ++i) {
    const Value *b = p->input(i);
    const Node *mm = b ? b->producer() : nullptr;
    if (!mm || !mm->is(OpKind::MatMul) || !onlyUse(b, p))
      continue;
    Value *wp = mm->input(1);
    if (wp && wp->isConstant() && !wp->type().quant && !wp->isGraphInput() &&
        wp->constant()->dtype() == DType::F32 && wp->constant()->rank() == 2 &&
        wp->constant()->shape()[1] == K && onlyUse(wp, mm))
      return Fold{wp, true};
  }
  return std::nullopt;
}

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

/// The distinct weights the MatMuls reading `x` multiply it by, as the graph has them now.
std::vector<Value *> currentWeights(const Value *x) {
  std::vector<Value *> ws;
  for (const Use &u : x->uses())
    if (std::find(ws.begin(), ws.end(), u.user->input(1)) == ws.end())
      ws.push_back(u.user->input(1));
  return ws;
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
  // producer can absorb 1/s.
  struct Group {
    const Value *x;
    std::vector<Value *> ws;
    Fold fold;
  };
  std::vector<Group> groups;
  int64_t noFold = 0;
  for (const Value *x : calib::matmulWeightInputs(g)) {
    Group gr{x, {}, {}};
    bool ok = !x->isGraphOutput();
    for (const Use &u : x->uses()) {
      const Value *w = u.user->input(1);
      ok = ok && u.user->is(OpKind::MatMul) && u.index == 0 && w && weightOf.count(w);
      if (ok && std::find(gr.ws.begin(), gr.ws.end(), w) == gr.ws.end())
        gr.ws.push_back(const_cast<Value *>(w));
    }
    // Every user of each weight must read this x (a shared weight cannot take two scales).
    for (const Value *w : gr.ws)
      for (const Node *u : weightOf[w]->users)
        ok = ok && u->input(0) == x;
    const int64_t K = gr.ws.empty() ? 0 : gr.ws.front()->constant()->shape()[0];
    std::optional<Fold> f = ok && K > 0 ? findFold(x, K) : std::nullopt;
    if (!f) {
      ++noFold;
      continue;
    }
    gr.fold = *f;
    groups.push_back(std::move(gr));
  }

  std::vector<const Value *> acts;
  for (const Group &gr : groups)
    acts.push_back(gr.x);
  int64_t normFolds = 0, matmulFolds = 0;
  double logRatio = 0, alphaSum = 0;
  int64_t measured = 0;
  LLMOPT_RETURN_IF_ERROR(calib::forEachHessianGroup(
      m, am, acts, "quant-int4 awq", [&](const calib::Stats &st) -> Status {
        for (Group &gr : groups) {
          const calib::ActStats *as = st.find(gr.x);
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
            for (const Value *wv : currentWeights(gr.x)) {
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
          std::optional<Fold> fold = findFold(gr.x, K);
          if (!fold)
            return internalErrorf("awq: the producer of '{}' stopped being foldable", gr.x->name());
          gr.fold = *fold;
          for (Value *wv : currentWeights(gr.x)) {
            const Tensor &src = *wv->constant();
            Tensor w = Tensor::fromBytes(DType::F32, src.shape(), src.data(), src.nbytes());
            float *d = reinterpret_cast<float *>(w.mutableData());
            const int64_t N = w.shape()[1];
            for (int64_t k = 0; k < K; ++k)
              for (int64_t n = 0; n < N; ++n)
                d[k * N + n] *= bestS[static_cast<size_t>(k)];
            g.replaceWithConstant(wv, std::move(w));
          }
          const Tensor &c0 = *gr.fold.constant->constant();
          Tensor c = Tensor::fromBytes(DType::F32, c0.shape(), c0.data(), c0.nbytes());
          float *cd = reinterpret_cast<float *>(c.mutableData());
          if (gr.fold.columns) {
            const int64_t rows = c.shape()[0];
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t k = 0; k < K; ++k)
                cd[r * K + k] /= bestS[static_cast<size_t>(k)];
          } else {
            for (int64_t k = 0; k < K; ++k)
              cd[k] /= bestS[static_cast<size_t>(k)];
          }
          g.replaceWithConstant(gr.fold.constant, std::move(c));
          ++(gr.fold.columns ? matmulFolds : normFolds);
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

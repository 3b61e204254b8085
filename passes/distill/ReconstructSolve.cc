// Normal equations and the masked ridge fit of distill-reconstruct (see ReconstructSolve.h).
#include "passes/distill/ReconstructSolve.h"

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace llmopt::distill {

NormalEquations::NormalEquations(int64_t ks_, int64_t kt_, int64_t nd_)
    : ks(ks_), kt(kt_), nd(nd_), ss(Eigen::MatrixXd::Zero(ks_, ks_)),
      st(Eigen::MatrixXd::Zero(ks_, kt_)), tt(Eigen::MatrixXd::Zero(kt_, kt_)),
      sd(Eigen::MatrixXd::Zero(ks_, nd_)), td(Eigen::MatrixXd::Zero(kt_, nd_)),
      sumS(Eigen::VectorXd::Zero(ks_)), sumT(Eigen::VectorXd::Zero(kt_)),
      sumD(Eigen::VectorXd::Zero(nd_)) {}

void NormalEquations::add(const float *xs, const float *xt, int64_t n, const float *d) {
  constexpr int64_t kChunk = 64;
  Eigen::Map<const RowMatrixF> S(xs, n, ks), T(xt, n, kt);
  for (int64_t c = 0; c < n; c += kChunk) {
    const int64_t m = std::min(kChunk, n - c);
    const auto s = S.middleRows(c, m);
    const auto t = T.middleRows(c, m);
    ss += (s.transpose() * s).cast<double>();
    st += (s.transpose() * t).cast<double>();
    tt += (t.transpose() * t).cast<double>();
    sumS += s.colwise().sum().transpose().cast<double>();
    sumT += t.colwise().sum().transpose().cast<double>();
    if (nd > 0) {
      const auto e = Eigen::Map<const RowMatrixF>(d, n, nd).middleRows(c, m);
      sd += (s.transpose() * e).cast<double>();
      td += (t.transpose() * e).cast<double>();
      sumD += e.colwise().sum().transpose().cast<double>();
      dd += e.cast<double>().squaredNorm();
    }
  }
  rows += n;
}

NormalEquations &NormalEquations::operator+=(const NormalEquations &o) {
  ss += o.ss;
  st += o.st;
  tt += o.tt;
  sd += o.sd;
  td += o.td;
  sumS += o.sumS;
  sumT += o.sumT;
  sumD += o.sumD;
  dd += o.dd;
  rows += o.rows;
  return *this;
}

Eigen::MatrixXd NormalEquations::crossTarget(const Eigen::MatrixXd &wt) const {
  Eigen::MatrixXd g = st * wt;
  if (nd > 0)
    g += sd;
  return g;
}

double NormalEquations::targetEnergy(const Eigen::MatrixXd &wt) const {
  double yy = (wt.transpose() * tt * wt).trace();
  if (nd > 0)
    yy += 2 * (wt.transpose() * td).trace() + dd;
  return yy;
}

double squaredError(const NormalEquations &ne, const RowMatrixF &wt, const RowMatrixF &ws) {
  const Eigen::MatrixXd Wt = wt.cast<double>(), Ws = ws.cast<double>();
  return std::max((Ws.transpose() * ne.ss * Ws).trace() -
                      2 * (Ws.transpose() * ne.crossTarget(Wt)).trace() + ne.targetEnergy(Wt),
                  0.0);
}

double relativeError(const NormalEquations &ne, const RowMatrixF &wt, const RowMatrixF &ws) {
  const double yy = ne.targetEnergy(wt.cast<double>());
  return yy > 0 ? squaredError(ne, wt, ws) / yy : 0.0;
}

RowMatrixF solveRidge(const NormalEquations &ne, const RowMatrixF &wt, const RowMatrixF &w0,
                      double ridge, bool dense, int64_t &solves) {
  const int64_t K = ne.ks, N = w0.cols();
  const Eigen::MatrixXd G = ne.crossTarget(wt.cast<double>()); // Xs^T Y, [Ks, N]
  const double lambda = ridge * std::max(ne.ss.diagonal().mean(), 1e-12);
  RowMatrixF ws = w0;
  // Columns with the same mask share one factorization.
  std::map<std::string, std::vector<int64_t>> byMask;
  for (int64_t j = 0; j < N; ++j) {
    std::string mask(static_cast<size_t>(K), '1');
    if (!dense)
      for (int64_t k = 0; k < K; ++k)
        mask[static_cast<size_t>(k)] = w0(k, j) != 0.f ? '1' : '0';
    byMask[mask].push_back(j);
  }
  for (const auto &[mask, cols] : byMask) {
    std::vector<int64_t> S;
    for (int64_t k = 0; k < K; ++k)
      if (mask[static_cast<size_t>(k)] == '1')
        S.push_back(k);
    if (S.empty())
      continue;
    const int64_t s = static_cast<int64_t>(S.size()), c = static_cast<int64_t>(cols.size());
    Eigen::MatrixXd A(s, s), B(s, c);
    for (int64_t a = 0; a < s; ++a) {
      const int64_t ka = S[static_cast<size_t>(a)];
      for (int64_t b = 0; b < s; ++b)
        A(a, b) = ne.ss(ka, S[static_cast<size_t>(b)]);
      A(a, a) += lambda;
      for (int64_t j = 0; j < c; ++j) {
        const int64_t col = cols[static_cast<size_t>(j)];
        B(a, j) = G(ka, col) + lambda * static_cast<double>(w0(ka, col));
      }
    }
    const Eigen::MatrixXd W = A.llt().solve(B);
    ++solves;
    for (int64_t a = 0; a < s; ++a)
      for (int64_t j = 0; j < c; ++j)
        ws(S[static_cast<size_t>(a)], cols[static_cast<size_t>(j)]) = static_cast<float>(W(a, j));
  }
  return ws;
}

FitResult ridgeFit(const NormalEquations &a, const NormalEquations &b, const RowMatrixF &wt,
                   RowMatrixF &ws, double ridge, bool dense) {
  FitResult r;
  NormalEquations all = a;
  all += b;
  r.errorBefore = relativeError(all, wt, ws);
  r.ridge = ridge;
  if (ridge < 0) { // auto: two-fold cross-validation over the grid; "keep ws" competes
    double best = squaredError(a, wt, ws) + squaredError(b, wt, ws);
    r.ridge = -1;
    for (double l : kRidgeGrid) {
      const double e = squaredError(b, wt, solveRidge(a, wt, ws, l, dense, r.solves)) +
                       squaredError(a, wt, solveRidge(b, wt, ws, l, dense, r.solves));
      if (e < best) {
        best = e;
        r.ridge = l;
      }
    }
    if (r.ridge < 0) {
      r.errorAfter = r.errorBefore;
      return r;
    }
  }
  ws = solveRidge(all, wt, ws, r.ridge, dense, r.solves);
  r.errorAfter = relativeError(all, wt, ws);
  return r;
}

} // namespace llmopt::distill

// Normal equations and the masked ridge fit of distill-reconstruct (see ReconstructSolve.h).
#include "passes/distill/ReconstructSolve.h"

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace llmopt::distill {

NormalEquations::NormalEquations(int64_t ks_, int64_t kt_)
    : ks(ks_), kt(kt_), ss(Eigen::MatrixXd::Zero(ks_, ks_)), st(Eigen::MatrixXd::Zero(ks_, kt_)),
      tt(Eigen::MatrixXd::Zero(kt_, kt_)), sumS(Eigen::VectorXd::Zero(ks_)),
      sumT(Eigen::VectorXd::Zero(kt_)) {}

void NormalEquations::add(const float *xs, const float *xt, int64_t n) {
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
  }
  rows += n;
}

double relativeError(const NormalEquations &ne, const RowMatrixF &wt, const RowMatrixF &ws) {
  const Eigen::MatrixXd Wt = wt.cast<double>(), Ws = ws.cast<double>();
  const double yy = (Wt.transpose() * ne.tt * Wt).trace();
  const double err = (Ws.transpose() * ne.ss * Ws).trace() - 2 * (Ws.transpose() * ne.st * Wt).trace() + yy;
  return yy > 0 ? std::max(err, 0.0) / yy : 0.0;
}

FitResult ridgeFit(const NormalEquations &ne, const RowMatrixF &wt, RowMatrixF &ws, double ridge,
                   bool dense) {
  FitResult r;
  r.errorBefore = relativeError(ne, wt, ws);
  const int64_t K = ne.ks, N = ws.cols();
  const Eigen::MatrixXd G = ne.st * wt.cast<double>(); // Xs^T Y, [Ks, N]
  const double lambda = ridge * std::max(ne.ss.diagonal().mean(), 1e-12);
  // Columns with the same mask share one factorization.
  std::map<std::string, std::vector<int64_t>> byMask;
  for (int64_t j = 0; j < N; ++j) {
    std::string mask(static_cast<size_t>(K), '1');
    if (!dense)
      for (int64_t k = 0; k < K; ++k)
        mask[static_cast<size_t>(k)] = ws(k, j) != 0.f ? '1' : '0';
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
      for (int64_t b = 0; b < s; ++b)
        A(a, b) = ne.ss(S[static_cast<size_t>(a)], S[static_cast<size_t>(b)]);
      A(a, a) += lambda;
      for (int64_t j = 0; j < c; ++j)
        B(a, j) = G(S[static_cast<size_t>(a)], cols[static_cast<size_t>(j)]);
    }
    const Eigen::MatrixXd W = A.llt().solve(B);
    ++r.solves;
    for (int64_t a = 0; a < s; ++a)
      for (int64_t j = 0; j < c; ++j)
        ws(S[static_cast<size_t>(a)], cols[static_cast<size_t>(j)]) = static_cast<float>(W(a, j));
  }
  r.errorAfter = relativeError(ne, wt, ws);
  return r;
}

} // namespace llmopt::distill

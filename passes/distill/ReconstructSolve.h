// The numerics of distill-reconstruct: normal equations accumulated over calibration rows
// and the masked ridge least-squares fit of one weight (see DistillReconstruct.h).
#pragma once

#include <cstdint>

#include <Eigen/Dense>

namespace llmopt::distill {

using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Sums over calibration rows for one student input Xs [rows, Ks] and the teacher input
/// Xt [rows, Kt] of the same layer: Xs^T Xs, Xs^T Xt, Xt^T Xt and the column sums. Rows
/// are added in chunks of 64 whose f32 products go into the double sums in a fixed order,
/// so the result does not depend on the thread count.
struct NormalEquations {
  int64_t ks = 0, kt = 0, rows = 0;
  Eigen::MatrixXd ss, st, tt;
  Eigen::VectorXd sumS, sumT;
  NormalEquations(int64_t ks, int64_t kt);
  void add(const float *xs, const float *xt, int64_t n);
};

struct FitResult {
  double errorBefore = 0, errorAfter = 0; ///< ||Xs W - Xt Wt||^2 / ||Xt Wt||^2
  int64_t solves = 0;                     ///< Cholesky factorizations (one per distinct mask)
};

/// Refits `ws` [Ks, N] in place: per output column j, over the rows S_j where ws is
/// nonzero (all rows when `dense`), w = argmin ||Xs[:, S_j] w - Xt Wt[:, j]||^2 + l ||w||^2
/// with l = ridge * mean(diag(Xs^T Xs)); entries outside S_j stay zero. `wt` [Kt, N] is the
/// teacher weight with its columns already matched to the student's.
FitResult ridgeFit(const NormalEquations &ne, const RowMatrixF &wt, RowMatrixF &ws, double ridge,
                   bool dense);

/// The relative output error ||Xs W - Xt Wt||^2 / ||Xt Wt||^2 from the sums alone.
double relativeError(const NormalEquations &ne, const RowMatrixF &wt, const RowMatrixF &ws);

} // namespace llmopt::distill

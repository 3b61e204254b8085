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
///
/// With `nd` > 0 the target is Y = Xt Wt + D for an extra term D [rows, nd] (nd = N): the
/// residual correction, D = the teacher's residual stream minus the student's where the
/// layer's output is added to it, so that fitting Y brings the stream itself back. Then
/// Xs^T D, Xt^T D, ||D||^2 and D's column sums are kept too.
struct NormalEquations {
  int64_t ks = 0, kt = 0, nd = 0, rows = 0;
  Eigen::MatrixXd ss, st, tt, sd, td;
  Eigen::VectorXd sumS, sumT, sumD;
  double dd = 0;
  NormalEquations(int64_t ks, int64_t kt, int64_t nd = 0);
  /// `d` [n, nd]: required when nd > 0, ignored otherwise.
  void add(const float *xs, const float *xt, int64_t n, const float *d = nullptr);
  NormalEquations &operator+=(const NormalEquations &o);
  /// Xs^T Y [Ks, N] and ||Y||^2 for Y = Xt wt (+ D).
  Eigen::MatrixXd crossTarget(const Eigen::MatrixXd &wt) const;
  double targetEnergy(const Eigen::MatrixXd &wt) const;
};

struct FitResult {
  double errorBefore = 0, errorAfter = 0; ///< ||Xs W - Xt Wt||^2 / ||Xt Wt||^2, all rows
  double ridge = 0;                       ///< the ridge used (chosen when asked for auto)
  int64_t solves = 0;                     ///< Cholesky factorizations (one per distinct mask)
};

/// The ridges ridgeFit tries for ridge=auto; a larger one stays closer to the start.
inline constexpr double kRidgeGrid[] = {1e-3, 1e-2, 1e-1, 1.0, 10.0};

/// W [Ks, N] minimising, per output column j over the rows S_j where w0 is nonzero (all rows
/// when `dense`), ||Xs[:, S_j] w - Xt Wt[:, j]||^2 + l ||w - w0[S_j, j]||^2 with
/// l = ridge * mean(diag(Xs^T Xs)): a ridge towards the starting weights, so that with few
/// calibration rows the fit moves from them only as far as the data supports. Entries outside
/// S_j stay zero. `wt` [Kt, N] is the teacher weight with its columns matched to w0's.
RowMatrixF solveRidge(const NormalEquations &ne, const RowMatrixF &wt, const RowMatrixF &w0,
                      double ridge, bool dense, int64_t &solves);

/// Refits `ws` in place from the sums of two disjoint halves of the calibration windows.
/// ridge >= 0: solveRidge on both halves together. ridge < 0 (auto): each ridge of kRidgeGrid
/// is fitted on one half and scored on the other (both ways); the best one is refitted on
/// all rows, unless keeping `ws` scores better still (then `ws` stays).
FitResult ridgeFit(const NormalEquations &a, const NormalEquations &b, const RowMatrixF &wt,
                   RowMatrixF &ws, double ridge, bool dense);

/// ||Xs W - Y||^2 (Y = Xt Wt, + D with a residual term) from the sums alone.
double squaredError(const NormalEquations &ne, const RowMatrixF &wt, const RowMatrixF &ws);
/// The relative output error ||Xs W - Y||^2 / ||Y||^2 from the sums alone.
double relativeError(const NormalEquations &ne, const RowMatrixF &wt, const RowMatrixF &ws);

} // namespace llmopt::distill

// The inverse-Hessian factor that GPTQ and SparseGPT share (both after the IST-DASLab
// references): U, the upper Cholesky factor of (H + damp * mean(diag H) * I)^-1.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "ir/Status.h"

namespace llmopt::calib {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// U with H^-1 = U^T U for the damped H. When H + damp I is not positive definite, damp is
/// raised tenfold and retried (up to 4 times; `damp` returns the value used) where the
/// references fail. The error names `who` (the algorithm) and suggests more data.
Expected<MatD> inverseHessianFactor(const MatD &h, double &damp, std::string_view who);

/// The two error-propagation steps GPTQ and SparseGPT share, on W [K, N] row-major (row k =
/// input channel) with U (K x K, row-major) from inverseHessianFactor, for a lazy batch of
/// rows [i1, i2):
/// after row i's error e (N values) is known, rows (i, i2) take W[r, :] -= e * U(i, r) ...
void propagateInBatch(float *W, int64_t K, int64_t N, const double *U, int64_t i, int64_t i2,
                      const float *e);
/// ... and after the batch, W[i2:, :] -= U[i1:i2, i2:]^T E with E the batch's errors
/// ((i2 - i1) x N), as one GEMM. `scratch` is reused between calls.
void updateAfterBatch(float *W, int64_t K, int64_t N, const double *U, int64_t i1, int64_t i2,
                      const float *E, std::vector<float> &scratch);

} // namespace llmopt::calib

// The inverse-Hessian factor that GPTQ and SparseGPT share (both after the IST-DASLab
// references): U, the upper Cholesky factor of (H + damp * mean(diag H) * I)^-1.
#pragma once

#include <string_view>

#include <Eigen/Core>

#include "ir/Status.h"

namespace llmopt::calib {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// U with H^-1 = U^T U for the damped H. When H + damp I is not positive definite, damp is
/// raised tenfold and retried (up to 4 times; `damp` returns the value used) where the
/// references fail. The error names `who` (the algorithm) and suggests more data.
Expected<MatD> inverseHessianFactor(const MatD &h, double &damp, std::string_view who);

} // namespace llmopt::calib

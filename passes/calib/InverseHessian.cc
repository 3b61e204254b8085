// The damped inverse-Hessian Cholesky factor: see InverseHessian.h.
#include "passes/calib/InverseHessian.h"

#include <Eigen/Cholesky>

namespace llmopt::calib {

Expected<MatD> inverseHessianFactor(const MatD &h, double &damp, std::string_view who) {
  const double meanDiag = h.diagonal().mean();
  for (int attempt = 0; attempt < 5; ++attempt, damp *= 10) {
    MatD hd = h;
    hd.diagonal().array() += damp * meanDiag;
    Eigen::LLT<MatD> llt(hd);
    if (llt.info() != Eigen::Success)
      continue;
    MatD inv = llt.solve(MatD::Identity(h.rows(), h.cols()));
    Eigen::LLT<MatD> llt2(inv);
    if (llt2.info() != Eigen::Success)
      continue;
    return MatD(llt2.matrixU());
  }
  return errorf("{}: the Hessian is not positive definite even with damping {} (too little "
                "calibration data for this layer? raise --calib-samples)",
                who, damp / 10);
}

} // namespace llmopt::calib

// The damped inverse-Hessian Cholesky factor: see InverseHessian.h.
#include "passes/calib/InverseHessian.h"

#include <Eigen/Cholesky>

#include "backend/interp/Linalg.h"

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

void propagateInBatch(float *W, int64_t K, int64_t N, const double *U, int64_t i, int64_t i2,
                      const float *e) {
  for (int64_t r = i + 1; r < i2; ++r) {
    const float u = static_cast<float>(U[i * K + r]);
    float *dst = W + r * N;
    for (int64_t j = 0; j < N; ++j)
      dst[j] -= e[j] * u;
  }
}

void updateAfterBatch(float *W, int64_t K, int64_t N, const double *U, int64_t i1, int64_t i2,
                      const float *E, std::vector<float> &scratch) {
  if (i2 >= K)
    return;
  // (K - i2) x count times count x N, accumulated into W[i2:, :].
  const int64_t rest = K - i2, count = i2 - i1;
  scratch.assign(static_cast<size_t>(rest * count), 0.f);
  for (int64_t r = 0; r < rest; ++r)
    for (int64_t c = 0; c < count; ++c)
      scratch[static_cast<size_t>(r * count + c)] = static_cast<float>(-U[(i1 + c) * K + i2 + r]);
  interp::gemm(scratch.data(), count, E, N, W + i2 * N, N, rest, count, N, /*accumulate=*/true);
}

} // namespace llmopt::calib

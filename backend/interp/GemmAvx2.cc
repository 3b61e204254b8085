// Eigen's f32 GEMM built for AVX2+FMA (this file alone gets -mavx2 -mfma). Eigen's
// namespace is renamed here so none of its inline code merges with the baseline build's
// at link time; only sgemmBlockAvx2 is shared, and Gemm.cc calls it after a CPU check.
#include <cstdint>

#define Eigen llmopt_eigen_avx2
#include <Eigen/Core>

namespace llmopt::interp {

void sgemmBlockAvx2(const float *a, int64_t lda, const float *b, int64_t ldb, float *c,
                    int64_t ldc, int64_t rows, int64_t K, int64_t cols) {
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const RowMat, 0, Eigen::OuterStride<>> am(a, rows, K, Eigen::OuterStride<>(lda));
  Eigen::Map<const RowMat, 0, Eigen::OuterStride<>> bm(b, K, cols, Eigen::OuterStride<>(ldb));
  Eigen::Map<RowMat, 0, Eigen::OuterStride<>> cm(c, rows, cols, Eigen::OuterStride<>(ldc));
  cm.noalias() = am * bm;
}

} // namespace llmopt::interp

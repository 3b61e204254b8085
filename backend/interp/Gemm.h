// Internal to the interpreter: batched GEMM over Eigen, split across the thread pool.
#pragma once

#include <Eigen/Core>

#include "backend/interp/Kernel.h"

namespace llmopt::interp {

/// C[rows,cols] = A[rows,K] * B[K,cols]: row-major blocks with leading dimensions
/// lda / ldb / ldc (in elements), by Eigen's GEMM compiled for the baseline ISA.
template <typename T>
void eigenGemm(const T *a, int64_t lda, const T *b, int64_t ldb, T *c, int64_t ldc, int64_t rows,
               int64_t K, int64_t cols) {
  using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const RowMat, 0, Eigen::OuterStride<>> am(a, rows, K, Eigen::OuterStride<>(lda));
  Eigen::Map<const RowMat, 0, Eigen::OuterStride<>> bm(b, K, cols, Eigen::OuterStride<>(ldb));
  Eigen::Map<RowMat, 0, Eigen::OuterStride<>> cm(c, rows, cols, Eigen::OuterStride<>(ldc));
  cm.noalias() = am * bm;
}

/// One GEMM block (see eigenGemm); f32 uses an AVX2+FMA build of Eigen's GEMM when
/// the CPU has it (Gemm.cc, GemmAvx2.cc).
template <typename T>
void gemmBlock(const T *a, int64_t lda, const T *b, int64_t ldb, T *c, int64_t ldc, int64_t rows,
               int64_t K, int64_t cols) {
  eigenGemm<T>(a, lda, b, ldb, c, ldc, rows, K, cols);
}
template <>
void gemmBlock<float>(const float *a, int64_t lda, const float *b, int64_t ldb, float *c,
                      int64_t ldc, int64_t rows, int64_t K, int64_t cols);

/// C[i] = A[i] * B[i] for every batch i: A[i] at A + aOffsets[i] is row-major [M,K],
/// B[i] at B + bOffsets[i] row-major [K,N], C[i] at C + i*M*N row-major [M,N]. Work is
/// split over batches, then rows (or columns when M is small) to fill the thread budget.
template <typename T>
void batchedGemm(const T *A, const T *B, T *C, const std::vector<int64_t> &aOffsets,
                 const std::vector<int64_t> &bOffsets, int64_t M, int64_t K, int64_t N) {
  const int64_t batches = static_cast<int64_t>(aOffsets.size());
  if (batches == 0 || M == 0 || N == 0)
    return;
  if (K == 0) {
    std::fill(C, C + batches * M * N, T(0));
    return;
  }
  // Small products run on the calling thread; larger ones fill the thread budget.
  const double work = static_cast<double>(batches) * static_cast<double>(M) * static_cast<double>(N) *
                      static_cast<double>(K);
  const int64_t threads = work < double(1 << 17) ? 1 : threadBudget();
  const int64_t perBatch = batches >= threads ? 1 : (threads + batches - 1) / batches;
  // Split rows when there are enough of them, else columns (GEMV-like shapes).
  const bool byRows = M >= 4 * perBatch || N < 64;
  const int64_t extent = byRows ? M : N;
  const int64_t parts = std::min(perBatch, extent);
  const int64_t chunk = (extent + parts - 1) / parts;
  const int64_t tasks = batches * parts;
  parallelFor(tasks, threads == 1 ? tasks : 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / parts, p = t % parts;
      const int64_t lo = p * chunk, hi = std::min(extent, lo + chunk);
      if (lo >= hi)
        continue;
      const T *a = A + aOffsets[static_cast<size_t>(b)];
      const T *bm = B + bOffsets[static_cast<size_t>(b)];
      T *c = C + b * M * N;
      if (byRows)
        gemmBlock<T>(a + lo * K, K, bm, N, c + lo * N, N, hi - lo, K, N);
      else
        gemmBlock<T>(a, K, bm + lo, N, c + lo, N, M, K, hi - lo);
    }
  });
}

/// Batch offsets (in elements) of A's and B's matrices for numpy-broadcast batch dims.
void matmulBatchOffsets(const Shape &aBatch, const Shape &bBatch, const Shape &outBatch,
                        int64_t aMatrix, int64_t bMatrix, std::vector<int64_t> &aOff,
                        std::vector<int64_t> &bOff);

} // namespace llmopt::interp

// The f32 GEMM block: an AVX2+FMA build of Eigen's kernel when the CPU has it.
#include "backend/interp/Gemm.h"

namespace llmopt::interp {

#if LLMOPT_INTERP_HAVE_AVX2
// GemmAvx2.cc, compiled with -mavx2 -mfma.
void sgemmBlockAvx2(const float *a, int64_t lda, const float *b, int64_t ldb, float *c,
                    int64_t ldc, int64_t rows, int64_t K, int64_t cols);

static bool cpuHasAvx2Fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#endif

template <>
void gemmBlock<float>(const float *a, int64_t lda, const float *b, int64_t ldb, float *c,
                      int64_t ldc, int64_t rows, int64_t K, int64_t cols) {
#if LLMOPT_INTERP_HAVE_AVX2
  if (cpuHasAvx2Fma())
    return sgemmBlockAvx2(a, lda, b, ldb, c, ldc, rows, K, cols);
#endif
  eigenGemm<float>(a, lda, b, ldb, c, ldc, rows, K, cols);
}

} // namespace llmopt::interp

// ---------------------------------------------------------------- public entry (Linalg.h)

#include "backend/interp/Linalg.h"

#include <vector>

namespace llmopt::interp {

void gemm(const float *a, int64_t lda, const float *b, int64_t ldb, float *c, int64_t ldc,
          int64_t M, int64_t K, int64_t N, bool accumulate, int threads) {
  if (M <= 0 || N <= 0)
    return;
  ThreadBudgetScope budget(threads);
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i)
        std::fill(c + i * ldc, c + i * ldc + N, 0.f);
    return;
  }
  // Row panels of C: 64 rows each (enough to keep the kernel's packing worthwhile).
  const int64_t panel = 64, panels = (M + panel - 1) / panel;
  parallelFor(panels, 1, [&](int64_t p0, int64_t p1) {
    std::vector<float> tmp;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t lo = p * panel, rows = std::min(panel, M - lo);
      if (!accumulate) {
        gemmBlock<float>(a + lo * lda, lda, b, ldb, c + lo * ldc, ldc, rows, K, N);
        continue;
      }
      tmp.resize(static_cast<size_t>(rows * N));
      gemmBlock<float>(a + lo * lda, lda, b, ldb, tmp.data(), N, rows, K, N);
      for (int64_t i = 0; i < rows; ++i) {
        float *dst = c + (lo + i) * ldc;
        const float *src = tmp.data() + i * N;
        for (int64_t j = 0; j < N; ++j)
          dst[j] += src[j];
      }
    }
  });
}

} // namespace llmopt::interp

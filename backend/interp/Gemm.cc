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

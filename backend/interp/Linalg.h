// Dense f32 linear algebra for passes that need it at scale (calibration Hessians, GPTQ,
// SparseGPT): the interpreter's GEMM (AVX2+FMA where the CPU has it) on its thread pool.
#pragma once

#include <cstdint>

namespace llmopt::interp {

/// C[M,N] = A[M,K] * B[K,N] (or C += A * B when `accumulate`), row-major with leading
/// dimensions lda / ldb / ldc in elements. Work is split by rows of C, never along K, so
/// each element's sum runs in the same order whatever the thread count.
void gemm(const float *a, int64_t lda, const float *b, int64_t ldb, float *c, int64_t ldc,
          int64_t M, int64_t K, int64_t N, bool accumulate = false, int threads = 0);

} // namespace llmopt::interp

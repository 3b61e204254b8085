// Scalar reference kernels of the 16-bit and 2:4 sparse formats: the definition the SIMD
// variants are tested against, element by element through the decoders, natural K order.
#include <algorithm>

#include "backend/cpu/kernels/HalfSparseInternal.h"

namespace llmopt::cpu::detail::ref {

namespace {
template <class Job, class Decode>
void plainTiles(const Job &job, int64_t tileBegin, int64_t tileEnd, Decode decode) {
  const int64_t k = job.w.layout.k, n = job.w.layout.n;
  const int64_t colEnd = std::min(tileEnd * kTileCols, n);
  for (int64_t row = 0; row < job.m; ++row) {
    const float *a = job.a + row * job.lda;
    for (int64_t col = tileBegin * kTileCols; col < colEnd; ++col) {
      float acc = 0;
      for (int64_t i = 0; i < k; ++i)
        acc += a[i] * decode(job.w, i, col);
      storeOutput(job.epilogue, job.c, job.ldc, n, row, col, acc);
    }
  }
}
} // namespace

void halfTiles(const HalfJob &job, int64_t tileBegin, int64_t tileEnd) {
  plainTiles(job, tileBegin, tileEnd, halfWeight);
}

void sparse24Tiles(const Sparse24Job &job, int64_t tileBegin, int64_t tileEnd) {
  plainTiles(job, tileBegin, tileEnd, sparse24Weight);
}

} // namespace llmopt::cpu::detail::ref

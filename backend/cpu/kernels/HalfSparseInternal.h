// Internal to the kernel library: the job the 16-bit and 2:4 sparse variants run over a range
// of tiles, and their per-ISA entry points.
#pragma once

#include "backend/cpu/kernels/KernelsInternal.h"

namespace llmopt::cpu::detail {

/// A GEMM over one of the f32-compute formats (HalfWeights, Sparse24Weights). SIMD variants
/// read `act`: A's rows copied to `kPadded` floats (zeros past K), so whole records need no
/// bounds checks; the scalar reference reads `a`.
template <class Weights> struct FloatJob {
  Weights w;
  const float *a = nullptr;
  int64_t m = 0, lda = 0, ldc = 0;
  float *c = nullptr;
  Epilogue epilogue;
  const float *act = nullptr;
  int64_t kPadded = 0;
};
using HalfJob = FloatJob<HalfWeights>;
using Sparse24Job = FloatJob<Sparse24Weights>;

namespace {
/// Kept value (v, j) of a 2:4 record (see Sparse24F32Record): its position inside the
/// record's 256 dense K.
LLMOPT_KERNEL_INLINE int sparseDenseIndex(const uint16_t *meta, int v, int j) {
  return 32 * v + 4 * (j / 2) + (meta[j] >> (2 * v) & 3);
}
/// Writes the 8 outputs of `tile` in `row` (values[c] for column c) through the epilogue.
LLMOPT_KERNEL_INLINE void storeTileRow(const Epilogue &e, float *c, int64_t ldc, int64_t n,
                                       int64_t row, int64_t tile, const float *values) {
  for (int cc = 0; cc < kTileCols; ++cc)
    storeOutput(e, c, ldc, n, row, tile * kTileCols + cc, values[cc]);
}
} // namespace

namespace ref {
void halfTiles(const HalfJob &job, int64_t tileBegin, int64_t tileEnd);
void sparse24Tiles(const Sparse24Job &job, int64_t tileBegin, int64_t tileEnd);
} // namespace ref
namespace avx2 {
void halfTiles(const HalfJob &job, int64_t tileBegin, int64_t tileEnd);
void sparse24Tiles(const Sparse24Job &job, int64_t tileBegin, int64_t tileEnd);
} // namespace avx2
namespace avx512 {
void halfTiles(const HalfJob &job, int64_t tileBegin, int64_t tileEnd);
void sparse24Tiles(const Sparse24Job &job, int64_t tileBegin, int64_t tileEnd);
} // namespace avx512

} // namespace llmopt::cpu::detail

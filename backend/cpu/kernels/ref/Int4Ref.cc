// Scalar reference kernels: the definition the SIMD variants are tested against. They read
// A and the weights element by element in natural K order (no lane layout), so they are
// slow and simple on purpose.
#include <algorithm>
#include <vector>

#include "backend/cpu/kernels/KernelsInternal.h"

namespace llmopt::cpu::detail::ref {

void int4Tiles(const Int4Job &job, int64_t tileBegin, int64_t tileEnd) {
  const Int4Layout &l = job.w.layout;
  const int bs = l.blockSize;
  const int64_t blocks = (l.k + bs - 1) / bs;
  const int64_t colEnd = std::min(tileEnd * kTileCols, l.n);
  std::vector<int8_t> qa(blocks * bs);
  std::vector<float> sa(blocks);
  for (int64_t row = 0; row < job.m; ++row) {
    const float *a = job.a + row * job.lda;
    if (job.compute == Compute::Int8)
      for (int64_t b = 0; b < blocks; ++b)
        sa[b] = quantizeInt8(a + b * bs, static_cast<int>(std::min<int64_t>(bs, l.k - b * bs)),
                             qa.data() + b * bs);
    for (int64_t col = tileBegin * kTileCols; col < colEnd; ++col) {
      float acc = 0;
      if (job.compute == Compute::F32) {
        for (int64_t k = 0; k < l.k; ++k)
          acc += a[k] * int4Weight(job.w, k, col);
      } else {
        for (int64_t b = 0; b < blocks; ++b) {
          int32_t dot = 0;
          float scale = 0;
          for (int64_t k = b * bs; k < std::min<int64_t>(l.k, (b + 1) * bs); ++k) {
            const Int4Element el = int4Element(job.w, k, col);
            dot += (el.q - el.zp) * qa[k];
            scale = el.scale;
          }
          acc += sa[b] * scale * static_cast<float>(dot);
        }
      }
      storeOutput(job.epilogue, job.c, job.ldc, l.n, row, col, acc);
    }
  }
}

void int8Tiles(const Int8Job &job, int64_t tileBegin, int64_t tileEnd) {
  const Int8Layout &l = job.w.layout;
  const int64_t colEnd = std::min(tileEnd * kTileCols, l.n);
  std::vector<int8_t> qa(l.k);
  for (int64_t row = 0; row < job.m; ++row) {
    const float *a = job.a + row * job.lda;
    const float sa =
        job.compute == Compute::Int8 ? quantizeInt8(a, static_cast<int>(l.k), qa.data()) : 0.f;
    for (int64_t col = tileBegin * kTileCols; col < colEnd; ++col) {
      const int c = static_cast<int>(col % kTileCols);
      const Int8Record *rec = job.w.records(col / kTileCols);
      const float sw = job.w.footer(col / kTileCols)->scale[c];
      float acc = 0;
      if (job.compute == Compute::F32) {
        for (int64_t k = 0; k < l.k; ++k)
          acc += a[k] * (rec[k / kInt8Chunk].q[c][k % kInt8Chunk] * sw);
      } else {
        int32_t dot = 0;
        for (int64_t k = 0; k < l.k; ++k)
          dot += qa[k] * rec[k / kInt8Chunk].q[c][k % kInt8Chunk];
        acc = sa * sw * static_cast<float>(dot);
      }
      storeOutput(job.epilogue, job.c, job.ldc, l.n, row, col, acc);
    }
  }
}

} // namespace llmopt::cpu::detail::ref

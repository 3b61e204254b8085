// AVX-512 kernels of the 16-bit and 2:4 sparse formats (f32 compute); this file alone is
// compiled with AVX-512 flags and only runs when detectedIsa() reports them. GEMV: each
// record's 8 columns in turn, the record prefetched ahead, one stream per thread. GEMM (M >
// 1): each tile decoded once to f32 in a per-thread buffer (8 columns × padded K, in L2),
// then a 4×4 FMA microkernel runs every row over it.
#include <immintrin.h>

#include <algorithm>

#include "backend/cpu/kernels/HalfSparseInternal.h"

// GCC 12 reports its own _mm512_undefined_* placeholders inside avx512fintrin.h.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace llmopt::cpu::detail::avx512 {
namespace {

// A GEMV reads its weights once: fetch about 8 KiB ahead into L2 (as the int4 GEMV does).
constexpr size_t kPrefetchBytes = 8192;
inline void prefetchL2(const uint8_t *p, size_t bytes) {
  for (size_t line = 0; line < bytes; line += 64)
    _mm_prefetch(reinterpret_cast<const char *>(p) + line, _MM_HINT_T1);
}

template <class Job> void storeRow(const Job &job, int64_t tile, int64_t row, const __m512 *acc) {
  float out[kTileCols];
  for (int cc = 0; cc < kTileCols; ++cc)
    out[cc] = _mm512_reduce_add_ps(acc[cc]);
  storeTileRow(job.epilogue, job.c, job.ldc, job.w.layout.n, row, tile, out);
}

// ---------------------------------------------------------------- GEMM over a decoded tile

// Rows row0.. of the outputs of columns col0..col0+NC of a tile decoded to `wd` (column c at
// wd + c * kPadded): per 16 K, NC weight loads and MR activation loads feed MR×NC FMAs.
template <int MR, int NC, class Job>
void denseMicrokernel(const Job &job, const float *wd, int64_t tile, int64_t row0, int col0) {
  const int64_t kp = job.kPadded;
  const float *x[MR];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
    x[r] = job.act + (row0 + r) * kp;
  __m512 acc[MR][NC] = {};
  for (int64_t i = 0; i < kp; i += 16) {
    __m512 wv[NC];
#pragma GCC unroll 4
    for (int cc = 0; cc < NC; ++cc)
      wv[cc] = _mm512_loadu_ps(wd + (col0 + cc) * kp + i);
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      const __m512 xv = _mm512_loadu_ps(x[r] + i);
#pragma GCC unroll 4
      for (int cc = 0; cc < NC; ++cc)
        acc[r][cc] = _mm512_fmadd_ps(wv[cc], xv, acc[r][cc]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int cc = 0; cc < NC; ++cc)
      storeOutput(job.epilogue, job.c, job.ldc, job.w.layout.n, row0 + r,
                  tile * kTileCols + col0 + cc, _mm512_reduce_add_ps(acc[r][cc]));
}

// decode(tile, wd) writes a tile's 8 columns as f32; rows go 4 at a time, then 3, 2 or 1.
template <class Job, class Decode>
void gemmTiles(const Job &job, int64_t tb, int64_t te, Decode decode) {
  float *wd = threadScratch(kTileCols * job.kPadded);
  for (int64_t tile = tb; tile < te; ++tile) {
    decode(tile, wd);
    int64_t row = 0;
    auto run = [&]<int MR>() {
      for (int col0 = 0; col0 < kTileCols; col0 += 4)
        denseMicrokernel<MR, 4>(job, wd, tile, row, col0);
      row += MR;
    };
    for (; row + 4 <= job.m;)
      run.template operator()<4>();
    switch (job.m - row) {
    case 3: run.template operator()<3>(); break;
    case 2: run.template operator()<2>(); break;
    case 1: run.template operator()<1>(); break;
    default: break;
    }
  }
}

// ---------------------------------------------------------------- 16-bit weights

template <HalfType T> LLMOPT_KERNEL_INLINE __m512 loadHalf(const uint16_t *p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
  if constexpr (T == HalfType::Fp16)
    return _mm512_cvtph_ps(h);
  else
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Per record: the 64 activations loaded once, then 4 conversions + FMAs per column.
template <HalfType T> void halfGemv(const HalfJob &job, int64_t tile, int64_t row) {
  const HalfRecord *rec = job.w.records(tile);
  const int64_t chunks = job.w.layout.chunks();
  const float *a = job.act + row * job.kPadded;
  __m512 acc[kTileCols] = {};
  for (int64_t ch = 0; ch < chunks; ++ch) {
    prefetchL2(reinterpret_cast<const uint8_t *>(rec + ch) + kPrefetchBytes, sizeof(HalfRecord));
    __m512 x[4];
    for (int p = 0; p < 4; ++p)
      x[p] = _mm512_loadu_ps(a + ch * kHalfChunk + 16 * p);
#pragma GCC unroll 8
    for (int cc = 0; cc < kTileCols; ++cc)
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p)
        acc[cc] = _mm512_fmadd_ps(loadHalf<T>(rec[ch].w[cc] + 16 * p), x[p], acc[cc]);
  }
  storeRow(job, tile, row, acc);
}

template <HalfType T> void halfTilesOf(const HalfJob &job, int64_t tb, int64_t te) {
  if (job.m == 1) {
    for (int64_t tile = tb; tile < te; ++tile)
      halfGemv<T>(job, tile, 0);
    return;
  }
  const int64_t kp = job.kPadded;
  gemmTiles(job, tb, te, [&](int64_t tile, float *wd) {
    const HalfRecord *rec = job.w.records(tile);
    for (int64_t ch = 0; ch < job.w.layout.chunks(); ++ch)
      for (int cc = 0; cc < kTileCols; ++cc)
        for (int p = 0; p < 4; ++p)
          _mm512_storeu_ps(wd + cc * kp + ch * kHalfChunk + 16 * p,
                           loadHalf<T>(rec[ch].w[cc] + 16 * p));
  });
}

// ---------------------------------------------------------------- 2:4 sparse weights

// Lane j of window v reads activation 4*(j/2) + idx of the window's 32: (idx & 3) | base in
// one vpternlogd, then vpermt2ps picks from the two 16-float halves.
LLMOPT_KERNEL_INLINE __m512i keptIndex(__m512i meta, int v) {
  const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
  return _mm512_ternarylogic_epi32(_mm512_srli_epi32(meta, 2 * v), _mm512_set1_epi32(3), base,
                                   0xEA); // (A & B) | C
}

// Window v's 16 kept values of column c of a record, as f32. Int4: `vpermps` of the table
// (q - 8) * scale by the nibble shifted down by 4v (it reads only the index's low 4 bits).
template <SparseValues V, int BS>
LLMOPT_KERNEL_INLINE __m512 keptValues(const uint8_t *rec, int c, int v) {
  if constexpr (V == SparseValues::F32) {
    return _mm512_loadu_ps(reinterpret_cast<const Sparse24F32Record *>(rec)->v[c] + 16 * v);
  } else {
    constexpr size_t kScaleOffset = kTileCols * (kSparseKept / 2 + 32); // scaleOffset()
    const float scale =
        reinterpret_cast<const float *>(rec + kScaleOffset)[c * (kSparseSpan / BS) + 32 * v / BS];
    const __m512 steps = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    const __m512 table = _mm512_mul_ps(steps, _mm512_set1_ps(scale));
    const __m512i q = _mm512_loadu_si512(rec + c * (kSparseKept / 2));
    return _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4 * v), table);
  }
}

LLMOPT_KERNEL_INLINE __m512i loadMeta(const uint8_t *rec, size_t metaOffset, int c) {
  return _mm512_cvtepu16_epi32(
      _mm256_loadu_si256(reinterpret_cast<const __m256i *>(rec + metaOffset + 32 * c)));
}

// Per record: the 8 columns' metadata widened once; per 32-K window the activations loaded
// once and gathered for each column (8 independent FMA chains).
template <SparseValues V, int BS>
void sparseGemv(const Sparse24Job &job, int64_t tile, int64_t row) {
  const Sparse24Layout &l = job.w.layout;
  const size_t recBytes = l.recordBytes(), metaOffset = l.metaOffset();
  const float *a = job.act + row * job.kPadded;
  __m512 acc[kTileCols] = {};
  const uint8_t *rec = job.w.record(tile, 0);
  for (int64_t span = 0; span < l.spans(); ++span, rec += recBytes) {
    prefetchL2(rec + kPrefetchBytes, recBytes);
    const float *x = a + span * kSparseSpan;
    __m512i meta[kTileCols];
#pragma GCC unroll 8
    for (int cc = 0; cc < kTileCols; ++cc)
      meta[cc] = loadMeta(rec, metaOffset, cc);
#pragma GCC unroll 8
    for (int v = 0; v < 8; ++v) {
      const __m512 lo = _mm512_loadu_ps(x + 32 * v), hi = _mm512_loadu_ps(x + 32 * v + 16);
#pragma GCC unroll 8
      for (int cc = 0; cc < kTileCols; ++cc) {
        const __m512 g = _mm512_permutex2var_ps(lo, keptIndex(meta[cc], v), hi);
        acc[cc] = _mm512_fmadd_ps(keptValues<V, BS>(rec, cc, v), g, acc[cc]);
      }
    }
  }
  storeRow(job, tile, row, acc);
}

// Writes the 32 dense K of window v: dense lane d of half h takes slot s of group 4h + d/4
// (kept lane 8h + 2*(d/4) + s) where that slot's idx equals d % 4.
LLMOPT_KERNEL_INLINE void expandWindow(__m512 kept, __m512i idx, float *dst) {
  const __m512i pos = _mm512_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
  const __m512i slot0 = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
  for (int h = 0; h < 2; ++h) {
    const __m512i s0 = _mm512_add_epi32(slot0, _mm512_set1_epi32(8 * h));
    const __m512i s1 = _mm512_add_epi32(s0, _mm512_set1_epi32(1));
    const __mmask16 m0 = _mm512_cmpeq_epi32_mask(_mm512_permutexvar_epi32(s0, idx), pos);
    const __mmask16 m1 = _mm512_cmpeq_epi32_mask(_mm512_permutexvar_epi32(s1, idx), pos);
    const __m512 d = _mm512_mask_mov_ps(_mm512_maskz_mov_ps(m0, _mm512_permutexvar_ps(s0, kept)),
                                        m1, _mm512_permutexvar_ps(s1, kept));
    _mm512_storeu_ps(dst + 16 * h, d);
  }
}

template <SparseValues V, int BS>
void sparseTilesOf(const Sparse24Job &job, int64_t tb, int64_t te) {
  if (job.m == 1) {
    for (int64_t tile = tb; tile < te; ++tile)
      sparseGemv<V, BS>(job, tile, 0);
    return;
  }
  const Sparse24Layout &l = job.w.layout;
  const int64_t kp = job.kPadded;
  gemmTiles(job, tb, te, [&](int64_t tile, float *wd) {
    for (int64_t span = 0; span < l.spans(); ++span) {
      const uint8_t *rec = job.w.record(tile, span);
      for (int cc = 0; cc < kTileCols; ++cc) {
        const __m512i meta = loadMeta(rec, l.metaOffset(), cc);
        float *dst = wd + cc * kp + span * kSparseSpan;
        for (int v = 0; v < 8; ++v)
          expandWindow(keptValues<V, BS>(rec, cc, v),
                       _mm512_and_si512(_mm512_srli_epi32(meta, 2 * v), _mm512_set1_epi32(3)),
                       dst + 32 * v);
      }
    }
  });
}

} // namespace

void halfTiles(const HalfJob &job, int64_t tb, int64_t te) {
  if (job.w.layout.type == HalfType::Fp16)
    halfTilesOf<HalfType::Fp16>(job, tb, te);
  else
    halfTilesOf<HalfType::Bf16>(job, tb, te);
}

void sparse24Tiles(const Sparse24Job &job, int64_t tb, int64_t te) {
  if (job.w.layout.values == SparseValues::F32)
    return sparseTilesOf<SparseValues::F32, 32>(job, tb, te);
  switch (job.w.layout.blockSize) {
  case 32: return sparseTilesOf<SparseValues::Int4, 32>(job, tb, te);
  case 64: return sparseTilesOf<SparseValues::Int4, 64>(job, tb, te);
  case 128: return sparseTilesOf<SparseValues::Int4, 128>(job, tb, te);
  default: return sparseTilesOf<SparseValues::Int4, 256>(job, tb, te);
  }
}

} // namespace llmopt::cpu::detail::avx512

// AVX2+FMA (+F16C) kernels of the 16-bit and 2:4 sparse formats (f32 compute); this file
// alone is compiled with those flags and only runs when detectedIsa() reports them. Every
// row runs the GEMV over the tile (the tile, 8 columns × K, stays in L2 between rows): the
// AVX-512 variant is the fast one, this is the fallback for CPUs without it.
#include <immintrin.h>

#include "backend/cpu/kernels/HalfSparseInternal.h"

namespace llmopt::cpu::detail::avx2 {
namespace {

float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

template <class Job> void storeRow(const Job &job, int64_t tile, int64_t row, const __m256 *acc) {
  float out[kTileCols];
  for (int cc = 0; cc < kTileCols; ++cc)
    out[cc] = hsum(acc[cc]);
  storeTileRow(job.epilogue, job.c, job.ldc, job.w.layout.n, row, tile, out);
}

// A GEMV reads its weights once: fetch about 8 KiB ahead into L2.
constexpr size_t kPrefetchBytes = 8192;
inline void prefetchL2(const uint8_t *p, size_t bytes) {
  for (size_t line = 0; line < bytes; line += 64)
    _mm_prefetch(reinterpret_cast<const char *>(p) + line, _MM_HINT_T1);
}

// ---------------------------------------------------------------- 16-bit weights

template <HalfType T> LLMOPT_KERNEL_INLINE __m256 loadHalf(const uint16_t *p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
  if constexpr (T == HalfType::Fp16)
    return _mm256_cvtph_ps(h);
  else
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

template <HalfType T> void halfGemv(const HalfJob &job, int64_t tile, int64_t row) {
  const HalfRecord *rec = job.w.records(tile);
  const float *a = job.act + row * job.kPadded;
  __m256 acc[kTileCols] = {};
  for (int64_t ch = 0; ch < job.w.layout.chunks(); ++ch) {
    prefetchL2(reinterpret_cast<const uint8_t *>(rec + ch) + kPrefetchBytes, sizeof(HalfRecord));
    for (int p = 0; p < kHalfChunk / 8; ++p) {
      const __m256 x = _mm256_loadu_ps(a + ch * kHalfChunk + 8 * p);
#pragma GCC unroll 8
      for (int cc = 0; cc < kTileCols; ++cc)
        acc[cc] = _mm256_fmadd_ps(loadHalf<T>(rec[ch].w[cc] + 8 * p), x, acc[cc]);
    }
  }
  storeRow(job, tile, row, acc);
}

// ---------------------------------------------------------------- 2:4 sparse weights

// Kept lanes 8h..8h+7 of window v: lane jj reads activation 16h + 4*(jj/2) + idx of the
// window; lanes 0..3 from its first 8 floats, 4..7 from the next 8 (two vpermps + a blend).
LLMOPT_KERNEL_INLINE __m256 gatherKept(const float *window, __m256i meta, int v) {
  const __m256i idx = _mm256_or_si256(
      _mm256_and_si256(_mm256_srli_epi32(meta, 2 * v), _mm256_set1_epi32(3)),
      _mm256_setr_epi32(0, 0, 4, 4, 0, 0, 4, 4));
  return _mm256_blend_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(window), idx),
                         _mm256_permutevar8x32_ps(_mm256_loadu_ps(window + 8), idx), 0xF0);
}

template <SparseValues V, int BS>
void sparseGemv(const Sparse24Job &job, int64_t tile, int64_t row) {
  const Sparse24Layout &l = job.w.layout;
  const size_t recBytes = l.recordBytes();
  const float *a = job.act + row * job.kPadded;
  __m256 acc[kTileCols] = {};
  const uint8_t *rec = job.w.record(tile, 0);
  for (int64_t span = 0; span < l.spans(); ++span, rec += recBytes) {
    prefetchL2(rec + kPrefetchBytes, recBytes);
    const float *x = a + span * kSparseSpan;
    for (int cc = 0; cc < kTileCols; ++cc)
      for (int h = 0; h < 2; ++h) {
        const __m256i meta = _mm256_cvtepu16_epi32(_mm_loadu_si128(
            reinterpret_cast<const __m128i *>(rec + l.metaOffset() + 32 * cc + 16 * h)));
        [[maybe_unused]] __m256i q;
        if constexpr (V == SparseValues::Int4)
          q = _mm256_loadu_si256(
              reinterpret_cast<const __m256i *>(rec + cc * (kSparseKept / 2) + 32 * h));
#pragma GCC unroll 8
        for (int v = 0; v < 8; ++v) {
          __m256 w;
          if constexpr (V == SparseValues::F32) {
            w = _mm256_loadu_ps(reinterpret_cast<const Sparse24F32Record *>(rec)->v[cc] +
                                16 * v + 8 * h);
          } else {
            const float *scale = reinterpret_cast<const float *>(rec + l.scaleOffset());
            const __m256i qv = _mm256_sub_epi32(
                _mm256_and_si256(_mm256_srli_epi32(q, 4 * v), _mm256_set1_epi32(0xF)),
                _mm256_set1_epi32(8));
            w = _mm256_mul_ps(_mm256_cvtepi32_ps(qv),
                              _mm256_set1_ps(scale[cc * (kSparseSpan / BS) + 32 * v / BS]));
          }
          acc[cc] = _mm256_fmadd_ps(w, gatherKept(x + 32 * v + 16 * h, meta, v), acc[cc]);
        }
      }
  }
  storeRow(job, tile, row, acc);
}

} // namespace

void halfTiles(const HalfJob &job, int64_t tb, int64_t te) {
  for (int64_t tile = tb; tile < te; ++tile)
    for (int64_t row = 0; row < job.m; ++row)
      if (job.w.layout.type == HalfType::Fp16)
        halfGemv<HalfType::Fp16>(job, tile, row);
      else
        halfGemv<HalfType::Bf16>(job, tile, row);
}

void sparse24Tiles(const Sparse24Job &job, int64_t tb, int64_t te) {
  auto run = [&]<SparseValues V, int BS>() {
    for (int64_t tile = tb; tile < te; ++tile)
      for (int64_t row = 0; row < job.m; ++row)
        sparseGemv<V, BS>(job, tile, row);
  };
  if (job.w.layout.values == SparseValues::F32)
    return run.template operator()<SparseValues::F32, 32>();
  switch (job.w.layout.blockSize) {
  case 32: return run.template operator()<SparseValues::Int4, 32>();
  case 64: return run.template operator()<SparseValues::Int4, 64>();
  case 128: return run.template operator()<SparseValues::Int4, 128>();
  default: return run.template operator()<SparseValues::Int4, 256>();
  }
}

} // namespace llmopt::cpu::detail::avx2

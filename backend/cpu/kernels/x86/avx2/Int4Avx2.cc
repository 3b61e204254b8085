// AVX2+FMA kernels; this file alone is compiled with those flags and only runs when
// detectedIsa() reports them. Same structure as the AVX-512 variant with each 16-lane
// vector split into two 8-lane halves; both halves add into one accumulator per output.
// Int8 dots use maddubs: four steps of u8 nibbles (<= 15) × s8 activations (|a| <= 127)
// sum to at most 15240 per i16 lane, so they are added before one madd to 32 bits; the
// float step comes once per superblock (up to 1024 weights).
#include <immintrin.h>

#include <cstring>

#include "backend/cpu/kernels/KernelsInternal.h"

namespace llmopt::cpu::detail::avx2 {
namespace {

// A GEMV streams its weights: fetch whole records ahead, as far as 8 256-weight records.
LLMOPT_KERNEL_INLINE void prefetchRecord(const Int4Layout &l, const uint8_t *rec, size_t bytes) {
  const uint8_t *ahead = rec + 8 * l.recordBytes(kInt4Super);
  for (size_t line = 0; line < bytes; line += 64)
    _mm_prefetch(reinterpret_cast<const char *>(ahead) + line, _MM_HINT_T1);
}

float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}
int32_t hsum(__m256i v) {
  const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i t = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  return _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1)));
}

// Lanes 8h..8h+7 of a 16-lane expansion (lane l -> value l/LB of G = 16/LB at p).
template <int LB> __m256 expandScales(const float *p, int h) {
  if constexpr (LB == 1) {
    return _mm256_loadu_ps(p + 8 * h);
  } else if constexpr (LB >= 8) {
    return _mm256_broadcast_ss(p + 8 * h / LB);
  } else if constexpr (LB == 2) {
    const __m256 v = _mm256_castps128_ps256(_mm_loadu_ps(p + 4 * h));
    return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
  } else {
    const __m256 v = _mm256_castps128_ps256(
        _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double *>(p + 2 * h))));
    return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
  }
}
template <int LB> __m256 expandZeroPoints(const uint8_t *p, int h) {
  alignas(32) float z[8];
  for (int l = 0; l < 8; ++l)
    z[l] = p[(8 * h + l) / LB];
  return _mm256_load_ps(z);
}

template <int MR, int NC>
void storeTile(const Int4Job &job, int64_t tile, int64_t row0, int col0, const __m256 (&tot)[MR][NC]) {
  for (int r = 0; r < MR; ++r)
    for (int cc = 0; cc < NC; ++cc)
      storeOutput(job.epilogue, job.c, job.ldc, job.w.layout.n, row0 + r,
                  tile * kTileCols + col0 + cc, hsum(tot[r][cc]));
}

// Column col's scales (and zero points) in a record of S weights, L lanes per block.
template <int L, bool Asym, int S> struct Column {
  __m256 scale[2], zp[2];
  Column(const uint8_t *rec, int col) {
    constexpr int G = 16 / L;
    constexpr size_t kScaleOffset = kTileCols * S / 2;
    const float *s = reinterpret_cast<const float *>(rec + kScaleOffset) + col * G;
    const uint8_t *z = rec + kScaleOffset + kTileCols * G * sizeof(float) + col * G;
    for (int h = 0; h < 2; ++h) {
      scale[h] = expandScales<L>(s, h);
      if constexpr (Asym)
        zp[h] = expandZeroPoints<L>(z, h);
    }
  }
  // zp * lane_sum(a): the prepared sums of a symmetric layout already carry the factor 8.
  __m256 zeroPointTerm(int h, __m256 laneSum) const {
    if constexpr (Asym)
      return _mm256_mul_ps(zp[h], laneSum);
    return laneSum;
  }
};

template <int LB, bool Asym, int MR, int NC>
void int8Kernel(const Int4Job &job, int64_t tile, int64_t row0, int col0) {
  const Int4Activations &act = *job.act;
  const Int4Layout &l = job.w.layout;
  const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  __m256 tot[MR][NC] = {};
  forEachSuper<LB>(l, job.w.record(tile, 0), [&]<int S, int L>(int64_t s, const uint8_t *rec) {
    if constexpr (MR == 1)
      prefetchRecord(l, rec, l.recordBytes(S));
    const int8_t *a[MR];
    for (int r = 0; r < MR; ++r)
      a[r] = act.qAt(row0 + r, s);
#pragma GCC unroll 8
    for (int cc = 0; cc < NC; ++cc) {
      const uint8_t *q = rec + (col0 + cc) * (S / 2);
      const Column<L, Asym, S> col(rec, col0 + cc);
      for (int h = 0; h < 2; ++h) {
        __m256i d[MR];
        for (auto &x : d)
          x = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int quad = 0; quad < S / 256; ++quad) { // 4 steps: i16 sums cannot overflow
          const uint8_t *p = q + 128 * quad + 32 * h;
          const __m256i c0 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
          const __m256i c1 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + 64));
          const __m256i v[4] = {_mm256_and_si256(c0, low),
                                _mm256_and_si256(_mm256_srli_epi16(c0, 4), low),
                                _mm256_and_si256(c1, low),
                                _mm256_and_si256(_mm256_srli_epi16(c1, 4), low)};
#pragma GCC unroll 4
          for (int r = 0; r < MR; ++r) {
            const int8_t *x = a[r] + 256 * quad + 32 * h;
            __m256i p16 = _mm256_setzero_si256();
            for (int j = 0; j < 4; ++j)
              p16 = _mm256_add_epi16(p16, _mm256_maddubs_epi16(v[j], _mm256_loadu_si256(
                                                    reinterpret_cast<const __m256i *>(x + 64 * j))));
            d[r] = _mm256_add_epi32(d[r], _mm256_madd_epi16(p16, ones));
          }
        }
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r) {
          const __m256 zpSum =
              col.zeroPointTerm(h, _mm256_loadu_ps(act.sumAt(row0 + r, s, S) + 8 * h));
          const __m256 aScale = _mm256_loadu_ps(act.scaleAt(row0 + r, s, S) + 8 * h);
          const __m256 t = _mm256_fmsub_ps(_mm256_cvtepi32_ps(d[r]), aScale, zpSum);
          tot[r][cc] = _mm256_fmadd_ps(t, col.scale[h], tot[r][cc]);
        }
      }
    }
  });
  storeTile<MR, NC>(job, tile, row0, col0, tot);
}

// F32: every 256 weights tot += sum(q*a) * w_scale, once per superblock
// tot -= zp * lane_sum(a) * w_scale.
template <int LB, bool Asym, int MR, int NC>
void f32Kernel(const Int4Job &job, int64_t tile, int64_t row0, int col0) {
  const Int4Activations &act = *job.act;
  const Int4Layout &l = job.w.layout;
  const __m256i low = _mm256_set1_epi32(0xF);
  __m256 tot[MR][NC] = {};
  forEachSuper<LB>(l, job.w.record(tile, 0), [&]<int S, int L>(int64_t s, const uint8_t *rec) {
    if constexpr (MR == 1)
      prefetchRecord(l, rec, l.recordBytes(S));
#pragma GCC unroll 8
    for (int cc = 0; cc < NC; ++cc) {
      const uint8_t *q = rec + (col0 + cc) * (S / 2);
      const Column<L, Asym, S> col(rec, col0 + cc);
      for (int h = 0; h < 2; ++h) {
        for (int pair = 0; pair < S / 256; ++pair) {
          __m256 acc[MR];
          for (auto &x : acc)
            x = _mm256_setzero_ps();
          for (int half = 0; half < 2; ++half) {
            const int chunk = 2 * pair + half;
            const __m256i x =
                _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q + 64 * chunk + 32 * h));
#pragma GCC unroll 8
            for (int v = 0; v < 8; ++v) {
              const int shift = 8 * (v / 2) + 4 * (v % 2);
              const __m256 w = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(x, shift), low));
#pragma GCC unroll 4
              for (int r = 0; r < MR; ++r)
                acc[r] = _mm256_fmadd_ps(
                    w, _mm256_loadu_ps(act.fAt(row0 + r, s) + (8 * chunk + v) * 16 + 8 * h), acc[r]);
            }
          }
#pragma GCC unroll 4
          for (int r = 0; r < MR; ++r)
            tot[r][cc] = _mm256_fmadd_ps(acc[r], col.scale[h], tot[r][cc]);
        }
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r)
          tot[r][cc] = _mm256_fnmadd_ps(
              col.zeroPointTerm(h, _mm256_loadu_ps(act.sumAt(row0 + r, s, S) + 8 * h)),
              col.scale[h], tot[r][cc]);
      }
    }
  });
  storeTile<MR, NC>(job, tile, row0, col0, tot);
}

// Rows in pairs (2×4 outputs per microkernel call: 16 ymm registers), a last odd row alone
// over all 8 columns of a record at once.
struct Variant {
template <int LB, bool Asym, bool Int8> static void tiles(const Int4Job &job, int64_t tb, int64_t te) {
  for (int64_t tile = tb; tile < te; ++tile) {
    int64_t row = 0;
    auto run = [&]<int MR, int NC>() {
      for (int col0 = 0; col0 < kTileCols; col0 += NC)
        if constexpr (Int8)
          int8Kernel<LB, Asym, MR, NC>(job, tile, row, col0);
        else
          f32Kernel<LB, Asym, MR, NC>(job, tile, row, col0);
      row += MR;
    };
    for (; row + 2 <= job.m;)
      run.template operator()<2, 4>();
    if (row < job.m)
      run.template operator()<1, 8>(); // one pass over each record
  }
}
};

} // namespace

void int4Tiles(const Int4Job &job, int64_t tb, int64_t te) { dispatchInt4<Variant>(job, tb, te); }

// Int8 per-channel weights: maddubs(|w|, sign(a, w)) keeps every i16 pair sum <= 2*127*127.
void int8Tiles(const Int8Job &job, int64_t tb, int64_t te) {
  const Int8Activations &act = *job.act;
  const int64_t chunks = job.w.layout.chunks();
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80)), ones = _mm256_set1_epi16(1);
  for (int64_t tile = tb; tile < te; ++tile) {
    const Int8Record *rec = job.w.records(tile);
    const Int8TileFooter *foot = job.w.footer(tile);
    for (int64_t row = 0; row < job.m; ++row) {
      float out[kTileCols];
      if (job.compute == Compute::Int8) {
        const uint8_t *a = act.q.data() + row * act.kPadded;
        __m256i acc[kTileCols];
        for (auto &x : acc)
          x = _mm256_setzero_si256();
        for (int64_t ch = 0; ch < chunks; ++ch)
          for (int h = 0; h < 2; ++h) {
            const __m256i av = _mm256_xor_si256(
                _mm256_loadu_si256(reinterpret_cast<const __m256i *>(a + ch * kInt8Chunk + 32 * h)),
                flip);
            for (int c = 0; c < kTileCols; ++c) {
              const __m256i w =
                  _mm256_loadu_si256(reinterpret_cast<const __m256i *>(rec[ch].q[c] + 32 * h));
              const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(av, w));
              acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(p, ones));
            }
          }
        for (int c = 0; c < kTileCols; ++c)
          out[c] = act.scale[row] * foot->scale[c] * static_cast<float>(hsum(acc[c]));
      } else {
        const float *a = act.f.data() + row * act.kPadded;
        __m256 acc[kTileCols];
        for (auto &x : acc)
          x = _mm256_setzero_ps();
        for (int64_t ch = 0; ch < chunks; ++ch)
          for (int part = 0; part < 8; ++part) {
            const __m256 av = _mm256_loadu_ps(a + ch * kInt8Chunk + 8 * part);
            for (int c = 0; c < kTileCols; ++c) {
              int64_t bytes;
              std::memcpy(&bytes, rec[ch].q[c] + 8 * part, 8);
              const __m256i w = _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(bytes));
              acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(w), av, acc[c]);
            }
          }
        for (int c = 0; c < kTileCols; ++c)
          out[c] = hsum(acc[c]) * foot->scale[c];
      }
      for (int c = 0; c < kTileCols; ++c)
        storeOutput(job.epilogue, job.c, job.ldc, job.w.layout.n, row, tile * kTileCols + c, out[c]);
    }
  }
}

} // namespace llmopt::cpu::detail::avx2

// AVX2+FMA kernels; this file alone is compiled with those flags and only runs when
// detectedIsa() reports them. Same structure as the AVX-512 variant with each 16-lane
// vector split into two 8-lane halves; both halves add into one accumulator per output.
// Int8 dots use maddubs: four steps of u8 nibbles (<= 15) × s8 activations (|a| <= 127)
// sum to at most 15240 per i16 lane, so they are added before one madd to 32 bits.
#include <immintrin.h>

#include <cstring>

#include "backend/cpu/kernels/KernelsInternal.h"

namespace llmopt::cpu::detail::avx2 {
namespace {

constexpr size_t kScaleOffset = kTileCols * kInt4Super / 2;

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

template <int LB, bool Asym> struct Column {
  __m256 scale[2], zp[2];
  Column(const uint8_t *rec, int col) {
    constexpr int G = 16 / LB;
    const float *s = reinterpret_cast<const float *>(rec + kScaleOffset) + col * G;
    const uint8_t *z = rec + kScaleOffset + kTileCols * G * sizeof(float) + col * G;
    for (int h = 0; h < 2; ++h) {
      scale[h] = expandScales<LB>(s, h);
      if constexpr (Asym)
        zp[h] = expandZeroPoints<LB>(z, h);
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
  const int64_t supers = act.supers;
  const size_t recBytes = job.w.layout.recordBytes();
  const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  __m256 tot[MR][NC] = {};
  const uint8_t *rec = job.w.record(tile, 0);
  for (int64_t s = 0; s < supers; ++s, rec += recBytes) {
    if constexpr (MR == 1) // a GEMV streams its weights: fetch whole records ahead
      for (size_t line = 0; line < recBytes; line += 64)
        _mm_prefetch(reinterpret_cast<const char *>(rec + 8 * recBytes) + line, _MM_HINT_T0);
#pragma GCC unroll 8
    for (int cc = 0; cc < NC; ++cc) {
      const uint8_t *q = rec + (col0 + cc) * (kInt4Super / 2);
      const Column<LB, Asym> col(rec, col0 + cc);
      for (int h = 0; h < 2; ++h) {
        const __m256i c0 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q + 32 * h));
        const __m256i c1 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q + 64 + 32 * h));
        const __m256i v[4] = {_mm256_and_si256(c0, low),
                              _mm256_and_si256(_mm256_srli_epi16(c0, 4), low),
                              _mm256_and_si256(c1, low),
                              _mm256_and_si256(_mm256_srli_epi16(c1, 4), low)};
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r) {
          const int8_t *a = act.qAt(row0 + r, s) + 32 * h;
          __m256i p16 = _mm256_setzero_si256();
          for (int j = 0; j < 4; ++j)
            p16 = _mm256_add_epi16(p16, _mm256_maddubs_epi16(v[j], _mm256_loadu_si256(
                                                  reinterpret_cast<const __m256i *>(a + 64 * j))));
          const __m256 d = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
          const __m256 zpSum = col.zeroPointTerm(h, _mm256_loadu_ps(act.sumAt(row0 + r, s) + 8 * h));
          const __m256 t =
              _mm256_fmsub_ps(d, _mm256_loadu_ps(act.scaleAt(row0 + r, s) + 8 * h), zpSum);
          tot[r][cc] = _mm256_fmadd_ps(t, col.scale[h], tot[r][cc]);
        }
      }
    }
  }
  storeTile<MR, NC>(job, tile, row0, col0, tot);
}

template <int LB, bool Asym, int MR, int NC>
void f32Kernel(const Int4Job &job, int64_t tile, int64_t row0, int col0) {
  const Int4Activations &act = *job.act;
  const int64_t supers = act.supers;
  const size_t recBytes = job.w.layout.recordBytes();
  const __m256i low = _mm256_set1_epi32(0xF);
  __m256 tot[MR][NC] = {};
  const uint8_t *rec = job.w.record(tile, 0);
  for (int64_t s = 0; s < supers; ++s, rec += recBytes) {
    if constexpr (MR == 1) // a GEMV streams its weights: fetch whole records ahead
      for (size_t line = 0; line < recBytes; line += 64)
        _mm_prefetch(reinterpret_cast<const char *>(rec + 8 * recBytes) + line, _MM_HINT_T0);
#pragma GCC unroll 8
    for (int cc = 0; cc < NC; ++cc) {
      const uint8_t *q = rec + (col0 + cc) * (kInt4Super / 2);
      const Column<LB, Asym> col(rec, col0 + cc);
      for (int h = 0; h < 2; ++h) {
        __m256 acc[MR];
        for (auto &x : acc)
          x = _mm256_setzero_ps();
        for (int chunk = 0; chunk < 2; ++chunk) {
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
        for (int r = 0; r < MR; ++r) {
          const __m256 t = _mm256_sub_ps(
              acc[r], col.zeroPointTerm(h, _mm256_loadu_ps(act.sumAt(row0 + r, s) + 8 * h)));
          tot[r][cc] = _mm256_fmadd_ps(t, col.scale[h], tot[r][cc]);
        }
      }
    }
  }
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

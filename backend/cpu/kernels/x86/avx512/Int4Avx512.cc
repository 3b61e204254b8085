// AVX-512 (F/BW/VL/VNNI) kernels; this file alone is compiled with those flags and only
// runs when detectedIsa() reports them. GEMV: one pass over each record, 8 columns in turn.
// Int8 GEMM: MR rows × NC columns of a tile per call, nibbles unpacked once per column and
// step and reused by the MR rows. In both, per superblock the 16 lanes (each inside one
// block) are scaled into one f32 accumulator per output, reduced horizontally at the end.
// F32 GEMM: each tile dequantized once into a buffer, then plain FMA.
#include <immintrin.h>

#include <algorithm>

#include "backend/cpu/kernels/KernelsInternal.h"

// GCC 12 reports its own _mm512_undefined_* placeholders inside avx512fintrin.h.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace llmopt::cpu::detail::avx512 {
namespace {

constexpr size_t kScaleOffset = kTileCols * kInt4Super / 2;

// Lane l -> its block's value: G = 16/LB values, each repeated LB times.
template <int LB> __m512 expandLanes(__m512 v) {
  if constexpr (LB == 1)
    return v;
  const __m512i idx = _mm512_srli_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), __builtin_ctz(LB));
  return _mm512_permutexvar_ps(idx, v);
}
template <int LB> __m512 expandScales(const float *p) {
  return expandLanes<LB>(_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << (16 / LB)) - 1), p));
}
template <int LB> __m512 expandZeroPoints(const uint8_t *p) {
  const __m128i b = _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << (16 / LB)) - 1), p);
  return expandLanes<LB>(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b)));
}

template <int MR, int NC>
void storeTile(const Int4Job &job, int64_t tile, int64_t row0, int col0, const __m512 (&tot)[MR][NC]) {
  for (int r = 0; r < MR; ++r)
    for (int cc = 0; cc < NC; ++cc)
      storeOutput(job.epilogue, job.c, job.ldc, job.w.layout.n, row0 + r,
                  tile * kTileCols + col0 + cc, _mm512_reduce_add_ps(tot[r][cc]));
}

// A GEMV streams its weights once: fetch a whole record ahead (the hardware prefetchers
// stop at page ends and do not run far enough ahead on their own).
inline void prefetchRecord(const uint8_t *rec, size_t bytes) {
  for (size_t line = 0; line < bytes; line += 64)
    _mm_prefetch(reinterpret_cast<const char *>(rec) + line, _MM_HINT_T0);
}
constexpr int kPrefetchRecords = 8;

// The low nibble of each 32-bit lane as a float: vpermps reads only the index's low 4 bits,
// so one permute of the table 0..15 replaces mask + convert.
inline __m512 nibbleToFloat(__m512i x) {
  const __m512 table = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return _mm512_permutexvar_ps(x, table);
}

template <int LB, bool Asym> struct Column {
  __m512 scale, zp;
  Column(const uint8_t *rec, int col) {
    constexpr int G = 16 / LB;
    scale = expandScales<LB>(reinterpret_cast<const float *>(rec + kScaleOffset) + col * G);
    if constexpr (Asym)
      zp = expandZeroPoints<LB>(rec + kScaleOffset + kTileCols * G * sizeof(float) + col * G);
    else
      zp = _mm512_set1_ps(8.f);
  }
  // zp * lane_sum(a): the prepared sums of a symmetric layout already carry the factor 8.
  __m512 zeroPointTerm(__m512 laneSum) const {
    if constexpr (Asym)
      return _mm512_mul_ps(zp, laneSum);
    return laneSum;
  }
};

// Int8 activations: per superblock, step j's nibbles of NC columns are unpacked once and
// each row's 64 activation bytes are loaded once, feeding MR×NC vpdpbusd (u8 nibbles ×
// s8 activations); then tot += (dot * a_scale - zp * lane_sum(a) * a_scale) * w_scale.
template <int LB, bool Asym, int MR, int NC>
void int8Kernel(const Int4Job &job, int64_t tile, int64_t row0, int col0) {
  const Int4Activations &act = *job.act;
  const int64_t supers = act.supers;
  const size_t recBytes = job.w.layout.recordBytes();
  const __m512i low = _mm512_set1_epi8(0x0F);
  __m512 tot[MR][NC] = {};
  const uint8_t *rec = job.w.record(tile, 0);
  for (int64_t s = 0; s < supers; ++s, rec += recBytes) {
    __m512i d[MR][NC], chunk[NC];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      __m512i v[NC];
#pragma GCC unroll 8
      for (int cc = 0; cc < NC; ++cc) {
        if (j % 2 == 0)
          chunk[cc] = _mm512_loadu_si512(rec + (col0 + cc) * (kInt4Super / 2) + 32 * j);
        v[cc] = _mm512_and_si512(j % 2 ? _mm512_srli_epi16(chunk[cc], 4) : chunk[cc], low);
      }
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        const __m512i a = _mm512_loadu_si512(act.qAt(row0 + r, s) + 64 * j);
#pragma GCC unroll 8
        for (int cc = 0; cc < NC; ++cc)
          d[r][cc] = _mm512_dpbusd_epi32(j ? d[r][cc] : _mm512_setzero_si512(), v[cc], a);
      }
    }
#pragma GCC unroll 8
    for (int cc = 0; cc < NC; ++cc) {
      const Column<LB, Asym> col(rec, col0 + cc);
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        const __m512 zpSum = col.zeroPointTerm(_mm512_loadu_ps(act.sumAt(row0 + r, s)));
        const __m512 t = _mm512_fmsub_ps(_mm512_cvtepi32_ps(d[r][cc]),
                                         _mm512_loadu_ps(act.scaleAt(row0 + r, s)), zpSum);
        tot[r][cc] = _mm512_fmadd_ps(t, col.scale, tot[r][cc]);
      }
    }
  }
  storeTile<MR, NC>(job, tile, row0, col0, tot);
}

// Int8 GEMV (one row): the record's 8 columns one after another, the row's four step
// vectors held in registers, the whole record prefetched ahead: one stream per thread.
template <int LB, bool Asym> void int8Gemv(const Int4Job &job, int64_t tile, int64_t row) {
  const Int4Activations &act = *job.act;
  const size_t recBytes = job.w.layout.recordBytes();
  const __m512i low = _mm512_set1_epi8(0x0F);
  __m512 tot[1][kTileCols] = {};
  const uint8_t *rec = job.w.record(tile, 0);
  for (int64_t s = 0; s < act.supers; ++s, rec += recBytes) {
    prefetchRecord(rec + kPrefetchRecords * recBytes, recBytes);
    const int8_t *a = act.qAt(row, s);
    const __m512i a0 = _mm512_loadu_si512(a), a1 = _mm512_loadu_si512(a + 64);
    const __m512i a2 = _mm512_loadu_si512(a + 128), a3 = _mm512_loadu_si512(a + 192);
    const __m512 scale = _mm512_loadu_ps(act.scaleAt(row, s));
    const __m512 sum = _mm512_loadu_ps(act.sumAt(row, s));
#pragma GCC unroll 8
    for (int cc = 0; cc < kTileCols; ++cc) {
      const uint8_t *q = rec + cc * (kInt4Super / 2);
      const __m512i c0 = _mm512_loadu_si512(q), c1 = _mm512_loadu_si512(q + 64);
      __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(c0, low), a0);
      d = _mm512_dpbusd_epi32(d, _mm512_and_si512(_mm512_srli_epi16(c0, 4), low), a1);
      d = _mm512_dpbusd_epi32(d, _mm512_and_si512(c1, low), a2);
      d = _mm512_dpbusd_epi32(d, _mm512_and_si512(_mm512_srli_epi16(c1, 4), low), a3);
      const Column<LB, Asym> col(rec, cc);
      const __m512 t = _mm512_fmsub_ps(_mm512_cvtepi32_ps(d), scale, col.zeroPointTerm(sum));
      tot[0][cc] = _mm512_fmadd_ps(t, col.scale, tot[0][cc]);
    }
  }
  storeTile<1, kTileCols>(job, tile, row, 0, tot);
}

// F32 GEMV (one row): nibble (byte b, half h) of every 32-bit word is shifted out as 16
// ints, converted and FMA'd with the activations prepared in that order; then
// tot += (sum(q*a) - zp * lane_sum(a)) * w_scale.
template <int LB, bool Asym> void f32Gemv(const Int4Job &job, int64_t tile, int64_t row) {
  const Int4Activations &act = *job.act;
  const size_t recBytes = job.w.layout.recordBytes();
  __m512 tot[1][kTileCols] = {};
  const uint8_t *rec = job.w.record(tile, 0);
  for (int64_t s = 0; s < act.supers; ++s, rec += recBytes) {
    prefetchRecord(rec + kPrefetchRecords * recBytes, recBytes);
    const float *a = act.fAt(row, s);
#pragma GCC unroll 8
    for (int cc = 0; cc < kTileCols; ++cc) {
      const uint8_t *q = rec + cc * (kInt4Super / 2);
      __m512 acc = _mm512_setzero_ps();
      for (int chunk = 0; chunk < 2; ++chunk) {
        const __m512i x = _mm512_loadu_si512(q + 64 * chunk);
#pragma GCC unroll 8
        for (int v = 0; v < 8; ++v) {
          const __m512 q = nibbleToFloat(_mm512_srli_epi32(x, 8 * (v / 2) + 4 * (v % 2)));
          acc = _mm512_fmadd_ps(q, _mm512_loadu_ps(a + (8 * chunk + v) * 16), acc);
        }
      }
      const Column<LB, Asym> col(rec, cc);
      const __m512 t = _mm512_sub_ps(acc, col.zeroPointTerm(_mm512_loadu_ps(act.sumAt(row, s))));
      tot[0][cc] = _mm512_fmadd_ps(t, col.scale, tot[0][cc]);
    }
  }
  storeTile<1, kTileCols>(job, tile, row, 0, tot);
}

// F32 GEMM (M > 1): a tile's weights are dequantized once, w = (q - zp) * scale in lane order,
// into a per-thread buffer (8 columns × K floats; 128 KiB at K = 4096, in L2), then every
// row group runs a pure FMA microkernel over it: 16 lanes per output, one horizontal sum.
template <int LB, bool Asym> void dequantizeTile(const Int4Job &job, int64_t tile, float *out) {
  const int64_t supers = job.act->supers;
  const size_t recBytes = job.w.layout.recordBytes();
  const uint8_t *rec = job.w.record(tile, 0);
  for (int64_t s = 0; s < supers; ++s, rec += recBytes)
    for (int cc = 0; cc < kTileCols; ++cc) {
      const Column<LB, Asym> col(rec, cc);
      const __m512 zpScale = _mm512_mul_ps(col.zp, col.scale);
      float *dst = out + (cc * supers + s) * kInt4Super;
      for (int chunk = 0; chunk < 2; ++chunk) {
        const __m512i x = _mm512_loadu_si512(rec + cc * (kInt4Super / 2) + 64 * chunk);
#pragma GCC unroll 8
        for (int v = 0; v < 8; ++v) {
          const __m512 q = nibbleToFloat(_mm512_srli_epi32(x, 8 * (v / 2) + 4 * (v % 2)));
          _mm512_storeu_ps(dst + (8 * chunk + v) * 16, _mm512_fmsub_ps(q, col.scale, zpScale));
        }
      }
    }
}

template <int MR, int NC>
void f32Microkernel(const Int4Job &job, const float *wd, int64_t tile, int64_t row0, int col0) {
  const int64_t supers = job.act->supers;
  __m512 acc[MR][NC] = {};
  for (int64_t s = 0; s < supers; ++s) {
    const float *w = wd + s * kInt4Super;
    for (int v = 0; v < 16; ++v) {
      __m512 wv[NC];
#pragma GCC unroll 4
      for (int cc = 0; cc < NC; ++cc)
        wv[cc] = _mm512_loadu_ps(w + (col0 + cc) * supers * kInt4Super + v * 16);
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        const __m512 x = _mm512_loadu_ps(job.act->fAt(row0 + r, s) + v * 16);
#pragma GCC unroll 4
        for (int cc = 0; cc < NC; ++cc)
          acc[r][cc] = _mm512_fmadd_ps(wv[cc], x, acc[r][cc]);
      }
    }
  }
  storeTile<MR, NC>(job, tile, row0, col0, acc);
}

template <int LB, bool Asym> void f32GemmTiles(const Int4Job &job, int64_t tb, int64_t te) {
  float *wd = threadScratch(kTileCols * job.act->supers * kInt4Super);
  for (int64_t tile = tb; tile < te; ++tile) {
    dequantizeTile<LB, Asym>(job, tile, wd);
    int64_t row = 0;
    auto run = [&]<int MR>() {
      for (int col0 = 0; col0 < kTileCols; col0 += 4)
        f32Microkernel<MR, 4>(job, wd, tile, row, col0);
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

// Int8: rows in groups of 4 (4×2 outputs per microkernel call), the rest 1..3 at a time, one
// row through int8Gemv. Tiles are taken in blocks of about 256 KiB of weights that stay in
// L2 while every row group passes over them, so each row group's activations stay in L1.
template <int LB, bool Asym> void int8Tiles(const Int4Job &job, int64_t tb, int64_t te) {
  const int64_t tileBytes = job.w.layout.recordBytes() * job.w.layout.supers();
  const int64_t block = std::max<int64_t>(1, (256 << 10) / tileBytes);
  for (int64_t t0 = tb; t0 < te; t0 += block) {
    const int64_t t1 = std::min(te, t0 + block);
    int64_t row = 0;
    auto run = [&]<int MR, int NC>() {
      for (int64_t tile = t0; tile < t1; ++tile)
        for (int col0 = 0; col0 < kTileCols; col0 += NC)
          int8Kernel<LB, Asym, MR, NC>(job, tile, row, col0);
      row += MR;
    };
    for (; row + 4 <= job.m;)
      run.template operator()<4, 2>();
    switch (job.m - row) {
    case 3: run.template operator()<3, 2>(); break;
    case 2: run.template operator()<2, 4>(); break;
    case 1:
      for (int64_t tile = t0; tile < t1; ++tile)
        int8Gemv<LB, Asym>(job, tile, row);
      break;
    default: break;
    }
  }
}

struct Variant {
  template <int LB, bool Asym, bool Int8>
  static void tiles(const Int4Job &job, int64_t tb, int64_t te) {
    if constexpr (Int8) {
      int8Tiles<LB, Asym>(job, tb, te);
    } else if (job.m == 1) {
      for (int64_t tile = tb; tile < te; ++tile)
        f32Gemv<LB, Asym>(job, tile, 0);
    } else {
      f32GemmTiles<LB, Asym>(job, tb, te);
    }
  }
};

} // namespace

void int4Tiles(const Int4Job &job, int64_t tb, int64_t te) { dispatchInt4<Variant>(job, tb, te); }

// Int8 per-channel weights: u8 (q_a + 128) × s8 weights, minus 128 * sum(q_w) at the end.
void int8Tiles(const Int8Job &job, int64_t tb, int64_t te) {
  const Int8Activations &act = *job.act;
  const int64_t chunks = job.w.layout.chunks();
  for (int64_t tile = tb; tile < te; ++tile) {
    const Int8Record *rec = job.w.records(tile);
    const Int8TileFooter *foot = job.w.footer(tile);
    for (int64_t row = 0; row < job.m; ++row) {
      float out[kTileCols];
      if (job.compute == Compute::Int8) {
        const uint8_t *a = act.q.data() + row * act.kPadded;
        __m512i acc[kTileCols];
        for (auto &x : acc)
          x = _mm512_setzero_si512();
        for (int64_t ch = 0; ch < chunks; ++ch) {
          const __m512i av = _mm512_loadu_si512(a + ch * kInt8Chunk);
          for (int c = 0; c < kTileCols; ++c)
            acc[c] = _mm512_dpbusd_epi32(acc[c], av, _mm512_loadu_si512(rec[ch].q[c]));
        }
        for (int c = 0; c < kTileCols; ++c) {
          const int32_t dot = _mm512_reduce_add_epi32(acc[c]) - 128 * foot->qSum[c];
          out[c] = act.scale[row] * foot->scale[c] * static_cast<float>(dot);
        }
      } else {
        const float *a = act.f.data() + row * act.kPadded;
        __m512 acc[kTileCols];
        for (auto &x : acc)
          x = _mm512_setzero_ps();
        for (int64_t ch = 0; ch < chunks; ++ch)
          for (int part = 0; part < 4; ++part) {
            const __m512 av = _mm512_loadu_ps(a + ch * kInt8Chunk + 16 * part);
            for (int c = 0; c < kTileCols; ++c) {
              const __m128i w = _mm_loadu_si128(
                  reinterpret_cast<const __m128i *>(rec[ch].q[c] + 16 * part));
              acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(w)), av, acc[c]);
            }
          }
        for (int c = 0; c < kTileCols; ++c)
          out[c] = _mm512_reduce_add_ps(acc[c]) * foot->scale[c];
      }
      for (int c = 0; c < kTileCols; ++c)
        storeOutput(job.epilogue, job.c, job.ldc, job.w.layout.n, row, tile * kTileCols + c, out[c]);
    }
  }
}

} // namespace llmopt::cpu::detail::avx512

// AVX-512 (F/BW/VL/VNNI) kernels; this file alone is compiled with those flags and only
// runs when detectedIsa() reports them. GEMV: one pass over each record, 8 columns in turn.
// Int8 GEMM: 4 rows × 4 columns of a tile per call, nibbles unpacked once per column and
// step and reused by the rows. In both, per superblock (up to 1024 weights, 16 steps)
// the 16 lanes (each inside one block) are converted and scaled into one f32 accumulator
// per output, reduced horizontally at the end. F32 GEMM: each tile dequantized once into a
// buffer, then plain FMA.
#include <immintrin.h>

#include <algorithm>

#include "backend/cpu/kernels/KernelsInternal.h"

// GCC 12 reports its own _mm512_undefined_* placeholders inside avx512fintrin.h.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace llmopt::cpu::detail::avx512 {
namespace {

// Lane l -> its block's value: G = 16/LB values, each repeated LB times.
template <int LB> __m512 expandLanes(__m512 v) {
  if constexpr (LB == 1)
    return v;
  const __m512i idx = _mm512_srli_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), __builtin_ctz(LB));
  return _mm512_permutexvar_ps(idx, v);
}
template <int LB> __m512 expandScales(const float *p) {
  if constexpr (LB == 1)
    return _mm512_loadu_ps(p);
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
// stop at page ends and do not run far enough ahead on their own), as far ahead as 8
// 256-weight records, into L2: bursts of L1 prefetches over the larger records (up to
// 4.4 KiB) cut the DRAM stream of the block-32 GEMV by a third.
inline void prefetchRecord(const uint8_t *rec, size_t bytes) {
  for (size_t line = 0; line < bytes; line += 64)
    _mm_prefetch(reinterpret_cast<const char *>(rec) + line, _MM_HINT_T1);
}
constexpr int kPrefetchRecords = 8;

// The low nibble of each 32-bit lane as a float: vpermps reads only the index's low 4 bits,
// so one permute of the table 0..15 replaces mask + convert.
inline __m512 nibbleToFloat(__m512i x) {
  const __m512 table = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return _mm512_permutexvar_ps(x, table);
}

// Column col's scales (and zero points) in a record of S weights, L lanes per block.
template <int L, bool Asym, int S> struct Column {
  __m512 scale, zp;
  Column(const uint8_t *rec, int col) {
    constexpr int G = 16 / L;
    constexpr size_t kScaleOffset = kTileCols * S / 2;
    scale = expandScales<L>(reinterpret_cast<const float *>(rec + kScaleOffset) + col * G);
    if constexpr (Asym)
      zp = expandZeroPoints<L>(rec + kScaleOffset + kTileCols * G * sizeof(float) + col * G);
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
// each row's 64 activation bytes are loaded once (kept in a register: an asm barrier stops
// the compiler from folding the load into every vpdpbusd that reads it), feeding MR×NC
// vpdpbusd (u8 nibbles × s8 activations) into MR×NC int32 registers; after the
// superblock's S/64 steps, once per output, in memory (the registers hold the dots):
// tot += (dot * a_scale - zp * lane_sum(a) * a_scale) * w_scale.
template <int LB, bool Asym, int MR, int NC>
void int8Kernel(const Int4Job &job, int64_t tile, int64_t row0, int col0) {
  const Int4Activations &act = *job.act;
  const __m512i low = _mm512_set1_epi8(0x0F);
  alignas(64) float tot[MR][NC][16];
  for (int r = 0; r < MR; ++r)
    for (int cc = 0; cc < NC; ++cc)
      _mm512_store_ps(tot[r][cc], _mm512_setzero_ps());
  const uint8_t *rec0 = job.w.record(tile, 0);
  forEachSuper<LB>(job.w.layout, rec0, [&]<int S, int L>(int64_t s, const uint8_t *rec) {
    const float *unit[MR]; // S int8 values, then 16 lane scales, then 16 lane sums
    const int8_t *a[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      unit[r] = act.at(row0 + r, s);
      a[r] = reinterpret_cast<const int8_t *>(unit[r]);
    }
    const uint8_t *q = rec + col0 * (S / 2);
    __m512i d[MR][NC];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int cc = 0; cc < NC; ++cc)
        d[r][cc] = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int ch = 0; ch < S / 128; ++ch) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        __m512i v[NC];
#pragma GCC unroll 8
        for (int cc = 0; cc < NC; ++cc) {
          const __m512i chunk = _mm512_loadu_si512(q + cc * (S / 2) + 64 * ch);
          v[cc] = _mm512_and_si512(h ? _mm512_srli_epi16(chunk, 4) : chunk, low);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          __m512i x = _mm512_loadu_si512(a[r] + 64 * (2 * ch + h));
          asm("" : "+v"(x));
#pragma GCC unroll 8
          for (int cc = 0; cc < NC; ++cc)
            d[r][cc] = _mm512_dpbusd_epi32(d[r][cc], v[cc], x);
        }
      }
    }
#pragma GCC unroll 8
    for (int cc = 0; cc < NC; ++cc) {
      const Column<L, Asym, S> col(rec, col0 + cc);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m512 zpSum = col.zeroPointTerm(_mm512_loadu_ps(unit[r] + S / 4 + 16));
        const __m512 t = _mm512_fmsub_ps(_mm512_cvtepi32_ps(d[r][cc]),
                                         _mm512_loadu_ps(unit[r] + S / 4), zpSum);
        _mm512_store_ps(tot[r][cc], _mm512_fmadd_ps(t, col.scale, _mm512_load_ps(tot[r][cc])));
      }
    }
  });
  for (int r = 0; r < MR; ++r)
    for (int cc = 0; cc < NC; ++cc)
      storeOutput(job.epilogue, job.c, job.ldc, job.w.layout.n, row0 + r,
                  tile * kTileCols + col0 + cc, _mm512_reduce_add_ps(_mm512_load_ps(tot[r][cc])));
}

// Int8 GEMV (one row): the record's 8 columns one after another (two dot accumulators
// each, low and high nibbles), the whole record prefetched ahead: one stream per thread.
template <int LB, bool Asym> void int8Gemv(const Int4Job &job, int64_t tile, int64_t row) {
  const Int4Activations &act = *job.act;
  const Int4Layout &l = job.w.layout;
  const size_t ahead = kPrefetchRecords * l.recordBytes(kInt4Super);
  const __m512i low = _mm512_set1_epi8(0x0F);
  __m512 tot[1][kTileCols] = {};
  forEachSuper<LB>(l, job.w.record(tile, 0), [&]<int S, int L>(int64_t s, const uint8_t *rec) {
    prefetchRecord(rec + ahead, l.recordBytes(S));
    const int8_t *a = act.qAt(row, s);
    const __m512 scale = _mm512_loadu_ps(act.scaleAt(row, s, S));
    const __m512 sum = _mm512_loadu_ps(act.sumAt(row, s, S));
#pragma GCC unroll 8
    for (int cc = 0; cc < kTileCols; ++cc) {
      const uint8_t *q = rec + cc * (S / 2);
      __m512i d0 = _mm512_setzero_si512(), d1 = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int ch = 0; ch < S / 128; ++ch) {
        const __m512i c = _mm512_loadu_si512(q + 64 * ch);
        d0 = _mm512_dpbusd_epi32(d0, _mm512_and_si512(c, low), _mm512_loadu_si512(a + 128 * ch));
        d1 = _mm512_dpbusd_epi32(d1, _mm512_and_si512(_mm512_srli_epi16(c, 4), low),
                                 _mm512_loadu_si512(a + 128 * ch + 64));
      }
      const Column<L, Asym, S> col(rec, cc);
      const __m512 t = _mm512_fmsub_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(d0, d1)), scale,
                                       col.zeroPointTerm(sum));
      tot[0][cc] = _mm512_fmadd_ps(t, col.scale, tot[0][cc]);
    }
  });
  storeTile<1, kTileCols>(job, tile, row, 0, tot);
}

// F32 GEMV (one row): nibble (byte b, half h) of every 32-bit word is shifted out as 16
// ints, converted and FMA'd with the activations prepared in that order; every 256 weights
// tot += sum(q*a) * w_scale, once per superblock tot -= zp * lane_sum(a) * w_scale.
template <int LB, bool Asym> void f32Gemv(const Int4Job &job, int64_t tile, int64_t row) {
  const Int4Activations &act = *job.act;
  const Int4Layout &l = job.w.layout;
  const size_t ahead = kPrefetchRecords * l.recordBytes(kInt4Super);
  __m512 tot[1][kTileCols] = {};
  forEachSuper<LB>(l, job.w.record(tile, 0), [&]<int S, int L>(int64_t s, const uint8_t *rec) {
    prefetchRecord(rec + ahead, l.recordBytes(S));
    const float *a = act.fAt(row, s);
    // 256 weights of all 8 columns at a time: 8 independent FMA chains of 16.
    for (int pair = 0; pair < S / 256; ++pair) {
#pragma GCC unroll 8
      for (int cc = 0; cc < kTileCols; ++cc) {
        const uint8_t *q = rec + cc * (S / 2);
        __m512 acc = _mm512_setzero_ps();
#pragma GCC unroll 2
        for (int half = 0; half < 2; ++half) {
          const int chunk = 2 * pair + half;
          __m512i x = _mm512_loadu_si512(q + 64 * chunk);
          asm("" : "+v"(x)); // one load, not one per shift
#pragma GCC unroll 8
          for (int v = 0; v < 8; ++v) {
            const __m512 w = nibbleToFloat(_mm512_srli_epi32(x, 8 * (v / 2) + 4 * (v % 2)));
            acc = _mm512_fmadd_ps(w, _mm512_loadu_ps(a + (8 * chunk + v) * 16), acc);
          }
        }
        tot[0][cc] = _mm512_fmadd_ps(acc, Column<L, Asym, S>(rec, cc).scale, tot[0][cc]);
      }
    }
    const __m512 sum = _mm512_loadu_ps(act.sumAt(row, s, S));
#pragma GCC unroll 8
    for (int cc = 0; cc < kTileCols; ++cc) {
      const Column<L, Asym, S> col(rec, cc);
      tot[0][cc] = _mm512_fnmadd_ps(col.zeroPointTerm(sum), col.scale, tot[0][cc]);
    }
  });
  storeTile<1, kTileCols>(job, tile, row, 0, tot);
}

// F32 GEMM (M > 1): a tile's weights are dequantized once, w = (q - zp) * scale in lane order,
// into a per-thread buffer (8 columns × padded K floats; 128 KiB at K = 4096, in L2), then
// every row group runs a pure FMA microkernel over it: 16 lanes per output, one horizontal sum.
template <int LB, bool Asym> void dequantizeTile(const Int4Job &job, int64_t tile, float *out) {
  const Int4Layout &l = job.w.layout;
  const int64_t kp = l.paddedK();
  forEachSuper<LB>(l, job.w.record(tile, 0), [&]<int S, int L>(int64_t s, const uint8_t *rec) {
    const int64_t start = l.superStart(s);
    for (int cc = 0; cc < kTileCols; ++cc) {
      const Column<L, Asym, S> col(rec, cc);
      const __m512 zpScale = _mm512_mul_ps(col.zp, col.scale);
      float *dst = out + cc * kp + start;
      for (int chunk = 0; chunk < S / 128; ++chunk) {
        const __m512i x = _mm512_loadu_si512(rec + cc * (S / 2) + 64 * chunk);
#pragma GCC unroll 8
        for (int v = 0; v < 8; ++v) {
          const __m512 q = nibbleToFloat(_mm512_srli_epi32(x, 8 * (v / 2) + 4 * (v % 2)));
          _mm512_storeu_ps(dst + (8 * chunk + v) * 16, _mm512_fmsub_ps(q, col.scale, zpScale));
        }
      }
    }
  });
}

template <int MR, int NC>
void f32Microkernel(const Int4Job &job, const float *wd, int64_t tile, int64_t row0, int col0) {
  const Int4Layout &l = job.w.layout;
  const int64_t supers = l.supers(), kp = l.paddedK();
  __m512 acc[MR][NC] = {};
  for (int64_t s = 0; s < supers; ++s) {
    const float *w = wd + l.superStart(s);
    const int vectors = l.superSizeOf(s) / 16;
    const float *x[MR];
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r)
      x[r] = job.act->fAt(row0 + r, s);
    for (int v = 0; v < vectors; ++v) {
      __m512 wv[NC];
#pragma GCC unroll 4
      for (int cc = 0; cc < NC; ++cc)
        wv[cc] = _mm512_loadu_ps(w + (col0 + cc) * kp + v * 16);
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        const __m512 xv = _mm512_loadu_ps(x[r] + v * 16);
#pragma GCC unroll 4
        for (int cc = 0; cc < NC; ++cc)
          acc[r][cc] = _mm512_fmadd_ps(wv[cc], xv, acc[r][cc]);
      }
    }
  }
  storeTile<MR, NC>(job, tile, row0, col0, acc);
}

template <int LB, bool Asym> void f32GemmTiles(const Int4Job &job, int64_t tb, int64_t te) {
  float *wd = threadScratch(kTileCols * job.w.layout.paddedK());
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

// Int8: rows in groups of 4 (4×4 outputs per microkernel call: 16 int32 dots in registers;
// 4×2, 5×4, 6×4 and 6×2 ran slower with GCC 12, which spills or shuffles their
// accumulators), the rest 2..3 rows in one call, one row through int8Gemv. Tiles are taken
// in blocks of about 256 KiB of weights that stay in L2 while every row group passes over them.
constexpr int kInt8Rows = 4, kInt8Cols = 4;
template <int LB, bool Asym> void int8Tiles(const Int4Job &job, int64_t tb, int64_t te) {
  const int64_t tileBytes = static_cast<int64_t>(job.w.layout.tileBytes());
  const int64_t block = std::max<int64_t>(1, (256 << 10) / tileBytes);
  for (int64_t t0 = tb; t0 < te; t0 += block) {
    const int64_t t1 = std::min(te, t0 + block);
    int64_t row = 0;
    auto run = [&]<int MR>() {
      for (int64_t tile = t0; tile < t1; ++tile)
        for (int col0 = 0; col0 < kTileCols; col0 += kInt8Cols)
          int8Kernel<LB, Asym, MR, kInt8Cols>(job, tile, row, col0);
      row += MR;
    };
    for (; row + kInt8Rows <= job.m;)
      run.template operator()<kInt8Rows>();
    switch (job.m - row) {
    case 3: run.template operator()<3>(); break;
    case 2: run.template operator()<2>(); break;
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

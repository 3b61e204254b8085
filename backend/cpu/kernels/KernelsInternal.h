// Internal to the kernel library: activations prepared for the packed layouts, the job a
// variant runs over a range of tiles, and the per-ISA entry points.
#pragma once

#include <cmath>
#include <vector>

#include "backend/cpu/kernels/Kernels.h"

namespace llmopt::cpu::detail {

/// A[M,K] rearranged once per call into the int4 format's lane order (see
/// `int4LanePosition`). One contiguous unit per row and superblock (of `size` weights: the
/// layout's superblock size, or 256 in the tail), so a kernel keeps one pointer per row:
///  - Int8 (size + 128 bytes): size int8 values (size/64 step vectors of 64 bytes), 16
///    floats `scale` (lane l holds its block's activation scale), 16 floats `sum` (lane l:
///    the sum of the int8 values that feed lane l times that scale, for the zero-point term).
///    For a symmetric layout (zero point 8 everywhere) the sums are stored times 8.
///  - F32 (4 * size + 64 bytes): size floats as size/16 vectors of 16 lanes, vector v =
///    8*chunk + 2*byte + nibble (the order in which SIMD code shifts nibbles out of 32-bit
///    words), then 16 floats `sum` (lane sums of those activations; times 8 for a
///    symmetric layout).
struct Int4Activations {
  Compute compute = Compute::F32;
  int64_t m = 0, supers = 0, fullSupers = 0;
  int64_t fullUnit = 0, tailUnit = 0, rowFloats = 0; ///< floats per unit / per row
  std::vector<float> data;
  /// Floats in the unit of a superblock of `size` weights.
  LLMOPT_KERNEL_INLINE int64_t unitFloats(int size) const {
    return compute == Compute::Int8 ? size / 4 + 32 : size + 16;
  }
  LLMOPT_KERNEL_INLINE int64_t offset(int64_t row, int64_t s) const {
    const int64_t inRow =
        s <= fullSupers ? s * fullUnit : fullSupers * fullUnit + (s - fullSupers) * tailUnit;
    return row * rowFloats + inRow;
  }
  LLMOPT_KERNEL_INLINE float *at(int64_t row, int64_t s) { return data.data() + offset(row, s); }
  LLMOPT_KERNEL_INLINE const float *at(int64_t row, int64_t s) const {
    return data.data() + offset(row, s);
  }
  LLMOPT_KERNEL_INLINE const int8_t *qAt(int64_t row, int64_t s) const {
    return reinterpret_cast<const int8_t *>(at(row, s));
  }
  LLMOPT_KERNEL_INLINE const float *fAt(int64_t row, int64_t s) const { return at(row, s); }
  /// Lane scales and lane sums of a unit of `size` weights.
  LLMOPT_KERNEL_INLINE const float *scaleAt(int64_t row, int64_t s, int size) const {
    return at(row, s) + size / 4;
  }
  LLMOPT_KERNEL_INLINE const float *sumAt(int64_t row, int64_t s, int size) const {
    return at(row, s) + (compute == Compute::Int8 ? size / 4 + 16 : size);
  }
};

/// Per-block int8 quantization of `n` activations: returns the scale (max|x|/127, 0 for an
/// all-zero block) and writes round-to-nearest-even q in [-127, 127].
float quantizeInt8(const float *x, int n, int8_t *q);

/// `prologue.gamma` set: each row is RMS-normalized on the way in (see `Prologue`).
void prepareInt4Activations(const float *a, int64_t m, int64_t lda, const Int4Layout &layout,
                            Compute compute, Int4Activations &out, const Prologue &prologue = {});

struct Int4Job {
  Int4Weights w;
  const Int4Activations *act = nullptr; ///< SIMD variants
  const float *a = nullptr;             ///< the scalar reference reads A directly
  int64_t m = 0, lda = 0, ldc = 0;
  float *c = nullptr;
  Epilogue epilogue;
  Compute compute = Compute::F32;
};

/// silu(g) * u, the same expression as llmopt_rt::swiglu (fused == unfused bit for bit).
LLMOPT_KERNEL_INLINE float swiglu(float g, float u) { return g / (1.f + std::exp(-g)) * u; }

/// Writes C[row, col] = value + the epilogue terms (columns past N are dropped). SwiGLUPairs
/// never reaches here: `int4Gemm` runs the tiles with a plain epilogue and pairs them itself.
LLMOPT_KERNEL_INLINE void storeOutput(const Epilogue &e, float *c, int64_t ldc, int64_t n, int64_t row,
                        int64_t col, float value) {
  if (col >= n)
    return;
  if (e.bias)
    value += e.bias[col];
  if (e.act == Activation::SiLU)
    value = value / (1.f + std::exp(-value));
  else if (e.act == Activation::Gelu)
    value = 0.5f * value * (1.f + std::erf(value * 0.70710678118654752f));
  if (e.residual)
    value += e.residual[row * e.ldResidual + col];
  c[row * ldc + col] = value;
}

/// Int8 activations for the int8 format: per row, q (K padded to 64, shifted by +128 to
/// u8 for vpdpbusd) and one scale.
struct Int8Activations {
  Compute compute = Compute::F32;
  int64_t m = 0, kPadded = 0;
  std::vector<uint8_t> q;
  std::vector<float> f, scale;
};

struct Int8Job {
  Int8Weights w;
  const Int8Activations *act = nullptr;
  const float *a = nullptr;
  int64_t m = 0, lda = 0, ldc = 0;
  float *c = nullptr;
  Epilogue epilogue;
  Compute compute = Compute::F32;
};

namespace {
/// Calls Variant::tiles<LB, Asym, Int8>(job, tb, te) for the job's format and compute, LB =
/// block size / 16 (the lanes one block fills). In an unnamed namespace on purpose: each ISA
/// file instantiates its own copy with its own flags.
template <class Variant> void dispatchInt4(const Int4Job &job, int64_t tb, int64_t te) {
  auto byBlock = [&]<bool Asym, bool Int8>() {
    switch (job.w.layout.blockSize) {
    case 16: return Variant::template tiles<1, Asym, Int8>(job, tb, te);
    case 32: return Variant::template tiles<2, Asym, Int8>(job, tb, te);
    case 64: return Variant::template tiles<4, Asym, Int8>(job, tb, te);
    case 128: return Variant::template tiles<8, Asym, Int8>(job, tb, te);
    default: return Variant::template tiles<16, Asym, Int8>(job, tb, te);
    }
  };
  const bool int8 = job.compute == Compute::Int8;
  if (job.w.layout.asym)
    return int8 ? byBlock.template operator()<true, true>()
                : byBlock.template operator()<true, false>();
  return int8 ? byBlock.template operator()<false, true>()
              : byBlock.template operator()<false, false>();
}

/// Runs body<S, L>(s, rec) over a tile's superblocks in K order: the full ones (S =
/// int4SuperSize(bs) weights, L = 16*bs/S lanes per block), then the 256-weight tail (L = LB).
template <int LB, class Body>
LLMOPT_KERNEL_INLINE void forEachSuper(const Int4Layout &l, const uint8_t *rec, Body &&body) {
  constexpr int S = int4SuperSize(16 * LB);
  const int64_t full = l.fullSupers(), supers = l.supers();
  const size_t fullBytes = l.recordBytes(S), tailBytes = l.recordBytes(kInt4Super);
  int64_t s = 0;
  for (; s < full; ++s, rec += fullBytes)
    body.template operator()<S, 256 * LB / S>(s, rec);
  if constexpr (S != kInt4Super)
    for (; s < supers; ++s, rec += tailBytes)
      body.template operator()<kInt4Super, LB>(s, rec);
}
} // namespace

/// A per-thread scratch buffer of at least `floats` floats, 64-byte aligned (reused; valid
/// until the thread's next call). Defined outside the ISA files on purpose.
float *threadScratch(size_t floats);

/// Each variant computes columns [tileBegin*8, tileEnd*8) of every row.
namespace ref {
void int4Tiles(const Int4Job &job, int64_t tileBegin, int64_t tileEnd);
void int8Tiles(const Int8Job &job, int64_t tileBegin, int64_t tileEnd);
} // namespace ref
namespace avx2 {
void int4Tiles(const Int4Job &job, int64_t tileBegin, int64_t tileEnd);
void int8Tiles(const Int8Job &job, int64_t tileBegin, int64_t tileEnd);
} // namespace avx2
namespace avx512 {
void int4Tiles(const Int4Job &job, int64_t tileBegin, int64_t tileEnd);
void int8Tiles(const Int8Job &job, int64_t tileBegin, int64_t tileEnd);
} // namespace avx512

/// Runs fn(begin, end) over [0, count) in contiguous chunks shared out among the threads of
/// the library's pool (the caller is one of them).
void parallelRanges(int64_t count, void (*fn)(const void *ctx, int64_t, int64_t),
                    const void *ctx);

} // namespace llmopt::cpu::detail

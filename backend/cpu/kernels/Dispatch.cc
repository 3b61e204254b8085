// Run-time ISA choice, activation preparation and the public GEMM entry points: each call
// prepares A once, then splits the weight's column tiles across the thread pool.
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/cpu/kernels/KernelsInternal.h"

namespace llmopt::cpu {

// ---------------------------------------------------------------- ISA

Isa detectedIsa() {
  static const Isa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
      return Isa::Avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return Isa::Avx2;
    return Isa::Scalar;
  }();
  return isa;
}

namespace {
Isa capped(Isa isa) { return std::min(isa, detectedIsa()); }

std::atomic<int> &activeSlot() {
  static std::atomic<int> slot = [] {
    Isa isa = detectedIsa();
    if (const char *env = std::getenv("LLMOPT_CPU_ISA")) {
      if (!std::strcmp(env, "scalar"))
        isa = Isa::Scalar;
      else if (!std::strcmp(env, "avx2"))
        isa = Isa::Avx2;
      else if (!std::strcmp(env, "avx512"))
        isa = Isa::Avx512;
    }
    return static_cast<int>(capped(isa));
  }();
  return slot;
}
} // namespace

Isa activeIsa() { return static_cast<Isa>(activeSlot().load(std::memory_order_relaxed)); }

Isa forceIsa(Isa isa) {
  activeSlot().store(static_cast<int>(capped(isa)), std::memory_order_relaxed);
  return activeIsa();
}

const char *isaName(Isa isa) {
  switch (isa) {
  case Isa::Scalar: return "scalar";
  case Isa::Avx2: return "avx2";
  case Isa::Avx512: return "avx512";
  }
  return "?";
}

namespace detail {

// ---------------------------------------------------------------- activations

float quantizeInt8(const float *x, int n, int8_t *q) {
  float amax = 0;
  for (int i = 0; i < n; ++i)
    amax = std::max(amax, std::fabs(x[i]));
  const float inv = amax > 0 ? 127.f / amax : 0.f;
  for (int i = 0; i < n; ++i)
    q[i] = static_cast<int8_t>(std::nearbyint(x[i] * inv));
  return amax / 127.f;
}

namespace {

// For one block size: where superblock element e goes in the Int8 step vectors
// (64*step + byte) and in the F32 vectors (16*vector + lane), and its lane.
struct LaneTables {
  std::array<uint16_t, kInt4Super> int8Index, f32Index;
  std::array<uint8_t, kInt4Super> lane;
};
const LaneTables &laneTables(int blockSize) {
  static const auto tables = [] {
    std::array<LaneTables, 5> t{};
    for (int i = 0; i < 5; ++i)
      for (int e = 0; e < kInt4Super; ++e) {
        const LanePos pos = int4LanePosition(e, 16 << i);
        const int chunk = pos.step / 2, nibble = pos.step % 2, byte = pos.byte % 4;
        t[i].int8Index[e] = static_cast<uint16_t>(pos.step * 64 + pos.byte);
        t[i].f32Index[e] = static_cast<uint16_t>((8 * chunk + 2 * byte + nibble) * 16 + pos.byte / 4);
        t[i].lane[e] = static_cast<uint8_t>(pos.byte / 4);
      }
    return t;
  }();
  return tables[__builtin_ctz(static_cast<unsigned>(blockSize)) - 4];
}

} // namespace

float *threadScratch(size_t floats) {
  thread_local AlignedBytes buffer;
  thread_local size_t capacity = 0;
  if (capacity < floats) {
    buffer = allocateAligned(floats * sizeof(float));
    capacity = floats;
  }
  return reinterpret_cast<float *>(buffer.get());
}

void prepareInt4Activations(const float *a, int64_t m, int64_t lda, const Int4Layout &layout,
                            Compute compute, Int4Activations &out) {
  const int64_t supers = layout.supers(), k = layout.k;
  const int bs = layout.blockSize, lanesPerBlock = bs / 16;
  const LaneTables &tab = laneTables(bs);
  out.compute = compute, out.m = m, out.supers = supers;
  out.sum.assign(m * supers * 16, 0.f);
  if (compute == Compute::F32) {
    out.f.assign(m * supers * kInt4Super, 0.f);
    for (int64_t row = 0; row < m; ++row)
      for (int64_t i = 0; i < k; ++i) {
        const int64_t s = i / kInt4Super;
        const int e = static_cast<int>(i % kInt4Super);
        const float v = a[row * lda + i];
        out.f[(row * supers + s) * kInt4Super + tab.f32Index[e]] = v;
        out.sum[(row * supers + s) * 16 + tab.lane[e]] += v;
      }
    return;
  }
  out.q.assign(m * supers * kInt4Super, 0);
  out.scale.assign(m * supers * 16, 0.f);
  int8_t block[256];
  for (int64_t row = 0; row < m; ++row)
    for (int64_t k0 = 0; k0 < k; k0 += bs) {
      const int len = static_cast<int>(std::min<int64_t>(bs, k - k0));
      const float scale = quantizeInt8(a + row * lda + k0, len, block);
      const int64_t s = k0 / kInt4Super;
      const int e0 = static_cast<int>(k0 % kInt4Super);
      int8_t *q = out.q.data() + (row * supers + s) * kInt4Super;
      float *sum = out.sum.data() + (row * supers + s) * 16;
      for (int e = 0; e < len; ++e) {
        q[tab.int8Index[e0 + e]] = block[e];
        sum[tab.lane[e0 + e]] += block[e];
      }
      const int g = e0 / bs;
      std::fill_n(out.scale.data() + (row * supers + s) * 16 + g * lanesPerBlock, lanesPerBlock,
                  scale);
      for (int l = g * lanesPerBlock; l < (g + 1) * lanesPerBlock; ++l)
        sum[l] *= scale;
    }
}

} // namespace detail

// ---------------------------------------------------------------- entry points

namespace {

using detail::Int4Job;
using detail::Int8Job;

// Splits the weight's tiles across the pool; each range runs `variant[isa]`.
template <class Job>
void runTiles(Isa isa, const Job &job, int64_t tiles,
              void (*const (&variant)[3])(const Job &, int64_t, int64_t)) {
  struct Ctx {
    void (*fn)(const Job &, int64_t, int64_t);
    const Job *job;
  } ctx{variant[static_cast<int>(isa)], &job};
  detail::parallelRanges(
      tiles,
      [](const void *p, int64_t begin, int64_t end) {
        const auto *c = static_cast<const Ctx *>(p);
        c->fn(*c->job, begin, end);
      },
      &ctx);
}

constexpr void (*kInt4Variants[3])(const Int4Job &, int64_t, int64_t) = {
    detail::ref::int4Tiles, detail::avx2::int4Tiles, detail::avx512::int4Tiles};
constexpr void (*kInt8Variants[3])(const Int8Job &, int64_t, int64_t) = {
    detail::ref::int8Tiles, detail::avx2::int8Tiles, detail::avx512::int8Tiles};

// Int8 format activations: F32 copies rows padded to whole chunks; Int8 quantizes each row
// with one scale and stores u8 = q + 128 (vpdpbusd multiplies u8 by s8; the kernel
// subtracts 128 * sum(w)).
void prepareInt8Activations(const float *a, int64_t m, int64_t lda, const Int8Layout &layout,
                            Compute compute, detail::Int8Activations &act) {
  const int64_t kp = layout.chunks() * kInt8Chunk, k = layout.k;
  act.compute = compute, act.m = m, act.kPadded = kp;
  if (compute == Compute::F32) {
    act.f.assign(m * kp, 0.f);
    for (int64_t row = 0; row < m; ++row)
      std::copy_n(a + row * lda, k, act.f.data() + row * kp);
    return;
  }
  act.q.assign(m * kp, 128);
  act.scale.assign(m, 0.f);
  std::vector<int8_t> q(k);
  for (int64_t row = 0; row < m; ++row) {
    act.scale[row] = detail::quantizeInt8(a + row * lda, static_cast<int>(k), q.data());
    for (int64_t i = 0; i < k; ++i)
      act.q[row * kp + i] = static_cast<uint8_t>(q[i] + 128);
  }
}

} // namespace

void int4GemmOn(Isa isa, const float *a, int64_t m, int64_t lda, const Int4Weights &w,
                float *c, int64_t ldc, Compute compute, const Epilogue &epilogue) {
  isa = capped(isa);
  Int4Job job{w, nullptr, a, m, lda, ldc, c, epilogue, compute};
  thread_local detail::Int4Activations act;
  if (isa != Isa::Scalar) { // the scalar reference reads A as it is
    detail::prepareInt4Activations(a, m, lda, w.layout, compute, act);
    job.act = &act;
  }
  runTiles(isa, job, w.layout.tiles(), kInt4Variants);
}

void int4Gemm(const float *a, int64_t m, int64_t lda, const Int4Weights &w, float *c,
              int64_t ldc, Compute compute, const Epilogue &epilogue) {
  int4GemmOn(activeIsa(), a, m, lda, w, c, ldc, compute, epilogue);
}

void int8GemmOn(Isa isa, const float *a, int64_t m, int64_t lda, const Int8Weights &w,
                float *c, int64_t ldc, Compute compute, const Epilogue &epilogue) {
  isa = capped(isa);
  Int8Job job{w, nullptr, a, m, lda, ldc, c, epilogue, compute};
  thread_local detail::Int8Activations act;
  if (isa != Isa::Scalar) {
    prepareInt8Activations(a, m, lda, w.layout, compute, act);
    job.act = &act;
  }
  runTiles(isa, job, w.layout.tiles(), kInt8Variants);
}

void int8Gemm(const float *a, int64_t m, int64_t lda, const Int8Weights &w, float *c,
              int64_t ldc, Compute compute, const Epilogue &epilogue) {
  int8GemmOn(activeIsa(), a, m, lda, w, c, ldc, compute, epilogue);
}

} // namespace llmopt::cpu

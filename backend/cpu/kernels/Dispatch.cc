// Run-time ISA choice, activation preparation and the public GEMM entry points: each call
// prepares A once, then splits the weight's column tiles across the thread pool.
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

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
  float part[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j)
      part[j] = std::max(part[j], std::fabs(x[i + j]));
  for (; i < n; ++i)
    part[0] = std::max(part[0], std::fabs(x[i]));
  const float amax = *std::max_element(part, part + 8);
  const float inv = amax > 0 ? 127.f / amax : 0.f;
  // Round to nearest even by adding and subtracting 1.5 * 2^23 (|x * inv| <= 127): the
  // same integers as std::nearbyint, in a loop the compiler vectorizes.
  constexpr float kRound = 12582912.f;
  for (i = 0; i < n; ++i)
    q[i] = static_cast<int8_t>((x[i] * inv + kRound) - kRound);
  return amax / 127.f;
}

float *threadScratch(size_t floats) {
  thread_local AlignedBytes buffer;
  thread_local size_t capacity = 0;
  if (capacity < floats) {
    buffer = allocateAligned(floats * sizeof(float));
    capacity = floats;
  }
  return reinterpret_cast<float *>(buffer.get());
}

// Element i of block g (L = 16*bs/size lanes per block) sits in step i / 4L at byte 4gL +
// i % 4L (int4LanePosition), so each step takes one contiguous run of 4L elements of every
// block.
namespace {
// 1 / sqrt(mean(x^2) + eps) of one row, the expression llmopt_rt::rmsNorm uses.
float rmsScale(const float *x, int64_t cols, float eps) {
  double ss = 0;
  for (int64_t j = 0; j < cols; ++j)
    ss += static_cast<double>(x[j]) * x[j];
  return 1.f / std::sqrt(static_cast<float>(ss / cols) + eps);
}
} // namespace

void prepareInt4Activations(const float *a, int64_t m, int64_t lda, const Int4Layout &layout,
                            Compute compute, Int4Activations &out, const Prologue &prologue) {
  const int64_t k = layout.k;
  const int bs = layout.blockSize;
  out.compute = compute, out.m = m, out.supers = layout.supers();
  out.fullSupers = layout.fullSupers();
  out.fullUnit = out.unitFloats(layout.superSize()), out.tailUnit = out.unitFloats(kInt4Super);
  out.rowFloats = out.offset(0, out.supers);
  out.data.assign(m * out.rowFloats, 0.f);
  // Symmetric layouts have zero point 8 everywhere: the kernels read the sums as zp * sum.
  const float zpFactor = layout.asym ? 1.f : 8.f;
  int8_t block[256];
  float normalized[256];
  for (int64_t row = 0; row < m; ++row) {
    // The RMSNorm prologue: rstd from one pass over the row, then each block is normalized
    // into `normalized` as it is read (the same products as rmsNorm: x * rstd * gamma).
    const float rstd = prologue.gamma ? rmsScale(a + row * lda, k, prologue.eps) : 1.f;
    for (int64_t k0 = 0; k0 < k; k0 += bs) {
      const int len = static_cast<int>(std::min<int64_t>(bs, k - k0));
      const float *src = a + row * lda + k0;
      if (prologue.gamma) {
        for (int i = 0; i < len; ++i)
          normalized[i] = src[i] * rstd * prologue.gamma[k0 + i];
        src = normalized;
      }
      const int64_t s = layout.superOf(k0);
      const int size = layout.superSizeOf(s), lanes = 16 * bs / size, run = 4 * lanes;
      const int g = static_cast<int>(k0 - layout.superStart(s)) / bs;
      float *unit = out.at(row, s);
      if (compute == Compute::F32) {
        float *sum = unit + size;
        for (int i = 0; i < len; ++i) {
          const int step = i / run, r = i % run, lane = g * lanes + r / 4;
          const float v = src[i];
          unit[(8 * (step / 2) + 2 * (r % 4) + step % 2) * 16 + lane] = v;
          sum[lane] += zpFactor * v;
        }
        continue;
      }
      std::fill_n(block + len, bs - len, 0);
      const float scale = quantizeInt8(src, len, block);
      float *sc = unit + size / 4, *sum = sc + 16;
      int8_t *q = reinterpret_cast<int8_t *>(unit);
      const int steps = size / 64;
      for (int step = 0; step < steps; ++step)
        std::memcpy(q + 64 * step + 4 * g * lanes, block + step * run, run);
      for (int l = 0; l < lanes; ++l) {
        int32_t total = 0;
        for (int step = 0; step < steps; ++step)
          for (int i = 0; i < 4; ++i)
            total += block[step * run + 4 * l + i];
        sum[g * lanes + l] = static_cast<float>(total) * scale * zpFactor;
        sc[g * lanes + l] = scale;
      }
    }
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


// SwiGLUPairs: each thread takes whole (gate, up) tile pairs. A chunk of pairs runs through
// the ISA's tile loop unchanged (plain epilogue) into a per-thread buffer of m x 16 floats
// per pair, kept near 64 KiB so it stays in L1/L2, then silu(gate) * up (+ residual) goes to
// C. Every output still comes from one tile's full K, so results do not depend on threads.
void runSwiGluPairs(Isa isa, const Int4Job &job) {
  struct Ctx {
    void (*fn)(const Int4Job &, int64_t, int64_t);
    const Int4Job *job;
  } ctx{kInt4Variants[static_cast<int>(isa)], &job};
  detail::parallelRanges(
      job.w.layout.tiles() / 2,
      [](const void *p, int64_t begin, int64_t end) {
        const auto &[fn, whole] = *static_cast<const Ctx *>(p);
        const Epilogue &e = whole->epilogue;
        const int64_t cols = e.cols ? e.cols : whole->w.layout.n / 2, m = whole->m;
        const int64_t chunk = std::max<int64_t>(1, 1024 / std::max<int64_t>(1, m));
        thread_local std::vector<float> raw;
        raw.resize(static_cast<size_t>(m * 2 * kTileCols * std::min(chunk, end - begin)));
        for (int64_t p0 = begin; p0 < end; p0 += chunk) {
          const int64_t pairs = std::min(chunk, end - p0), width = 2 * kTileCols * pairs;
          Int4Job sub = *whole;
          sub.w.data += 2 * p0 * whole->w.layout.tileBytes();
          sub.w.layout.n = width;
          sub.c = raw.data(), sub.ldc = width, sub.epilogue = {};
          fn(sub, 0, 2 * pairs);
          for (int64_t row = 0; row < m; ++row)
            for (int64_t j = 0; j < pairs * kTileCols; ++j) {
              const int64_t col = p0 * kTileCols + j;
              if (col >= cols)
                break;
              // Gate at column j % 8 of the pair's first tile, up 8 columns on.
              const float *g =
                  raw.data() + row * width + j / kTileCols * 2 * kTileCols + j % kTileCols;
              float v = detail::swiglu(g[0], g[kTileCols]);
              if (e.residual)
                v += e.residual[row * e.ldResidual + col];
              whole->c[row * whole->ldc + col] = v;
            }
        }
      },
      &ctx);
}

} // namespace

Int4Buffer interleaveInt4Pairs(const Int4Weights &gate, const Int4Weights &up) {
  const Int4Layout &g = gate.layout, &u = up.layout;
  if (g.k != u.k || g.n != u.n || g.blockSize != u.blockSize || g.asym != u.asym)
    throw std::invalid_argument("llmopt::cpu: gate and up weights must have one shape and format");
  Int4Buffer out;
  out.layout = g;
  out.layout.n = 2 * kTileCols * g.tiles();
  out.storage = allocateAligned(out.layout.bytes());
  const size_t tb = g.tileBytes();
  for (int64_t t = 0; t < g.tiles(); ++t) {
    std::memcpy(out.storage.get() + 2 * t * tb, gate.data + t * tb, tb);
    std::memcpy(out.storage.get() + (2 * t + 1) * tb, up.data + t * tb, tb);
  }
  return out;
}

void int4GemmOn(Isa isa, const float *a, int64_t m, int64_t lda, const Int4Weights &w,
                float *c, int64_t ldc, Compute compute, const Epilogue &epilogue,
                const Prologue &prologue) {
  isa = capped(isa);
  Int4Job job{w, nullptr, a, m, lda, ldc, c, epilogue, compute};
  thread_local detail::Int4Activations act;
  thread_local std::vector<float> normalized;
  if (isa != Isa::Scalar) {
    detail::prepareInt4Activations(a, m, lda, w.layout, compute, act, prologue);
    job.act = &act;
  } else if (prologue.gamma) { // the scalar reference reads A: normalize it first
    const int64_t k = w.layout.k;
    normalized.resize(static_cast<size_t>(m * k));
    for (int64_t row = 0; row < m; ++row) {
      const float rstd = detail::rmsScale(a + row * lda, k, prologue.eps);
      for (int64_t i = 0; i < k; ++i)
        normalized[row * k + i] = a[row * lda + i] * rstd * prologue.gamma[i];
    }
    job.a = normalized.data(), job.lda = k;
  }
  if (epilogue.act == Activation::SwiGLUPairs) {
    if (epilogue.bias || w.layout.tiles() % 2)
      throw std::invalid_argument("llmopt::cpu: SwiGLUPairs needs an interleaved weight, no bias");
    return runSwiGluPairs(isa, job);
  }
  runTiles(isa, job, w.layout.tiles(), kInt4Variants);
}

void int4Gemm(const float *a, int64_t m, int64_t lda, const Int4Weights &w, float *c,
              int64_t ldc, Compute compute, const Epilogue &epilogue, const Prologue &prologue) {
  int4GemmOn(activeIsa(), a, m, lda, w, c, ldc, compute, epilogue, prologue);
}

void int8GemmOn(Isa isa, const float *a, int64_t m, int64_t lda, const Int8Weights &w,
                float *c, int64_t ldc, Compute compute, const Epilogue &epilogue) {
  isa = capped(isa);
  if (epilogue.act == Activation::SwiGLUPairs)
    throw std::invalid_argument("llmopt::cpu: SwiGLUPairs is an int4 epilogue");
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

// CPU kernel library, fp16 / bf16 and 2:4 sparse (f32 and int4) formats: the IEEE conversions
// bit for bit, packing round-trips, the scalar reference against a plain f32 matmul of the
// decoded weight, every SIMD variant against the scalar reference, the epilogue and thread
// counts.
//
// Tolerance, with bound = sum_k |a[m,k] * w[k,n]| (w decoded): 1e-5 * bound + 1e-6 for both
// scalar vs plain matmul and SIMD vs scalar (same products, other summation order).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/kernels/Kernels.h"

using namespace llmopt::cpu;

namespace {

uint32_t bitsOf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  return x;
}
float floatOf(uint32_t x) {
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}

// Reference decoder from the definition (sign, exponent with bias 2^(e-1) - 1, implicit
// bit), in double, for a 16-bit float with `MantBits` mantissa bits (fp16: 10, bf16: 7).
template <int MantBits> double halfValue(uint16_t h) {
  constexpr int kExpMax = (1 << (15 - MantBits)) - 1, kBias = kExpMax / 2;
  const int exp = h >> MantBits & kExpMax, mant = h & ((1 << MantBits) - 1);
  const double sign = h & 0x8000 ? -1 : 1;
  if (exp == kExpMax)
    return mant ? NAN : sign * INFINITY;
  return sign * (exp ? std::ldexp((1 << MantBits) + mant, exp - kBias - MantBits)
                     : std::ldexp(mant, 1 - kBias - MantBits));
}

struct HalfCodec {
  const char *name;
  uint16_t (*encode)(float);
  float (*decode)(uint16_t);
  double (*value)(uint16_t);
  double overflow; // the magnitude one step past the largest finite value
  uint16_t expMask, mantMask;
};
const HalfCodec kCodecs[] = {
    {"fp16", fp16FromFloat, floatFromFp16, halfValue<10>, 65536.0, 0x7C00, 0x3FF},
    {"bf16", bf16FromFloat, floatFromBf16, halfValue<7>, std::ldexp(1.0, 128), 0x7F80, 0x7F}};

bool isNanBits(const HalfCodec &c, uint16_t h) {
  return (h & c.expMask) == c.expMask && (h & c.mantMask);
}

std::vector<float> randomFloats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float &x : v)
    x = u(rng);
  return v;
}

// A random row-major W[K,N] that is 2:4 sparse along K: each group of 4 K keeps 0, 1 or 2
// random positions (the last, partial group only positions below K).
std::vector<float> randomSparse24(int64_t k, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> w(k * n, 0.f);
  for (int64_t col = 0; col < n; ++col)
    for (int64_t g = 0; g < k; g += 4) {
      const int keep = static_cast<int>(rng() % 3);
      for (int i = 0; i < keep; ++i) {
        const int64_t kk = g + rng() % 4;
        if (kk < k)
          w[kk * n + col] = u(rng);
      }
    }
  return w;
}

struct Shape {
  int64_t m, k, n;
};

// One packed weight behind a common interface.
struct Format {
  std::string name;
  std::shared_ptr<void> storage;
  std::function<float(int64_t, int64_t)> weight;
  std::function<void(Isa, const float *, int64_t, float *, const Epilogue &)> gemmOn;
  std::function<void(const float *, int64_t, float *)> gemm; // active ISA
};

template <class Buffer, class Decode, class GemmOn, class Gemm>
Format makeFormat(std::string name, Buffer &&b, Shape s, Decode decode, GemmOn on, Gemm plain) {
  auto buf = std::make_shared<Buffer>(std::move(b));
  const auto view = buf->view();
  return {std::move(name), buf, [view, decode](int64_t k, int64_t n) { return decode(view, k, n); },
          [view, s, on](Isa isa, const float *a, int64_t m, float *c, const Epilogue &e) {
            on(isa, a, m, s.k, view, c, s.n, e);
          },
          [view, s, plain](const float *a, int64_t m, float *c) {
            plain(a, m, s.k, view, c, s.n, Epilogue{});
          }};
}

// Every format of this file, packed from a dense W (16-bit) or a 2:4 sparse W (sparse).
std::vector<Format> allFormats(Shape s, uint32_t seed) {
  const std::vector<float> dense = randomFloats(s.k * s.n, seed);
  const std::vector<float> sparse = randomSparse24(s.k, s.n, seed + 1);
  std::vector<Format> out;
  for (HalfType t : {HalfType::Fp16, HalfType::Bf16})
    out.push_back(makeFormat(t == HalfType::Fp16 ? "fp16" : "bf16",
                             packHalf(dense.data(), s.k, s.n, t), s, halfWeight, halfGemmOn,
                             halfGemm));
  out.push_back(makeFormat("2:4 f32", packSparse24F32(sparse.data(), s.k, s.n), s,
                           sparse24Weight, sparse24GemmOn, sparse24Gemm));
  for (int bs : {32, 64, 128})
    out.push_back(makeFormat("2:4 int4 bs " + std::to_string(bs),
                             packSparse24Int4(sparse.data(), s.k, s.n, bs), s, sparse24Weight,
                             sparse24GemmOn, sparse24Gemm));
  return out;
}

// Plain f32 matmul (in double) of the decoded weight, and the per-output tolerance.
struct Reference {
  std::vector<float> c, tol;
};
Reference plainMatmul(const std::vector<float> &a, const Format &f, Shape s) {
  std::vector<double> w(s.k * s.n);
  for (int64_t k = 0; k < s.k; ++k)
    for (int64_t n = 0; n < s.n; ++n)
      w[k * s.n + n] = f.weight(k, n);
  Reference r{std::vector<float>(s.m * s.n), std::vector<float>(s.m * s.n)};
  for (int64_t m = 0; m < s.m; ++m)
    for (int64_t n = 0; n < s.n; ++n) {
      double acc = 0, bound = 0;
      for (int64_t k = 0; k < s.k; ++k) {
        acc += a[m * s.k + k] * w[k * s.n + n];
        bound += std::fabs(a[m * s.k + k] * w[k * s.n + n]);
      }
      r.c[m * s.n + n] = static_cast<float>(acc);
      r.tol[m * s.n + n] = static_cast<float>(1e-5 * bound + 1e-6);
    }
  return r;
}

std::vector<float> run(const Format &f, Isa isa, const std::vector<float> &a, Shape s) {
  std::vector<float> c(s.m * s.n, NAN);
  f.gemmOn(isa, a.data(), s.m, c.data(), Epilogue{});
  return c;
}

std::vector<Isa> simdIsas() {
  std::vector<Isa> out;
  if (detectedIsa() >= Isa::Avx2)
    out.push_back(Isa::Avx2);
  if (detectedIsa() >= Isa::Avx512)
    out.push_back(Isa::Avx512);
  return out;
}

} // namespace

// ---------------------------------------------------------------- conversions

TEST(CpuKernelsHalf, EveryBitPatternDecodesAndRoundTrips) {
  for (const HalfCodec &c : kCodecs)
    for (uint32_t i = 0; i < 65536; ++i) {
      const auto h = static_cast<uint16_t>(i);
      const float f = c.decode(h);
      if (isNanBits(c, h)) {
        ASSERT_TRUE(std::isnan(f)) << c.name << " " << i;
        ASSERT_TRUE(isNanBits(c, c.encode(f))) << c.name << " NaN stays NaN " << i;
        continue;
      }
      ASSERT_EQ(static_cast<double>(f), c.value(h)) << c.name << " decode " << i;
      ASSERT_EQ(c.encode(f), h) << c.name << " round trip " << i;
    }
}

// Between two neighbours lo < hi (in magnitude) the midpoint rounds to the one with an even
// last bit; a float just below or above it to the nearer one. Covers subnormals (0 .. the
// smallest normal), the step from the largest finite value to inf (fp16: 65520 -> inf) and
// both signs.
TEST(CpuKernelsHalf, MidpointsRoundToNearestEven) {
  for (const HalfCodec &c : kCodecs)
    for (uint32_t i = 0; i < 65536; ++i) {
      const auto lo = static_cast<uint16_t>(i), hi = static_cast<uint16_t>(i + 1);
      if ((lo & 0x7FFF) >= c.expMask) // lo is inf or NaN
        continue;
      const double vlo = c.value(lo), vhi = (hi & 0x7FFF) == c.expMask
                                                ? std::copysign(c.overflow, vlo)
                                                : c.value(hi);
      const double mid = (vlo + vhi) / 2;
      const float fmid = static_cast<float>(mid);
      ASSERT_EQ(static_cast<double>(fmid), mid) << c.name << " midpoint is exact in f32";
      ASSERT_EQ(c.encode(fmid), lo % 2 ? hi : lo) << c.name << " tie at " << i;
      const float below = std::nextafter(fmid, static_cast<float>(vlo));
      const float above = std::nextafter(fmid, static_cast<float>(2 * vhi));
      ASSERT_EQ(c.encode(below), lo) << c.name << " below " << i;
      ASSERT_EQ(c.encode(above), hi) << c.name << " above " << i;
    }
}

TEST(CpuKernelsHalf, SpecialValues) {
  EXPECT_EQ(fp16FromFloat(-0.f), 0x8000);
  EXPECT_EQ(fp16FromFloat(1e-40f), 0x0000); // f32 subnormal: far below half's subnormals
  EXPECT_EQ(fp16FromFloat(-1e9f), 0xFC00);
  EXPECT_EQ(fp16FromFloat(INFINITY), 0x7C00);
  EXPECT_EQ(fp16FromFloat(65519.f), 0x7BFF);
  EXPECT_EQ(fp16FromFloat(65520.f), 0x7C00);
  EXPECT_EQ(bf16FromFloat(-INFINITY), 0xFF80);
  EXPECT_EQ(bf16FromFloat(1e-40f), 0x0001); // bf16 keeps f32's subnormals (1e-40: 0x000116C2)
  EXPECT_EQ(bf16FromFloat(floatOf(0x7F7FFFFF)), 0x7F80); // FLT_MAX rounds to inf
  // A NaN whose payload lies only in the dropped bits must stay a NaN, not become inf.
  EXPECT_TRUE(isNanBits(kCodecs[1], bf16FromFloat(floatOf(0x7F800001))));
  EXPECT_TRUE(isNanBits(kCodecs[1], bf16FromFloat(floatOf(0xFF800001))));
  EXPECT_TRUE(isNanBits(kCodecs[0], fp16FromFloat(floatOf(0x7F800001))));
  EXPECT_EQ(bitsOf(floatFromBf16(0x8000)), 0x80000000u);
}

#ifdef __FLT16_MAX__
// GCC's own float -> _Float16 conversion (IEEE, round to nearest even) on random f32 bits.
TEST(CpuKernelsHalf, Fp16MatchesTheCompilersConversion) {
  std::mt19937 rng(5);
  for (int i = 0; i < 1000000; ++i) {
    const float f = floatOf(rng());
    if (std::isnan(f))
      continue;
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &h, sizeof want);
    ASSERT_EQ(fp16FromFloat(f), want) << f;
  }
}
#endif

// ---------------------------------------------------------------- packing

TEST(CpuKernelsHalf, PackRoundTrips) {
  for (Shape s : {Shape{1, 4, 1}, Shape{1, 100, 13}, Shape{1, 64, 8}, Shape{1, 300, 31}})
    for (HalfType t : {HalfType::Fp16, HalfType::Bf16}) {
      const HalfCodec &c = kCodecs[t == HalfType::Bf16];
      std::vector<float> w = randomFloats(s.k * s.n, 3, -70000.f, 70000.f);
      w[0] = 1e-6f, w[s.k * s.n - 1] = NAN; // a subnormal half and a NaN
      const HalfBuffer p = packHalf(w.data(), s.k, s.n, t);
      std::vector<uint16_t> bits(s.k * s.n);
      std::mt19937 rng(4);
      for (uint16_t &b : bits)
        b = static_cast<uint16_t>(rng());
      const HalfBuffer pb = packHalfBits(bits.data(), s.k, s.n, t);
      ASSERT_EQ(p.layout.bytes(), p.layout.tiles() * p.layout.chunks() * sizeof(HalfRecord));
      for (int64_t k = 0; k < p.layout.paddedK(); ++k)
        for (int64_t n = 0; n < p.layout.tiles() * kTileCols; ++n) {
          const bool inside = k < s.k && n < s.n;
          const float want = inside ? c.decode(c.encode(w[k * s.n + n])) : 0.f;
          const float wantBits = inside ? c.decode(bits[k * s.n + n]) : 0.f;
          ASSERT_EQ(bitsOf(halfWeight(p.view(), k, n)), bitsOf(want)) << c.name << " " << k;
          ASSERT_EQ(bitsOf(halfWeight(pb.view(), k, n)), bitsOf(wantBits)) << c.name << " bits";
        }
    }
}

TEST(CpuKernelsSparse24, PackRoundTripsAndQuantizes) {
  for (Shape s : {Shape{1, 4, 1}, Shape{1, 7, 3}, Shape{1, 256, 8}, Shape{1, 300, 13},
                  Shape{1, 2300, 9}}) {
    const std::vector<float> w = randomSparse24(s.k, s.n, 9);
    const Sparse24Buffer f = packSparse24F32(w.data(), s.k, s.n);
    EXPECT_EQ(f.layout.bytes(), f.layout.tiles() * f.layout.spans() * sizeof(Sparse24F32Record));
    for (int64_t k = 0; k < f.layout.paddedK(); ++k)
      for (int64_t n = 0; n < f.layout.tiles() * kTileCols; ++n)
        ASSERT_EQ(sparse24Weight(f.view(), k, n), k < s.k && n < s.n ? w[k * s.n + n] : 0.f)
            << "K " << s.k << " k " << k << " n " << n;
    for (int bs : {32, 64, 128, 256}) {
      const Sparse24Buffer q = packSparse24Int4(w.data(), s.k, s.n, bs);
      EXPECT_EQ(q.layout.recordBytes(),
                bs == 32 ? sizeof(Sparse24Int4Record<32>)
                : bs == 64 ? sizeof(Sparse24Int4Record<64>)
                : bs == 128 ? sizeof(Sparse24Int4Record<128>)
                            : sizeof(Sparse24Int4Record<256>));
      for (int64_t n = 0; n < s.n; ++n)
        for (int64_t k0 = 0; k0 < s.k; k0 += bs) {
          float amax = 0;
          for (int64_t k = k0; k < std::min(s.k, k0 + bs); ++k)
            amax = std::max(amax, std::fabs(w[k * s.n + n]));
          for (int64_t k = k0; k < std::min(s.k, k0 + bs); ++k) {
            const float got = sparse24Weight(q.view(), k, n), want = w[k * s.n + n];
            if (want == 0.f)
              ASSERT_EQ(got, 0.f) << "bs " << bs << " k " << k << " n " << n;
            else
              ASSERT_NEAR(got, want, amax / 7 * 0.5001f) << "bs " << bs << " k " << k;
          }
        }
      for (int64_t k = s.k; k < q.layout.paddedK(); ++k)
        ASSERT_EQ(sparse24Weight(q.view(), k, 0), 0.f);
    }
  }
}

TEST(CpuKernelsSparse24, RefusesAGroupWithThreeNonzeros) {
  std::vector<float> w = randomSparse24(64, 5, 11);
  for (int64_t k = 8; k < 11; ++k) // column 2, group K 8..11: three nonzeros
    w[k * 5 + 2] = 0.5f;
  w[11 * 5 + 2] = 0.f;
  try {
    packSparse24F32(w.data(), 64, 5);
    FAIL() << "packed a weight that is not 2:4 sparse";
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("column 2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("K 8..11"), std::string::npos) << e.what();
  }
  EXPECT_THROW(packSparse24Int4(w.data(), 64, 5, 32), std::invalid_argument);
  // The partial last group counts too: K = 7, positions 4, 5, 6.
  std::vector<float> tail(7, 0.f);
  tail[4] = tail[5] = tail[6] = 1.f;
  EXPECT_THROW(packSparse24F32(tail.data(), 7, 1), std::invalid_argument);
  EXPECT_THROW(packSparse24Int4(w.data(), 64, 5, 48), std::invalid_argument); // block size
}

// ---------------------------------------------------------------- kernels

TEST(CpuKernelsHalfSparse, ScalarMatchesPlainMatmulOfDecodedWeight) {
  for (Shape s : {Shape{1, 300, 13}, Shape{3, 1000, 17}, Shape{5, 60, 9}}) {
    const std::vector<float> a = randomFloats(s.m * s.k, 12);
    for (const Format &f : allFormats(s, 11)) {
      const Reference ref = plainMatmul(a, f, s);
      const std::vector<float> got = run(f, Isa::Scalar, a, s);
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], ref.c[i], ref.tol[i]) << f.name << " i " << i;
    }
  }
}

// M = 1 runs the GEMV kernels, M > 1 the GEMM ones (tiles decoded once on AVX-512); K not a
// multiple of a record (64 for 16-bit, 256 for 2:4), N odd and below one tile.
TEST(CpuKernelsHalfSparse, SimdMatchesScalar) {
  if (simdIsas().empty())
    GTEST_SKIP() << "no AVX2 on this CPU";
  uint32_t seed = 100;
  for (int64_t m : {1, 3, 4, 5, 17})
    for (int64_t k : {4, 60, 64, 100, 2300}) {
      std::vector<int64_t> ns{1, 8, 9, 31};
      if (k <= 100 && (m == 1 || m == 5))
        for (int64_t n = 2; n < 31; ++n)
          if (n != 8 && n != 9)
            ns.push_back(n);
      for (int64_t n : ns) {
        const Shape s{m, k, n};
        const std::vector<float> a = randomFloats(m * k, ++seed, -2.f, 2.f);
        for (const Format &f : allFormats(s, ++seed)) {
          const Reference ref = plainMatmul(a, f, s);
          const std::vector<float> want = run(f, Isa::Scalar, a, s);
          for (Isa isa : simdIsas()) {
            const std::vector<float> got = run(f, isa, a, s);
            for (size_t i = 0; i < got.size(); ++i)
              ASSERT_NEAR(got[i], want[i], ref.tol[i])
                  << isaName(isa) << " " << f.name << " M " << m << " K " << k << " N " << n
                  << " i " << i;
          }
        }
      }
    }
}

TEST(CpuKernelsHalfSparse, EpilogueAddsBiasAndResidualInPlace) {
  for (Shape s : {Shape{1, 300, 13}, Shape{3, 300, 13}}) {
    const std::vector<float> a = randomFloats(s.m * s.k, 32);
    const std::vector<float> bias = randomFloats(s.n, 33), res = randomFloats(s.m * s.n, 34);
    std::vector<Isa> isas = simdIsas();
    isas.push_back(Isa::Scalar);
    for (const Format &f : allFormats(s, 31)) {
      const Reference ref = plainMatmul(a, f, s);
      for (Isa isa : isas) {
        std::vector<float> c = res; // residual aliases the output
        f.gemmOn(isa, a.data(), s.m, c.data(), Epilogue{bias.data(), c.data(), s.n});
        for (int64_t m = 0; m < s.m; ++m)
          for (int64_t n = 0; n < s.n; ++n) {
            const size_t i = m * s.n + n;
            ASSERT_NEAR(c[i], ref.c[i] + bias[n] + res[i], ref.tol[i] + 1e-5f)
                << isaName(isa) << " " << f.name << " M " << s.m;
          }
      }
    }
  }
}

// The active ISA (LLMOPT_CPU_ISA picks it), through the plain entry points.
TEST(CpuKernelsHalfSparse, ResultsDoNotDependOnThreadCount) {
  for (Shape s : {Shape{1, 1000, 61}, Shape{5, 1000, 61}}) {
    const std::vector<float> a = randomFloats(s.m * s.k, 42);
    for (const Format &f : allFormats(s, 41)) {
      std::vector<float> c[3];
      for (int t = 0; t < 3; ++t) {
        setNumThreads(t + 1);
        c[t].assign(s.m * s.n, NAN);
        f.gemm(a.data(), s.m, c[t].data());
      }
      setNumThreads(0);
      EXPECT_EQ(c[0], c[1]) << f.name << " on " << isaName(activeIsa());
      EXPECT_EQ(c[0], c[2]) << f.name << " on " << isaName(activeIsa());
    }
  }
}

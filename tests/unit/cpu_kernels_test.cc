// CPU kernel library (backend/cpu/kernels): packing round-trips, every SIMD variant against
// the scalar reference on random and edge shapes, and the scalar reference against a plain
// f32 matmul of the dequantized weight.
//
// Tolerances, with bound = sum_k |a[m,k] * w[k,n]|:
//  - SIMD vs scalar (same integers, other summation order): 1e-5 * bound + 1e-6.
//  - scalar F32 vs plain matmul: 1e-5 * bound + 1e-6.
//  - scalar Int8 vs plain matmul: the activation rounding, |a - q*s| <= s/2 with s =
//    max|a in block|/127, so sum_k |w[k,n]| * s_k / 2 (x1.01) + 1e-5 * bound.
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/kernels/Kernels.h"

using namespace llmopt::cpu;

namespace {

std::vector<float> randomFloats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float &x : v)
    x = u(rng);
  return v;
}

// MatMulNBits arrays with random nibbles, scales and (packed) zero points.
struct NBits {
  std::vector<uint8_t> b, zp;
  std::vector<float> scales;
  int64_t blocks;
};
NBits randomNBits(int64_t k, int64_t n, int bs, bool asym, uint32_t seed) {
  std::mt19937 rng(seed);
  NBits r;
  r.blocks = (k + bs - 1) / bs;
  r.b.resize(n * r.blocks * bs / 2);
  for (int64_t col = 0; col < n; ++col)
    for (int64_t i = 0; i < r.blocks * bs; ++i)
      if (i < k) // MatMulNBits pads the last block with zero bytes
        r.b[col * r.blocks * bs / 2 + i / 2] |= static_cast<uint8_t>((rng() & 0xF) << (i % 2 * 4));
  std::uniform_real_distribution<float> u(0.001f, 0.1f);
  r.scales.resize(n * r.blocks);
  for (float &s : r.scales)
    s = u(rng);
  if (asym) {
    r.zp.resize(n * ((r.blocks + 1) / 2));
    for (uint8_t &z : r.zp)
      z = static_cast<uint8_t>(rng());
  }
  return r;
}
float nbitsWeight(const NBits &r, int64_t k, int64_t n, int bs) {
  const int64_t blk = k / bs, idx = k % bs;
  const int q = (r.b[(n * r.blocks + blk) * bs / 2 + idx / 2] >> (idx % 2 * 4)) & 0xF;
  const int zp = r.zp.empty() ? 8 : (r.zp[n * ((r.blocks + 1) / 2) + blk / 2] >> (blk % 2 * 4)) & 0xF;
  return static_cast<float>(q - zp) * r.scales[n * r.blocks + blk];
}

struct Shape {
  int64_t m, k, n;
};

// Plain f32 matmul of the dequantized weight, and per-output error bounds.
struct Reference {
  std::vector<float> c, bound, int8Bound;
};
Reference plainMatmul(const std::vector<float> &a, const Int4Weights &w, Shape s) {
  const int bs = w.layout.blockSize;
  std::vector<float> deq(s.k * s.n);
  for (int64_t k = 0; k < s.k; ++k)
    for (int64_t n = 0; n < s.n; ++n)
      deq[k * s.n + n] = int4Weight(w, k, n);
  Reference r{std::vector<float>(s.m * s.n), std::vector<float>(s.m * s.n),
              std::vector<float>(s.m * s.n)};
  for (int64_t m = 0; m < s.m; ++m) {
    std::vector<float> blockStep(s.k);
    for (int64_t k0 = 0; k0 < s.k; k0 += bs) {
      float amax = 0;
      for (int64_t k = k0; k < std::min(s.k, k0 + bs); ++k)
        amax = std::max(amax, std::fabs(a[m * s.k + k]));
      for (int64_t k = k0; k < std::min(s.k, k0 + bs); ++k)
        blockStep[k] = amax / 127.f;
    }
    for (int64_t n = 0; n < s.n; ++n) {
      double acc = 0, bound = 0, qerr = 0;
      for (int64_t k = 0; k < s.k; ++k) {
        const double wv = deq[k * s.n + n], av = a[m * s.k + k];
        acc += av * wv, bound += std::fabs(av * wv), qerr += std::fabs(wv) * blockStep[k] / 2;
      }
      r.c[m * s.n + n] = static_cast<float>(acc);
      r.bound[m * s.n + n] = static_cast<float>(1e-5 * bound + 1e-6);
      r.int8Bound[m * s.n + n] = static_cast<float>(1.01 * qerr + 1e-5 * bound + 1e-6);
    }
  }
  return r;
}

std::vector<float> run(Isa isa, const std::vector<float> &a, const Int4Weights &w, Shape s,
                       Compute compute) {
  std::vector<float> c(s.m * s.n, NAN);
  int4GemmOn(isa, a.data(), s.m, s.k, w, c.data(), s.n, compute);
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

/// Every SIMD level the CPU has against the scalar kernel, both compute modes, each output
/// within the reference bound; `what` names the case in a failure.
void expectSimdMatchesScalar(const std::vector<float> &a, const Int4Weights &w, Shape s,
                             const std::string &what) {
  const Reference ref = plainMatmul(a, w, s);
  for (Compute compute : {Compute::F32, Compute::Int8}) {
    const std::vector<float> want = run(Isa::Scalar, a, w, s, compute);
    for (Isa isa : simdIsas()) {
      const std::vector<float> got = run(isa, a, w, s, compute);
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], want[i], ref.bound[i])
            << isaName(isa) << (compute == Compute::Int8 ? " int8 " : " f32 ") << what << " M "
            << s.m << " K " << s.k << " N " << s.n << " i " << i;
    }
  }
}

const Shape kShapes[] = {{1, 256, 8},   {1, 300, 13}, {3, 1000, 17}, {17, 520, 9},
                         {1, 4096, 24},  {5, 40, 1},   {4, 768, 16},  {8, 257, 31},
                         {6, 3400, 11},  {1, 2800, 9}, {3, 2800, 5}}; // full superblocks + tail

} // namespace

TEST(CpuKernelsPack, MatMulNBitsRoundTripIsExact) {
  for (int bs : {16, 32, 64, 128, 256})
    for (bool asym : {false, true})
      for (Shape s : {Shape{1, 100, 1}, Shape{1, 256, 8}, Shape{1, 300, 13}, Shape{1, 1030, 9},
                      Shape{1, 2800, 3}}) {
        const NBits nb = randomNBits(s.k, s.n, bs, asym, 7 + bs);
        const Int4Buffer packed = packInt4FromMatMulNBits(
            nb.b.data(), nb.scales.data(), asym ? nb.zp.data() : nullptr, s.k, s.n, bs);
        const Int4Layout &l = packed.layout;
        ASSERT_EQ(l.bytes(), l.tiles() * (l.fullSupers() * l.recordBytes(l.superSize()) +
                                          (l.supers() - l.fullSupers()) * l.recordBytes(kInt4Super)));
        ASSERT_EQ(l.superStart(l.supers()), l.paddedK());
        for (int64_t n = 0; n < s.n; ++n)
          for (int64_t k = 0; k < s.k; ++k)
            ASSERT_EQ(int4Weight(packed.view(), k, n), nbitsWeight(nb, k, n, bs))
                << "bs " << bs << " asym " << asym << " k " << k << " n " << n;
        // Padded columns are zero.
        for (int64_t n = s.n; n < packed.layout.tiles() * kTileCols; ++n)
          ASSERT_EQ(int4Weight(packed.view(), 0, n), 0.f);
      }
}

TEST(CpuKernelsPack, RtnStaysWithinHalfAStep) {
  const Shape s{1, 200, 11};
  const std::vector<float> w = randomFloats(s.k * s.n, 3);
  for (int bs : {32, 64, 128})
    for (bool asym : {false, true}) {
      const Int4Buffer p = packInt4Rtn(w.data(), s.k, s.n, bs, asym);
      for (int64_t k = 0; k < s.k; ++k)
        for (int64_t n = 0; n < s.n; ++n) {
          const Int4Element el = int4Element(p.view(), k, n);
          EXPECT_NEAR(int4Weight(p.view(), k, n), w[k * s.n + n], el.scale * 0.5001f);
        }
    }
}

TEST(CpuKernelsPack, LanePositionIsABijectionInsideBlocks) {
  for (int bs : {16, 32, 64, 128, 256})
    for (int size : {kInt4Super, int4SuperSize(bs)}) { // the tail and the full superblock
      std::vector<int> seen(size, 0);
      for (int e = 0; e < size; ++e) {
        const LanePos p = int4LanePosition(e, bs, size);
        ASSERT_LT(p.step, size / 64);
        ASSERT_LT(p.byte, 64);
        ++seen[p.step * 64 + p.byte];
        EXPECT_EQ(p.byte / 4 / (16 * bs / size), e / bs) << "lane must stay inside its block";
      }
      EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), size);
    }
}

TEST(CpuKernelsPack, SuperblocksGrowWithTheBlockAndKeepA256Tail) {
  EXPECT_EQ(int4SuperSize(16), 256);
  EXPECT_EQ(int4SuperSize(32), 512);
  EXPECT_EQ(int4SuperSize(64), 1024);
  EXPECT_EQ(int4SuperSize(256), 1024);
  const Int4Layout l{11008, 8, 128, false}; // 10 superblocks of 1024, then 3 of 256
  EXPECT_EQ(l.fullSupers(), 10);
  EXPECT_EQ(l.supers(), 13);
  EXPECT_EQ(l.superOf(10239), 9);
  EXPECT_EQ(l.superOf(10240), 10);
  EXPECT_EQ(l.superStart(12), 10752);
  EXPECT_EQ(l.superSizeOf(12), kInt4Super);
}

TEST(CpuKernelsInt4, ScalarMatchesPlainMatmulOfDequantizedWeight) {
  for (int bs : {32, 64, 128})
    for (bool asym : {false, true})
      for (Shape s : {Shape{1, 300, 13}, Shape{3, 1000, 17}, Shape{17, 130, 9}}) {
        const std::vector<float> w = randomFloats(s.k * s.n, 11), a = randomFloats(s.m * s.k, 12);
        const Int4Buffer p = packInt4Rtn(w.data(), s.k, s.n, bs, asym);
        const Reference ref = plainMatmul(a, p.view(), s);
        const std::vector<float> f = run(Isa::Scalar, a, p.view(), s, Compute::F32);
        const std::vector<float> q = run(Isa::Scalar, a, p.view(), s, Compute::Int8);
        for (size_t i = 0; i < f.size(); ++i) {
          ASSERT_NEAR(f[i], ref.c[i], ref.bound[i]) << "f32 bs " << bs << " i " << i;
          ASSERT_NEAR(q[i], ref.c[i], ref.int8Bound[i]) << "int8 bs " << bs << " i " << i;
        }
      }
}

TEST(CpuKernelsInt4, SimdMatchesScalar) {
  if (simdIsas().empty())
    GTEST_SKIP() << "no AVX2 on this CPU";
  uint32_t seed = 100;
  for (int bs : {32, 64, 128})
    for (bool asym : {false, true})
      for (Shape s : kShapes) {
        const NBits nb = randomNBits(s.k, s.n, bs, asym, ++seed);
        const Int4Buffer p = packInt4FromMatMulNBits(
            nb.b.data(), nb.scales.data(), asym ? nb.zp.data() : nullptr, s.k, s.n, bs);
        const std::vector<float> a = randomFloats(s.m * s.k, ++seed, -2.f, 2.f);
        expectSimdMatchesScalar(a, p.view(), s, "bs " + std::to_string(bs) + (asym ? " asym" : " sym"));
      }
}

TEST(CpuKernelsInt4, OtherBlockSizesOnEveryIsa) {
  for (int bs : {16, 256})
    for (bool asym : {false, true})
      for (Shape s : {Shape{3, 600, 10}, Shape{5, 2300, 9}}) {
        const std::vector<float> w = randomFloats(s.k * s.n, 21), a = randomFloats(s.m * s.k, 22);
        const Int4Buffer p = packInt4Rtn(w.data(), s.k, s.n, bs, asym);
        expectSimdMatchesScalar(a, p.view(), s, "bs " + std::to_string(bs) + (asym ? " asym" : " sym"));
      }
}

TEST(CpuKernelsInt4, EpilogueAddsBiasAndResidualInPlace) {
  const Shape s{3, 300, 13};
  const std::vector<float> w = randomFloats(s.k * s.n, 31), a = randomFloats(s.m * s.k, 32);
  const std::vector<float> bias = randomFloats(s.n, 33), res = randomFloats(s.m * s.n, 34);
  const Int4Buffer p = packInt4Rtn(w.data(), s.k, s.n, 32, false);
  const Reference ref = plainMatmul(a, p.view(), s);
  std::vector<Isa> isas = simdIsas();
  isas.push_back(Isa::Scalar);
  for (Isa isa : isas) {
    std::vector<float> c = res; // residual aliases the output
    int4GemmOn(isa, a.data(), s.m, s.k, p.view(), c.data(), s.n, Compute::F32,
               Epilogue{bias.data(), c.data(), s.n});
    for (int64_t m = 0; m < s.m; ++m)
      for (int64_t n = 0; n < s.n; ++n) {
        const size_t i = m * s.n + n;
        EXPECT_NEAR(c[i], ref.c[i] + bias[n] + res[i], ref.bound[i] + 1e-5f) << isaName(isa);
      }
  }
}

TEST(CpuKernelsInt4, ResultsDoNotDependOnThreadCount) {
  const Shape s{5, 1000, 61};
  const std::vector<float> w = randomFloats(s.k * s.n, 41), a = randomFloats(s.m * s.k, 42);
  const Int4Buffer p = packInt4Rtn(w.data(), s.k, s.n, 32, true);
  for (Compute compute : {Compute::F32, Compute::Int8}) {
    setNumThreads(1);
    const std::vector<float> one = run(activeIsa(), a, p.view(), s, compute);
    setNumThreads(2);
    const std::vector<float> two = run(activeIsa(), a, p.view(), s, compute);
    setNumThreads(3);
    const std::vector<float> three = run(activeIsa(), a, p.view(), s, compute);
    setNumThreads(0);
    EXPECT_EQ(one, two);
    EXPECT_EQ(one, three);
  }
}

TEST(CpuKernelsInt4, ForcedIsaIsCappedAtTheDetectedOne) {
  const Isa before = activeIsa();
  EXPECT_EQ(forceIsa(Isa::Scalar), Isa::Scalar);
  EXPECT_EQ(activeIsa(), Isa::Scalar);
  EXPECT_EQ(forceIsa(Isa::Avx512), detectedIsa());
  forceIsa(before);
}

TEST(CpuKernelsInt8, SimdAndScalarMatchPlainMatmul) {
  for (Shape s : {Shape{1, 100, 7}, Shape{3, 1000, 17}, Shape{2, 64, 8}, Shape{17, 300, 9}}) {
    const std::vector<float> w = randomFloats(s.k * s.n, 51), a = randomFloats(s.m * s.k, 52);
    const Int8Buffer p = packInt8PerChannel(w.data(), s.k, s.n);
    for (int64_t m = 0; m < s.m; ++m) {
      float amax = 0;
      for (int64_t k = 0; k < s.k; ++k)
        amax = std::max(amax, std::fabs(a[m * s.k + k]));
      for (int64_t n = 0; n < s.n; ++n) {
        double acc = 0, bound = 0, wsum = 0;
        for (int64_t k = 0; k < s.k; ++k) {
          const double wv = int8Weight(p.view(), k, n);
          EXPECT_NEAR(wv, w[k * s.n + n], p.view().footer(n / 8)->scale[n % 8] * 0.5001);
          acc += wv * a[m * s.k + k], bound += std::fabs(wv * a[m * s.k + k]), wsum += std::fabs(wv);
        }
        const double tol = 1e-5 * bound + 1e-6, tolQ = 1.01 * wsum * amax / 254 + tol;
        std::vector<Isa> isas = simdIsas();
        isas.push_back(Isa::Scalar);
        for (Isa isa : isas)
          for (Compute compute : {Compute::F32, Compute::Int8}) {
            std::vector<float> c(s.m * s.n);
            int8GemmOn(isa, a.data(), s.m, s.k, p.view(), c.data(), s.n, compute);
            ASSERT_NEAR(c[m * s.n + n], acc, compute == Compute::F32 ? tol : tolQ)
                << isaName(isa) << " M " << s.m << " K " << s.k << " N " << s.n;
          }
      }
    }
  }
}

// ---------------------------------------------------------------- fused prologue / epilogue
//
// Fused == unfused on the same ISA: the fused paths compute the same tiles with the same
// kernels and apply the same float expressions (silu(g) * u as llmopt_rt::swiglu; x * rstd *
// gamma with the sum of squares in double as llmopt_rt::rmsNorm), so only the compiler's
// contraction of those few expressions may differ: tolerance 1e-6 * |value| + 1e-6.

namespace {

std::vector<Isa> allIsas() {
  std::vector<Isa> isas = simdIsas();
  isas.push_back(Isa::Scalar);
  return isas;
}

float closeTol(float v) { return 1e-6f * std::fabs(v) + 1e-6f; }

// Row-wise RMSNorm, the unfused path (llmopt_rt::rmsNorm's arithmetic).
std::vector<float> rmsNormRows(const std::vector<float> &a, int64_t m, int64_t k,
                               const std::vector<float> &gamma, float eps) {
  std::vector<float> y(a.size());
  for (int64_t r = 0; r < m; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < k; ++i)
      ss += static_cast<double>(a[r * k + i]) * a[r * k + i];
    const float inv = 1.f / std::sqrt(static_cast<float>(ss / k) + eps);
    for (int64_t i = 0; i < k; ++i)
      y[r * k + i] = a[r * k + i] * inv * gamma[i];
  }
  return y;
}

// Random gate and up weights [K, N], packed, and their tile-interleaved pairing.
struct GateUp {
  Int4Buffer gate, up, pairs;
};
GateUp randomGateUp(Shape s, uint32_t seed, int bs, bool asym) {
  const std::vector<float> wg = randomFloats(s.k * s.n, seed);
  const std::vector<float> wu = randomFloats(s.k * s.n, seed + 1);
  GateUp r{packInt4Rtn(wg.data(), s.k, s.n, bs, asym), packInt4Rtn(wu.data(), s.k, s.n, bs, asym),
           {}};
  r.pairs = interleaveInt4Pairs(r.gate.view(), r.up.view());
  return r;
}

const Shape kFusedShapes[] = {{1, 300, 13}, {3, 1000, 5}, {17, 520, 16}, {1, 2800, 9}, {4, 40, 24}};

} // namespace

TEST(CpuKernelsFused, SwiGluPairsEqualsGateUpThenSwiGlu) {
  uint32_t seed = 300;
  for (int bs : {32, 128})
    for (bool asym : {false, true})
      for (Shape s : kFusedShapes) {
        const GateUp gu = randomGateUp(s, seed += 2, bs, asym);
        const Int4Buffer &g = gu.gate, &u = gu.up, &pairs = gu.pairs;
        const std::vector<float> a = randomFloats(s.m * s.k, ++seed, -2.f, 2.f);
        const std::vector<float> res = randomFloats(s.m * s.n, ++seed);
        ASSERT_EQ(pairs.layout.n, 2 * kTileCols * g.layout.tiles());
        for (Isa isa : allIsas())
          for (Compute compute : {Compute::F32, Compute::Int8})
            for (bool withResidual : {false, true}) {
              const std::vector<float> gate = run(isa, a, g.view(), s, compute);
              const std::vector<float> up = run(isa, a, u.view(), s, compute);
              std::vector<float> c = withResidual ? res : std::vector<float>(s.m * s.n, NAN);
              const Epilogue e{nullptr, withResidual ? c.data() : nullptr, s.n,
                               Activation::SwiGLUPairs, s.n};
              int4GemmOn(isa, a.data(), s.m, s.k, pairs.view(), c.data(), s.n, compute, e);
              for (size_t i = 0; i < c.size(); ++i) {
                const float x = gate[i];
                const float want = x / (1.f + std::exp(-x)) * up[i] + (withResidual ? res[i] : 0.f);
                ASSERT_NEAR(c[i], want, closeTol(want))
                    << isaName(isa) << (compute == Compute::Int8 ? " int8" : " f32") << " bs " << bs
                    << " M " << s.m << " K " << s.k << " N " << s.n << " i " << i;
              }
            }
      }
}

TEST(CpuKernelsFused, SwiGluPairsDoNotDependOnThreadCount) {
  const Shape s{3, 1000, 61};
  const Int4Buffer pairs = randomGateUp(s, 401, 32, false).pairs;
  const std::vector<float> a = randomFloats(s.m * s.k, 403);
  std::vector<std::vector<float>> outs;
  for (int threads : {1, 2, 3}) {
    setNumThreads(threads);
    std::vector<float> c(s.m * s.n);
    int4Gemm(a.data(), s.m, s.k, pairs.view(), c.data(), s.n, Compute::Int8,
             Epilogue{nullptr, nullptr, 0, Activation::SwiGLUPairs, s.n});
    outs.push_back(c);
  }
  setNumThreads(0);
  EXPECT_EQ(outs[0], outs[1]);
  EXPECT_EQ(outs[0], outs[2]);
}

TEST(CpuKernelsFused, SiluAndGeluEpilogues) {
  const Shape s{3, 300, 13};
  const std::vector<float> w = randomFloats(s.k * s.n, 501), a = randomFloats(s.m * s.k, 502);
  const std::vector<float> bias = randomFloats(s.n, 503);
  const Int4Buffer p = packInt4Rtn(w.data(), s.k, s.n, 32, false);
  for (Isa isa : allIsas()) {
    std::vector<float> plain(s.m * s.n);
    int4GemmOn(isa, a.data(), s.m, s.k, p.view(), plain.data(), s.n, Compute::F32,
               Epilogue{bias.data()});
    for (Activation act : {Activation::SiLU, Activation::Gelu}) {
      std::vector<float> c(s.m * s.n);
      int4GemmOn(isa, a.data(), s.m, s.k, p.view(), c.data(), s.n, Compute::F32,
                 Epilogue{bias.data(), nullptr, 0, act});
      for (size_t i = 0; i < c.size(); ++i) {
        const double x = plain[i];
        const double want = act == Activation::SiLU ? x / (1 + std::exp(-x))
                                                    : 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
        ASSERT_NEAR(c[i], want, closeTol(static_cast<float>(want)) + 1e-6)
            << isaName(isa) << " i " << i;
      }
    }
  }
}

TEST(CpuKernelsFused, RmsNormPrologueEqualsNormThenGemm) {
  uint32_t seed = 600;
  for (int bs : {32, 64})
    for (bool asym : {false, true})
      for (Shape s : kFusedShapes) {
        const std::vector<float> w = randomFloats(s.k * s.n, ++seed);
        const std::vector<float> a = randomFloats(s.m * s.k, ++seed, -3.f, 3.f);
        const std::vector<float> gamma = randomFloats(s.k, ++seed, 0.5f, 1.5f);
        const float eps = 1e-5f;
        const std::vector<float> normalized = rmsNormRows(a, s.m, s.k, gamma, eps);
        const Int4Buffer p = packInt4Rtn(w.data(), s.k, s.n, bs, asym);
        const Reference ref = plainMatmul(normalized, p.view(), s);
        for (Isa isa : allIsas())
          for (Compute compute : {Compute::F32, Compute::Int8}) {
            const std::vector<float> want = run(isa, normalized, p.view(), s, compute);
            std::vector<float> c(s.m * s.n, NAN);
            int4GemmOn(isa, a.data(), s.m, s.k, p.view(), c.data(), s.n, compute, {},
                       Prologue{gamma.data(), eps});
            for (size_t i = 0; i < c.size(); ++i)
              ASSERT_NEAR(c[i], want[i], ref.bound[i])
                  << isaName(isa) << (compute == Compute::Int8 ? " int8" : " f32") << " bs " << bs
                  << " M " << s.m << " K " << s.k << " N " << s.n << " i " << i;
          }
      }
}

TEST(CpuKernelsFused, RmsNormPrologueWithSwiGluPairs) {
  const Shape s{17, 1000, 21};
  const Int4Buffer pairs = randomGateUp(s, 701, 32, true).pairs;
  const std::vector<float> a = randomFloats(s.m * s.k, 703);
  const std::vector<float> gamma = randomFloats(s.k, 704, 0.5f, 1.5f);
  const std::vector<float> normalized = rmsNormRows(a, s.m, s.k, gamma, 1e-6f);
  for (Isa isa : allIsas())
    for (Compute compute : {Compute::F32, Compute::Int8}) {
      std::vector<float> want(s.m * s.n), got(s.m * s.n);
      const Epilogue e{nullptr, nullptr, 0, Activation::SwiGLUPairs, s.n};
      int4GemmOn(isa, normalized.data(), s.m, s.k, pairs.view(), want.data(), s.n, compute, e);
      int4GemmOn(isa, a.data(), s.m, s.k, pairs.view(), got.data(), s.n, compute, e,
                 Prologue{gamma.data(), 1e-6f});
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-5f * std::fabs(want[i]) + 1e-5f)
            << isaName(isa) << " i " << i;
    }
}

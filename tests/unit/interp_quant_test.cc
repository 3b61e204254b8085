// Interpreter quantization kernels: Quantize/DequantizeLinear (per tensor, per axis,
// opset-21 blocked int4), DynamicQuantizeLinear, MatMulInteger and MatMulNBits
// against an independent packer and reference in this file.
#include <cmath>

#include "interp_test_util.h"

namespace llmopt::test {
namespace {

TEST(InterpQuant, QuantizeLinearRoundsHalfToEvenAndSaturates) {
  OneNode q(OpKind::QuantizeLinear, 13, 3);
  Tensor x = f32({6}, {0, 1.5f, 2.5f, -1, 1000, -3.5f});
  Tensor y = q.out({x, f32({}, {1}), Tensor::scalar<uint8_t>(DType::U8, 0)});
  EXPECT_EQ(y.dtype(), DType::U8);
  EXPECT_EQ(ints(y), (std::vector<int64_t>{0, 2, 2, 0, 255, 0}));
  y = q.out({x, f32({}, {1}), Tensor::scalar<int8_t>(DType::I8, -1)});
  EXPECT_EQ(ints(y), (std::vector<int64_t>{-1, 1, 1, -2, 127, -5}));
  // Per axis (axis 1 by default): one scale per column.
  y = q.out({f32({2, 2}, {1, 1, 2, 2}), f32({2}, {1, 0.5f}), none()});
  EXPECT_EQ(ints(y), (std::vector<int64_t>{1, 2, 2, 4}));
}

TEST(InterpQuant, BlockedInt4RoundTripsAtOpset21) {
  // x [4,2] with blocks of 2 along axis 0: scale [2,2].
  Tensor x = f32({4, 2}, {0.5f, -1, 1, -2, 3, 0.25f, -3.5f, 0.5f});
  Tensor scale = f32({2, 2}, {0.25f, 0.5f, 0.5f, 0.125f});
  OneNode q(OpKind::QuantizeLinear, 21, 3);
  q.attr(Attribute::makeInt("axis", 0)).attr(Attribute::makeInt("block_size", 2))
      .attr(Attribute::makeInt("output_dtype", static_cast<int64_t>(DType::I4)));
  Tensor qx = q.out({x, scale, none()});
  ASSERT_EQ(qx.dtype(), DType::I4);
  // Rows 0-1 use scale row 0, rows 2-3 scale row 1: 0.5/0.25=2, -1/0.5=-2, 1/0.25=4, ...
  EXPECT_EQ(ints(qx), (std::vector<int64_t>{2, -2, 4, -4, 6, 2, -7, 4}));
  EXPECT_EQ(qx.nbytes(), 4u); // packed two per byte
  OneNode dq(OpKind::DequantizeLinear, 21, 3);
  dq.attr(Attribute::makeInt("axis", 0)).attr(Attribute::makeInt("block_size", 2));
  EXPECT_EQ(floats(dq.out({qx, scale, none()})), floats(x));
  // With uint4 zero points.
  Tensor zp = Tensor::fromBytes(DType::U4, {2, 2}, std::vector<uint8_t>{0x88, 0x98}.data(), 2);
  Tensor uq = Tensor::fromBytes(DType::U4, {4, 2}, std::vector<uint8_t>{0x8a, 0x79, 0x88, 0x99}.data(), 4);
  // element pairs: (10,8) (9,7) (8,8) (9,9); zp (8,8) (8,9)
  EXPECT_EQ(floats(dq.out({uq, scale, zp})), (std::vector<float>{0.5f, 0, 0.25f, -0.5f, 0, -0.125f, 0.5f, 0}));
  // A scale of the wrong blocked shape is an error, not a crash.
  EXPECT_FALSE(dq.eval({qx, f32({1, 2}, {1, 1}), none()}));
}

TEST(InterpQuant, DequantizePerAxisAndDynamicQuantize) {
  OneNode dq(OpKind::DequantizeLinear, 13, 3);
  Tensor x = Tensor::fromVector<int8_t>(DType::I8, {2, 2}, {10, -10, 4, 0});
  EXPECT_EQ(floats(dq.out({x, f32({2}, {0.5f, 2}), Tensor::fromVector<int8_t>(DType::I8, {2}, {0, 2})})),
            (std::vector<float>{5, -24, 2, -4}));
  OneNode dyn(OpKind::DynamicQuantizeLinear, 11, 1, 3);
  auto r = dyn.eval({f32({6}, {0, 2, -3, -2.5f, 1.34f, 0.5f})});
  ASSERT_TRUE(r);
  EXPECT_EQ(ints((*r)[0]), (std::vector<int64_t>{153, 255, 0, 26, 221, 179}));
  EXPECT_NEAR((*r)[1].getDouble(0), 5.0 / 255, 1e-7);
  EXPECT_EQ((*r)[2].getInt(0), 153);
}

TEST(InterpQuant, MatMulIntegerWithZeroPoints) {
  OneNode mm(OpKind::MatMulInteger, 10, 4);
  Tensor a = Tensor::fromVector<uint8_t>(DType::U8, {4, 3}, {11, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0});
  Tensor b = Tensor::fromVector<uint8_t>(DType::U8, {3, 2}, {1, 4, 2, 5, 3, 6});
  Tensor y = mm.out({a, b, Tensor::scalar<uint8_t>(DType::U8, 12), Tensor::scalar<uint8_t>(DType::U8, 0)});
  EXPECT_EQ(y.dtype(), DType::I32);
  EXPECT_EQ(ints(y), (std::vector<int64_t>{-38, -83, -44, -98, -50, -113, -56, -128}));
}

/// A weight W [K,N] packed into MatMulNBits' layout, with its dequantized values.
struct PackedWeight {
  int64_t K, N, bits, bs, kBlocks;
  std::vector<uint8_t> b, zp;
  std::vector<float> scales, deq; // deq is [K,N]
};

PackedWeight pack(const std::vector<float> &w, int64_t K, int64_t N, int64_t bits, int64_t bs, bool withZp) {
  PackedWeight p{K, N, bits, bs, (K + bs - 1) / bs, {}, {}, {}, {}};
  const int64_t blob = bs * bits / 8, per = 8 / bits, qmax = (1 << bits) - 1;
  const int64_t zpCol = (p.kBlocks * bits + 7) / 8;
  p.b.assign(static_cast<size_t>(N * p.kBlocks * blob), 0);
  p.zp.assign(static_cast<size_t>(N * zpCol), 0);
  p.scales.assign(static_cast<size_t>(N * p.kBlocks), 0);
  p.deq.assign(static_cast<size_t>(K * N), 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t blk = 0; blk < p.kBlocks; ++blk) {
      float lo = 0, hi = 0;
      for (int64_t k = blk * bs; k < std::min(K, (blk + 1) * bs); ++k) {
        lo = std::min(lo, w[static_cast<size_t>(k * N + n)]);
        hi = std::max(hi, w[static_cast<size_t>(k * N + n)]);
      }
      int zp = 1 << (bits - 1);
      float scale = std::max(std::fabs(lo), std::fabs(hi)) / static_cast<float>(zp - 1);
      if (withZp) {
        scale = (hi - lo) / static_cast<float>(qmax);
        zp = static_cast<int>(std::clamp<float>(std::round(-lo / scale), 0, static_cast<float>(qmax)));
        p.zp[static_cast<size_t>(n * zpCol + blk / per)] |= static_cast<uint8_t>(zp << ((blk % per) * bits));
      }
      p.scales[static_cast<size_t>(n * p.kBlocks + blk)] = scale;
      for (int64_t k = blk * bs; k < std::min(K, (blk + 1) * bs); ++k) {
        const int q = static_cast<int>(std::clamp<float>(
            std::round(w[static_cast<size_t>(k * N + n)] / scale) + static_cast<float>(zp), 0, static_cast<float>(qmax)));
        const int64_t in = k - blk * bs;
        p.b[static_cast<size_t>((n * p.kBlocks + blk) * blob + in / per)] |= static_cast<uint8_t>(q << ((in % per) * bits));
        p.deq[static_cast<size_t>(k * N + n)] = static_cast<float>(q - zp) * scale;
      }
    }
  return p;
}

OneNode nbitsNode(const PackedWeight &p, int64_t accuracy, size_t inputs) {
  OneNode n(OpKind::MatMulNBits, 1, inputs);
  n.attr(Attribute::makeInt("K", p.K)).attr(Attribute::makeInt("N", p.N)).attr(Attribute::makeInt("bits", p.bits))
      .attr(Attribute::makeInt("block_size", p.bs)).attr(Attribute::makeInt("accuracy_level", accuracy));
  return n;
}

std::vector<Tensor> nbitsInputs(const PackedWeight &p, const std::vector<float> &a, int64_t M, bool withZp) {
  const int64_t blob = p.bs * p.bits / 8;
  std::vector<Tensor> in{f32({M, p.K}, a), Tensor::fromVector(DType::U8, {p.N, p.kBlocks, blob}, p.b),
                         f32({p.N * p.kBlocks}, p.scales)};
  if (withZp)
    in.push_back(Tensor::fromVector(DType::U8, {static_cast<int64_t>(p.zp.size())}, p.zp));
  return in;
}

std::vector<float> matmulRef(const std::vector<float> &a, const std::vector<float> &w, int64_t M, int64_t K, int64_t N) {
  std::vector<float> y(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += static_cast<double>(a[static_cast<size_t>(m * K + k)]) * w[static_cast<size_t>(k * N + n)];
      y[static_cast<size_t>(m * N + n)] = static_cast<float>(s);
    }
  return y;
}

TEST(InterpMatMulNBits, Fp32PathMatchesDequantizedMatMul) {
  const int64_t M = 3, K = 40, N = 6; // K not a multiple of the block: last block padded
  auto w = randomFloats(static_cast<size_t>(K * N), 7), a = randomFloats(static_cast<size_t>(M * K), 8);
  for (bool zp : {false, true})
    for (int64_t bits : {4, 8}) {
      PackedWeight p = pack(w, K, N, bits, 16, zp);
      OneNode n = nbitsNode(p, 0, zp ? 4 : 3);
      EXPECT_FLOATS_NEAR(floats(n.out(nbitsInputs(p, a, M, zp))), matmulRef(a, p.deq, M, K, N), 1e-5);
      // The quantization itself is close to W.
      EXPECT_FLOATS_NEAR(p.deq, w, bits == 4 ? 0.15 : 0.01);
    }
}

TEST(InterpMatMulNBits, BiasAndBatchedA) {
  const int64_t K = 32, N = 4;
  auto w = randomFloats(static_cast<size_t>(K * N), 9), a = randomFloats(static_cast<size_t>(2 * 2 * K), 10);
  PackedWeight p = pack(w, K, N, 4, 32, true);
  OneNode n = nbitsNode(p, 0, 6);
  auto in = nbitsInputs(p, a, 4, true);
  in[0] = f32({2, 2, K}, a);
  in.push_back(none()); // g_idx
  in.push_back(f32({N}, {1, 2, 3, 4}));
  Tensor y = n.out(in);
  EXPECT_EQ(y.shape(), (std::vector<int64_t>{2, 2, N}));
  auto want = matmulRef(a, p.deq, 4, K, N);
  for (size_t i = 0; i < want.size(); ++i)
    want[i] += static_cast<float>(i % N + 1);
  EXPECT_FLOATS_NEAR(floats(y), want, 1e-5);
}

/// accuracy_level 4 as ORT computes it: A quantized per block to int8
/// (scale max|a|/127, round half to even), exact int dots, f32 accumulation.
std::vector<float> int8Ref(const PackedWeight &p, const std::vector<float> &a, int64_t M) {
  std::vector<float> y(static_cast<size_t>(M * p.N), 0);
  const int64_t per = 8 / p.bits, blob = p.bs * p.bits / 8, zpCol = (p.kBlocks * p.bits + 7) / 8;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < p.N; ++n) {
      float acc = 0;
      for (int64_t blk = 0; blk < p.kBlocks; ++blk) {
        const int64_t k0 = blk * p.bs, k1 = std::min(p.K, k0 + p.bs);
        float amax = 0;
        for (int64_t k = k0; k < k1; ++k)
          amax = std::max(amax, std::fabs(a[static_cast<size_t>(m * p.K + k)]));
        const float sa = amax / 127.f, inv = amax > 0 ? 127.f / amax : 0.f;
        const int zp = p.zp.empty() ? 1 << (p.bits - 1)
                                    : (p.zp[static_cast<size_t>(n * zpCol + blk / per)] >> ((blk % per) * p.bits)) & ((1 << p.bits) - 1);
        int32_t dot = 0;
        for (int64_t k = k0; k < k1; ++k) {
          const int qa = static_cast<int>(std::nearbyint(a[static_cast<size_t>(m * p.K + k)] * inv));
          const int64_t in = k - k0;
          const int qb = (p.b[static_cast<size_t>((n * p.kBlocks + blk) * blob + in / per)] >> ((in % per) * p.bits)) & ((1 << p.bits) - 1);
          dot += qa * (qb - zp);
        }
        acc += static_cast<float>(dot) * (sa * p.scales[static_cast<size_t>(n * p.kBlocks + blk)]);
      }
      y[static_cast<size_t>(m * p.N + n)] = acc;
    }
  return y;
}

TEST(InterpMatMulNBits, AccuracyLevel4QuantizesAPerBlock) {
  const int64_t M = 5, K = 72, N = 7;
  auto w = randomFloats(static_cast<size_t>(K * N), 11), a = randomFloats(static_cast<size_t>(M * K), 12);
  for (bool zp : {false, true})
    for (int64_t bits : {4, 8}) {
      PackedWeight p = pack(w, K, N, bits, 32, zp);
      if (!zp)
        p.zp.clear();
      OneNode n = nbitsNode(p, 4, zp ? 4 : 3);
      std::vector<float> got = floats(n.out(nbitsInputs(p, a, M, zp)));
      EXPECT_FLOATS_NEAR(got, int8Ref(p, a, M), 1e-5);
      // And within int8 activation error of the f32 path.
      EXPECT_FLOATS_NEAR(got, matmulRef(a, p.deq, M, K, N), 0.08);
    }
}

TEST(InterpMatMulNBits, BadShapesAreErrors) {
  const int64_t K = 32, N = 2;
  PackedWeight p = pack(randomFloats(static_cast<size_t>(K * N), 13), K, N, 4, 16, false);
  OneNode n = nbitsNode(p, 0, 3);
  auto in = nbitsInputs(p, randomFloats(static_cast<size_t>(K), 14), 1, false);
  in[2] = f32({1}, {1}); // too few scales
  auto r = n.eval(in);
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("scales"), std::string::npos);
  n.attr(Attribute::makeInt("block_size", 24)); // not a power of 2
  EXPECT_FALSE(n.eval(nbitsInputs(p, randomFloats(static_cast<size_t>(K), 14), 1, false)));
}

TEST(InterpGatherBlockQuantized, PackedU8RowsWithZeroPoints) {
  // Logical table [3,32] of 4-bit values, blocks of 16 along the last axis.
  const int64_t rows = 3, cols = 32, bs = 16;
  auto q = [](int64_t r, int64_t c) { return static_cast<int>((r * 7 + c) % 16); };
  auto zpv = [](int64_t r, int64_t b) { return static_cast<int>((r + 3 * b) % 16); };
  std::vector<uint8_t> data(static_cast<size_t>(rows * cols / 2), 0), zp(static_cast<size_t>(rows), 0);
  std::vector<float> scales;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c)
      data[static_cast<size_t>((r * cols + c) / 2)] |= static_cast<uint8_t>(q(r, c) << ((c % 2) * 4));
    for (int64_t b = 0; b < 2; ++b) {
      zp[static_cast<size_t>(r)] |= static_cast<uint8_t>(zpv(r, b) << (b * 4));
      scales.push_back(0.5f + static_cast<float>(r * 2 + b));
    }
  }
  OneNode g(OpKind::GatherBlockQuantized, 1, 4);
  g.attr(Attribute::makeInt("block_size", bs)).attr(Attribute::makeInt("bits", 4))
      .attr(Attribute::makeInt("quantize_axis", 1));
  Tensor y = g.out({Tensor::fromVector(DType::U8, {rows, cols / 2}, data), i64({2}, {2, -3}),
                    f32({rows, 2}, scales), Tensor::fromVector(DType::U8, {rows, 1}, zp)});
  ASSERT_EQ(y.shape(), (std::vector<int64_t>{2, cols}));
  std::vector<float> want;
  for (int64_t r : {2, 0})
    for (int64_t c = 0; c < cols; ++c)
      want.push_back(static_cast<float>(q(r, c) - zpv(r, c / bs)) * scales[static_cast<size_t>(r * 2 + c / bs)]);
  EXPECT_EQ(floats(y), want);
  // Without zero points, u8 data centres on 2^(bits-1).
  y = g.out({Tensor::fromVector(DType::U8, {rows, cols / 2}, data), i64({1}, {1}), f32({rows, 2}, scales), none()});
  EXPECT_EQ(floats(y)[0], static_cast<float>(q(1, 0) - 8) * scales[2]);
  EXPECT_FALSE(g.eval({Tensor::fromVector(DType::U8, {rows, cols / 2}, data), i64({1}, {3}), f32({rows, 2}, scales), none()}));
}

TEST(InterpGatherBlockQuantized, Int4DataDefaultsToZeroPointZero) {
  std::vector<uint8_t> packed(16, 0);
  for (int i = 0; i < 32; ++i) // values -8..7 repeating
    packed[static_cast<size_t>(i / 2)] |= static_cast<uint8_t>(((i % 16) & 0xf) << ((i % 2) * 4));
  Tensor data = Tensor::fromBytes(DType::I4, {2, 16}, packed.data(), packed.size());
  OneNode g(OpKind::GatherBlockQuantized, 1, 3);
  g.attr(Attribute::makeInt("block_size", 16));
  Tensor y = g.out({data, i32({1}, {1}), f32({2, 1}, {1, 2})});
  std::vector<float> want;
  for (int i = 0; i < 16; ++i)
    want.push_back(2.f * static_cast<float>(i < 8 ? i : i - 16));
  EXPECT_EQ(floats(y), want);
}

} // namespace
} // namespace llmopt::test

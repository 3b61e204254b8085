// The quantized formats (ir/QuantFormats.h): packed bytes decode back to the intended
// integers, for every bits / sym / block choice the passes make, K a multiple of the
// block or not; MatMulNBits blobs follow ORT's layout byte for byte.
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "ir/QuantFormats.h"

using namespace llmopt;
using namespace llmopt::quant;

namespace {

Tensor randomWeight(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.05f);
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (float &x : v)
    x = nd(rng);
  v[3] = 0.3f; // an outlier, so blocks differ in scale
  return Tensor::fromVector(DType::F32, {rows, cols}, v);
}

/// The test's own decoder of ONNX-packed storage (independent of loadElement).
int32_t decode(const Tensor &t, int64_t i) {
  const uint8_t *d = t.data();
  switch (t.dtype()) {
  case DType::I8: return static_cast<int8_t>(d[i]);
  case DType::U8: return d[i];
  case DType::U4: return i % 2 ? d[i / 2] >> 4 : d[i / 2] & 15;
  case DType::I4: {
    int32_t v = i % 2 ? d[i / 2] >> 4 : d[i / 2] & 15;
    return v > 7 ? v - 16 : v;
  }
  default: ADD_FAILURE() << "unexpected dtype"; return 0;
  }
}

/// The intended integers: the block of rows [k0, k1) of column n quantized by the
/// documented rule (MLAS's range2scale / range2scalezp, then roundf and clamp).
struct RefBlock {
  float scale = 0, zp = 0;
  std::vector<int32_t> q;
};
RefBlock reference(const float *w, int64_t N, int64_t n, int64_t k0, int64_t k1, int bits,
                   bool sym) {
  RefBlock r;
  if (sym) {
    float m = 0;
    for (int64_t k = k0; k < k1; ++k)
      if (std::fabs(w[k * N + n]) > std::fabs(m))
        m = w[k * N + n];
    r.scale = m / -static_cast<float>(1 << (bits - 1));
  } else {
    float lo = 0, hi = 0;
    for (int64_t k = k0; k < k1; ++k) {
      lo = std::min(lo, w[k * N + n]);
      hi = std::max(hi, w[k * N + n]);
    }
    r.scale = (hi - lo) / static_cast<float>((1 << bits) - 1);
    r.zp = r.scale == 0
               ? 0
               : std::clamp(std::roundf(-lo / r.scale), 0.f, static_cast<float>((1 << bits) - 1));
  }
  const int32_t lo = sym ? -(1 << (bits - 1)) : 0,
                hi = sym ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
  for (int64_t k = k0; k < k1; ++k) {
    const float inv = r.scale != 0 ? 1.f / r.scale : 0.f;
    // Rounded in the unsigned domain, as MLAS does (differs from roundf(x / s) on negative ties).
    r.q.push_back(
        std::clamp(static_cast<int32_t>(std::roundf(w[k * N + n] * inv + r.zp - lo)) + lo, lo, hi));
  }
  return r;
}

struct Format {
  int bits;
  bool sym;
  int64_t block; // 0: per channel along axis 1 (one scale per output column)
  int64_t K;
};

std::string formatName(const ::testing::TestParamInfo<Format> &info) {
  const Format &f = info.param;
  return "b" + std::to_string(f.bits) + (f.sym ? "_sym" : "_asym") + "_block" +
         std::to_string(f.block) + "_K" + std::to_string(f.K);
}

class QuantFormat : public ::testing::TestWithParam<Format> {};
class QuantFormatNBits : public ::testing::TestWithParam<Format> {};

std::vector<Format> formats(bool perChannel) {
  std::vector<Format> out;
  for (int bits : {2, 3, 4, 8})
    for (bool sym : {true, false}) {
      for (int64_t block : {16, 32, 64, 128, 256})
        for (int64_t K : {256, 100, 7}) // a multiple, not a multiple, shorter than a block
          out.push_back({bits, sym, block, K});
      if (perChannel)
        out.push_back({bits, sym, 0, 100});
    }
  return out;
}

} // namespace

TEST(QuantFormatBasics, StorageAndRanges) {
  static_assert(storageType(4, true) == DType::I4 && storageType(3, false) == DType::U4);
  static_assert(storageType(8, true) == DType::I8 && storageType(2, true) == DType::I4);
  static_assert(storedRange(4, true).lo == -8 && storedRange(4, true).hi == 7);
  static_assert(storedRange(3, false).hi == 7 && storedRange(2, true).lo == -2);
  // ONNX packing: element 2j in the low nibble of byte j.
  uint8_t bytes[2] = {0, 0};
  storeElement(bytes, DType::U4, 0, 1);
  storeElement(bytes, DType::U4, 1, 2);
  storeElement(bytes, DType::U4, 2, 15);
  EXPECT_EQ(bytes[0], 0x21);
  EXPECT_EQ(bytes[1], 0x0F);
  storeElement(bytes, DType::I4, 3, -1);
  EXPECT_EQ(bytes[1], 0xFF);
  EXPECT_EQ(loadElement(bytes, DType::I4, 3), -1);
  EXPECT_EQ(loadElement(bytes, DType::U4, 3), 15);
  EXPECT_EQ(loadElement(bytes, DType::I4, 0), 1);
}

TEST(QuantFormatBasics, RtnParamsFollowMlas) {
  const float sym[] = {0.5f, -2.f, 1.f};
  BlockParams p = rtnParams(sym, 3, 1, 4, true);
  EXPECT_FLOAT_EQ(p.scale, 0.25f); // -2 / -8: the extreme maps to -8
  EXPECT_EQ(quantizeValue(-2.f, p, storedRange(4, true)), -8);
  EXPECT_EQ(quantizeValue(1.f, p, storedRange(4, true)), 4);
  const float asym[] = {1.f, 3.f}; // the range is widened to include 0
  p = rtnParams(asym, 2, 1, 4, false);
  EXPECT_FLOAT_EQ(p.scale, 0.2f);
  EXPECT_EQ(p.zeroPoint, 0.f);
  EXPECT_EQ(quantizeValue(3.f, p, storedRange(4, false)), 15);
  // Ties round in the unsigned domain, as MLAS: -0.5 -> roundf(7.5) - 8 = 0, not -1.
  EXPECT_EQ(quantizeValue(-0.5f, BlockParams{1.f, 0.f}, storedRange(4, true)), 0);
  EXPECT_EQ(quantizeValue(0.5f, BlockParams{1.f, 0.f}, storedRange(4, true)), 1);
  EXPECT_EQ(quantizeValue(-9.f, BlockParams{1.f, 0.f}, storedRange(4, true)), -8);
  const float zeros[] = {0.f, 0.f};
  p = rtnParams(zeros, 2, 1, 4, true);
  EXPECT_EQ(quantizeValue(0.f, p, storedRange(4, true)), 0);
}

TEST_P(QuantFormat, PackedIntegersMatchTheScalarReference) {
  const Format f = GetParam();
  const int64_t K = f.K, N = 5;
  const Tensor w = randomWeight(K, N, 11);
  const QuantEncoding enc{storageType(f.bits, f.sym), f.bits, f.block ? 0 : 1, f.block, f.sym};
  auto q = quantizeRtn(w, enc);
  ASSERT_TRUE(q) << q.status().message();
  ASSERT_TRUE(validate(*q, enc).isOk());
  EXPECT_EQ(q->nbytes(), storageBytes(enc.storage, K * N)); // packed, no padding
  const float *x = reinterpret_cast<const float *>(w.data());
  const float *sc = reinterpret_cast<const float *>(q->scales->data());
  const int64_t bs = f.block ? f.block : K, kb = (K + bs - 1) / bs;
  ASSERT_EQ(q->scales->numel(), f.block ? kb * N : N);
  EXPECT_EQ(q->zeroPoints != nullptr, !f.sym);
  auto deq = dequantize(*q, enc);
  ASSERT_TRUE(deq);
  const float *dv = reinterpret_cast<const float *>(deq->data());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t blk = 0; blk < kb; ++blk) {
      const int64_t k0 = blk * bs, k1 = std::min(K, k0 + bs);
      const RefBlock ref = reference(x, N, n, k0, k1, f.bits, f.sym);
      const int64_t s = f.block ? blk * N + n : n;
      ASSERT_FLOAT_EQ(sc[s], ref.scale) << "block " << blk << " column " << n;
      if (!f.sym) {
        ASSERT_EQ(decode(*q->zeroPoints, s), static_cast<int32_t>(ref.zp));
      }
      for (int64_t k = k0; k < k1; ++k) {
        const int32_t got = decode(*q, k * N + n);
        ASSERT_EQ(got, ref.q[static_cast<size_t>(k - k0)]) << "k " << k << " n " << n;
        ASSERT_EQ(dv[k * N + n], (static_cast<float>(got) - ref.zp) * ref.scale);
        // RTN error: half a step, a whole one where symmetric clamps the positive side.
        ASSERT_LE(std::fabs(dv[k * N + n] - x[k * N + n]),
                  std::fabs(ref.scale) * (f.sym ? 1.f : 0.5f) + 1e-7f);
      }
    }
}

TEST_P(QuantFormatNBits, BlobsDecodeToTheSameIntegers) {
  const Format f = GetParam();
  const int64_t K = f.K, N = 5;
  const QuantEncoding enc{storageType(f.bits, f.sym), f.bits, 0, f.block, f.sym};
  auto q = quantizeRtn(randomWeight(K, N, 5), enc);
  ASSERT_TRUE(q);
  auto nb = toMatMulNBits(*q, enc, false);
  ASSERT_TRUE(nb) << nb.status().message();
  const NBitsLayout &l = nb->layout;
  const int cbits = containerBits(enc.storage);
  ASSERT_EQ(l.bits, cbits);
  const int64_t kb = (K + f.block - 1) / f.block, blob = f.block * cbits / 8;
  ASSERT_EQ(nb->b.shape(), (std::vector<int64_t>{N, kb, blob}));
  ASSERT_EQ(nb->scales.shape(), (std::vector<int64_t>{N, kb}));
  const uint8_t *b = nb->b.data();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < kb * f.block; ++k) {
      // ORT's layout, decoded by hand: element j of a block in bits (j % per) * bits of byte j /
      // per.
      const int64_t blk = k / f.block, j = k % f.block, per = 8 / cbits;
      const int32_t u =
          (b[(n * kb + blk) * blob + j / per] >> ((j % per) * cbits)) & ((1 << cbits) - 1);
      int32_t zp = f.sym ? 1 << (cbits - 1) : 0;
      if (!f.sym) {
        const uint8_t *z = nb->zeroPoints->data();
        const int64_t zcol = (kb * cbits + 7) / 8;
        zp = (z[n * zcol + blk / per] >> ((blk % per) * cbits)) & ((1 << cbits) - 1);
        ASSERT_EQ(zp, decode(*q->zeroPoints, blk * N + n));
      }
      if (k < K)
        ASSERT_EQ(u - zp, decode(*q, k * N + n) - (f.sym ? 0 : zp)) << "k " << k << " n " << n;
      else
        ASSERT_EQ(u, 0) << "padding past K is zero bytes, as ORT's quantizer writes it";
    }
  // The reference decoder gives the same f32 weight as the IR layout.
  auto deq = dequantize(*q, enc);
  const std::vector<float> w2 = dequantizeNBits(*nb);
  for (int64_t i = 0; i < K * N; ++i)
    ASSERT_EQ(w2[static_cast<size_t>(i)], reinterpret_cast<const float *>(deq->data())[i]);
}

TEST_P(QuantFormatNBits, TransposedTableGivesTheSameBlob) {
  // A tied embedding E [N, K] quantized along axis 1 is the LM head's W = E^T.
  const Format f = GetParam();
  const int64_t K = f.K, N = 5;
  const Tensor w = randomWeight(K, N, 3);
  std::vector<float> t(static_cast<size_t>(K * N));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n)
      t[static_cast<size_t>(n * K + k)] = reinterpret_cast<const float *>(w.data())[k * N + n];
  const QuantEncoding enc0{storageType(f.bits, f.sym), f.bits, 0, f.block, f.sym};
  const QuantEncoding enc1{storageType(f.bits, f.sym), f.bits, 1, f.block, f.sym};
  auto q0 = quantizeRtn(w, enc0);
  auto q1 = quantizeRtn(Tensor::fromVector(DType::F32, {N, K}, t), enc1);
  ASSERT_TRUE(q0 && q1);
  auto a = toMatMulNBits(*q0, enc0, false), b = toMatMulNBits(*q1, enc1, true);
  ASSERT_TRUE(a && b) << (b ? "" : b.status().message());
  EXPECT_TRUE(a->b.sameContents(b->b));
  EXPECT_TRUE(a->scales.sameContents(b->scales));
  EXPECT_EQ(a->zeroPoints.has_value(), b->zeroPoints.has_value());
  if (a->zeroPoints) {
    EXPECT_TRUE(a->zeroPoints->sameContents(*b->zeroPoints));
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantFormat, ::testing::ValuesIn(formats(true)), formatName);
// Per-channel weights have no MatMulNBits form.
INSTANTIATE_TEST_SUITE_P(Formats, QuantFormatNBits, ::testing::ValuesIn(formats(false)),
                         formatName);

TEST(QuantFormatBasics, FloatZeroPointsRoundTrip) {
  // HQQ's fractional zero points: stored as f32, MatMulNBits takes them as A's type.
  const QuantEncoding enc{DType::U4, 4, 0, 16, false};
  const Tensor w = randomWeight(32, 3, 9);
  std::vector<BlockParams> p(6, BlockParams{0.01f, 7.25f});
  auto q = quantizeWithParams(w, enc, p, /*floatZeroPoints=*/true);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->zeroPoints->dtype(), DType::F32);
  auto nb = toMatMulNBits(*q, enc, false);
  ASSERT_TRUE(nb);
  EXPECT_EQ(nb->zeroPoints->dtype(), DType::F32);
  auto deq = dequantize(*q, enc);
  const std::vector<float> w2 = dequantizeNBits(*nb);
  for (int64_t i = 0; i < 96; ++i)
    ASSERT_EQ(w2[static_cast<size_t>(i)], reinterpret_cast<const float *>(deq->data())[i]);
  EXPECT_FLOAT_EQ(reinterpret_cast<const float *>(deq->data())[0],
                  (static_cast<float>(decode(*q, 0)) - 7.25f) * 0.01f);
}

TEST(QuantFormatBasics, ValidateNamesTheProblem) {
  const QuantEncoding enc{DType::I4, 4, 0, 32, true};
  auto q = quantizeRtn(randomWeight(64, 4, 1), enc);
  ASSERT_TRUE(q);
  Tensor bad = *q;
  bad.scales = std::make_shared<Tensor>(Tensor::zeros(DType::F32, {3, 4}));
  Status st = validate(bad, enc);
  ASSERT_FALSE(st.isOk());
  EXPECT_NE(st.message().find("scales of shape [2,4]"), std::string::npos) << st.message();
  QuantEncoding asym = enc;
  asym.symmetric = false;
  EXPECT_NE(validate(*q, asym).message().find("unsigned"), std::string::npos);
  QuantEncoding axis = enc;
  axis.axis = 2;
  EXPECT_NE(validate(*q, axis).message().find("out of range"), std::string::npos);
  EXPECT_FALSE(toMatMulNBits(*q, enc, true)); // blocks run along the wrong axis
  QuantEncoding odd = enc;
  odd.blockSize = 24;
  auto q24 = quantizeRtn(randomWeight(64, 4, 1), odd);
  ASSERT_TRUE(q24);
  EXPECT_FALSE(fitsMatMulNBits(q24->shape(), odd, false));
}

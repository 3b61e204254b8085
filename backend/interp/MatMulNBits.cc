// com.microsoft::MatMulNBits: Y = A x dequant(B) (+ bias), B block-quantized along K.
//
// Layout (ORT): B u8 [N, k_blocks, block_size*bits/8], element k of a block in bits
// (k % (8/bits))*bits.. of byte k*bits/8 (element 2j in the low nibble of byte j for
// 4-bit); scales [N*k_blocks]; zero_points packed the same way per column, ceil(k_blocks*
// bits/8) bytes each (default 2^(bits-1)), or unpacked in A's type; g_idx [K] maps a
// row of B to its block.
//
// accuracy_level 4 (4- and 8-bit, packed or absent zero points, no g_idx) follows ONNX
// Runtime's CPU CompInt8 path: each row of A is quantized per block to int8 with
// scale = max|a| / 127 and round-half-even, the block dot product is exact in int32,
// and blocks accumulate in f32 as dot * (scale_a * scale_b). Otherwise B is
// dequantized to f32 and multiplied by GEMM, as ORT's CompFp32 path does.
#include <cmath>

#include "backend/interp/Gemm.h"

namespace llmopt::interp {
namespace {

struct NBits {
  int64_t K = 0, N = 0, bits = 4, bs = 0, kBlocks = 0, blob = 0, zpCol = 0;
  const uint8_t *b = nullptr;
  const float *scales = nullptr;
  const uint8_t *zpPacked = nullptr;
  const float *zpFloat = nullptr;
  std::vector<int64_t> gIdx;

  int q(int64_t n, int64_t k) const {
    const int64_t blk = k / bs, in = k % bs, per = 8 / bits;
    const uint8_t byte = b[(n * kBlocks + blk) * blob + in / per];
    return (byte >> ((in % per) * bits)) & ((1 << bits) - 1);
  }
  float zp(int64_t n, int64_t blk) const {
    if (zpFloat)
      return zpFloat[n * kBlocks + blk];
    if (!zpPacked)
      return static_cast<float>(1 << (bits - 1));
    const int64_t per = 8 / bits;
    const uint8_t byte = zpPacked[n * zpCol + blk / per];
    return static_cast<float>((byte >> ((blk % per) * bits)) & ((1 << bits) - 1));
  }
  int64_t block(int64_t k) const { return gIdx.empty() ? k / bs : gIdx[static_cast<size_t>(k)]; }
};

/// The f32 path: W[K,N] dequantized, then A[M,K] x W.
void gemmFp32(const NBits &p, const float *a, int64_t M, float *y) {
  std::vector<float> w(static_cast<size_t>(p.K * p.N));
  parallelFor(p.N, 64, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t k = 0; k < p.K; ++k) {
        const int64_t blk = p.block(k);
        w[static_cast<size_t>(k * p.N + n)] =
            (static_cast<float>(p.q(n, k)) - p.zp(n, blk)) * p.scales[n * p.kBlocks + blk];
      }
  });
  batchedGemm<float>(a, w.data(), y, {0}, {0}, M, p.K, p.N);
}

/// The int8 path (accuracy_level 4), matching ORT's CompInt8 arithmetic.
void gemmInt8(const NBits &p, const float *a, int64_t M, float *y) {
  const int64_t kPad = p.kBlocks * p.bs;
  // B - zero point as int16 (8-bit differences reach +-255), zero past K.
  std::vector<int16_t> w(static_cast<size_t>(p.N * kPad), 0);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t k = 0; k < p.K; ++k)
      w[static_cast<size_t>(n * kPad + k)] =
          static_cast<int16_t>(p.q(n, k) - static_cast<int>(p.zp(n, k / p.bs)));
  std::vector<int8_t> qa(static_cast<size_t>(M * kPad), 0);
  std::vector<float> sa(static_cast<size_t>(M * p.kBlocks));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t blk = 0; blk < p.kBlocks; ++blk) {
      const int64_t k0 = blk * p.bs, k1 = std::min(p.K, k0 + p.bs);
      float amax = 0.f;
      for (int64_t k = k0; k < k1; ++k)
        amax = std::max(amax, std::fabs(a[m * p.K + k]));
      const float scale = amax / 127.f, inv = amax != 0.f ? 127.f / amax : 0.f;
      sa[static_cast<size_t>(m * p.kBlocks + blk)] = scale;
      for (int64_t k = k0; k < k1; ++k)
        qa[static_cast<size_t>(m * kPad + k)] = static_cast<int8_t>(std::nearbyint(a[m * p.K + k] * inv));
    }
  parallelFor(M * p.N, 256, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t m = t / p.N, n = t % p.N;
      const int8_t *ar = qa.data() + m * kPad;
      const int16_t *wr = w.data() + n * kPad;
      float acc = 0.f;
      for (int64_t blk = 0; blk < p.kBlocks; ++blk) {
        int32_t dot = 0;
        for (int64_t k = blk * p.bs; k < (blk + 1) * p.bs; ++k)
          dot += static_cast<int32_t>(ar[k]) * static_cast<int32_t>(wr[k]);
        acc += static_cast<float>(dot) * (sa[static_cast<size_t>(m * p.kBlocks + blk)] * p.scales[n * p.kBlocks + blk]);
      }
      y[t] = acc;
    }
  });
}

Expected<TensorList> kMatMulNBits(const Node &n, const InputList &in) {
  const Tensor &A = *in[0], &B = *in[1], &S = *in[2];
  const Tensor *zp = optInput(in, 3), *gIdx = optInput(in, 4), *bias = optInput(in, 5);
  NBits p;
  p.K = n.attrInt("K", 0);
  p.N = n.attrInt("N", 0);
  p.bits = n.attrInt("bits", 4);
  p.bs = n.attrInt("block_size", 0);
  if (p.bits != 2 && p.bits != 4 && p.bits != 8)
    return nodeError(n, "bits must be 2, 4 or 8, got {}", p.bits);
  if (p.bs < 16 || (p.bs & (p.bs - 1)) != 0)
    return nodeError(n, "block_size must be a power of 2 >= 16, got {}", p.bs);
  if (p.K <= 0 || p.N <= 0)
    return nodeError(n, "K and N must be positive, got {} and {}", p.K, p.N);
  if (A.dtype() != DType::F32 || A.rank() < 1 || A.shape().back() != p.K)
    return nodeError(n, "A must be f32/f16 [..., {}], got {} {}", p.K, dtypeStr(A.dtype()), shapeStr(A.shape()));
  p.kBlocks = (p.K + p.bs - 1) / p.bs;
  p.blob = p.bs * p.bits / 8;
  p.zpCol = (p.kBlocks * p.bits + 7) / 8;
  if (B.dtype() != DType::U8 || B.numel() != p.N * p.kBlocks * p.blob)
    return nodeError(n, "B must be u8 [{}, {}, {}], got {} {}", p.N, p.kBlocks, p.blob,
                     dtypeStr(B.dtype()), shapeStr(B.shape()));
  if (S.dtype() != DType::F32 || S.numel() != p.N * p.kBlocks)
    return nodeError(n, "scales must hold {} values of A's type, got {} {}", p.N * p.kBlocks,
                     dtypeStr(S.dtype()), shapeStr(S.shape()));
  p.b = B.data();
  p.scales = dataOf<float>(S);
  if (zp && zp->dtype() == DType::U8) {
    if (zp->numel() != p.N * p.zpCol)
      return nodeError(n, "packed zero_points must hold {} bytes, got {}", p.N * p.zpCol, zp->numel());
    p.zpPacked = zp->data();
  } else if (zp) {
    if (zp->dtype() != DType::F32 || zp->numel() != p.N * p.kBlocks)
      return nodeError(n, "zero_points must be u8 (packed) or A's type [{}], got {} {}",
                       p.N * p.kBlocks, dtypeStr(zp->dtype()), shapeStr(zp->shape()));
    p.zpFloat = dataOf<float>(*zp);
  }
  if (gIdx) {
    if (gIdx->numel() != p.K || !isIntType(gIdx->dtype()))
      return nodeError(n, "g_idx must hold {} integers", p.K);
    p.gIdx = gIdx->toInts();
    for (int64_t g : p.gIdx)
      if (g < 0 || g >= p.kBlocks)
        return nodeError(n, "g_idx entry {} is out of range [0, {})", g, p.kBlocks);
  }
  if (bias && (bias->dtype() != DType::F32 || bias->numel() != p.N))
    return nodeError(n, "bias must hold {} values of A's type", p.N);

  Shape outShape = A.shape();
  outShape.back() = p.N;
  Tensor y = Tensor::zeros(DType::F32, outShape);
  const int64_t M = A.numel() / p.K;
  float *yv = mutableDataOf<float>(y);
  // ORT 1.32's CPU kernel quantizes A to int8 at accuracy_level 4 for 4- and 8-bit
  // weights, and for 2-bit weights in blocks of 32 or more (2-bit blocks of 16 run in f32:
  // measured by tests/python/test_quant_ort.py against ORT node by node).
  const bool int8Path = n.attrInt("accuracy_level", 0) == 4 &&
                        ((p.bits == 2 && p.bs >= 32) || p.bits == 4 || p.bits == 8) &&
                        !p.zpFloat && p.gIdx.empty();
  if (int8Path)
    gemmInt8(p, dataOf<float>(A), M, yv);
  else
    gemmFp32(p, dataOf<float>(A), M, yv);
  if (bias) {
    const float *bv = dataOf<float>(*bias);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t j = 0; j < p.N; ++j)
        yv[m * p.N + j] += bv[j];
  }
  return TensorList{y};
}

} // namespace

void addMatMulNBitsKernel(KernelTable &t) {
  t.push_back({OpKind::MatMulNBits, kMatMulNBits, 1, std::numeric_limits<int64_t>::max(), true});
}

} // namespace llmopt::interp

// CUDA int4 GEMV on ONNX Runtime's MatMulNBits layout (optional: nothing in llmopt depends
// on it; built only with -DLLMOPT_ENABLE_CUDA=ON or by bench/cuda/build.sh).
//
//   y[n] = sum_k a[k] * (q[n][k] - zp[n][k / bs]) * scale[n][k / bs]      n < N, k < K
//
// Weights as MatMulNBits stores them (docs/formats.md): B uint8 [N, ceil(K/bs), bs/2], two
// 4-bit values a byte, the even k in the low nibble; scales f32 [N * ceil(K/bs)]; zero
// points either absent (8) or packed uint8 [N, ceil(ceil(K/bs)/2)], the even block low.
// K is padded to whole blocks with zero weights, as MatMulNBits pads it; `a` must hold
// Kpad = ceil(K/bs)*bs floats, zeros past K (a padded weight dequantizes to (q - zp) * s,
// which need not be 0, so the zeros in `a` are what cancel it).
//
// Work split: a block of kGemvWarps warps owns kGemvRows consecutive rows; per step each
// lane takes 32 consecutive k (one 16-byte load per row, coalesced across the warp: 512
// bytes a row a step; the block's warps take adjacent 1024-element steps) and the 32
// matching activations once for all rows (8 float4 loads, L1-cached). Every load of a step
// is issued before its first use. The warps' partial sums are added in a fixed order
// through shared memory: results do not depend on scheduling. Block sizes >= 32 keep each
// lane's 32 values inside one quantization block: one scale (and zero point) per load.
// A nibble q becomes a float exactly as bits(0x4B000000 | q) - 2^23 (no int->float
// conversion); q - zp is then one subtraction of 2^23 + zp.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace llmopt::cuda {

constexpr int kGemvRows = 8;  ///< rows per block (8 x 4 was the fastest of 6 shapes on an H100)
constexpr int kGemvWarps = 4; ///< warps per block, splitting K

/// The block's rows: each warp's partial sums reduced over its lanes, then over the warps
/// in a fixed order through shared memory (no atomics: the same bits every run).
template <int kRows, int kWarps>
__device__ __forceinline__ void storeRows(const float (&acc)[kRows], float *y, int n0, int rows) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __shared__ float part[kWarps][kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    float v = acc[r];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
      v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0)
      part[warp][r] = v;
  }
  __syncthreads();
  if (threadIdx.x < rows) {
    float v = 0.f;
#pragma unroll
    for (int i = 0; i < kWarps; ++i)
      v += part[i][threadIdx.x];
    y[n0 + threadIdx.x] = v;
  }
}

template <int kRows, int kWarps>
__global__ void __launch_bounds__(32 * kWarps)
int4GemvKernel(const float *__restrict__ a, const uint8_t *__restrict__ b, const float *__restrict__ scales,
               const uint8_t *__restrict__ zps, float *__restrict__ y, int N, int Kpad, int bs) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n0 = blockIdx.x * kRows;
  const int nblk = Kpad / bs, rowBytes = Kpad / 2, zpBytes = (nblk + 1) / 2;
  const int rows = min(kRows, N - n0);
  float acc[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
    acc[r] = 0.f;
  for (int k0 = (warp * 32 + lane) * 32; k0 < Kpad; k0 += kWarps * 1024) {
    const int blk = k0 / bs;
    uint4 w[kRows];
    float sc[kRows], off[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) { // weights, scales and zero points all in flight at once
      const size_t row = (size_t)(r < rows ? n0 + r : n0);
      w[r] = r < rows ? __ldg(reinterpret_cast<const uint4 *>(b + row * rowBytes + k0 / 2)) : make_uint4(0, 0, 0, 0);
      sc[r] = __ldg(scales + row * nblk + blk);
      off[r] = 8388608.f + 8.f; // 2^23 + zp
      if (zps) {
        const uint8_t z = __ldg(zps + row * zpBytes + blk / 2);
        off[r] = 8388608.f + static_cast<float>((blk & 1) ? (z >> 4) : (z & 15));
      }
    }
    float4 av[8];
    const float4 *ap = reinterpret_cast<const float4 *>(a + k0);
#pragma unroll
    for (int i = 0; i < 8; ++i)
      av[i] = __ldg(ap + i);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const uint32_t words[4] = {w[r].x, w[r].y, w[r].z, w[r].w};
      float s = 0.f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float *aj = reinterpret_cast<const float *>(&av[2 * j]);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const float q = __int_as_float(0x4B000000u | ((words[j] >> (4 * e)) & 15u)) - off[r];
          s = fmaf(q, aj[e], s);
        }
      }
      acc[r] = fmaf(s, sc[r], acc[r]);
    }
  }
  storeRows<kRows, kWarps>(acc, y, n0, rows);
}

/// The int8-activation variant (ONNX Runtime's accuracy_level 4 semantics): each block of
/// `bs` activations is quantized to int8 with scale max|a| / 127 (round to nearest even),
/// and the dot products run on __dp4a, 4 multiply-adds an instruction:
///   y[n] = sum_blocks s_w * s_a * (dot(q, a8) - zp * sum(a8))
/// A lane's 32 activations are quantized once for all the block's rows; a weight block
/// wider than 32 takes its max over the bs/32 lanes that hold it (shuffles). The packed
/// nibbles split as (w & 0x0F0F0F0F) = elements 0,2,4,6 and (w >> 4) & 0x0F0F0F0F = 1,3,5,7
/// of each 8, so the activations are packed in that order.
template <int kRows, int kWarps>
__global__ void __launch_bounds__(32 * kWarps)
int4GemvQ8Kernel(const float *__restrict__ a, const uint8_t *__restrict__ b, const float *__restrict__ scales,
                 const uint8_t *__restrict__ zps, float *__restrict__ y, int N, int Kpad, int bs) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n0 = blockIdx.x * kRows;
  const int nblk = Kpad / bs, rowBytes = Kpad / 2, zpBytes = (nblk + 1) / 2;
  const int rows = min(kRows, N - n0), lanesPerBlock = bs / 32;
  float acc[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
    acc[r] = 0.f;
  // Warp-uniform trip count: lanes past Kpad (whole weight blocks) take part with zeros.
  for (int base = warp * 1024; base < Kpad; base += kWarps * 1024) {
    const int k0 = base + lane * 32;
    const bool active = k0 < Kpad;
    const int blk = active ? k0 / bs : 0;
    uint4 w[kRows];
    float sc[kRows];
    int zp[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) { // weights, scales and zero points all in flight at once
      const bool on = active && r < rows;
      const size_t row = (size_t)(r < rows ? n0 + r : n0);
      w[r] = on ? __ldg(reinterpret_cast<const uint4 *>(b + row * rowBytes + k0 / 2)) : make_uint4(0, 0, 0, 0);
      sc[r] = on ? __ldg(scales + row * nblk + blk) : 0.f;
      zp[r] = 8;
      if (zps && on) {
        const uint8_t z = __ldg(zps + row * zpBytes + blk / 2);
        zp[r] = (blk & 1) ? (z >> 4) : (z & 15);
      }
    }
    float av[32];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float4 v = active ? __ldg(reinterpret_cast<const float4 *>(a + k0) + i) : make_float4(0, 0, 0, 0);
      av[4 * i] = v.x, av[4 * i + 1] = v.y, av[4 * i + 2] = v.z, av[4 * i + 3] = v.w;
    }
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < 32; ++i)
      amax = fmaxf(amax, fabsf(av[i]));
    for (int o = 1; o < lanesPerBlock; o <<= 1)
      amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float inv = amax > 0.f ? 127.f / amax : 0.f, sa = amax / 127.f;
    int even[4], odd[4], asum = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int q8[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        q8[e] = __float2int_rn(av[8 * j + e] * inv);
        asum += q8[e];
      }
      even[j] = (q8[0] & 255) | (q8[2] & 255) << 8 | (q8[4] & 255) << 16 | (q8[6] & 255) << 24;
      odd[j] = (q8[1] & 255) | (q8[3] & 255) << 8 | (q8[5] & 255) << 16 | (q8[7] & 255) << 24;
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (!active || r >= rows)
        continue;
      const uint32_t words[4] = {w[r].x, w[r].y, w[r].z, w[r].w};
      int d = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        d = __dp4a(static_cast<int>(words[j] & 0x0F0F0F0Fu), even[j], d);
        d = __dp4a(static_cast<int>((words[j] >> 4) & 0x0F0F0F0Fu), odd[j], d);
      }
      acc[r] = fmaf(static_cast<float>(d - zp[r] * asum), sc[r] * sa, acc[r]);
    }
  }
  storeRows<kRows, kWarps>(acc, y, n0, rows);
}

using GemvKernel = void (*)(const float *, const uint8_t *, const float *, const uint8_t *, float *, int, int, int);

/// Checks the arguments and launches one block per kRows rows.
template <int kRows, int kWarps>
cudaError_t launchGemv(GemvKernel kernel, const float *a, const uint8_t *b, const float *scales, const uint8_t *zps,
                       float *y, int N, int Kpad, int bs, cudaStream_t stream) {
  if (bs < 32 || bs > 256 || (bs & (bs - 1)) || Kpad % bs)
    return cudaErrorInvalidValue;
  kernel<<<(N + kRows - 1) / kRows, 32 * kWarps, 0, stream>>>(a, b, scales, zps, y, N, Kpad, bs);
  return cudaGetLastError();
}

/// Launches the int8-activation GEMV (same arguments as int4Gemv).
template <int kRows, int kWarps>
cudaError_t int4GemvQ8With(const float *a, const uint8_t *b, const float *scales, const uint8_t *zps, float *y,
                           int N, int Kpad, int bs, cudaStream_t stream = 0) {
  return launchGemv<kRows, kWarps>(int4GemvQ8Kernel<kRows, kWarps>, a, b, scales, zps, y, N, Kpad, bs, stream);
}

/// Launches the GEMV on `stream` with kRows rows and kWarps warps a block (int4Gemv below
/// picks the default; the benchmark tries others).
template <int kRows, int kWarps>
cudaError_t int4GemvWith(const float *a, const uint8_t *b, const float *scales, const uint8_t *zps, float *y,
                         int N, int Kpad, int bs, cudaStream_t stream = 0) {
  return launchGemv<kRows, kWarps>(int4GemvKernel<kRows, kWarps>, a, b, scales, zps, y, N, Kpad, bs, stream);
}

/// Launches the GEMV on `stream`. Needs bs in {32, 64, 128, 256}, Kpad = ceil(K/bs)*bs (the
/// MatMulNBits row: Kpad / 2 bytes), `a` 16-byte aligned with Kpad floats (zeros past K),
/// B and scales as MatMulNBits stores them. A step's lanes past Kpad do nothing, so K needs
/// no padding beyond whole blocks.
inline cudaError_t int4Gemv(const float *a, const uint8_t *b, const float *scales, const uint8_t *zps, float *y,
                            int N, int Kpad, int bs, cudaStream_t stream = 0) {
  return int4GemvWith<kGemvRows, kGemvWarps>(a, b, scales, zps, y, N, Kpad, bs, stream);
}

} // namespace llmopt::cuda

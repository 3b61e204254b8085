// Packing into the kernel formats (from MatMulNBits arrays, from f32 by round-to-nearest)
// and the scalar element decoders the tests compare against.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <vector>

#include <sys/mman.h>

#include "backend/cpu/kernels/Kernels.h"

namespace llmopt::cpu {

void AlignedFree::operator()(uint8_t *p) const { std::free(p); }

AlignedBytes allocateAligned(size_t bytes) {
  // Weights of 4 MiB and more go on 2 MiB pages where the kernel allows it: a GEMV streams
  // them once per call, and 4 KiB pages cost a TLB miss (and a prefetcher restart) every 4 KiB.
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t align = bytes >= 2 * kHuge ? kHuge : 64;
  const size_t rounded = (std::max<size_t>(bytes, 1) + align - 1) / align * align;
  void *p = std::aligned_alloc(align, rounded);
  if (!p)
    throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  if (align == kHuge)
    madvise(p, rounded, MADV_HUGEPAGE); // advice only: failure leaves 4 KiB pages
#endif
  std::memset(p, 0, rounded);
  return AlignedBytes(static_cast<uint8_t *>(p));
}

namespace {

// Field offsets inside one record of a superblock of `size` weights (see Int4Record).
size_t scaleOffset(const Int4Layout &l, int size, int col, int g) {
  return kTileCols * size / 2 + (col * (size / l.blockSize) + g) * sizeof(float);
}
size_t zpOffset(const Int4Layout &l, int size, int col, int g) {
  const int blocks = size / l.blockSize;
  return kTileCols * (size / 2 + blocks * sizeof(float)) + col * blocks + g;
}
size_t nibbleByte(int size, int col, LanePos pos) {
  return col * (size / 2) + (pos.step / 2) * 64 + pos.byte;
}

bool validBlock(int bs) { return bs == 16 || bs == 32 || bs == 64 || bs == 128 || bs == 256; }

// Writes one column's block: q[e] for e < bs (0..15), scale, zero point.
void storeBlock(uint8_t *data, const Int4Layout &l, int64_t n, int64_t block, const uint8_t *q,
                float scale, uint8_t zp) {
  const int64_t k0 = block * l.blockSize, super = l.superOf(k0);
  const int size = l.superSizeOf(super);
  const int col = static_cast<int>(n % kTileCols);
  const int g = static_cast<int>(k0 - l.superStart(super)) / l.blockSize;
  uint8_t *rec = data + (n / kTileCols) * l.tileBytes() + l.recordOffset(super);
  for (int e = 0; e < l.blockSize; ++e) {
    const LanePos pos = int4LanePosition(g * l.blockSize + e, l.blockSize, size);
    uint8_t &byte = rec[nibbleByte(size, col, pos)];
    byte |= static_cast<uint8_t>((q[e] & 0xF) << (pos.step % 2 * 4));
  }
  std::memcpy(rec + scaleOffset(l, size, col, g), &scale, sizeof(float));
  if (l.asym)
    rec[zpOffset(l, size, col, g)] = zp;
}

Int4Buffer emptyInt4(int64_t k, int64_t n, int blockSize, bool asym) {
  if (!validBlock(blockSize) || k <= 0 || n <= 0)
    throw std::invalid_argument("llmopt::cpu: int4 block size must be 16..256 (power of 2), K and N > 0");
  Int4Buffer out;
  out.layout = Int4Layout{k, n, blockSize, asym};
  out.storage = allocateAligned(out.layout.bytes());
  return out;
}

} // namespace

Int4Buffer packInt4FromMatMulNBits(const uint8_t *b, const float *scales,
                                   const uint8_t *zeroPoints, int64_t k, int64_t n,
                                   int blockSize) {
  Int4Buffer out = emptyInt4(k, n, blockSize, zeroPoints != nullptr);
  const int64_t kBlocks = (k + blockSize - 1) / blockSize, blob = blockSize / 2;
  const int64_t zpRow = (kBlocks + 1) / 2;
  std::vector<uint8_t> q(blockSize);
  for (int64_t col = 0; col < n; ++col)
    for (int64_t blk = 0; blk < kBlocks; ++blk) {
      const uint8_t *src = b + (col * kBlocks + blk) * blob;
      for (int e = 0; e < blockSize; ++e)
        q[e] = (src[e / 2] >> (e % 2 * 4)) & 0xF;
      const uint8_t zp =
          zeroPoints ? (zeroPoints[col * zpRow + blk / 2] >> (blk % 2 * 4)) & 0xF : 8;
      storeBlock(out.storage.get(), out.layout, col, blk, q.data(), scales[col * kBlocks + blk], zp);
    }
  return out;
}

Int4Buffer packInt4Rtn(const float *w, int64_t k, int64_t n, int blockSize, bool asym) {
  Int4Buffer out = emptyInt4(k, n, blockSize, asym);
  const int64_t kBlocks = (k + blockSize - 1) / blockSize;
  std::vector<uint8_t> q(blockSize);
  for (int64_t col = 0; col < n; ++col)
    for (int64_t blk = 0; blk < kBlocks; ++blk) {
      const int64_t k0 = blk * blockSize, len = std::min<int64_t>(blockSize, k - k0);
      float lo = 0, hi = 0, amax = 0;
      for (int64_t e = 0; e < len; ++e) {
        const float v = w[(k0 + e) * n + col];
        lo = std::min(lo, v), hi = std::max(hi, v), amax = std::max(amax, std::fabs(v));
      }
      float scale;
      int zp;
      if (asym) {
        scale = (hi - lo) / 15.f;
        zp = scale > 0 ? std::clamp(static_cast<int>(std::nearbyint(-lo / scale)), 0, 15) : 8;
      } else {
        scale = amax / 7.f;
        zp = 8;
      }
      const float inv = scale > 0 ? 1.f / scale : 0.f;
      std::fill(q.begin(), q.end(), 0);
      for (int64_t e = 0; e < len; ++e)
        q[e] = static_cast<uint8_t>(std::clamp(
            static_cast<int>(std::nearbyint(w[(k0 + e) * n + col] * inv)) + zp, 0, 15));
      storeBlock(out.storage.get(), out.layout, col, blk, q.data(), scale,
                 static_cast<uint8_t>(zp));
    }
  return out;
}

Int4Element int4Element(const Int4Weights &w, int64_t k, int64_t n) {
  const Int4Layout &l = w.layout;
  assert(k >= 0 && n >= 0 && k < l.paddedK() && n < l.tiles() * kTileCols);
  const int64_t super = l.superOf(k);
  const int size = l.superSizeOf(super);
  const int e = static_cast<int>(k - l.superStart(super)), g = e / l.blockSize;
  const int col = static_cast<int>(n % kTileCols);
  const uint8_t *rec = w.record(n / kTileCols, super);
  const LanePos pos = int4LanePosition(e, l.blockSize, size);
  const int q = (rec[nibbleByte(size, col, pos)] >> (pos.step % 2 * 4)) & 0xF;
  const int zp = l.asym ? rec[zpOffset(l, size, col, g)] : 8;
  float scale;
  std::memcpy(&scale, rec + scaleOffset(l, size, col, g), sizeof(float));
  return {q, zp, scale};
}

float int4Weight(const Int4Weights &w, int64_t k, int64_t n) {
  const Int4Element el = int4Element(w, k, n);
  return static_cast<float>(el.q - el.zp) * el.scale;
}

// ---------------------------------------------------------------- int8 per channel

Int8Buffer packInt8PerChannel(const float *w, int64_t k, int64_t n) {
  if (k <= 0 || n <= 0)
    throw std::invalid_argument("llmopt::cpu: int8 weight needs K and N > 0");
  Int8Buffer out;
  out.layout = Int8Layout{k, n};
  out.storage = allocateAligned(out.layout.bytes());
  const Int8Weights view = out.view();
  for (int64_t col = 0; col < n; ++col) {
    float amax = 0;
    for (int64_t i = 0; i < k; ++i)
      amax = std::max(amax, std::fabs(w[i * n + col]));
    const float scale = amax / 127.f, inv = amax > 0 ? 127.f / amax : 0.f;
    auto *records = const_cast<Int8Record *>(view.records(col / kTileCols));
    auto *footer = const_cast<Int8TileFooter *>(view.footer(col / kTileCols));
    const int c = static_cast<int>(col % kTileCols);
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) {
      const int q = std::clamp(static_cast<int>(std::nearbyint(w[i * n + col] * inv)), -127, 127);
      records[i / kInt8Chunk].q[c][i % kInt8Chunk] = static_cast<int8_t>(q);
      sum += q;
    }
    footer->scale[c] = scale;
    footer->qSum[c] = sum;
  }
  return out;
}

float int8Weight(const Int8Weights &w, int64_t k, int64_t n) {
  const int c = static_cast<int>(n % kTileCols);
  return w.records(n / kTileCols)[k / kInt8Chunk].q[c][k % kInt8Chunk] *
         w.footer(n / kTileCols)->scale[c];
}

} // namespace llmopt::cpu

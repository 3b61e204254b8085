// Packing into the 16-bit float and 2:4 sparse formats, the IEEE half conversions, and the
// scalar element decoders the tests compare against.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cpu/kernels/HalfSparseInternal.h"

namespace llmopt::cpu {

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
} // namespace

// ---------------------------------------------------------------- conversions

uint16_t fp16FromFloat(float f) {
  const uint32_t x = bitsOf(f), ax = x & 0x7FFFFFFF;
  const uint16_t sign = static_cast<uint16_t>(x >> 16 & 0x8000);
  if (ax > 0x7F800000) // NaN: quiet, the payload's top bits kept (as vcvtps2ph does)
    return sign | 0x7E00 | (ax >> 13 & 0x1FF);
  if (ax >= 0x477FF000) // >= 65520, halfway from 65504 to 2^16 and past: inf (ties to even)
    return sign | 0x7C00;
  if (ax >= 0x38800000) { // normal half (>= 2^-14): rebias the exponent, round the low 13 bits
    const uint32_t r = ax - 0x38000000 + 0xFFF + (ax >> 13 & 1);
    return sign | static_cast<uint16_t>(r >> 13);
  }
  // Subnormal half: |f| in units of 2^-24 is m * 2^(e - 126), rounded to nearest even.
  const int e = static_cast<int>(ax >> 23);
  if (e < 102) // below 2^-25: rounds to zero
    return sign;
  const uint32_t m = (ax & 0x7FFFFF) | 0x800000;
  const int shift = 126 - e;
  uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1)))
    ++q; // may carry into the smallest normal, which is the right encoding
  return sign | static_cast<uint16_t>(q);
}

float floatFromFp16(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16, exp = h >> 10 & 0x1F,
                 mant = h & 0x3FF;
  if (exp == 0) { // zero or subnormal: mant * 2^-24, exact in f32
    const float v = static_cast<float>(mant) * 0x1p-24f;
    return floatOf(bitsOf(v) | sign);
  }
  if (exp == 31)
    return floatOf(sign | 0x7F800000 | mant << 13);
  return floatOf(sign | (exp + 112) << 23 | mant << 13);
}

uint16_t bf16FromFloat(float f) {
  const uint32_t x = bitsOf(f);
  if ((x & 0x7FFFFFFF) > 0x7F800000)
    return static_cast<uint16_t>(x >> 16 | 0x40); // quiet: never rounds to inf
  return static_cast<uint16_t>((x + 0x7FFF + (x >> 16 & 1)) >> 16);
}

float floatFromBf16(uint16_t h) { return floatOf(static_cast<uint32_t>(h) << 16); }

// ---------------------------------------------------------------- 16-bit weights

namespace {
HalfBuffer emptyHalf(int64_t k, int64_t n, HalfType type) {
  if (k <= 0 || n <= 0)
    throw std::invalid_argument("llmopt::cpu: 16-bit weight needs K and N > 0");
  HalfBuffer out;
  out.layout = HalfLayout{k, n, type};
  out.storage = allocateAligned(out.layout.bytes());
  return out;
}

template <class Bits> HalfBuffer packHalfWith(int64_t k, int64_t n, HalfType type, Bits bits) {
  HalfBuffer out = emptyHalf(k, n, type);
  const HalfWeights view = out.view();
  for (int64_t col = 0; col < n; ++col) {
    auto *records = const_cast<HalfRecord *>(view.records(col / kTileCols));
    for (int64_t i = 0; i < k; ++i)
      records[i / kHalfChunk].w[col % kTileCols][i % kHalfChunk] = bits(i * n + col);
  }
  return out;
}
} // namespace

HalfBuffer packHalf(const float *w, int64_t k, int64_t n, HalfType type) {
  auto convert = type == HalfType::Fp16 ? fp16FromFloat : bf16FromFloat;
  return packHalfWith(k, n, type, [&](int64_t i) { return convert(w[i]); });
}

HalfBuffer packHalfBits(const uint16_t *bits, int64_t k, int64_t n, HalfType type) {
  return packHalfWith(k, n, type, [&](int64_t i) { return bits[i]; });
}

float halfWeight(const HalfWeights &w, int64_t k, int64_t n) {
  assert(k >= 0 && n >= 0 && k < w.layout.paddedK() && n < w.layout.tiles() * kTileCols);
  const uint16_t h = w.records(n / kTileCols)[k / kHalfChunk].w[n % kTileCols][k % kHalfChunk];
  return w.layout.type == HalfType::Fp16 ? floatFromFp16(h) : floatFromBf16(h);
}

// ---------------------------------------------------------------- 2:4 sparse

namespace {

// The kept positions (0..3) of each group of one column, slot 0 below slot 1, filled with
// unused positions where a group has fewer than two nonzeros.
void keptPositions(const float *w, int64_t k, int64_t n, int64_t col, int64_t group,
                   int (&pos)[2]) {
  int count = 0;
  for (int i = 0; i < 4; ++i) {
    const int64_t kk = 4 * group + i;
    if (kk < k && w[kk * n + col] != 0.f) {
      if (count == 2)
        throw std::invalid_argument(
            "llmopt::cpu: weight is not 2:4 sparse: column " + std::to_string(col) +
            " has more than 2 nonzeros in K " + std::to_string(4 * group) + ".." +
            std::to_string(4 * group + 3));
      pos[count++] = i;
    }
  }
  for (int i = 0; count < 2; ++i)
    if (count == 0 || pos[0] != i)
      pos[count++] = i;
  if (pos[0] > pos[1])
    std::swap(pos[0], pos[1]);
}

uint8_t *mutableRecord(const Sparse24Buffer &b, int64_t tile, int64_t span) {
  return const_cast<uint8_t *>(b.view().record(tile, span));
}

// Fills every record's metadata and calls put(rec, col, span, v, j, value) for each kept
// value.
template <class Put>
Sparse24Buffer packSparse24With(const float *w, int64_t k, int64_t n, SparseValues values,
                                int blockSize, Put put) {
  if (k <= 0 || n <= 0)
    throw std::invalid_argument("llmopt::cpu: 2:4 sparse weight needs K and N > 0");
  Sparse24Buffer out;
  out.layout = Sparse24Layout{k, n, values, blockSize};
  out.storage = allocateAligned(out.layout.bytes());
  const Sparse24Layout &l = out.layout;
  for (int64_t col = 0; col < n; ++col)
    for (int64_t span = 0; span < l.spans(); ++span) {
      uint8_t *rec = mutableRecord(out, col / kTileCols, span);
      const int c = static_cast<int>(col % kTileCols);
      auto *meta = reinterpret_cast<uint16_t *>(rec + l.metaOffset()) + 16 * c;
      for (int g = 0; g < kSparseSpan / 4; ++g) {
        const int64_t group = span * (kSparseSpan / 4) + g;
        int pos[2];
        keptPositions(w, k, n, col, group, pos);
        for (int slot = 0; slot < 2; ++slot) {
          const int v = g / 8, j = 2 * (g % 8) + slot;
          meta[j] |= static_cast<uint16_t>(pos[slot] << (2 * v));
          const int64_t kk = 4 * group + pos[slot];
          put(rec, col, span, v, j, kk < k ? w[kk * n + col] : 0.f);
        }
      }
    }
  return out;
}

} // namespace

Sparse24Buffer packSparse24F32(const float *w, int64_t k, int64_t n) {
  return packSparse24With(w, k, n, SparseValues::F32, 0,
                          [](uint8_t *rec, int64_t col, int64_t, int v, int j, float value) {
                            reinterpret_cast<Sparse24F32Record *>(rec)->v[col % kTileCols]
                                                                     [16 * v + j] = value;
                          });
}

Sparse24Buffer packSparse24Int4(const float *w, int64_t k, int64_t n, int blockSize) {
  if (blockSize != 32 && blockSize != 64 && blockSize != 128 && blockSize != 256)
    throw std::invalid_argument("llmopt::cpu: 2:4 int4 block size must be 32, 64, 128 or 256");
  // Scales first (max |w| / 7 of each column's block), then the values quantized with them.
  const int64_t blocks = (k + blockSize - 1) / blockSize;
  std::vector<float> scale(blocks * n, 0.f);
  for (int64_t kk = 0; kk < k; ++kk)
    for (int64_t col = 0; col < n; ++col) {
      float &s = scale[kk / blockSize * n + col];
      s = std::max(s, std::fabs(w[kk * n + col]) / 7.f);
    }
  const Sparse24Layout l{k, n, SparseValues::Int4, blockSize};
  const int perSpan = kSparseSpan / blockSize;
  return packSparse24With(
      w, k, n, SparseValues::Int4, blockSize,
      [&](uint8_t *rec, int64_t col, int64_t span, int v, int j, float value) {
        const int c = static_cast<int>(col % kTileCols), g = 32 * v / blockSize;
        const int64_t b = span * perSpan + g; // past K: a zero value, scale 0
        const float s = b < blocks ? scale[b * n + col] : 0.f;
        const int q =
            s > 0 ? std::clamp(static_cast<int>(std::nearbyint(value / s)), -8, 7) + 8 : 8;
        rec[c * (kSparseKept / 2) + 4 * j + v / 2] |= static_cast<uint8_t>(q << (v % 2 * 4));
        std::memcpy(rec + l.scaleOffset() + (c * perSpan + g) * sizeof(float), &s, sizeof s);
      });
}

float sparse24Weight(const Sparse24Weights &w, int64_t k, int64_t n) {
  const Sparse24Layout &l = w.layout;
  assert(k >= 0 && n >= 0 && k < l.paddedK() && n < l.tiles() * kTileCols);
  const uint8_t *rec = w.record(n / kTileCols, k / kSparseSpan);
  const int c = static_cast<int>(n % kTileCols), d = static_cast<int>(k % kSparseSpan);
  const auto *meta = reinterpret_cast<const uint16_t *>(rec + l.metaOffset()) + 16 * c;
  const int v = d / 32, group = d % 32 / 4;
  for (int j = 2 * group; j < 2 * group + 2; ++j) {
    if (detail::sparseDenseIndex(meta, v, j) != d)
      continue;
    if (l.values == SparseValues::F32)
      return reinterpret_cast<const Sparse24F32Record *>(rec)->v[c][16 * v + j];
    const int q = rec[c * (kSparseKept / 2) + 4 * j + v / 2] >> (v % 2 * 4) & 0xF;
    const int perSpan = kSparseSpan / l.blockSize, g = 32 * v / l.blockSize;
    float s;
    std::memcpy(&s, rec + l.scaleOffset() + (c * perSpan + g) * sizeof(float), sizeof s);
    return static_cast<float>(q - 8) * s;
  }
  return 0.f;
}

} // namespace llmopt::cpu

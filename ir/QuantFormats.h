// Quantized weight formats as plain layouts with scalar reference quantize / dequantize:
// the IR's own layout of a quantized constant, ONNX Runtime's MatMulNBits blob (also what
// GatherBlockQuantized reads as u8 data) and ONNX's blocked DequantizeLinear. Passes, the
// interpreter, the ONNX writer and generated kernels all include this one header.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "ir/Status.h"
#include "ir/Tensor.h"
#include "ir/Type.h"

namespace llmopt::quant {

// ---------------------------------------------------------------- stored integers

/// Stored integers of a `bits`-bit format. Symmetric formats store signed values
/// [-2^(bits-1), 2^(bits-1)-1] (zero point 0); asymmetric ones unsigned [0, 2^bits-1].
struct IntRange {
  int32_t lo, hi;
};
constexpr IntRange storedRange(int bits, bool symmetric) {
  return symmetric ? IntRange{-(1 << (bits - 1)), (1 << (bits - 1)) - 1}
                   : IntRange{0, (1 << bits) - 1};
}
/// The container: 4-bit for bits <= 4 (2- and 3-bit values live in 4-bit containers),
/// 8-bit for bits 5..8; signed when symmetric.
constexpr DType storageType(int bits, bool symmetric) {
  if (bits <= 4)
    return symmetric ? DType::I4 : DType::U4;
  return symmetric ? DType::I8 : DType::U8;
}
/// Bits per element of a container (4 or 8); 0 for other dtypes.
constexpr int containerBits(DType storage) {
  return storage == DType::I4 || storage == DType::U4   ? 4
         : storage == DType::I8 || storage == DType::U8 ? 8
                                                        : 0;
}
constexpr bool isSignedStorage(DType storage) {
  return storage == DType::I4 || storage == DType::I8;
}

/// Element `i` of packed storage (ONNX packing: 4-bit element 2j in the low nibble of
/// byte j, 2j+1 in the high nibble), sign-extended for i4 / i8.
inline int32_t loadElement(const uint8_t *data, DType storage, int64_t i) {
  switch (storage) {
  case DType::I8: return static_cast<int8_t>(data[i]);
  case DType::U8: return data[i];
  case DType::U4: return (data[i >> 1] >> ((i & 1) * 4)) & 0xF;
  case DType::I4: {
    const int32_t v = (data[i >> 1] >> ((i & 1) * 4)) & 0xF;
    return v >= 8 ? v - 16 : v;
  }
  default: return 0;
  }
}
/// Writes element `i` (the low bits of `v`) without touching its byte's other nibble.
inline void storeElement(uint8_t *data, DType storage, int64_t i, int32_t v) {
  if (containerBits(storage) == 8) {
    data[i] = static_cast<uint8_t>(v);
    return;
  }
  const int shift = static_cast<int>(i & 1) * 4;
  data[i >> 1] = static_cast<uint8_t>((data[i >> 1] & ~(0xF << shift)) | ((v & 0xF) << shift));
}

// ---------------------------------------------------------------- one block

/// A block's parameters: real = (q - zeroPoint) * scale. zeroPoint is an integer except
/// for HQQ's fractional zero points.
struct BlockParams {
  float scale = 0;
  float zeroPoint = 0;
};

/// Round-to-nearest parameters for `n` values `stride` apart, chosen as MLAS does
/// (onnxruntime/core/mlas/lib/q4common.h, range2scale / range2scalezp):
///   symmetric:  m = the value of largest |x| (sign kept), scale = m / -2^(bits-1), so m
///               maps to the most negative integer and the whole signed range is used;
///   asymmetric: [min, max] widened to contain 0, scale = (max - min) / (2^bits - 1),
///               zeroPoint = clamp(roundf(-min / scale), 0, 2^bits - 1).
BlockParams rtnParams(const float *x, int64_t n, int64_t stride, int bits, bool symmetric);

/// q = clamp(roundf(x * (1 / scale) + zeroPoint)), rounded in the unsigned domain as MLAS
/// does (a symmetric q is roundf(x / scale + 2^(bits-1)) - 2^(bits-1), which differs from
/// roundf(x / scale) on negative ties); 1/0 is taken as 0.
inline int32_t quantizeValue(float x, const BlockParams &p, IntRange r) {
  const float inv = p.scale != 0.f ? 1.f / p.scale : 0.f;
  const float lo = static_cast<float>(r.lo);
  const float q = std::roundf(x * inv + (p.zeroPoint - lo)) + lo;
  return q <= lo ? r.lo : q >= static_cast<float>(r.hi) ? r.hi : static_cast<int32_t>(q);
}
inline float dequantizeValue(int32_t q, const BlockParams &p) {
  return (static_cast<float>(q) - p.zeroPoint) * p.scale;
}

// ---------------------------------------------------------------- the IR layout
//
// A quantized constant (a Value whose Type carries a QuantEncoding `enc`) holds a Tensor
// of dtype enc.storage with the value's logical shape, packed as ONNX packs sub-byte
// types (row-major, 4-bit element 2j in the low nibble of byte j), plus
//   scales      f32. Blocked (blockSize > 0): the logical shape with dim[axis] replaced
//               by ceil(dim[axis] / blockSize). Per channel (blockSize 0, axis >= 0):
//               [dim[axis]]. Per tensor (axis < 0): [].
//   zeroPoints  asymmetric only: the storage dtype (integer zero points), or f32 (HQQ's
//               fractional zero points); the shape of scales.
//   real(i) = (q(i) - zp(s)) * scale(s), s = the scale entry of element i.
// The last block along `axis` is short when the dim is not a multiple of blockSize.
// Blocked along axis 0 this is exactly opset-21 DequantizeLinear(x, scale, zp, axis,
// block_size); per channel it is DequantizeLinear with a 1-D scale (opset 13).

/// Maps elements of a quantized tensor to their scale entry and enumerates blocks.
class BlockIndexer {
public:
  /// Fails when `enc` does not fit `shape` (axis out of range, negative block size).
  static Expected<BlockIndexer> make(const std::vector<int64_t> &shape, const QuantEncoding &enc);
  const std::vector<int64_t> &scaleShape() const { return scaleShape_; }
  int64_t numScales() const { return numScales_; }
  /// The scale entry of row-major element `i`.
  int64_t scaleIndex(int64_t i) const {
    if (mode_ == Mode::Tensor)
      return 0;
    const int64_t d = i / inner_ % dim_;
    if (mode_ == Mode::Channel)
      return d;
    return (i / (inner_ * dim_) * blocks_ + d / block_) * inner_ + i % inner_;
  }
  /// A run of elements `stride` apart.
  struct Span {
    int64_t start, stride, count;
  };
  /// The elements of scale entry `s` (one span when blocked or per tensor).
  std::vector<Span> spans(int64_t s) const;

private:
  enum class Mode { Tensor, Channel, Block };
  Mode mode_ = Mode::Tensor;
  int64_t outer_ = 1, dim_ = 1, inner_ = 1, block_ = 1, blocks_ = 1, numScales_ = 1;
  std::vector<int64_t> scaleShape_;
};

/// Checks dtype and shapes of data, scales and zero points against `enc` and `shape`.
Status validate(const Tensor &q, const QuantEncoding &enc);
/// The f32 tensor a quantized constant stands for.
Expected<Tensor> dequantize(const Tensor &q, const QuantEncoding &enc);
/// Quantizes f32 `w` with one BlockParams per scale entry (BlockIndexer order); zero
/// points are stored as enc.storage integers, or as f32 when `floatZeroPoints`.
Expected<Tensor> quantizeWithParams(const Tensor &w, const QuantEncoding &enc,
                                    const std::vector<BlockParams> &params,
                                    bool floatZeroPoints = false);
/// Round-to-nearest quantization with rtnParams per block.
Expected<Tensor> quantizeRtn(const Tensor &w, const QuantEncoding &enc);
/// The BlockParams stored with a quantized constant, in BlockIndexer order.
std::vector<BlockParams> storedParams(const Tensor &q, const QuantEncoding &enc);

// ---------------------------------------------------------------- MatMulNBits
//
// com.microsoft::MatMulNBits computes Y = A · W for W [K, N] given as
//   B      u8 [N, kBlocks, blobBytes]: column n of W, blocks along K, kBlocks =
//          ceil(K / blockSize), blobBytes = blockSize * bits / 8; element k of a block in
//          bits (k % (8/bits)) * bits.. of byte k * bits / 8 (4-bit: element 2j in the low
//          nibble of byte j). Unsigned: symmetric formats are stored as q + 2^(bits-1).
//   scales f32 [N, kBlocks] (ORT also accepts [N * kBlocks]).
//   zero   absent (symmetric: ORT's default 2^(bits-1)); u8 [N, ceil(kBlocks * bits / 8)]
//          packed like B; or f32 [N, kBlocks] (fractional zero points, ORT's fp32 path).
// K not a multiple of blockSize: the last block is zero-padded (0 bytes, as ORT's own
// quantizer leaves them; kernels never read them: A is padded with zeros, or the loop
// stops at K). GatherBlockQuantized reads the same bytes as u8 data
// [N, kBlocks * blobBytes] (gather_axis 0, quantize_axis 1) with the same scales and
// packed zero points, which is how a tied embedding / LM head is stored once.

/// One MatMulNBits blob (a block of one column) of the common formats.
template <int Bits, int BlockSize> struct NBitsBlob {
  static_assert(Bits == 2 || Bits == 4 || Bits == 8);
  static_assert(BlockSize >= 16 && (BlockSize & (BlockSize - 1)) == 0);
  uint8_t q[BlockSize * Bits / 8];
};
static_assert(sizeof(NBitsBlob<4, 32>) == 16);
static_assert(sizeof(NBitsBlob<4, 128>) == 64);
static_assert(sizeof(NBitsBlob<8, 32>) == 32);
static_assert(sizeof(NBitsBlob<2, 64>) == 16);

struct NBitsLayout {
  int64_t K = 0, N = 0, bits = 4, blockSize = 32;
  int64_t kBlocks() const { return (K + blockSize - 1) / blockSize; }
  int64_t blobBytes() const { return blockSize * bits / 8; }
  int64_t zeroPointBytesPerColumn() const { return (kBlocks() * bits + 7) / 8; }
  /// Element k (< kBlocks * blockSize) of column n of B, unsigned as stored.
  int32_t element(const uint8_t *b, int64_t n, int64_t k) const {
    const int64_t per = 8 / bits,
                  byte = (n * kBlocks() + k / blockSize) * blobBytes() + k % blockSize / per;
    return (b[byte] >> ((k % per) * bits)) & ((1 << bits) - 1);
  }
  /// Packed zero point of block `blk` of column n.
  int32_t zeroPoint(const uint8_t *zp, int64_t n, int64_t blk) const {
    const int64_t per = 8 / bits;
    return (zp[n * zeroPointBytesPerColumn() + blk / per] >> ((blk % per) * bits)) &
           ((1 << bits) - 1);
  }
};

/// MatMulNBits inputs for a weight.
struct NBitsWeight {
  NBitsLayout layout;
  Tensor b;                         ///< u8 [N, kBlocks, blobBytes]
  Tensor scales;                    ///< f32 [N, kBlocks]
  std::optional<Tensor> zeroPoints; ///< u8 [N, zeroPointBytesPerColumn] or f32 [N, kBlocks]
};

/// True when a quantized 2-D constant can become a MatMulNBits B: blocks of a power of
/// two >= 16 along the K axis (axis 0 of W [K, N]; axis 1 when `transposed`, i.e. the
/// constant holds W^T [N, K], as a tied embedding read by an LM head does).
bool fitsMatMulNBits(const std::vector<int64_t> &shape, const QuantEncoding &enc, bool transposed);
/// The MatMulNBits inputs for the weight a quantized constant holds (see fitsMatMulNBits).
/// B uses the storage's container width (4 bits for 2- and 3-bit values), except that
/// 2-bit values are packed 4 to a byte (MatMulNBits bits=2) when `packTwoBit`.
Expected<NBitsWeight> toMatMulNBits(const Tensor &q, const QuantEncoding &enc, bool transposed,
                                    bool packTwoBit = false);
/// W [K, N] in f32 from MatMulNBits inputs (the reference decoder the tests use).
std::vector<float> dequantizeNBits(const NBitsWeight &w);

} // namespace llmopt::quant

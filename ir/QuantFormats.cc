// Scalar references of the quantized formats: block parameters, the IR layout's
// quantize / dequantize, and MatMulNBits packing.
#include "ir/QuantFormats.h"

#include <algorithm>
#include <limits>

#include <fmt/ranges.h>

namespace llmopt::quant {

BlockParams rtnParams(const float *x, int64_t n, int64_t stride, int bits, bool symmetric) {
  BlockParams p;
  if (symmetric) {
    float amax = 0.f, m = 0.f;
    for (int64_t i = 0; i < n; ++i) {
      const float v = x[i * stride];
      if (std::fabs(v) > amax) {
        amax = std::fabs(v);
        m = v;
      }
    }
    p.scale = m / static_cast<float>(-(1 << (bits - 1)));
    return p;
  }
  float lo = 0.f, hi = 0.f; // the range always contains 0
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, x[i * stride]);
    hi = std::max(hi, x[i * stride]);
  }
  const float qmax = static_cast<float>((1 << bits) - 1);
  p.scale = (hi - lo) / qmax;
  const float zp = p.scale != 0.f ? -lo / p.scale : 0.f;
  p.zeroPoint = zp < 0.f ? 0.f : zp > qmax ? qmax : std::roundf(zp);
  return p;
}

// ---------------------------------------------------------------- BlockIndexer

Expected<BlockIndexer> BlockIndexer::make(const std::vector<int64_t> &shape,
                                          const QuantEncoding &enc) {
  BlockIndexer b;
  const int64_t rank = static_cast<int64_t>(shape.size());
  if (enc.blockSize < 0)
    return errorf("quantization block size {} is negative", enc.blockSize);
  if (enc.axis < 0) {
    if (enc.blockSize != 0)
      return errorf("a per-tensor quantization (axis {}) cannot have blocks", enc.axis);
    b.numScales_ = 1;
    return b;
  }
  if (enc.axis >= rank)
    return errorf("quantization axis {} is out of range for rank {}", enc.axis, rank);
  const size_t a = static_cast<size_t>(enc.axis);
  for (size_t i = 0; i < shape.size(); ++i)
    (i < a ? b.outer_ : i > a ? b.inner_ : b.dim_) *= shape[i];
  if (enc.blockSize == 0) {
    b.mode_ = Mode::Channel;
    b.scaleShape_ = {b.dim_};
    b.numScales_ = b.dim_;
    return b;
  }
  b.mode_ = Mode::Block;
  b.block_ = enc.blockSize;
  b.blocks_ = (b.dim_ + b.block_ - 1) / b.block_;
  b.scaleShape_ = shape;
  b.scaleShape_[a] = b.blocks_;
  b.numScales_ = b.outer_ * b.blocks_ * b.inner_;
  return b;
}

std::vector<BlockIndexer::Span> BlockIndexer::spans(int64_t s) const {
  switch (mode_) {
  case Mode::Tensor: return {{0, 1, outer_ * dim_ * inner_}};
  case Mode::Channel: {
    std::vector<Span> out;
    if (inner_ == 1)
      return {{s, dim_, outer_}};
    for (int64_t o = 0; o < outer_; ++o)
      out.push_back({(o * dim_ + s) * inner_, 1, inner_});
    return out;
  }
  case Mode::Block: break;
  }
  const int64_t in = s % inner_, blk = s / inner_ % blocks_, o = s / (inner_ * blocks_);
  const int64_t d0 = blk * block_, count = std::min(block_, dim_ - d0);
  return {{(o * dim_ + d0) * inner_ + in, inner_, count}};
}

// ---------------------------------------------------------------- the IR layout

Status validate(const Tensor &q, const QuantEncoding &enc) {
  if (containerBits(enc.storage) == 0)
    return errorf("quantized storage must be i4, u4, i8 or u8, got {}", dtypeName(enc.storage));
  if (enc.bits < 2 || enc.bits > containerBits(enc.storage))
    return errorf("{} bits do not fit a {} container", enc.bits, dtypeName(enc.storage));
  if (q.dtype() != enc.storage)
    return errorf("quantized data is {}, the encoding says {}", dtypeName(q.dtype()),
                  dtypeName(enc.storage));
  if (enc.symmetric != isSignedStorage(enc.storage))
    return errorf("{} quantization needs {} storage, got {}",
                  enc.symmetric ? "symmetric" : "asymmetric", enc.symmetric ? "signed" : "unsigned",
                  dtypeName(enc.storage));
  LLMOPT_ASSIGN_OR_RETURN(BlockIndexer ix, BlockIndexer::make(q.shape(), enc));
  if (!q.scales || q.scales->dtype() != DType::F32 || q.scales->numel() != ix.numScales() ||
      (q.scales->rank() > 0 && q.scales->shape() != ix.scaleShape()))
    return errorf("quantized data needs f32 scales of shape [{}]", fmt::join(ix.scaleShape(), ","));
  if (enc.symmetric && q.zeroPoints)
    return errorf("symmetric quantization stores no zero points");
  if (!enc.symmetric) {
    const Tensor *z = q.zeroPoints.get();
    if (!z || (z->dtype() != enc.storage && z->dtype() != DType::F32) ||
        z->numel() != ix.numScales())
      return errorf("asymmetric quantization needs {} or f32 zero points shaped like its scales",
                    dtypeName(enc.storage));
  }
  return Status::ok();
}

std::vector<BlockParams> storedParams(const Tensor &q, const QuantEncoding &enc) {
  const int64_t n = q.scales->numel();
  std::vector<BlockParams> p(static_cast<size_t>(n));
  const float *s = reinterpret_cast<const float *>(q.scales->data());
  const Tensor *z = q.zeroPoints.get();
  for (int64_t i = 0; i < n; ++i) {
    BlockParams &b = p[static_cast<size_t>(i)];
    b.scale = s[i];
    if (z)
      b.zeroPoint = z->dtype() == DType::F32
                        ? reinterpret_cast<const float *>(z->data())[i]
                        : static_cast<float>(loadElement(z->data(), z->dtype(), i));
  }
  return p;
}

Expected<Tensor> dequantize(const Tensor &q, const QuantEncoding &enc) {
  LLMOPT_RETURN_IF_ERROR(validate(q, enc));
  LLMOPT_ASSIGN_OR_RETURN(BlockIndexer ix, BlockIndexer::make(q.shape(), enc));
  const std::vector<BlockParams> params = storedParams(q, enc);
  Tensor out = Tensor::zeros(DType::F32, q.shape());
  float *o = reinterpret_cast<float *>(out.mutableData());
  const uint8_t *d = q.data();
  for (int64_t s = 0; s < ix.numScales(); ++s)
    for (const BlockIndexer::Span &sp : ix.spans(s))
      for (int64_t j = 0, i = sp.start; j < sp.count; ++j, i += sp.stride)
        o[i] = dequantizeValue(loadElement(d, enc.storage, i), params[static_cast<size_t>(s)]);
  return out;
}

Expected<Tensor> quantizeWithParams(const Tensor &w, const QuantEncoding &enc,
                                    const std::vector<BlockParams> &params, bool floatZeroPoints) {
  if (w.dtype() != DType::F32)
    return errorf("only f32 tensors are quantized, got {}", dtypeName(w.dtype()));
  LLMOPT_ASSIGN_OR_RETURN(BlockIndexer ix, BlockIndexer::make(w.shape(), enc));
  if (static_cast<int64_t>(params.size()) != ix.numScales())
    return internalErrorf("{} block parameters for {} blocks", params.size(), ix.numScales());
  const IntRange r = storedRange(enc.bits, enc.symmetric);
  Tensor q = Tensor::zeros(enc.storage, w.shape());
  uint8_t *d = q.mutableData();
  const float *x = reinterpret_cast<const float *>(w.data());
  auto scales = std::make_shared<Tensor>(Tensor::zeros(DType::F32, ix.scaleShape()));
  float *sv = reinterpret_cast<float *>(scales->mutableData());
  std::shared_ptr<Tensor> zps;
  if (!enc.symmetric)
    zps = std::make_shared<Tensor>(
        Tensor::zeros(floatZeroPoints ? DType::F32 : enc.storage, ix.scaleShape()));
  for (int64_t s = 0; s < ix.numScales(); ++s) {
    BlockParams p = params[static_cast<size_t>(s)];
    if (enc.symmetric)
      p.zeroPoint = 0.f;
    else if (!floatZeroPoints)
      p.zeroPoint =
          std::clamp(std::roundf(p.zeroPoint), static_cast<float>(r.lo), static_cast<float>(r.hi));
    sv[s] = p.scale;
    if (zps && floatZeroPoints)
      reinterpret_cast<float *>(zps->mutableData())[s] = p.zeroPoint;
    else if (zps)
      storeElement(zps->mutableData(), enc.storage, s, static_cast<int32_t>(p.zeroPoint));
    for (const BlockIndexer::Span &sp : ix.spans(s))
      for (int64_t j = 0, i = sp.start; j < sp.count; ++j, i += sp.stride)
        storeElement(d, enc.storage, i, quantizeValue(x[i], p, r));
  }
  q.scales = std::move(scales);
  q.zeroPoints = std::move(zps);
  return q;
}

Expected<Tensor> quantizeRtn(const Tensor &w, const QuantEncoding &enc) {
  if (w.dtype() != DType::F32)
    return errorf("only f32 tensors are quantized, got {}", dtypeName(w.dtype()));
  LLMOPT_ASSIGN_OR_RETURN(BlockIndexer ix, BlockIndexer::make(w.shape(), enc));
  const float *x = reinterpret_cast<const float *>(w.data());
  std::vector<BlockParams> params(static_cast<size_t>(ix.numScales()));
  std::vector<float> buf;
  for (int64_t s = 0; s < ix.numScales(); ++s) {
    const std::vector<BlockIndexer::Span> spans = ix.spans(s);
    if (spans.size() == 1) {
      params[static_cast<size_t>(s)] =
          rtnParams(x + spans[0].start, spans[0].count, spans[0].stride, enc.bits, enc.symmetric);
      continue;
    }
    buf.clear();
    for (const BlockIndexer::Span &sp : spans)
      for (int64_t j = 0; j < sp.count; ++j)
        buf.push_back(x[sp.start + j * sp.stride]);
    params[static_cast<size_t>(s)] =
        rtnParams(buf.data(), static_cast<int64_t>(buf.size()), 1, enc.bits, enc.symmetric);
  }
  return quantizeWithParams(w, enc, params);
}

// ---------------------------------------------------------------- MatMulNBits

bool fitsMatMulNBits(const std::vector<int64_t> &shape, const QuantEncoding &enc, bool transposed) {
  const int64_t bs = enc.blockSize;
  return shape.size() == 2 && enc.axis == (transposed ? 1 : 0) && bs >= 16 &&
         (bs & (bs - 1)) == 0 && containerBits(enc.storage) != 0;
}

Expected<NBitsWeight> toMatMulNBits(const Tensor &q, const QuantEncoding &enc, bool transposed,
                                    bool packTwoBit) {
  LLMOPT_RETURN_IF_ERROR(validate(q, enc));
  if (!fitsMatMulNBits(q.shape(), enc, transposed))
    return errorf("a {} weight quantized along axis {} in blocks of {} has no MatMulNBits form "
                  "(needs 2-D, blocks along K, block a power of 2 >= 16)",
                  toString(q.type()), enc.axis, enc.blockSize);
  NBitsWeight w;
  NBitsLayout &l = w.layout;
  l.K = q.shape()[transposed ? 1 : 0];
  l.N = q.shape()[transposed ? 0 : 1];
  l.bits = packTwoBit && enc.bits == 2 ? 2 : containerBits(enc.storage);
  l.blockSize = enc.blockSize;
  const int64_t kb = l.kBlocks(), per = 8 / l.bits;
  // Element (k, n) of W in the IR tensor and its scale entry.
  auto at = [&](int64_t k, int64_t n) { return transposed ? n * l.K + k : k * l.N + n; };
  auto scaleAt = [&](int64_t blk, int64_t n) { return transposed ? n * kb + blk : blk * l.N + n; };
  const int32_t offset = enc.symmetric ? 1 << (l.bits - 1) : 0; // signed -> unsigned
  const Tensor *zt = q.zeroPoints.get();
  const bool floatZp = zt && zt->dtype() == DType::F32;
  w.b = Tensor::zeros(DType::U8, {l.N, kb, l.blobBytes()});
  w.scales = Tensor::zeros(DType::F32, {l.N, kb});
  uint8_t *b = w.b.mutableData();
  float *sc = reinterpret_cast<float *>(w.scales.mutableData());
  const float *qs = reinterpret_cast<const float *>(q.scales->data());
  uint8_t *zp = nullptr;
  float *zf = nullptr;
  if (zt && floatZp) {
    w.zeroPoints = Tensor::zeros(DType::F32, {l.N, kb});
    zf = reinterpret_cast<float *>(w.zeroPoints->mutableData());
  } else if (zt) {
    w.zeroPoints = Tensor::zeros(DType::U8, {l.N, l.zeroPointBytesPerColumn()});
    zp = w.zeroPoints->mutableData();
  }
  for (int64_t n = 0; n < l.N; ++n)
    for (int64_t blk = 0; blk < kb; ++blk) {
      const int64_t s = scaleAt(blk, n);
      sc[n * kb + blk] = qs[s];
      if (zt && floatZp)
        zf[n * kb + blk] = reinterpret_cast<const float *>(zt->data())[s];
      else if (zt)
        zp[n * l.zeroPointBytesPerColumn() + blk / per] |=
            static_cast<uint8_t>(loadElement(zt->data(), zt->dtype(), s) << ((blk % per) * l.bits));
      if (zp && blk == kb - 1) // unused slots of the last byte hold 2^(bits-1), as MLAS writes them
        for (int64_t slot = kb; slot < l.zeroPointBytesPerColumn() * per; ++slot)
          zp[n * l.zeroPointBytesPerColumn() + slot / per] |=
              static_cast<uint8_t>((1 << (l.bits - 1)) << ((slot % per) * l.bits));
      uint8_t *blob = b + (n * kb + blk) * l.blobBytes();
      for (int64_t j = 0, k = blk * l.blockSize; j < l.blockSize && k < l.K;
           ++j, ++k) // padding stays 0
        blob[j / per] |= static_cast<uint8_t>(
            (loadElement(q.data(), enc.storage, at(k, n)) + offset) << ((j % per) * l.bits));
    }
  return w;
}

std::vector<float> dequantizeNBits(const NBitsWeight &w) {
  const NBitsLayout &l = w.layout;
  const int64_t kb = l.kBlocks();
  std::vector<float> out(static_cast<size_t>(l.K * l.N));
  const float *sc = reinterpret_cast<const float *>(w.scales.data());
  for (int64_t n = 0; n < l.N; ++n)
    for (int64_t k = 0; k < l.K; ++k) {
      const int64_t blk = k / l.blockSize;
      float zp = static_cast<float>(1 << (l.bits - 1));
      if (w.zeroPoints && w.zeroPoints->dtype() == DType::F32)
        zp = reinterpret_cast<const float *>(w.zeroPoints->data())[n * kb + blk];
      else if (w.zeroPoints)
        zp = static_cast<float>(l.zeroPoint(w.zeroPoints->data(), n, blk));
      out[static_cast<size_t>(k * l.N + n)] =
          (static_cast<float>(l.element(w.b.data(), n, k)) - zp) * sc[n * kb + blk];
    }
  return out;
}

} // namespace llmopt::quant

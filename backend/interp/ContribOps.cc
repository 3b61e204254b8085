// ONNX Runtime contrib ops (com.microsoft) the writers and passes emit:
// GatherBlockQuantized, DynamicQuantizeMatMul and RotaryEmbedding, following ORT's CPU kernels.
#include <algorithm>
#include <cmath>

#include "backend/interp/Kernel.h"

namespace llmopt::interp {
namespace {

/// Y = gather(dequant(data)) along gather_axis, data block-quantized along
/// quantize_axis. data is i4/u4 (logical shape) or u8 holding 8/bits values per byte
/// along the last axis (then gather_axis 0, quantize_axis last). Zero points: the
/// data's type, packed like data along the quantize axis for u8; default 0 for
/// i4/u4 and 2^(bits-1) for u8.
Expected<TensorList> kGatherBlockQuantized(const Node &n, const InputList &in) {
  const Tensor &data = *in[0], &idxT = *in[1], &scales = *in[2];
  const Tensor *zp = optInput(in, 3);
  const int64_t bs = n.attrInt("block_size", 128), bits = n.attrInt("bits", 4);
  if (bs < 16 || (bs & (bs - 1)) != 0)
    return nodeError(n, "block_size must be a power of 2 >= 16, got {}", bs);
  const bool packedU8 = data.dtype() == DType::U8;
  if (!packedU8 && data.dtype() != DType::I4 && data.dtype() != DType::U4)
    return nodeError(n, "data must be i4, u4 or u8, got {}", dtypeStr(data.dtype()));
  if (packedU8 && bits != 2 && bits != 4 && bits != 8)
    return nodeError(n, "bits must be 2, 4 or 8 for u8 data, got {}", bits);
  if (scales.dtype() != DType::F32)
    return nodeError(n, "scales must be f32 or f16, got {}", dtypeStr(scales.dtype()));
  const int64_t r = data.rank();
  LLMOPT_ASSIGN_OR_RETURN(int64_t gAxis, normalizeAxis(n, n.attrInt("gather_axis", 0), r));
  LLMOPT_ASSIGN_OR_RETURN(int64_t qAxis, normalizeAxis(n, n.attrInt("quantize_axis", 1), r));
  const int64_t comps = packedU8 ? 8 / bits : 1;
  if (packedU8 && (gAxis != 0 || qAxis != r - 1))
    return nodeError(n, "u8 data needs gather_axis 0 and quantize_axis last");
  Shape logical = data.shape();
  logical[static_cast<size_t>(qAxis)] *= comps;
  Shape wantScales = logical;
  wantScales[static_cast<size_t>(qAxis)] = (logical[static_cast<size_t>(qAxis)] + bs - 1) / bs;
  if (scales.shape() != wantScales)
    return nodeError(n, "scales must have shape {}, got {}", shapeStr(wantScales), shapeStr(scales.shape()));
  const int64_t nBlocks = wantScales[static_cast<size_t>(qAxis)];
  if (zp) {
    Shape wantZp = wantScales;
    wantZp[static_cast<size_t>(qAxis)] = (nBlocks + comps - 1) / comps;
    if (zp->dtype() != data.dtype() || zp->shape() != wantZp)
      return nodeError(n, "zero_points must be {} {}, got {} {}", dtypeStr(data.dtype()), shapeStr(wantZp),
                       dtypeStr(zp->dtype()), shapeStr(zp->shape()));
  }
  if (idxT.dtype() != DType::I32 && idxT.dtype() != DType::I64)
    return nodeError(n, "indices must be i32 or i64");
  const std::vector<int64_t> idx = idxT.toInts();
  const int64_t gDim = logical[static_cast<size_t>(gAxis)];
  for (int64_t v : idx)
    if (v < -gDim || v >= gDim)
      return nodeError(n, "index {} is out of range for a dim of {}", v, gDim);

  Shape out(logical.begin(), logical.begin() + gAxis);
  out.insert(out.end(), idxT.shape().begin(), idxT.shape().end());
  out.insert(out.end(), logical.begin() + gAxis + 1, logical.end());
  int64_t gM = 1, gBlock = 1, qN = 1;
  for (int64_t i = 0; i < r; ++i) {
    if (i < gAxis)
      gM *= logical[static_cast<size_t>(i)];
    if (i > gAxis)
      gBlock *= logical[static_cast<size_t>(i)];
    if (i > qAxis)
      qN *= logical[static_cast<size_t>(i)];
  }
  const int64_t qDim = logical[static_cast<size_t>(qAxis)], qFull = qDim * qN, sFull = nBlocks * qN;
  auto element = [&](int64_t i) -> int32_t {
    if (!packedU8)
      return static_cast<int32_t>(data.getInt(i));
    const uint8_t byte = data.data()[i / comps];
    return (byte >> ((i % comps) * bits)) & ((1 << bits) - 1);
  };
  auto zeroPoint = [&](int64_t s) -> int32_t {
    if (!zp)
      return packedU8 ? 1 << (bits - 1) : 0;
    if (!packedU8)
      return static_cast<int32_t>(zp->getInt(s));
    const int64_t row = s / nBlocks, q = s % nBlocks, perRow = (nBlocks + comps - 1) / comps;
    const uint8_t byte = zp->data()[row * perRow + q / comps];
    return (byte >> ((q % comps) * bits)) & ((1 << bits) - 1);
  };
  Tensor y = Tensor::zeros(DType::F32, out);
  float *o = mutableDataOf<float>(y);
  const float *sc = dataOf<float>(scales);
  const int64_t nIdx = static_cast<int64_t>(idx.size());
  parallelFor(gM * nIdx, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t m = t / nIdx, j = idx[static_cast<size_t>(t % nIdx)];
      const int64_t base = (m * gDim + (j < 0 ? j + gDim : j)) * gBlock;
      for (int64_t e = 0; e < gBlock; ++e) {
        const int64_t d = base + e;
        const int64_t s = d / qFull * sFull + d % qFull / qN / bs * qN + d % qN;
        o[t * gBlock + e] = static_cast<float>(element(d) - zeroPoint(s)) * sc[s];
      }
    }
  });
  return TensorList{y};
}

/// DynamicQuantizeMatMul(A f32 [..., K], B i8/u8 [K, N], b_scale [] or [N], b_zero_point
/// (B's type, [] or [N]), bias [N]), as ORT's CPU kernel computes it: A is quantized to
/// uint8 over the whole tensor (GetQuantizationParameter: the range widened to hold 0,
/// scale = (max - min) / 255, or 1 when max == min; zero point = round-half-even of
/// -min / scale clamped to [0, 255]; q = clamp(rne(a / scale) + zp) as MlasQuantizeLinear),
/// the dots of (q - zp)(b - b_zp) are exact in int32, and y = float(dot) * (a_scale *
/// b_scale[n]) + bias[n] (MLAS's scale-bias output processor).
Expected<TensorList> kDynamicQuantizeMatMul(const Node &n, const InputList &in) {
  const Tensor &A = *in[0], &B = *in[1], &bScale = *in[2];
  const Tensor *bZp = optInput(in, 3), *bias = optInput(in, 4);
  if (A.dtype() != DType::F32 || A.rank() < 1)
    return nodeError(n, "A must be f32 of rank >= 1, got {} {}", dtypeStr(A.dtype()), shapeStr(A.shape()));
  if ((B.dtype() != DType::I8 && B.dtype() != DType::U8) || B.rank() != 2)
    return nodeError(n, "B must be a 2-D int8 or uint8 tensor, got {} {}", dtypeStr(B.dtype()),
                     shapeStr(B.shape()));
  const int64_t K = B.shape()[0], N = B.shape()[1];
  if (A.shape().back() != K)
    return nodeError(n, "A {} does not match B {}", shapeStr(A.shape()), shapeStr(B.shape()));
  auto perColumn = [&](const Tensor &t, DType want, const char *what) -> Status {
    if (t.dtype() != want || (t.numel() != 1 && (t.rank() != 1 || t.numel() != N)))
      return nodeError(n, "{} must be {} of one element or [{}], got {} {}", what, dtypeStr(want), N,
                       dtypeStr(t.dtype()), shapeStr(t.shape()));
    return Status::ok();
  };
  LLMOPT_RETURN_IF_ERROR(perColumn(bScale, DType::F32, "b_scale"));
  if (bZp)
    LLMOPT_RETURN_IF_ERROR(perColumn(*bZp, B.dtype(), "b_zero_point"));
  if (bias && (bias->dtype() != DType::F32 || bias->numel() != N))
    return nodeError(n, "bias must be f32 [{}], got {} {}", N, dtypeStr(bias->dtype()), shapeStr(bias->shape()));

  const float *a = dataOf<float>(A);
  const int64_t total = A.numel(), M = total / K;
  float lo = 0.f, hi = 0.f;
  for (int64_t i = 0; i < total; ++i) {
    lo = std::min(lo, a[i]);
    hi = std::max(hi, a[i]);
  }
  const float aScale = hi == lo ? 1.f : (hi - lo) / 255.f;
  const float aZp = std::nearbyint(std::clamp(0.f - lo / aScale, 0.f, 255.f));
  std::vector<int32_t> qa(static_cast<size_t>(total));
  for (int64_t i = 0; i < total; ++i)
    qa[static_cast<size_t>(i)] =
        static_cast<int32_t>(std::clamp(std::nearbyint(a[i] / aScale) + aZp, 0.f, 255.f)) -
        static_cast<int32_t>(aZp);
  // B - zero point, transposed to [N, K] so that each dot reads contiguous memory.
  std::vector<int32_t> wt(static_cast<size_t>(N * K));
  std::vector<float> mult(static_cast<size_t>(N));
  const float *bs = dataOf<float>(bScale);
  for (int64_t j = 0; j < N; ++j) {
    const int32_t zp = bZp ? static_cast<int32_t>(bZp->getInt(bZp->numel() == 1 ? 0 : j)) : 0;
    for (int64_t k = 0; k < K; ++k)
      wt[static_cast<size_t>(j * K + k)] = static_cast<int32_t>(B.getInt(k * N + j)) - zp;
    mult[static_cast<size_t>(j)] = aScale * bs[bScale.numel() == 1 ? 0 : j];
  }
  Shape outShape = A.shape();
  outShape.back() = N;
  Tensor y = Tensor::zeros(DType::F32, outShape);
  float *yv = mutableDataOf<float>(y);
  const float *bv = bias ? dataOf<float>(*bias) : nullptr;
  parallelFor(M * N, 256, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t m = t / N, j = t % N;
      const int32_t *ar = qa.data() + m * K, *wr = wt.data() + j * K;
      int32_t dot = 0;
      for (int64_t k = 0; k < K; ++k)
        dot += ar[k] * wr[k];
      yv[t] = static_cast<float>(dot) * mult[static_cast<size_t>(j)] + (bv ? bv[j] : 0.f);
    }
  });
  return TensorList{y};
}

/// RotaryEmbedding: input [B,S,N*H] or [B,N,S,H]; position_ids [B,S] or one offset;
/// caches [max_pos, rotary_dim/2]. Rotates the first rotary_dim of each head (halves,
/// or interleaved pairs), copying the rest.
Expected<TensorList> kRotaryEmbedding(const Node &n, const InputList &in) {
  const Tensor &x = *in[0], &pos = *in[1], &cosT = *in[2], &sinT = *in[3];
  if (x.rank() != 3 && x.rank() != 4)
    return nodeError(n, "input must be 3-D or 4-D, got {}", shapeStr(x.shape()));
  if (cosT.rank() != 2 || cosT.shape() != sinT.shape() || cosT.dtype() != x.dtype() || sinT.dtype() != x.dtype())
    return nodeError(n, "cos_cache and sin_cache must be 2-D of one shape and the input's type");
  if (x.dtype() != DType::F32)
    return nodeError(n, "input must be f32 or f16, got {}", dtypeStr(x.dtype()));
  const bool transposed = x.rank() == 4, interleaved = n.attrInt("interleaved", 0) != 0;
  const int64_t B = x.shape()[0], S = x.shape()[transposed ? 2 : 1];
  const int64_t hidden = transposed ? x.shape()[1] * x.shape()[3] : x.shape()[2];
  int64_t rotDim = n.attrInt("rotary_embedding_dim", 0), heads = n.attrInt("num_heads", 0);
  if (rotDim > 0 && heads == 0)
    return nodeError(n, "num_heads is required with rotary_embedding_dim");
  const int64_t head = rotDim == 0 ? cosT.shape()[1] * 2 : hidden / heads;
  if (transposed)
    heads = x.shape()[1];
  else if (heads == 0)
    heads = head == 0 ? 0 : hidden / head;
  if (rotDim == 0)
    rotDim = head;
  if (head <= 0 || heads * head != hidden || rotDim > head || cosT.shape()[1] * 2 != rotDim)
    return nodeError(n, "cannot split hidden size {} into heads for a cache of {}", hidden, shapeStr(cosT.shape()));
  const bool offsetOnly = pos.numel() == 1 && pos.rank() <= 1;
  if (!offsetOnly && pos.shape() != Shape{B, S})
    return nodeError(n, "position_ids must be [{}, {}] or one offset, got {}", B, S, shapeStr(pos.shape()));
  const std::vector<int64_t> p = pos.toInts();
  const int64_t maxPos = cosT.shape()[0], half = rotDim / 2;
  const int64_t headStride = transposed ? S * head : head, seqStride = transposed ? head : heads * head;
  const int64_t batchStride = S * heads * head;
  const float *src = dataOf<float>(x), *cs = dataOf<float>(cosT), *sn = dataOf<float>(sinT);
  Tensor y = Tensor::zeros(x.dtype(), x.shape());
  float *dst = mutableDataOf<float>(y);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s) {
      const int64_t at = offsetOnly ? p[0] + s : p[static_cast<size_t>(b * S + s)];
      if (at < 0 || at >= maxPos)
        return nodeError(n, "position {} is outside the cache of {} positions", at, maxPos);
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t off = b * batchStride + s * seqStride + h * headStride;
        const float *xi = src + off, *c = cs + at * half, *si = sn + at * half;
        float *yo = dst + off;
        for (int64_t i = 0; i < rotDim; ++i) {
          int64_t ci, j;
          float sign;
          if (interleaved) {
            ci = i / 2;
            sign = i % 2 == 0 ? -1.f : 1.f;
            j = i % 2 == 0 ? i + 1 : i - 1;
          } else {
            ci = i % half;
            sign = i < half ? -1.f : 1.f;
            j = (i + half) % rotDim;
          }
          yo[i] = xi[i] * c[ci] + sign * xi[j] * si[ci];
        }
        for (int64_t i = rotDim; i < head; ++i)
          yo[i] = xi[i];
      }
    }
  return TensorList{y};
}

} // namespace

void addContribKernels(KernelTable &t) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  t.push_back({OpKind::GatherBlockQuantized, kGatherBlockQuantized, 1, kMax, true});
  t.push_back({OpKind::DynamicQuantizeMatMul, kDynamicQuantizeMatMul, 1, kMax});
  t.push_back({OpKind::RotaryEmbedding, kRotaryEmbedding, 1, kMax, true});
}

} // namespace llmopt::interp

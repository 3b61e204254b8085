// Fused attention contrib ops (com.microsoft), following ORT's CPU kernels:
// MultiHeadAttention and GroupQueryAttention (f32; f16 is widened by the caller).
#include <cmath>
#include <limits>

#include "backend/interp/Gemm.h"

namespace llmopt::interp {
namespace {

/// Attention inputs in [B, heads, len, H] layout, contiguous.
struct Heads {
  std::vector<float> data;
  int64_t B = 0, N = 0, L = 0, H = 0;
  float *at(int64_t b, int64_t n) { return data.data() + ((b * N + n) * L) * H; }
  const float *at(int64_t b, int64_t n) const { return data.data() + ((b * N + n) * L) * H; }
};

/// [B, L, N*H] (at column offset `col` of rows `rowWidth` wide) -> [B, N, L, H].
Heads splitHeads(const float *x, int64_t B, int64_t L, int64_t N, int64_t H, int64_t rowWidth, int64_t col) {
  Heads h{std::vector<float>(static_cast<size_t>(B * N * L * H)), B, N, L, H};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = 0; l < L; ++l)
      for (int64_t n = 0; n < N; ++n)
        std::memcpy(h.at(b, n) + l * H, x + (b * L + l) * rowWidth + col + n * H, static_cast<size_t>(H) * sizeof(float));
  return h;
}

/// Per query row: which keys count, and an additive bias per key.
struct MaskFn {
  std::function<bool(int64_t b, int64_t s, int64_t t)> keep; ///< false: masked
  float maskValue = -std::numeric_limits<float>::infinity();  ///< added to masked scores
  const float *bias = nullptr;                                ///< [Bb, Nb, S, T] broadcast
  int64_t biasB = 1, biasN = 1;
  float softcap = 0;
  bool smooth = false; ///< softmax with an extra exp(0) term in the denominator
};

/// out[b, s, n*Hv + :] = softmax(scale * q k^T + bias, masked) v for query head n,
/// reading kv head n / (N / Nkv). q [B,N,S,H], k [B,Nkv,T,H], v [B,Nkv,T,Hv].
void attend(const Heads &q, const Heads &k, const Heads &v, int64_t T, float scale, const MaskFn &m, float *out) {
  const int64_t B = q.B, N = q.N, S = q.L, H = q.H, Hv = v.H, group = N / k.N;
  parallelFor(B * N, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> kt(static_cast<size_t>(H * T)), scores(static_cast<size_t>(S * T)), o(static_cast<size_t>(S * Hv));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / N, n = t % N, kvh = n / group;
      const float *kp = k.at(b, kvh), *vp = v.at(b, kvh);
      for (int64_t j = 0; j < T; ++j)
        for (int64_t d = 0; d < H; ++d)
          kt[static_cast<size_t>(d * T + j)] = kp[j * H + d];
      gemmBlock<float>(q.at(b, n), H, kt.data(), T, scores.data(), T, S, H, T);
      for (int64_t s = 0; s < S; ++s) {
        float *row = scores.data() + s * T;
        const float *bias = m.bias ? m.bias + (((m.biasB == 1 ? 0 : b) * m.biasN + (m.biasN == 1 ? 0 : n)) * S + s) * T : nullptr;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < T; ++j) {
          float x = row[j] * scale;
          if (m.softcap > 0)
            x = m.softcap * std::tanh(x / m.softcap);
          if (bias)
            x += bias[j];
          if (m.keep && !m.keep(b, s, j))
            x = std::isinf(m.maskValue) ? m.maskValue : x + m.maskValue;
          row[j] = x;
          mx = std::max(mx, x);
        }
        double sum = m.smooth ? std::exp(-static_cast<double>(mx)) : 0.0;
        for (int64_t j = 0; j < T; ++j) {
          row[j] = std::isinf(row[j]) && row[j] < 0 ? 0.f : std::exp(row[j] - mx);
          sum += row[j];
        }
        for (int64_t j = 0; j < T; ++j)
          row[j] = sum > 0 ? static_cast<float>(row[j] / sum) : 0.f;
      }
      gemmBlock<float>(scores.data(), T, vp, Hv, o.data(), Hv, S, T, Hv);
      for (int64_t s = 0; s < S; ++s)
        std::memcpy(out + (b * S + s) * N * Hv + n * Hv, o.data() + s * Hv, static_cast<size_t>(Hv) * sizeof(float));
    }
  });
}

/// [B, Nkv, P, H] past followed by the new [B, Nkv, L, H] (P = 0 without past).
Heads appendPast(const Tensor *past, const Heads &cur) {
  if (!past)
    return cur;
  const int64_t P = past->shape()[2];
  Heads r{std::vector<float>(static_cast<size_t>(cur.B * cur.N * (P + cur.L) * cur.H)), cur.B, cur.N, P + cur.L, cur.H};
  const float *pp = dataOf<float>(*past);
  for (int64_t b = 0; b < cur.B; ++b)
    for (int64_t n = 0; n < cur.N; ++n) {
      std::memcpy(r.at(b, n), pp + ((b * cur.N + n) * P) * cur.H, static_cast<size_t>(P * cur.H) * sizeof(float));
      std::memcpy(r.at(b, n) + P * cur.H, cur.at(b, n), static_cast<size_t>(cur.L * cur.H) * sizeof(float));
    }
  return r;
}

Tensor headsTensor(const Heads &h) {
  return Tensor::fromVector(DType::F32, {h.B, h.N, h.L, h.H}, h.data);
}

/// MultiHeadAttention: query [B,S,D]; key/value [B,L,D] / [B,L,Dv] or [B,N,L,H] (used
/// as is); bias [D+D+Dv]; key_padding_mask [B] (valid lengths) or [B,T] (0 = masked);
/// attention_bias [B|1, N|1, S, T]; past_key/value [B,N,P,H]; unidirectional.
Expected<TensorList> kMultiHeadAttention(const Node &n, const InputList &in) {
  const Tensor &query = *in[0];
  const Tensor *key = optInput(in, 1), *value = optInput(in, 2), *bias = optInput(in, 3);
  const Tensor *kpm = optInput(in, 4), *attnBias = optInput(in, 5), *pastK = optInput(in, 6), *pastV = optInput(in, 7);
  const int64_t N = n.attrInt("num_heads", 0);
  if (N <= 0)
    return nodeError(n, "num_heads must be positive");
  if (query.dtype() != DType::F32 || query.rank() != 3 || !key || !value)
    return nodeError(n, "supports query [B,S,D] with separate key and value (packed QKV/KV are not supported)");
  const int64_t B = query.shape()[0], S = query.shape()[1], D = query.shape()[2], H = D / N;
  if (H * N != D)
    return nodeError(n, "hidden size {} is not a multiple of num_heads {}", D, N);
  const bool bnsh = key->rank() == 4;
  if (bnsh ? (key->shape() != Shape{B, N, key->shape()[2], H} || value->rank() != 4 || bias)
           : (key->rank() != 3 || value->rank() != 3 || key->shape()[0] != B || key->shape()[2] != D))
    return nodeError(n, "key/value must be [B,L,D] or [B,N,L,H] (no bias with the latter), got {} and {}",
                     shapeStr(key->shape()), shapeStr(value->shape()));
  const int64_t L = bnsh ? key->shape()[2] : key->shape()[1];
  const int64_t Dv = bnsh ? value->shape()[1] * value->shape()[3] : value->shape()[2], Hv = Dv / N;
  if (value->shape()[0] != B || (bnsh ? value->shape()[2] : value->shape()[1]) != L || Hv * N != Dv)
    return nodeError(n, "value {} does not match key {}", shapeStr(value->shape()), shapeStr(key->shape()));
  std::vector<float> qb(query.toFloats()), kb, vb;
  if (!bnsh) {
    kb = key->toFloats();
    vb = value->toFloats();
  }
  if (bias) {
    if (bias->numel() != D + D + Dv)
      return nodeError(n, "bias must hold {} values", D + D + Dv);
    const float *bp = dataOf<float>(*bias);
    for (size_t i = 0; i < qb.size(); ++i)
      qb[i] += bp[i % static_cast<size_t>(D)];
    for (size_t i = 0; i < kb.size(); ++i)
      kb[i] += bp[D + static_cast<int64_t>(i % static_cast<size_t>(D))];
    for (size_t i = 0; i < vb.size(); ++i)
      vb[i] += bp[2 * D + static_cast<int64_t>(i % static_cast<size_t>(Dv))];
  }
  Heads q = splitHeads(qb.data(), B, S, N, H, D, 0);
  Heads k = bnsh ? Heads{key->toFloats(), B, N, L, H} : splitHeads(kb.data(), B, L, N, H, D, 0);
  Heads v = bnsh ? Heads{value->toFloats(), B, N, L, Hv} : splitHeads(vb.data(), B, L, N, Hv, Dv, 0);
  if ((pastK != nullptr) != (pastV != nullptr))
    return nodeError(n, "past_key and past_value must both be given or both absent");
  if (pastK && (pastK->rank() != 4 || pastK->shape()[0] != B || pastK->shape()[1] != N || pastK->shape()[3] != H ||
                pastV->shape() != Shape{B, N, pastK->shape()[2], Hv}))
    return nodeError(n, "past_key/past_value must be [B,N,P,H], got {} and {}", shapeStr(pastK->shape()),
                     shapeStr(pastV->shape()));
  const int64_t P = pastK ? pastK->shape()[2] : 0, T = P + L;
  k = appendPast(pastK, k);
  v = appendPast(pastV, v);
  MaskFn m;
  m.maskValue = n.attrFloat("mask_filter_value", -10000.f);
  std::vector<int64_t> mask;
  const bool causal = n.attrInt("unidirectional", 0) != 0;
  if (kpm) {
    mask = kpm->toInts();
    if (!(kpm->shape() == Shape{B} || kpm->shape() == Shape{B, T}))
      return nodeError(n, "key_padding_mask must be [B] or [B,T], got {}", shapeStr(kpm->shape()));
  }
  const bool lengths = kpm && kpm->rank() == 1;
  if (kpm || causal)
    m.keep = [&](int64_t b, int64_t s, int64_t t) {
      if (causal && t > P + s)
        return false;
      if (kpm)
        return lengths ? t < mask[static_cast<size_t>(b)] : mask[static_cast<size_t>(b * T + t)] != 0;
      return true;
    };
  if (attnBias) {
    const Shape &bs = attnBias->shape();
    if (attnBias->dtype() != DType::F32 || bs.size() != 4 || (bs[0] != 1 && bs[0] != B) || (bs[1] != 1 && bs[1] != N) ||
        bs[2] != S || bs[3] != T)
      return nodeError(n, "attention_bias must be f32 [B|1, N|1, {}, {}], got {}", S, T, shapeStr(bs));
    m.bias = dataOf<float>(*attnBias);
    m.biasB = bs[0];
    m.biasN = bs[1];
  }
  float scale = n.attrFloat("scale", 0.f);
  if (scale == 0.f)
    scale = 1.f / std::sqrt(static_cast<float>(H));
  Tensor y = Tensor::zeros(DType::F32, {B, S, Dv});
  attend(q, k, v, T, scale, m, mutableDataOf<float>(y));
  return TensorList{y, headsTensor(k), headsTensor(v)};
}

/// Rotates [B, N, S, H] heads in place at positions pos[b*S + s] (ORT's rotary).
void rotate(Heads &h, const std::vector<int64_t> &pos, const float *cosC, const float *sinC, int64_t half, bool interleaved) {
  const int64_t rot = 2 * half;
  std::vector<float> tmp(static_cast<size_t>(rot));
  for (int64_t b = 0; b < h.B; ++b)
    for (int64_t n = 0; n < h.N; ++n)
      for (int64_t s = 0; s < h.L; ++s) {
        float *x = h.at(b, n) + s * h.H;
        const float *c = cosC + pos[static_cast<size_t>(b * h.L + s)] * half, *sn = sinC + pos[static_cast<size_t>(b * h.L + s)] * half;
        for (int64_t i = 0; i < rot; ++i) {
          const int64_t ci = interleaved ? i / 2 : i % half;
          const int64_t j = interleaved ? (i % 2 == 0 ? i + 1 : i - 1) : (i + half) % rot;
          const float sign = interleaved ? (i % 2 == 0 ? -1.f : 1.f) : (i < half ? -1.f : 1.f);
          tmp[static_cast<size_t>(i)] = x[i] * c[ci] + sign * x[j] * sn[ci];
        }
        std::memcpy(x, tmp.data(), static_cast<size_t>(rot) * sizeof(float));
      }
}

/// GroupQueryAttention: query [B,S,N*H] (or packed [B,S,(N+2Nkv)*H] without key/value),
/// key/value [B,S,Nkv*H], past_key/value [B,Nkv,P,H] (right-padded buffers),
/// seqlens_k [B] = total length - 1, total_sequence_length, optional cos/sin caches.
Expected<TensorList> kGroupQueryAttention(const Node &n, const InputList &in) {
  const Tensor &query = *in[0];
  const Tensor *key = optInput(in, 1), *value = optInput(in, 2), *pastK = optInput(in, 3), *pastV = optInput(in, 4);
  const Tensor &seqlens = *in[5], &totalT = *in[6];
  const Tensor *cosC = optInput(in, 7), *sinC = optInput(in, 8);
  for (size_t i = 9; i < in.size(); ++i)
    if (in[i])
      return nodeError(n, "input {} (position_ids / attention_bias / head_sink) is not supported", i);
  const int64_t N = n.attrInt("num_heads", 0), Nkv = n.attrInt("kv_num_heads", 0);
  if (N <= 0 || Nkv <= 0 || N % Nkv != 0)
    return nodeError(n, "num_heads ({}) must be a positive multiple of kv_num_heads ({})", N, Nkv);
  if (query.dtype() != DType::F32 || query.rank() != 3)
    return nodeError(n, "query must be f32/f16 [B,S,D], got {}", shapeStr(query.shape()));
  if ((key != nullptr) != (value != nullptr))
    return nodeError(n, "key and value must both be given or both absent (packed QKV)");
  const int64_t B = query.shape()[0], S = query.shape()[1], W = query.shape()[2];
  const int64_t H = key ? W / N : W / (N + 2 * Nkv);
  if (H <= 0 || (key && (key->shape() != Shape{B, S, Nkv * H} || value->shape() != Shape{B, S, Nkv * H})) ||
      (!key && H * (N + 2 * Nkv) != W) || (key && H * N != W))
    return nodeError(n, "query/key/value shapes do not fit {} and {} heads", N, Nkv);
  if ((pastK != nullptr) != (pastV != nullptr) ||
      (pastK && (pastK->shape().size() != 4 || pastK->shape()[0] != B || pastK->shape()[1] != Nkv ||
                 pastK->shape()[3] != H || pastV->shape() != pastK->shape())))
    return nodeError(n, "past_key/past_value must both be [B, {}, P, {}]", Nkv, H);
  if (seqlens.numel() != B || totalT.numel() != 1)
    return nodeError(n, "seqlens_k must hold {} values and total_sequence_length one", B);
  const std::vector<int64_t> seqK = seqlens.toInts();
  const int64_t total = totalT.getInt(0), Pbuf = pastK ? pastK->shape()[2] : 0, Tp = std::max(total, Pbuf);
  const bool firstPrompt = S == total;
  const std::vector<float> qf = query.toFloats();
  Heads q = splitHeads(qf.data(), B, S, N, H, W, 0), k, v;
  if (key) {
    const std::vector<float> kf = key->toFloats(), vf = value->toFloats();
    k = splitHeads(kf.data(), B, S, Nkv, H, Nkv * H, 0);
    v = splitHeads(vf.data(), B, S, Nkv, H, Nkv * H, 0);
  } else {
    k = splitHeads(qf.data(), B, S, Nkv, H, W, N * H);
    v = splitHeads(qf.data(), B, S, Nkv, H, W, (N + Nkv) * H);
  }
  std::vector<int64_t> past(static_cast<size_t>(B)), pos(static_cast<size_t>(B * S));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = seqK[static_cast<size_t>(b)] + 1;
    past[static_cast<size_t>(b)] = firstPrompt ? 0 : len - S;
    if (len > Tp || past[static_cast<size_t>(b)] < 0)
      return nodeError(n, "seqlens_k[{}] = {} does not fit {} new tokens in {} positions", b, len - 1, S, Tp);
    for (int64_t s = 0; s < S; ++s)
      pos[static_cast<size_t>(b * S + s)] = firstPrompt ? std::min(s, len - 1) : past[static_cast<size_t>(b)] + s;
  }
  if (n.attrInt("do_rotary", 0) != 0) {
    if (!cosC || !sinC || cosC->shape() != sinC->shape() || cosC->rank() != 2 || cosC->shape()[0] < Tp ||
        2 * cosC->shape()[1] > H)
      return nodeError(n, "do_rotary needs cos_cache/sin_cache [>= {}, <= {}]", Tp, H / 2);
    const bool il = n.attrInt("rotary_interleaved", 0) != 0;
    rotate(q, pos, dataOf<float>(*cosC), dataOf<float>(*sinC), cosC->shape()[1], il);
    rotate(k, pos, dataOf<float>(*cosC), dataOf<float>(*sinC), cosC->shape()[1], il);
  }
  // Present buffers: each batch's past entries, then the new tokens, zeros after.
  Heads pk{std::vector<float>(static_cast<size_t>(B * Nkv * Tp * H), 0.f), B, Nkv, Tp, H}, pv = pk;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Nkv; ++h) {
      const int64_t p = past[static_cast<size_t>(b)], copy = static_cast<size_t>(std::min(p, Pbuf) * H) * sizeof(float);
      if (pastK && copy) {
        std::memcpy(pk.at(b, h), dataOf<float>(*pastK) + ((b * Nkv + h) * Pbuf) * H, static_cast<size_t>(copy));
        std::memcpy(pv.at(b, h), dataOf<float>(*pastV) + ((b * Nkv + h) * Pbuf) * H, static_cast<size_t>(copy));
      }
      std::memcpy(pk.at(b, h) + p * H, k.at(b, h), static_cast<size_t>(S * H) * sizeof(float));
      std::memcpy(pv.at(b, h) + p * H, v.at(b, h), static_cast<size_t>(S * H) * sizeof(float));
    }
  MaskFn m;
  const int64_t window = n.attrInt("local_window_size", -1);
  m.keep = [&](int64_t b, int64_t s, int64_t t) {
    const int64_t at = past[static_cast<size_t>(b)] + s, len = seqK[static_cast<size_t>(b)] + 1;
    return t <= at && t < len && (window < 0 || t >= at - window);
  };
  m.softcap = n.attrFloat("softcap", 0.f);
  m.smooth = n.attrInt("smooth_softmax", 0) != 0;
  float scale = n.attrFloat("scale", 0.f);
  if (scale == 0.f)
    scale = 1.f / std::sqrt(static_cast<float>(H));
  Tensor y = Tensor::zeros(DType::F32, {B, S, N * H});
  attend(q, pk, pv, Tp, scale, m, mutableDataOf<float>(y));
  return TensorList{y, headsTensor(pk), headsTensor(pv)};
}

} // namespace

void addAttentionKernels(KernelTable &t) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  t.push_back({OpKind::MultiHeadAttention, kMultiHeadAttention, 1, kMax, true});
  // key, value (absent for packed QKV) and the past cache are optional.
  t.push_back({OpKind::GroupQueryAttention, kGroupQueryAttention, 1, kMax, true, 0b11110});
}

} // namespace llmopt::interp

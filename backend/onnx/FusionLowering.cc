// The ONNX writer's decompositions of fused ops (see FusionLowering.h).
#include "backend/onnx/FusionLowering.h"

#include <cmath>
#include <limits>

namespace llmopt::onnxw {

namespace {
template <typename... A> std::vector<Attribute> attrs(A... a) {
  std::vector<Attribute> v;
  (v.push_back(std::move(a)), ...);
  return v;
}
} // namespace

/// Writes the ops of one decomposition: fresh names for intermediates, scalar constants
/// in the input's type (f32 constants CastLike'd for other float types).
struct FusionLowering::Emit {
  const Node &n;
  LoweringSink &sink;
  DType dt;
  std::string base;
  Status st;

  std::string op(std::string_view type, std::vector<std::string> ins, std::vector<Attribute> attrs = {},
                 std::string out = {}) {
    if (out.empty())
      out = sink.freshName(base + "/" + std::string(type));
    EmittedNode e{"", std::string(type), sink.freshName(base + "/" + std::string(type)), std::move(ins),
                  {out}, std::move(attrs)};
    if (st.isOk())
      st = sink.node(std::move(e));
    return out;
  }
  std::string scalar(float v, const std::string &like) {
    std::string name = sink.freshName(base + "/c");
    if (st.isOk())
      st = sink.initializer(name, Tensor::scalar(DType::F32, v));
    return dt == DType::F32 ? name : op("CastLike", {name, like});
  }
  std::string ints(std::vector<int64_t> v) {
    std::string name = sink.freshName(base + "/i");
    const int64_t size = static_cast<int64_t>(v.size());
    if (st.isOk())
      st = sink.initializer(name, Tensor::fromVector<int64_t>(DType::I64, {size}, std::move(v)));
    return name;
  }
  std::string int0(int64_t v) {
    std::string name = sink.freshName(base + "/i");
    if (st.isOk())
      st = sink.initializer(name, Tensor::scalar<int64_t>(DType::I64, v));
    return name;
  }
  /// x[..., start:end] on the last axis (Slice with inputs: opset >= 10).
  std::string sliceLast(const std::string &x, int64_t start, int64_t end) {
    return op("Slice", {x, ints({start}), ints({end}), ints({-1})});
  }
  std::string cast(const std::string &x, DType to) {
    return op("Cast", {x}, attrs(Attribute::makeInt("to", static_cast<int64_t>(to))));
  }
  std::string unsqueeze(const std::string &x, int64_t axis, int64_t opset) {
    if (opset >= 13)
      return op("Unsqueeze", {x, ints({axis})});
    return op("Unsqueeze", {x}, attrs(Attribute::makeInts("axes", {axis})));
  }
  std::string axesLast(std::string_view reduce, const std::string &x, int64_t opset) {
    if (opset >= 18) {
      std::string axes = sink.freshName(base + "/axes");
      if (st.isOk())
        st = sink.initializer(axes, Tensor::fromVector<int64_t>(DType::I64, {1}, {-1}));
      return op(reduce, {x, axes});
    }
    return op(reduce, {x}, attrs(Attribute::makeInts("axes", {-1})));
  }
};

Expected<bool> FusionLowering::lowerNode(const Node &n) {
  const bool llmoptOp = n.is(OpKind::SwiGLU) || n.is(OpKind::MatMulBias);
  const bool skip = n.is(OpKind::SkipSimplifiedLayerNormalization) || n.is(OpKind::SkipLayerNormalization);
  const bool contrib = n.is(OpKind::SimplifiedLayerNormalization) || skip || n.is(OpKind::MsGelu) ||
                       n.is(OpKind::FastGelu) || n.is(OpKind::LayerNormalization) ||
                       n.is(OpKind::RotaryEmbedding) || n.is(OpKind::GroupQueryAttention) ||
                       n.is(OpKind::MultiHeadAttention);
  if (!llmoptOp && !(contrib && opts_.target == "onnx"))
    return false;
  const int64_t opset = model_.opsetVersion("");
  if (n.is(OpKind::LayerNormalization) && opset >= 17)
    return false;
  const bool attention = n.is(OpKind::GroupQueryAttention) || n.is(OpKind::MultiHeadAttention);
  for (size_t i = 1; i < n.numOutputs(); ++i)
    if ((n.output(i)->hasUses() || n.output(i)->isGraphOutput()) && !(skip && i == 3) && !attention)
      return errorf("node '{}' ({}): output {} is used; --target=onnx writes only the first output",
                    n.name(), n.qualifiedOpType(), i);
  auto in = [&](size_t i) { return sink_.name(n.input(i)); };
  const std::string out = sink_.name(n.output(0));
  DType dt = n.input(0)->type().elem;
  Emit e{n, sink_, dt == DType::Undefined ? DType::F32 : dt, n.name().empty() ? out : n.name(),
         Status::ok()};
  const float eps = n.attrFloat("epsilon", 1e-5f);
  switch (n.kind()) {
  case OpKind::SwiGLU:
    e.op("Mul", {e.op("Mul", {in(0), e.op("Sigmoid", {in(0)})}), in(1)}, {}, out);
    break;
  case OpKind::MatMulBias:
    e.op("Add", {e.op("MatMul", {in(0), in(1)}), in(2)}, {}, out);
    break;
  case OpKind::SkipSimplifiedLayerNormalization:
  case OpKind::SimplifiedLayerNormalization: {
    if (n.attrInt("axis", -1) != -1)
      return errorf("node '{}': only axis -1 is written for --target=onnx", n.name());
    std::string x = in(0), scale = in(1);
    if (skip) { // the residual sum (output 3) first, then the norm of it
      Value *sum = n.numOutputs() > 3 ? n.output(3) : nullptr;
      const bool used = sum && (sum->hasUses() || sum->isGraphOutput());
      const bool bias = n.numInputs() > 3 && n.input(3);
      x = e.op("Add", {in(0), in(1)}, {}, used && !bias ? sink_.name(sum) : std::string());
      if (bias)
        x = e.op("Add", {x, in(3)}, {}, used ? sink_.name(sum) : std::string());
      scale = in(2);
    }
    if (opset >= 23) {
      e.op("RMSNormalization", {x, scale},
           attrs(Attribute::makeInt("axis", -1), Attribute::makeFloat("epsilon", eps)), out);
      break;
    }
    std::string ms = e.axesLast("ReduceMean", e.op("Mul", {x, x}), opset);
    std::string inv = e.op("Reciprocal", {e.op("Sqrt", {e.op("Add", {ms, e.scalar(eps, x)})})});
    e.op("Mul", {e.op("Mul", {x, inv}), scale}, {}, out);
    break;
  }
  case OpKind::SkipLayerNormalization:
  case OpKind::LayerNormalization: {
    if (n.attrInt("axis", -1) != -1)
      return errorf("node '{}': only axis -1 is written below opset 17", n.name());
    std::string x = in(0), gamma = in(1), beta;
    size_t betaAt = 2;
    if (n.is(OpKind::SkipLayerNormalization)) { // the residual sum (output 3), then the norm
      Value *sum = n.numOutputs() > 3 ? n.output(3) : nullptr;
      const bool used = sum && (sum->hasUses() || sum->isGraphOutput());
      const bool bias = n.numInputs() > 4 && n.input(4);
      x = e.op("Add", {in(0), in(1)}, {}, used && !bias ? sink_.name(sum) : std::string());
      if (bias)
        x = e.op("Add", {x, in(4)}, {}, used ? sink_.name(sum) : std::string());
      gamma = in(2);
      betaAt = 3;
    }
    if (n.numInputs() > betaAt && n.input(betaAt))
      beta = in(betaAt);
    if (opset >= 17) {
      std::vector<std::string> ins{x, gamma};
      if (!beta.empty())
        ins.push_back(beta);
      e.op("LayerNormalization", ins, attrs(Attribute::makeInt("axis", -1), Attribute::makeFloat("epsilon", eps)), out);
      break;
    }
    std::string d = e.op("Sub", {x, e.axesLast("ReduceMean", x, opset)});
    std::string var = e.axesLast("ReduceMean", e.op("Mul", {d, d}), opset);
    std::string y = e.op("Div", {d, e.op("Sqrt", {e.op("Add", {var, e.scalar(eps, x)})})});
    if (!beta.empty())
      e.op("Add", {e.op("Mul", {y, gamma}), beta}, {}, out);
    else
      e.op("Mul", {y, gamma}, {}, out);
    break;
  }
  case OpKind::MsGelu:
  case OpKind::FastGelu: {
    const bool tanhForm = n.is(OpKind::FastGelu);
    std::string x = in(0);
    if (tanhForm && n.numInputs() > 1 && n.input(1))
      x = e.op("Add", {x, in(1)});
    if (opset >= 20) {
      e.op("Gelu", {x}, attrs(Attribute::makeString("approximate", tanhForm ? "tanh" : "none")), out);
      break;
    }
    std::string inner;
    if (tanhForm) {
      std::string cube = e.op("Mul", {x, e.op("Mul", {x, x})});
      std::string sum = e.op("Add", {x, e.op("Mul", {cube, e.scalar(0.044715f, x)})});
      inner = e.op("Tanh", {e.op("Mul", {sum, e.scalar(0.7978845608f, x)})});
    } else {
      inner = e.op("Erf", {e.op("Mul", {x, e.scalar(0.70710678f, x)})});
    }
    std::string half = e.op("Mul", {x, e.scalar(0.5f, x)});
    e.op("Mul", {half, e.op("Add", {inner, e.scalar(1.f, x)})}, {}, out);
    break;
  }
  case OpKind::RotaryEmbedding:
    LLMOPT_RETURN_IF_ERROR(lowerRope(e, n, opset));
    break;
  case OpKind::GroupQueryAttention:
  case OpKind::MultiHeadAttention:
    LLMOPT_RETURN_IF_ERROR(lowerAttention(e, n, opset));
    break;
  default:
    return errorf("node '{}': {} has no standard ONNX form in llmopt's writer yet; "
                  "write it with --target=ort", n.name(), n.qualifiedOpType());
  }
  LLMOPT_RETURN_IF_ERROR(e.st);
  return true;
}

/// RotaryEmbedding(x [B, N, S, H] (or [B, S, N*H], rotated as [B, S, N, H] with the rows
/// broadcast over axis 2), pos, cos_cache [P, H/2], sin_cache): the cache rows are
/// Gather(cache, Range(0, S) + pos) for a one-element pos (an offset) or
/// Unsqueeze(Gather(cache, pos), [1]) for [B, S] position ids; then with c, s those rows
///   rotate-half:  Concat(x1*c - x2*s, x2*c + x1*s)          x1, x2 = the halves of x
///   interleaved:  Reshape(Concat(e*c - o*s, o*c + e*s), Shape(x))
///                                  e, o = the pairs' entries of Reshape(x, [0, 0, 0, H/2, 2])
Status FusionLowering::lowerRope(Emit &e, const Node &n, int64_t opset) {
  const Value *x = n.input(0), *pos = n.input(1), *cache = n.input(2);
  auto dim = [](const Value *v, size_t i) -> int64_t {
    const Type &t = v->type();
    return t.dims && i < t.dims->size() && (*t.dims)[i].kind == Dim::Kind::Static ? (*t.dims)[i].value : -1;
  };
  const bool bsd = x->type().rank() == 3; // [B, S, N*H]: rotated as [B, S, N, H]
  const int64_t head = bsd ? -1 : dim(x, 3), half = head > 0 ? head / 2 : dim(cache, 1);
  if ((!bsd && x->type().rank() != 4) || n.attrInt("rotary_embedding_dim", 0) != 0 || half <= 0)
    return errorf("node '{}': --target=onnx writes RotaryEmbedding only for a 3-D or 4-D input of "
                  "known head size, rotated whole", n.name());
  if (opset < 11)
    return errorf("node '{}': --target=onnx writes RotaryEmbedding from opset 11 (Range)", n.name());
  auto in = [&](size_t i) { return sink_.name(n.input(i)); };
  // The rows' axis to broadcast over the heads: [B, 1, S, H/2] or [B, S, 1, H/2].
  const int64_t seqAxis = bsd ? 1 : 2, headsAxis = bsd ? 2 : 1;
  std::string cos, sin;
  if (pos->type().rank() == 2) {
    cos = e.unsqueeze(e.op("Gather", {in(2), in(1)}), headsAxis, opset);
    sin = e.unsqueeze(e.op("Gather", {in(3), in(1)}), headsAxis, opset);
  } else {
    std::string seq = e.op("Gather", {e.op("Shape", {in(0)}), e.int0(seqAxis)});
    std::string rows = e.op("Add", {e.op("Range", {e.int0(0), seq, e.int0(1)}), in(1)});
    cos = e.op("Gather", {in(2), rows});
    sin = e.op("Gather", {in(3), rows});
    if (bsd) {
      cos = e.unsqueeze(cos, 1, opset);
      sin = e.unsqueeze(sin, 1, opset);
    }
  }
  const std::string out = sink_.name(n.output(0));
  const std::string x4 = bsd ? e.op("Reshape", {in(0), e.ints({0, 0, -1, 2 * half})}) : in(0);
  auto rotate = [&](const std::string &a, const std::string &b) { // (a*c - b*s, b*c + a*s)
    return std::pair(e.op("Sub", {e.op("Mul", {a, cos}), e.op("Mul", {b, sin})}),
                     e.op("Add", {e.op("Mul", {b, cos}), e.op("Mul", {a, sin})}));
  };
  if (n.attrInt("interleaved", 0) == 0) {
    auto [y1, y2] = rotate(e.sliceLast(x4, 0, half), e.sliceLast(x4, half, std::numeric_limits<int64_t>::max()));
    if (bsd)
      e.op("Reshape", {e.op("Concat", {y1, y2}, attrs(Attribute::makeInt("axis", -1))), e.op("Shape", {in(0)})},
           {}, out);
    else
      e.op("Concat", {y1, y2}, attrs(Attribute::makeInt("axis", -1)), out);
  } else {
    std::string pairs = e.op("Reshape", {x4, e.ints({0, 0, 0, half, 2})});
    cos = e.unsqueeze(cos, -1, opset);
    sin = e.unsqueeze(sin, -1, opset);
    auto [ye, yo] = rotate(e.sliceLast(pairs, 0, 1), e.sliceLast(pairs, 1, 2));
    std::string cat = e.op("Concat", {ye, yo}, attrs(Attribute::makeInt("axis", -1)));
    e.op("Reshape", {cat, e.op("Shape", {in(0)})}, {}, out);
  }
  return e.st;
}

/// GroupQueryAttention / MultiHeadAttention as standard ops, for the forms fuse-attention
/// writes (q/k/v [B, S, N*H]; GQA: a concatenated cache, seqlens_k = total - 1 for every
/// batch row, no rotary/softcap/window; MHA: an optional key_padding_mask, no bias, cache
/// or attention_bias):
///   q4 = Transpose(Reshape(q, [0, 0, N, H]), [0, 2, 1, 3])                 [B, N, S, H]
///   k4 = Concat(past_k, heads(k), axis 2) (= present_key), v4 likewise     [B, Nkv, T, H]
///   GQA:  scores = MatMul(Reshape(q4, [0, Nkv, g, -1, H]), Transpose(Unsqueeze(k4, 2)))
///         * scale, masked (Where -> lowest) where key t > P + s or t > seqlens_k[b]
///   MHA:  scores = MatMul(q4, Transpose(k4)) * scale + Where(mask, 0, mask_filter_value)
///   out  = Reshape(Transpose(Reshape(MatMul(Softmax(scores), v), [0, N, -1, H])), [0, 0, -1])
/// The query-group reshape reads each kv head once for its g = N / Nkv query heads (no
/// repeat_kv copy).
Status FusionLowering::lowerAttention(Emit &e, const Node &n, int64_t opset) {
  const bool gqa = n.is(OpKind::GroupQueryAttention);
  auto in = [&](size_t i) { return sink_.name(n.input(i)); };
  auto has = [&](size_t i) { return n.numInputs() > i && n.input(i) != nullptr; };
  const Type &qt = n.input(0)->type();
  const int64_t heads = n.attrInt("num_heads", 0), kvHeads = gqa ? n.attrInt("kv_num_heads", 0) : heads;
  const int64_t width = qt.rank() == 3 && (*qt.dims)[2].kind == Dim::Kind::Static ? (*qt.dims)[2].value : -1;
  if (heads <= 0 || kvHeads <= 0 || heads % kvHeads || width <= 0 || width % heads || !has(1) || !has(2))
    return errorf("node '{}' ({}): --target=onnx writes attention only for separate q/k/v of shape "
                  "[B, S, N*H] with a static N*H", n.name(), n.qualifiedOpType());
  if (opset < 11)
    return errorf("node '{}': --target=onnx writes attention from opset 11 (Range)", n.name());
  if (gqa && (n.attrInt("do_rotary", 0) != 0 || n.attrInt("local_window_size", -1) != -1 ||
              n.attrFloat("softcap", 0.f) != 0.f || has(7) || has(8) || has(9) || has(10)))
    return errorf("node '{}': --target=onnx writes GroupQueryAttention without rotary, softcap, "
                  "a local window or extra inputs", n.name());
  if (!gqa && (has(3) || has(5) || has(6) || has(7) || n.attrInt("unidirectional", 0) != 0 ||
               n.input(1)->type().rank() != 3))
    return errorf("node '{}': --target=onnx writes MultiHeadAttention with 3-D key/value and at most "
                  "a key_padding_mask (no bias, attention_bias, cache or unidirectional)", n.name());
  const int64_t head = width / heads, group = heads / kvHeads;
  auto used = [&](size_t i) {
    return n.numOutputs() > i && (n.output(i)->hasUses() || n.output(i)->isGraphOutput());
  };
  auto splitHeads = [&](const std::string &x, int64_t h, std::vector<int64_t> perm) {
    return e.op("Transpose", {e.op("Reshape", {x, e.ints({0, 0, h, head})})},
                attrs(Attribute::makeInts("perm", std::move(perm))));
  };
  // Keys/values with the cache; the present outputs are the concatenations.
  std::string k4 = splitHeads(in(1), kvHeads, {0, 2, 1, 3}), v4 = splitHeads(in(2), kvHeads, {0, 2, 1, 3});
  for (size_t side : {0u, 1u}) {
    std::string &kv = side == 0 ? k4 : v4;
    const size_t past = 3 + side, present = 1 + side;
    const std::string presentName = used(present) ? sink_.name(n.output(present)) : std::string();
    if (gqa && has(past))
      kv = e.op("Concat", {in(past), kv}, attrs(Attribute::makeInt("axis", 2)), presentName);
    else if (!presentName.empty())
      e.op("Identity", {kv}, {}, presentName);
  }
  std::string q4 = splitHeads(in(0), heads, {0, 2, 1, 3});
  float scale = n.attrFloat("scale", 0.f);
  if (scale == 0.f)
    scale = 1.f / std::sqrt(static_cast<float>(head));
  const std::string x = in(0);
  auto total = [&] { return e.op("Gather", {e.op("Shape", {k4}), e.int0(2)}); };
  std::string scores, ctx;
  if (gqa) {
    std::string qg = e.op("Reshape", {q4, e.ints({0, kvHeads, group, -1, head})});
    std::string kT = e.op("Transpose", {e.unsqueeze(k4, 2, opset)}, attrs(Attribute::makeInts("perm", {0, 1, 2, 4, 3})));
    scores = e.op("Mul", {e.op("MatMul", {qg, kT}), e.scalar(scale, x)});
    // Key t is masked for query s when t > P + s (P = T - S) or t > seqlens_k[b].
    std::string T = total(), S = e.op("Gather", {e.op("Shape", {x}), e.int0(1)});
    std::string keys = e.op("Range", {e.int0(0), T, e.int0(1)});
    std::string rows = e.unsqueeze(e.op("Range", {e.op("Sub", {T, S}), T, e.int0(1)}), 1, opset);
    std::string causal = e.op("Greater", {e.unsqueeze(keys, 0, opset), rows});   // [S, T]
    std::string lens = e.unsqueeze(e.cast(in(5), DType::I64), 1, opset);
    std::string beyond = e.op("Greater", {e.unsqueeze(keys, 0, opset), lens});    // [B, T]
    std::string b5 = e.op("Reshape", {beyond, e.ints({0, 1, 1, 1, -1})});
    std::string lowest = e.scalar(std::numeric_limits<float>::lowest(), x);
    scores = e.op("Where", {e.op("Or", {causal, b5}), lowest, scores});
    std::string probs = e.op("Softmax", {scores}, attrs(Attribute::makeInt("axis", -1)));
    ctx = e.op("Reshape", {e.op("MatMul", {probs, e.unsqueeze(v4, 2, opset)}), e.ints({0, heads, -1, head})});
  } else {
    std::string kT = e.op("Transpose", {k4}, attrs(Attribute::makeInts("perm", {0, 1, 3, 2})));
    scores = e.op("Mul", {e.op("MatMul", {q4, kT}), e.scalar(scale, x)});
    if (has(4)) { // [B, T] (0 = masked) or [B] valid lengths
      std::string keep;
      if (n.input(4)->type().rank() == 1) {
        std::string keys = e.unsqueeze(e.op("Range", {e.int0(0), total(), e.int0(1)}), 0, opset);
        std::string lens = e.cast(in(4), DType::I64);
        keep = e.op("Less", {keys, e.unsqueeze(lens, 1, opset)});
      } else {
        keep = e.cast(in(4), DType::Bool);
      }
      std::string fill = e.scalar(n.attrFloat("mask_filter_value", -10000.f), x);
      std::string bias = e.op("Where", {keep, e.scalar(0.f, x), fill});
      scores = e.op("Add", {scores, e.op("Reshape", {bias, e.ints({0, 1, 1, -1})})});
    }
    std::string probs = e.op("Softmax", {scores}, attrs(Attribute::makeInt("axis", -1)));
    ctx = e.op("MatMul", {probs, v4});
  }
  std::string bsnh = e.op("Transpose", {ctx}, attrs(Attribute::makeInts("perm", {0, 2, 1, 3})));
  e.op("Reshape", {bsnh, e.ints({0, 0, -1})}, {}, sink_.name(n.output(0)));
  return e.st;
}

} // namespace llmopt::onnxw

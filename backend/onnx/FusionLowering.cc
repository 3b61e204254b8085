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
  for (size_t i = 1; i < n.numOutputs(); ++i)
    if ((n.output(i)->hasUses() || n.output(i)->isGraphOutput()) && !(skip && i == 3))
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
      x = e.op("Add", {in(0), in(1)}, {}, used ? sink_.name(sum) : std::string());
      if (n.numInputs() > 3 && n.input(3))
        return errorf("node '{}': a SkipSimplifiedLayerNormalization bias is not written for "
                      "--target=onnx", n.name());
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
      if (n.numInputs() > 4 && n.input(4))
        return errorf("node '{}': a SkipLayerNormalization bias is not written for --target=onnx",
                      n.name());
      Value *sum = n.numOutputs() > 3 ? n.output(3) : nullptr;
      const bool used = sum && (sum->hasUses() || sum->isGraphOutput());
      x = e.op("Add", {in(0), in(1)}, {}, used ? sink_.name(sum) : std::string());
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
  default:
    return errorf("node '{}': {} has no standard ONNX form in llmopt's writer yet; "
                  "write it with --target=ort", n.name(), n.qualifiedOpType());
  }
  LLMOPT_RETURN_IF_ERROR(e.st);
  return true;
}

/// RotaryEmbedding(x [B, N, S, H], pos, cos_cache [P, H/2], sin_cache): the cache rows are
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
  const int64_t head = dim(x, 3), half = head > 0 ? head / 2 : dim(cache, 1);
  if (x->type().rank() != 4 || n.attrInt("rotary_embedding_dim", 0) != 0 || half <= 0)
    return errorf("node '{}': --target=onnx writes RotaryEmbedding only for a 4-D input of known "
                  "head size, rotated whole", n.name());
  if (opset < 11)
    return errorf("node '{}': --target=onnx writes RotaryEmbedding from opset 11 (Range)", n.name());
  auto in = [&](size_t i) { return sink_.name(n.input(i)); };
  std::string cos, sin;
  if (pos->type().rank() == 2) {
    cos = e.unsqueeze(e.op("Gather", {in(2), in(1)}), 1, opset);
    sin = e.unsqueeze(e.op("Gather", {in(3), in(1)}), 1, opset);
  } else {
    std::string seq = e.op("Gather", {e.op("Shape", {in(0)}), e.int0(2)});
    std::string rows = e.op("Add", {e.op("Range", {e.int0(0), seq, e.int0(1)}), in(1)});
    cos = e.op("Gather", {in(2), rows});
    sin = e.op("Gather", {in(3), rows});
  }
  const std::string out = sink_.name(n.output(0));
  auto rotate = [&](const std::string &a, const std::string &b) { // (a*c - b*s, b*c + a*s)
    return std::pair(e.op("Sub", {e.op("Mul", {a, cos}), e.op("Mul", {b, sin})}),
                     e.op("Add", {e.op("Mul", {b, cos}), e.op("Mul", {a, sin})}));
  };
  if (n.attrInt("interleaved", 0) == 0) {
    auto [y1, y2] = rotate(e.sliceLast(in(0), 0, half),
                           e.sliceLast(in(0), half, std::numeric_limits<int64_t>::max()));
    e.op("Concat", {y1, y2}, attrs(Attribute::makeInt("axis", -1)), out);
  } else {
    std::string pairs = e.op("Reshape", {in(0), e.ints({0, 0, 0, half, 2})});
    cos = e.unsqueeze(cos, -1, opset);
    sin = e.unsqueeze(sin, -1, opset);
    auto [ye, yo] = rotate(e.sliceLast(pairs, 0, 1), e.sliceLast(pairs, 1, 2));
    std::string cat = e.op("Concat", {ye, yo}, attrs(Attribute::makeInt("axis", -1)));
    e.op("Reshape", {cat, e.op("Shape", {in(0)})}, {}, out);
  }
  return e.st;
}

} // namespace llmopt::onnxw

// The ONNX writer's decompositions of fused ops (see FusionLowering.h).
#include "backend/onnx/FusionLowering.h"

#include <cmath>

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
  default:
    return errorf("node '{}': {} has no standard ONNX form in llmopt's writer yet; "
                  "write it with --target=ort", n.name(), n.qualifiedOpType());
  }
  LLMOPT_RETURN_IF_ERROR(e.st);
  return true;
}

} // namespace llmopt::onnxw

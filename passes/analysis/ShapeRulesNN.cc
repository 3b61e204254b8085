// Shape rules for vision / sequence-model ops: Conv, ConvTranspose, pooling, Resize,
// RNN / GRU / LSTM, the loss ops, and sequence / optional containers.
#include <cmath>

#include <fmt/format.h>

#include "passes/analysis/ShapeRules.h"

namespace llmopt::shape {
namespace {

/// Kernel geometry read from a Conv / Pool node for `k` spatial dims.
struct Window {
  std::vector<int64_t> kernel, strides, dilations, pads;
  std::string autoPad;
};

Expected<Window> window(InferContext &c, size_t k, const std::optional<SymShape> &weight) {
  Window w;
  w.kernel = c.attrInts("kernel_shape");
  if (w.kernel.empty() && weight && weight->size() == k + 2)
    for (size_t i = 0; i < k; ++i) {
      auto d = (*weight)[2 + i].asConstant();
      w.kernel.push_back(d ? *d : -1);
    }
  w.strides = c.attrInts("strides");
  w.dilations = c.attrInts("dilations");
  w.pads = c.attrInts("pads");
  w.autoPad = c.node.attrString("auto_pad", "NOTSET");
  if (w.strides.empty())
    w.strides.assign(k, 1);
  if (w.dilations.empty())
    w.dilations.assign(k, 1);
  if (w.pads.empty())
    w.pads.assign(2 * k, 0);
  if (w.kernel.size() != k || w.strides.size() != k || w.dilations.size() != k || w.pads.size() != 2 * k)
    return c.error(fmt::format("kernel_shape / strides / dilations / pads do not fit {} spatial dims", k));
  return w;
}

/// Output size of one spatial dim of a convolution or pooling window.
DimExpr windowDim(const DimExpr &in, const Window &w, size_t i, bool ceilMode) {
  if (w.kernel[i] < 0)
    return {};
  const int64_t s = w.strides[i], eff = (w.kernel[i] - 1) * w.dilations[i] + 1;
  if (w.autoPad == "SAME_UPPER" || w.autoPad == "SAME_LOWER")
    return in.ceilDiv(DimExpr::constant(s));
  int64_t padding = w.autoPad == "VALID" ? 0 : w.pads[i] + w.pads[i + w.kernel.size()];
  DimExpr span = in + DimExpr::constant(padding - eff);
  DimExpr steps = ceilMode ? span.ceilDiv(DimExpr::constant(s)) : span.floorDiv(DimExpr::constant(s));
  DimExpr out = steps + DimExpr::constant(1);
  // With ceil_mode the last window must start inside the input or its leading padding.
  auto o = out.asConstant(), n = in.asConstant();
  if (ceilMode && o && n && (*o - 1) * s >= *n + w.pads[i])
    out = DimExpr::constant(*o - 1);
  return out;
}

// Conv(x[N,C,D...], w[M,C/g,K...]) -> [N, M, out...]; pools keep C.
Status convPool(InferContext &c) {
  const std::string &op = c.node.opType();
  const bool isConv = op == "Conv" || op == "ConvInteger" || op == "QLinearConv";
  const size_t wIdx = op == "QLinearConv" ? 3 : 1;
  DType elem = op == "ConvInteger" ? DType::I32 : op == "QLinearConv" ? c.elem(7) : c.elem(0);
  const auto &x = c.dims(0);
  if (!x || x->size() < 2) {
    c.setTensor(0, elem, std::nullopt);
    return Status::ok();
  }
  const size_t k = x->size() - 2;
  LLMOPT_ASSIGN_OR_RETURN(Window w, window(c, k, isConv ? c.dims(wIdx) : std::nullopt));
  SymShape out{(*x)[0], isConv ? (c.dims(wIdx) ? c.dims(wIdx)->at(0) : DimExpr()) : (*x)[1]};
  for (size_t i = 0; i < k; ++i)
    out.push_back(windowDim((*x)[2 + i], w, i, c.attrInt("ceil_mode", 0) != 0));
  c.setTensor(0, elem, out);
  if (op == "MaxPool")
    c.setTensor(1, DType::I64, out);
  return Status::ok();
}

// MaxUnpool(x[N,C,D...], indices[, output_shape]): output_shape, else
// (d - 1) * stride + kernel - pads.
Status maxUnpool(InferContext &c) {
  if (const KnownValue *k = c.known(2)) {
    c.setTensor(0, c.elem(0), k->elems);
    return Status::ok();
  }
  const auto &x = c.dims(0);
  if (!x || x->size() < 2 || c.has(2)) {
    c.setTensor(0, c.elem(0), x ? std::optional<SymShape>(SymShape(x->size(), DimExpr())) : std::nullopt);
    return Status::ok();
  }
  const size_t k = x->size() - 2;
  LLMOPT_ASSIGN_OR_RETURN(Window w, window(c, k, std::nullopt));
  SymShape out{(*x)[0], (*x)[1]};
  for (size_t i = 0; i < k; ++i)
    out.push_back(((*x)[2 + i] - DimExpr::constant(1)) * DimExpr::constant(w.strides[i]) +
                  DimExpr::constant(w.kernel[i] - w.pads[i] - w.pads[i + k]));
  c.setTensor(0, c.elem(0), out);
  return Status::ok();
}

// Global*Pool(x[N,C,D...]) -> [N, C, 1...].
Status globalPool(InferContext &c) {
  std::optional<SymShape> s = c.dims(0);
  if (s)
    for (size_t i = 2; i < s->size(); ++i)
      (*s)[i] = DimExpr::constant(1);
  c.setTensor(0, c.elem(0), s);
  return Status::ok();
}

// ConvTranspose(x[N,C,D...], w[C,M/g,K...]) -> [N, M, out...].
Status convTranspose(InferContext &c) {
  const auto &x = c.dims(0);
  if (!x || x->size() < 2) {
    c.setTensor(0, c.elem(0), std::nullopt);
    return Status::ok();
  }
  const size_t k = x->size() - 2;
  LLMOPT_ASSIGN_OR_RETURN(Window w, window(c, k, c.dims(1)));
  DimExpr m = c.dims(1) && c.dims(1)->size() > 1 ? c.dims(1)->at(1) * DimExpr::constant(c.attrInt("group", 1))
                                                : DimExpr();
  SymShape out{(*x)[0], m};
  std::vector<int64_t> outShape = c.attrInts("output_shape"), outPad = c.attrInts("output_padding");
  for (size_t i = 0; i < k; ++i) {
    const DimExpr s = DimExpr::constant(w.strides[i]);
    if (outShape.size() == k) {
      out.push_back(DimExpr::constant(outShape[i]));
    } else if (w.autoPad == "SAME_UPPER" || w.autoPad == "SAME_LOWER") {
      out.push_back((*x)[2 + i] * s);
    } else if (w.kernel[i] < 0) {
      out.push_back(DimExpr());
    } else {
      int64_t eff = (w.kernel[i] - 1) * w.dilations[i] + 1;
      int64_t extra = (i < outPad.size() ? outPad[i] : 0) + eff - w.pads[i] - w.pads[i + k];
      out.push_back(s * ((*x)[2 + i] - DimExpr::constant(1)) + DimExpr::constant(extra));
    }
  }
  c.setTensor(0, c.elem(0), out);
  return Status::ok();
}

// Resize(x, roi, scales, sizes) / Upsample(x, scales): sizes, or floor(dim * scale).
Status resize(InferContext &c) {
  std::optional<SymShape> s = c.dims(0);
  DType elem = c.elem(0);
  if (!s) {
    c.setTensor(0, elem, std::nullopt);
    return Status::ok();
  }
  const bool v10 = c.node.opType() == "Upsample" || c.opset < 11;
  std::optional<std::vector<double>> scales;
  if (c.node.opType() == "Upsample" && c.opset < 9) {
    const Attribute *a = c.node.attr("scales");
    if (a)
      scales = std::vector<double>(a->floats.begin(), a->floats.end());
  } else {
    scales = c.reals(v10 ? 1 : 2);
  }
  const KnownValue *sizes = v10 ? nullptr : c.known(3);
  std::vector<int64_t> axes = c.attrInts("axes");
  const int64_t r = static_cast<int64_t>(s->size());
  if (axes.empty())
    for (int64_t i = 0; i < r; ++i)
      axes.push_back(i);
  const bool stretch = c.node.attrString("keep_aspect_ratio_policy", "stretch") == "stretch";
  for (size_t i = 0; i < axes.size(); ++i) {
    LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(axes[i], r));
    DimExpr &d = (*s)[ax];
    if (sizes && sizes->elems.size() == axes.size() && stretch) {
      d = sizes->elems[i];
    } else if (scales && scales->size() == axes.size() && (!sizes || sizes->elems.empty()) && d.isConstant()) {
      d = DimExpr::constant(static_cast<int64_t>(std::floor(static_cast<double>(*d.asConstant()) * (*scales)[i])));
    } else if (!(scales && scales->size() == axes.size() && (*scales)[i] == 1.0)) {
      d = DimExpr();
    }
  }
  c.setTensor(0, elem, s);
  return Status::ok();
}

// RNN / GRU / LSTM(X[seq,batch,in]) -> Y[seq,dirs,batch,hidden], Y_h (and Y_c)
// [dirs,batch,hidden]; layout = 1 puts batch first.
Status rnn(InferContext &c) {
  DType elem = c.elem(0);
  const auto &x = c.dims(0);
  const bool batchFirst = c.attrInt("layout", 0) != 0;
  DimExpr seq, batch;
  if (x && x->size() == 3) {
    seq = (*x)[batchFirst ? 1 : 0];
    batch = (*x)[batchFirst ? 0 : 1];
  }
  DimExpr dirs = DimExpr::constant(c.node.attrString("direction", "forward") == "bidirectional" ? 2 : 1);
  DimExpr hidden = c.hasAttr("hidden_size") ? DimExpr::constant(c.attrInt("hidden_size", 0)) : DimExpr();
  c.setTensor(0, elem, batchFirst ? SymShape{batch, seq, dirs, hidden} : SymShape{seq, dirs, batch, hidden});
  for (size_t i = 1; i < c.numOutputs(); ++i)
    c.setTensor(i, elem, batchFirst ? SymShape{batch, dirs, hidden} : SymShape{dirs, batch, hidden});
  return Status::ok();
}

// NegativeLogLikelihoodLoss(input[N,C,d...], target[N,d...]) and
// SoftmaxCrossEntropyLoss(scores, labels) -> loss ([] unless reduction = none),
// log_prob like the scores.
Status loss(InferContext &c) {
  DType elem = c.elem(0);
  if (c.node.attrString("reduction", "mean") == "none")
    c.setTensor(0, elem, c.dims(1));
  else
    c.setTensor(0, elem, SymShape{});
  c.passThrough(1, 0);
  return Status::ok();
}

// GridSample(X[N,C,D...], grid[N,out...,k]) -> [N, C, out...].
Status gridSample(InferContext &c) {
  const auto &x = c.dims(0), &g = c.dims(1);
  if (!x || !g || x->size() < 2 || g->size() < 2) {
    c.setTensor(0, c.elem(0), std::nullopt);
    return Status::ok();
  }
  SymShape out{(*x)[0], (*x)[1]};
  out.insert(out.end(), g->begin() + 1, g->end() - 1);
  c.setTensor(0, c.elem(0), out);
  return Status::ok();
}

// RoiAlign(X[N,C,H,W], rois[R,4], batch_indices) -> [R, C, output_height, output_width].
Status roiAlign(InferContext &c) {
  DimExpr r = c.dims(1) && !c.dims(1)->empty() ? c.dims(1)->at(0) : DimExpr();
  DimExpr ch = c.rank(0) == 4 ? c.dims(0)->at(1) : DimExpr();
  c.setTensor(0, c.elem(0), SymShape{r, ch, DimExpr::constant(c.attrInt("output_height", 1)),
                                     DimExpr::constant(c.attrInt("output_width", 1))});
  return Status::ok();
}

// NonMaxSuppression -> i64[?, 3].
Status nms(InferContext &c) {
  c.setTensor(0, DType::I64, SymShape{DimExpr(), DimExpr::constant(3)});
  return Status::ok();
}

// Unique(x[, axis]) -> (y, indices, inverse_indices, counts) of data-dependent length;
// inverse_indices has one entry per input element (or slice along axis).
Status unique(InferContext &c) {
  std::optional<SymShape> y = SymShape{DimExpr()};
  DimExpr n;
  if (c.hasAttr("axis") && c.dims(0)) {
    y = c.dims(0);
    LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(c.attrInt("axis", 0), c.rank(0)));
    n = (*y)[ax];
    (*y)[ax] = DimExpr();
  } else if (c.dims(0)) {
    n = product(*c.dims(0));
  }
  c.setTensor(0, c.elem(0), y);
  c.setTensor(1, DType::I64, SymShape{DimExpr()});
  c.setTensor(2, DType::I64, SymShape{n});
  c.setTensor(3, DType::I64, SymShape{DimExpr()});
  return Status::ok();
}

// Hann / Hamming / BlackmanWindow(size) -> [size] of output_datatype (f32).
Status windowFn(InferContext &c) {
  DimExpr n;
  if (const KnownValue *k = c.known(0); k && k->elems.size() == 1)
    n = k->elems[0];
  c.setTensor(0, static_cast<DType>(c.attrInt("output_datatype", 1)), SymShape{n});
  return Status::ok();
}

// ---- sequences and optionals ----

Type seqOf(Type t) {
  Type s;
  s.kind = Type::Kind::Sequence;
  s.inner = std::make_shared<Type>(std::move(t));
  return s;
}

/// What two element types of one sequence have in common.
Type commonType(const Type &a, const Type &b) {
  if (a.kind == Type::Kind::Unknown)
    return b;
  if (!(a.isTensor() && b.isTensor()))
    return a == b ? a : Type::unknown();
  Type out = Type::tensor(a.elem == b.elem ? a.elem : DType::Undefined);
  if (a.dims && b.dims && a.dims->size() == b.dims->size()) {
    out.dims = Dims();
    for (size_t i = 0; i < a.dims->size(); ++i)
      out.dims->push_back((*a.dims)[i] == (*b.dims)[i] ? (*a.dims)[i] : Dim::unknown());
  }
  return out;
}

Status sequenceEmpty(InferContext &c) {
  c.setType(0, seqOf(Type::tensor(static_cast<DType>(c.attrInt("dtype", 1)))));
  return Status::ok();
}

Status sequenceConstruct(InferContext &c) {
  Type t = Type::unknown();
  for (size_t i = 0; i < c.numInputs(); ++i)
    t = i == 0 ? c.type(i) : commonType(t, c.type(i));
  c.setType(0, seqOf(t));
  return Status::ok();
}

Status sequenceInsert(InferContext &c) {
  const Type &s = c.type(0);
  Type inner = s.kind == Type::Kind::Sequence && s.inner ? *s.inner : Type::unknown();
  c.setType(0, seqOf(inner.kind == Type::Kind::Unknown ? c.type(1) : commonType(inner, c.type(1))));
  return Status::ok();
}

// SequenceAt: the sequence's element type.
Status sequenceAt(InferContext &c) {
  const Type &s = c.type(0);
  if (s.kind == Type::Kind::Sequence && s.inner)
    c.setType(0, *s.inner);
  return Status::ok();
}

// OptionalGetElement: the optional's element type; a non-optional input passes through.
Status optionalGetElement(InferContext &c) {
  const Type &s = c.type(0);
  if (s.kind == Type::Kind::Optional && s.inner)
    c.setType(0, *s.inner);
  else if (s.kind != Type::Kind::Unknown)
    c.setType(0, s);
  return Status::ok();
}

Status sequenceLength(InferContext &c) {
  c.setTensor(0, DType::I64, SymShape{});
  return Status::ok();
}

Status sequenceErase(InferContext &c) {
  c.setType(0, c.type(0));
  return Status::ok();
}

// SplitToSequence(x[, split], axis, keepdims): slices of x along axis.
Status splitToSequence(InferContext &c) {
  std::optional<SymShape> s = c.dims(0);
  if (s) {
    LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(c.attrInt("axis", 0), c.rank(0)));
    if (!c.has(1) && c.attrInt("keepdims", 1) == 0)
      s->erase(s->begin() + ax);
    else
      (*s)[ax] = !c.has(1) ? DimExpr::constant(1) : DimExpr();
  }
  Type t = Type::tensor(c.elem(0), s ? std::optional<Dims>(toDims(*s)) : std::nullopt);
  c.setType(0, seqOf(t));
  return Status::ok();
}

// ConcatFromSequence(seq, axis, new_axis): the elements joined along axis.
Status concatFromSequence(InferContext &c) {
  const Type &s = c.type(0);
  if (s.kind != Type::Kind::Sequence || !s.inner || !s.inner->isTensor())
    return Status::ok();
  const Type &e = *s.inner;
  if (!e.dims) {
    c.setTensor(0, e.elem, std::nullopt);
    return Status::ok();
  }
  SymShape d = toSymShape(*e.dims);
  const bool newAxis = c.attrInt("new_axis", 0) != 0;
  LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(c.attrInt("axis", 0), static_cast<int64_t>(d.size()) + newAxis));
  if (newAxis)
    d.insert(d.begin() + ax, DimExpr());
  else
    d[ax] = DimExpr();
  c.setTensor(0, e.elem, d);
  return Status::ok();
}

// StringNormalizer(x[C] or [1,C]): stop words make the length data-dependent.
Status stringNormalizer(InferContext &c) {
  std::optional<SymShape> s = c.dims(0);
  if (s && !s->empty())
    s->back() = DimExpr();
  c.setTensor(0, DType::String, s);
  return Status::ok();
}

Status optional(InferContext &c) {
  if (!c.has(0))
    return Status::ok(); // the type comes from the `type` attribute (a serialized proto)
  Type o;
  o.kind = Type::Kind::Optional;
  o.inner = std::make_shared<Type>(c.type(0));
  c.setType(0, o);
  return Status::ok();
}

Status optionalHasElement(InferContext &c) {
  c.setTensor(0, DType::Bool, SymShape{});
  return Status::ok();
}

constexpr RuleEntry kRules[] = {
    {"", "Conv", convPool}, {"", "ConvInteger", convPool}, {"", "QLinearConv", convPool},
    {"", "MaxPool", convPool}, {"", "AveragePool", convPool}, {"", "LpPool", convPool},
    {"", "GlobalAveragePool", globalPool}, {"", "GlobalMaxPool", globalPool},
    {"", "GlobalLpPool", globalPool}, {"", "ConvTranspose", convTranspose},
    {"", "MaxUnpool", maxUnpool},
    {"", "Resize", resize}, {"", "Upsample", resize},
    {"", "RNN", rnn}, {"", "GRU", rnn}, {"", "LSTM", rnn},
    {"", "NegativeLogLikelihoodLoss", loss}, {"", "SoftmaxCrossEntropyLoss", loss},
    {"", "GridSample", gridSample}, {"", "RoiAlign", roiAlign},
    {"", "NonMaxSuppression", nms}, {"", "Unique", unique},
    {"", "HannWindow", windowFn}, {"", "HammingWindow", windowFn}, {"", "BlackmanWindow", windowFn},
    {"", "SequenceEmpty", sequenceEmpty}, {"", "SequenceConstruct", sequenceConstruct},
    {"", "SequenceInsert", sequenceInsert}, {"", "SequenceAt", sequenceAt},
    {"", "SequenceLength", sequenceLength}, {"", "SequenceErase", sequenceErase},
    {"", "SplitToSequence", splitToSequence}, {"", "ConcatFromSequence", concatFromSequence},
    {"", "StringNormalizer", stringNormalizer},
    {"", "Optional", optional}, {"", "OptionalGetElement", optionalGetElement},
    {"", "OptionalHasElement", optionalHasElement},
};

} // namespace

std::span<const RuleEntry> nnRules() { return kRules; }

} // namespace llmopt::shape

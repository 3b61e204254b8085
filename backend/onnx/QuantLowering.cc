// Quantized constants -> MatMulNBits / GatherBlockQuantized / DequantizeLinear.
#include "backend/onnx/QuantLowering.h"

namespace llmopt::onnxw {

namespace {

const Value *quantizedConstant(const Value *v) {
  return v && v->isConstant() && v->type().quant ? v : nullptr;
}

/// perm of a 2-D Transpose is [1, 0] (or absent, which reverses).
bool swapsTwoAxes(const Node &n) {
  const std::vector<int64_t> perm = n.attrInts("perm");
  return perm.empty() || perm == std::vector<int64_t>{1, 0};
}

Tensor i64s(std::vector<int64_t> v) {
  return Tensor::fromVector(DType::I64, {static_cast<int64_t>(v.size())}, v);
}

} // namespace

int64_t dequantizeLinearOpset(const QuantEncoding &enc) {
  if (enc.blockSize > 0 || quant::containerBits(enc.storage) == 4)
    return 21;
  return enc.axis >= 0 ? 13 : 10;
}

QuantLowering::QuantLowering(const Model &m, const Graph &g, const ExportOptions &opts,
                             LoweringSink sink)
    : model_(m), graph_(g), opts_(opts), sink_(std::move(sink)) {}

std::string QuantLowering::constantInitializer(const std::string &base, const Tensor &t,
                                               Status &st) {
  std::string name = sink_.freshName(base);
  if (st.isOk())
    st = sink_.initializer(name, t);
  return name;
}

Status QuantLowering::checkDequantizable(const Value *q, const std::string &why) const {
  const QuantEncoding &enc = *q->type().quant;
  const Tensor &t = *q->constant();
  if (t.zeroPoints && t.zeroPoints->dtype() == DType::F32)
    return errorf("quantized constant '{}' ({}) has fractional (HQQ) zero points, which only "
                  "MatMulNBits carries; {} (use --target=ort, or quantize for --target=onnx)",
                  q->name(), toString(q->type()), why);
  const int64_t need = dequantizeLinearOpset(enc), have = model_.opsetVersion("");
  if (have < need)
    return errorf("quantized constant '{}' ({}) is written as DequantizeLinear, which needs opset "
                  "{}; the model is at opset {}: add opset<to={}> to the pipeline ({})",
                  q->name(), toString(q->type()), need, have, need, why);
  if (quant::containerBits(enc.storage) == 4 && model_.irVersion < 10)
    return errorf(
        "quantized constant '{}': 4-bit initializers need IR version 10, the model has {}",
        q->name(), model_.irVersion);
  return Status::ok();
}

Expected<const QuantLowering::RawNames *> QuantLowering::raw(const Value *q) {
  auto it = raw_.find(q);
  if (it != raw_.end())
    return &it->second;
  const Tensor &t = *q->constant();
  LLMOPT_RETURN_IF_ERROR(
      quant::validate(t, *q->type().quant).withContext("constant '" + q->name() + "'"));
  Status st;
  const std::string base = q->name().empty() ? "quantized" : q->name();
  Tensor data = t; // the stored integers alone
  data.scales.reset();
  data.zeroPoints.reset();
  RawNames names;
  names.data = constantInitializer(base + "_quant", data, st);
  names.scale = constantInitializer(base + "_scale", *t.scales, st);
  if (t.zeroPoints)
    names.zeroPoint = constantInitializer(base + "_zero_point", *t.zeroPoints, st);
  LLMOPT_RETURN_IF_ERROR(st);
  return &raw_.emplace(q, std::move(names)).first->second;
}

// q => DequantizeLinear(q_quant, q_scale[, q_zero_point]) named like q.
Status QuantLowering::ensureDequantized(const Value *q) {
  if (dequantized_.count(q))
    return Status::ok();
  const std::string why = opts_.target == "ort" ? "it is read by an op with no quantized form in "
                                                  "ONNX Runtime"
                                                : "target onnx";
  LLMOPT_RETURN_IF_ERROR(checkDequantizable(q, why));
  LLMOPT_ASSIGN_OR_RETURN(const RawNames *r, raw(q));
  const QuantEncoding &enc = *q->type().quant;
  const std::string base = q->name().empty() ? "quantized" : q->name();
  EmittedNode dq{"",
                 "DequantizeLinear",
                 sink_.freshName(base + "_DequantizeLinear"),
                 {r->data, r->scale},
                 {sink_.name(q)},
                 {}};
  if (!r->zeroPoint.empty())
    dq.inputs.push_back(r->zeroPoint);
  if (enc.axis >= 0)
    dq.attrs.push_back(Attribute::makeInt("axis", enc.axis));
  if (enc.blockSize > 0)
    dq.attrs.push_back(Attribute::makeInt("block_size", enc.blockSize));
  dequantized_.insert(q);
  return sink_.node(std::move(dq));
}

// Transpose(DQ(q, s, z, axis=a)) == DQ(Transpose(q), Transpose(s), Transpose(z), axis=1-a):
// ONNX Runtime folds the integer Transposes, so a transposed weight still fuses into
// MatMulNBits and is stored once.
Status QuantLowering::dequantizeTransposed(const Node &transpose, const Value *q) {
  LLMOPT_RETURN_IF_ERROR(checkDequantizable(q, "it is read through a Transpose"));
  LLMOPT_ASSIGN_OR_RETURN(const RawNames *r, raw(q));
  const QuantEncoding &enc = *q->type().quant;
  Status st;
  const std::string base = q->name().empty() ? "quantized" : q->name();
  auto transposed = [&](const std::string &what, const std::string &init,
                        bool swap) -> std::string {
    if (!swap || !st.isOk())
      return init;
    std::string out = sink_.freshName(base + "_" + what + "_T");
    EmittedNode tr{"",     "Transpose", sink_.freshName(base + "_" + what + "_Transpose"),
                   {init}, {out},       {}};
    tr.attrs.push_back(Attribute::makeInts("perm", {1, 0}));
    st = sink_.node(std::move(tr));
    return out;
  };
  const bool blocked = enc.blockSize > 0; // per-channel scales are 1-D: nothing to transpose
  EmittedNode dq{"",
                 "DequantizeLinear",
                 sink_.freshName(base + "_DequantizeLinear_T"),
                 {},
                 {sink_.name(transpose.output(0))},
                 {}};
  dq.inputs.push_back(transposed("quant", r->data, true));
  dq.inputs.push_back(transposed("scale", r->scale, blocked));
  if (!r->zeroPoint.empty())
    dq.inputs.push_back(transposed("zero_point", r->zeroPoint, blocked));
  LLMOPT_RETURN_IF_ERROR(st);
  if (enc.axis >= 0)
    dq.attrs.push_back(Attribute::makeInt("axis", 1 - enc.axis));
  if (blocked)
    dq.attrs.push_back(Attribute::makeInt("block_size", enc.blockSize));
  return sink_.node(std::move(dq));
}

/// Drops the resident pages of a mapped (spilled or external-data) tensor and its scales
/// and zero points: a hint, the data stays readable.
static void releasePages(const Tensor &t) {
  if (t.isMapped())
    t.mapping()->release(t.mappingOffset(), t.nbytes());
  if (t.scales)
    releasePages(*t.scales);
  if (t.zeroPoints)
    releasePages(*t.zeroPoints);
}

Expected<const QuantLowering::NBitsNames *> QuantLowering::nbits(const Value *q) {
  auto it = nbits_.find(q);
  if (it != nbits_.end())
    return &it->second;
  const QuantEncoding &enc = *q->type().quant;
  // MatMulNBits reads 2-bit values packed 4 to a byte; GatherBlockQuantized (a tied
  // embedding sharing these bytes) does not, so a gathered table keeps 4-bit containers.
  bool gathered = false;
  for (const Use &u : q->uses())
    gathered = gathered || u.user->is(OpKind::Gather);
  auto w = quant::toMatMulNBits(*q->constant(), enc, /*transposed=*/enc.axis == 1,
                                /*packTwoBit=*/!gathered);
  if (!w)
    return w.status().withContext("constant '" + q->name() + "'");
  releasePages(*q->constant()); // read once; its MatMulNBits form is what gets written
  NBitsNames names;
  names.layout = w->layout;
  Status st;
  const std::string base = q->name().empty() ? "quantized" : q->name();
  names.b = constantInitializer(base + "_nbits", w->b, st);
  names.scales = constantInitializer(base + "_nbits_scales", w->scales, st);
  if (w->zeroPoints) {
    names.zeroPoints = constantInitializer(base + "_nbits_zero_points", *w->zeroPoints, st);
    names.floatZeroPoints = w->zeroPoints->dtype() == DType::F32;
  }
  LLMOPT_RETURN_IF_ERROR(st);
  return &nbits_.emplace(q, std::move(names)).first->second;
}

// Transpose(Eq) read only as the B of MatMuls: the tied LM head. MatMulNBits wants the
// weight transposed anyway, so the Transpose disappears.
bool QuantLowering::isLmHeadTranspose(const Node &n) const {
  const Value *q = quantizedConstant(n.input(0));
  if (!q || !swapsTwoAxes(n) ||
      !quant::fitsMatMulNBits(q->constant()->shape(), *q->type().quant, true))
    return false;
  const Value *out = n.output(0);
  if (out->isGraphOutput() || !out->hasUses())
    return false;
  for (const Use &u : out->uses())
    if (!u.user->is(OpKind::MatMul) || u.index != 1 || u.user->graph() != &graph_)
      return false;
  return true;
}

// MatMul(x, Wq) => MatMulNBits(x, B, scales[, zero_points]) {K, N, bits, block_size,
// accuracy_level}
Status QuantLowering::matMulNBits(const Node &matmul, const Value *q) {
  LLMOPT_ASSIGN_OR_RETURN(const NBitsNames *nb, nbits(q));
  const quant::NBitsLayout &l = nb->layout;
  EmittedNode n{"com.microsoft",
                "MatMulNBits",
                matmul.name(),
                {sink_.name(matmul.input(0)), nb->b, nb->scales},
                {sink_.name(matmul.output(0))},
                {}};
  if (!nb->zeroPoints.empty())
    n.inputs.push_back(nb->zeroPoints);
  n.attrs.push_back(Attribute::makeInt("K", l.K));
  n.attrs.push_back(Attribute::makeInt("N", l.N));
  n.attrs.push_back(Attribute::makeInt("bits", l.bits));
  n.attrs.push_back(Attribute::makeInt("block_size", l.blockSize));
  n.attrs.push_back(Attribute::makeInt("accuracy_level", opts_.accuracyLevel));
  usedContrib_ = true;
  return sink_.node(std::move(n));
}

// Gather(Eq, ids) => GatherBlockQuantized(Reshape(B, [V, kBlocks*blob]), ids, scales[, zp])
// {gather_axis=0, quantize_axis=1, block_size, bits}, sliced back to H when the last
// block is padded. False (not lowered) for HQQ's float zero points, which it cannot take.
Expected<bool> QuantLowering::gatherBlockQuantized(const Node &gather, const Value *q) {
  LLMOPT_ASSIGN_OR_RETURN(const NBitsNames *nb, nbits(q));
  if (nb->floatZeroPoints)
    return false;
  const quant::NBitsLayout &l = nb->layout;
  const int64_t width = l.kBlocks() * l.blockSize;
  const std::string base = q->name().empty() ? "quantized" : q->name();
  Status st;
  const std::string shape =
      constantInitializer(base + "_gather_shape", i64s({l.N, l.kBlocks() * l.blobBytes()}), st);
  LLMOPT_RETURN_IF_ERROR(st);
  const std::string data = sink_.freshName(base + "_gather_data");
  LLMOPT_RETURN_IF_ERROR(sink_.node(
      {"", "Reshape", sink_.freshName(base + "_gather_Reshape"), {nb->b, shape}, {data}, {}}));
  const std::string out = sink_.name(gather.output(0));
  EmittedNode g{"com.microsoft",
                "GatherBlockQuantized",
                gather.name(),
                {data, sink_.name(gather.input(1)), nb->scales},
                {width == l.K ? out : sink_.freshName(out + "_padded")},
                {}};
  if (!nb->zeroPoints.empty())
    g.inputs.push_back(nb->zeroPoints);
  g.attrs.push_back(Attribute::makeInt("gather_axis", 0));
  g.attrs.push_back(Attribute::makeInt("quantize_axis", 1));
  g.attrs.push_back(Attribute::makeInt("block_size", l.blockSize));
  g.attrs.push_back(Attribute::makeInt("bits", l.bits));
  const std::string padded = g.outputs[0];
  usedContrib_ = true;
  LLMOPT_RETURN_IF_ERROR(sink_.node(std::move(g)));
  if (width == l.K)
    return true;
  EmittedNode slice{"", "Slice", sink_.freshName(base + "_gather_Slice"), {padded}, {out}, {}};
  slice.inputs.push_back(constantInitializer(base + "_slice_starts", i64s({0}), st));
  slice.inputs.push_back(constantInitializer(base + "_slice_ends", i64s({l.K}), st));
  slice.inputs.push_back(constantInitializer(base + "_slice_axes", i64s({-1}), st));
  LLMOPT_RETURN_IF_ERROR(st);
  LLMOPT_RETURN_IF_ERROR(sink_.node(std::move(slice)));
  return true;
}

Expected<bool> QuantLowering::lowerNode(const Node &n) {
  if (opts_.target == "ort") {
    if (n.is(OpKind::Transpose) && isLmHeadTranspose(n)) {
      droppedTransposes_.insert(&n);
      return true;
    }
    if (n.is(OpKind::MatMul)) {
      const Value *b = n.input(1);
      const Value *q = quantizedConstant(b);
      if (q && quant::fitsMatMulNBits(q->constant()->shape(), *q->type().quant, false) &&
          !quantizedConstant(n.input(0))) {
        LLMOPT_RETURN_IF_ERROR(matMulNBits(n, q));
        return true;
      }
      if (b && b->producer() && droppedTransposes_.count(b->producer())) {
        LLMOPT_RETURN_IF_ERROR(matMulNBits(n, quantizedConstant(b->producer()->input(0))));
        return true;
      }
    }
    if (n.is(OpKind::Gather) && n.attrInt("axis", 0) == 0) {
      const Value *q = quantizedConstant(n.input(0));
      if (q && quant::fitsMatMulNBits(q->constant()->shape(), *q->type().quant, true)) {
        LLMOPT_ASSIGN_OR_RETURN(bool done, gatherBlockQuantized(n, q));
        if (done)
          return true;
      }
    }
  }
  if (n.is(OpKind::Transpose) && quantizedConstant(n.input(0)) && n.input(0)->type().rank() == 2 &&
      swapsTwoAxes(n)) {
    LLMOPT_RETURN_IF_ERROR(dequantizeTransposed(n, n.input(0)));
    return true;
  }
  for (const Value *in : n.inputs())
    if (const Value *q = quantizedConstant(in)) {
      if (q->graph() != &graph_)
        return errorf("quantized constant '{}' is read inside a subgraph of the graph that holds "
                      "it; this is not supported",
                      q->name());
      LLMOPT_RETURN_IF_ERROR(ensureDequantized(q));
    }
  return false;
}

Status QuantLowering::lowerOutputs() {
  for (const Value *out : graph_.outputs())
    if (const Value *q = quantizedConstant(out))
      LLMOPT_RETURN_IF_ERROR(ensureDequantized(q));
  return Status::ok();
}

} // namespace llmopt::onnxw

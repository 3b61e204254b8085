// quant-w8a8: options, smoothing, int8 weights and the run-time activation quantization.
#include "passes/quant/QuantW8A8.h"

#include <cmath>

#include <fmt/format.h>

#include "passes/calib/Calibration.h"
#include "passes/quant/QuantCommon.h"
#include "passes/quant/SmoothQuant.h"

namespace llmopt {
namespace {

/// What findMatMulWeights would quantize, judged on one value (so that weights the
/// smoothing replaced still count): a constant 2-D f32 [K >= 16, N >= 16] read only as a
/// MatMul's B.
bool isQuantizableWeight(const Value *v) {
  if (!v || !v->isConstant() || v->type().quant || v->isGraphInput() || v->isGraphOutput() ||
      v->constant()->rank() != 2 || v->constant()->dtype() != DType::F32 || !v->hasUses())
    return false;
  const std::vector<int64_t> &s = v->constant()->shape();
  if (s[0] < 16 || s[1] < 16)
    return false;
  for (const Use &u : v->uses())
    if (!u.user->is(OpKind::MatMul) || u.index != 1)
      return false;
  return true;
}

/// W [K, N] f32 -> int8 per output column, symmetric in [-127, 127] (as ONNX Runtime's own
/// dynamic quantizer stores DynamicQuantizeMatMul weights), and the column scales [N].
std::pair<Tensor, Tensor> quantizePerColumn(const Tensor &w) {
  const int64_t K = w.shape()[0], N = w.shape()[1];
  const float *d = reinterpret_cast<const float *>(w.data());
  std::vector<float> scale(static_cast<size_t>(N), 0.f);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n)
      scale[static_cast<size_t>(n)] = std::max(scale[static_cast<size_t>(n)], std::fabs(d[k * N + n]));
  for (float &s : scale)
    s /= 127.f;
  std::vector<int8_t> q(static_cast<size_t>(K * N));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) {
      const float s = scale[static_cast<size_t>(n)];
      const float v = s != 0.f ? std::nearbyint(d[k * N + n] / s) : 0.f;
      q[static_cast<size_t>(k * N + n)] = static_cast<int8_t>(std::clamp(v, -127.f, 127.f));
    }
  return {Tensor::fromVector(DType::I8, {K, N}, q), Tensor::fromVector(DType::F32, {N}, scale)};
}

/// Replaces `mm`'s output by `out`, keeping its name and type.
void takeOver(Graph &g, Node *mm, Value *out) {
  Value *old = mm->output(0);
  const std::string name = old->name();
  out->setType(old->type());
  g.replaceAllUsesWith(old, out);
  g.eraseNode(mm);
  if (!out->isGraphOutput())
    out->setName(name);
}

// MatMul(x, W) => DynamicQuantizeMatMul(x, Wq, Ws)                                  (ort)
// MatMul(x, W) => Mul(Cast(MatMulInteger(q, Wq, z)), Mul(s, Ws)), (q, s, z) = DQL(x) (onnx)
void rewriteMatMul(Graph &g, Node *mm, Value *wq, Value *ws, bool onnx) {
  Value *x = mm->input(0);
  // Node names follow the MatMul's (none if it had none), value names its output's.
  const std::string node = mm->name(), value = mm->output(0)->name();
  auto nodeName = [&](const char *suffix) { return node.empty() ? node : node + suffix; };
  if (!onnx) {
    Node *n = g.addNode(OpKind::DynamicQuantizeMatMul, {x, wq, ws}, 1, node, mm);
    takeOver(g, mm, n->output(0));
    return;
  }
  // One DynamicQuantizeLinear per MatMul: ORT fuses DQL -> MatMulIntegerToFloat into
  // DynamicQuantizeMatMul only when the DQL's three outputs feed that one node.
  Node *dql = g.addNode(OpKind::DynamicQuantizeLinear, {x}, 3, nodeName("_QuantizeA"), mm);
  const char *suffix[] = {"_a_quant", "_a_scale", "_a_zero_point"};
  for (unsigned i = 0; i < 3; ++i)
    dql->output(i)->setName(g.freshName(value + suffix[i]));
  Node *mi = g.addNode(OpKind::MatMulInteger, {dql->output(0), wq, dql->output(2)}, 1,
                       nodeName("_MatMulInteger"), mm);
  mi->output(0)->setName(g.freshName(value + "_i32"));
  Node *cast = g.addNode(OpKind::Cast, {mi->output(0)}, 1, nodeName("_Cast"), mm);
  cast->setAttr(Attribute::makeInt("to", static_cast<int64_t>(DType::F32)));
  cast->output(0)->setName(g.freshName(value + "_f32"));
  Node *scale = g.addNode(OpKind::Mul, {dql->output(1), ws}, 1, nodeName("_Scale"), mm);
  scale->output(0)->setName(g.freshName(value + "_scale"));
  Node *y = g.addNode(OpKind::Mul, {cast->output(0), scale->output(0)}, 1, nodeName("_Rescale"), mm);
  takeOver(g, mm, y->output(0));
}

} // namespace

Expected<QuantW8A8Options> parseQuantW8A8Options(const PassOptionList &opts) {
  OptionReader r("quant-w8a8", opts);
  QuantW8A8Options o;
  LLMOPT_ASSIGN_OR_RETURN(o.smooth, r.getDouble("smooth", 0.5, 0.0, 1.0));
  LLMOPT_ASSIGN_OR_RETURN(o.noSmooth, r.getFlag("nosmooth", false));
  LLMOPT_ASSIGN_OR_RETURN(std::string act, r.getChoice("act", {"block", "tensor"}, "block"));
  o.perTensor = act == "tensor";
  LLMOPT_ASSIGN_OR_RETURN(o.block, quantpass::readBlock(r, "quant-w8a8", 128));
  LLMOPT_RETURN_IF_ERROR(r.finish());
  return o;
}

Expected<PreservedAnalyses> QuantW8A8Pass::run(Model &m, AnalysisManager &am) {
  if (!opts_.noSmooth && am.context().calibPath.empty())
    return errorf("pass 'quant-w8a8': SmoothQuant needs calibration data (per-channel max |x| of "
                  "each MatMul input): pass --calib FILE (text with --tokenizer, or a .ids file of "
                  "token ids); without data use quant-w8a8<nosmooth> or weight-only quant-int8");
  Graph &g = m.graph();
  const bool onnx = am.context().target == "onnx";
  quantpass::WeightQuantStats st;
  st.gemms = quantpass::gemmsToMatMuls(g, st.skips);

  // One weight to int8 (per block for MatMulNBits / DequantizeLinear, per column for the
  // per-tensor activation forms); the f32 original is freed.
  auto quantizeOne = [&](const quantpass::MatMulWeight &w) -> Status {
    const Tensor &t = *w.weight->constant();
    if (!opts_.perTensor) {
      const QuantEncoding enc{DType::I8, 8, 0, quantpass::effectiveBlock(opts_.block, t.shape()[0]),
                              true};
      auto q = quant::quantizeRtn(t, enc);
      if (!q)
        return q.status().withContext("weight '" + w.weight->name() + "'");
      quantpass::installQuantized(g, w, q.take(), enc, st);
      return Status::ok();
    }
    auto [q, scale] = quantizePerColumn(t);
    st.weights += 1;
    st.params += t.numel();
    st.bytesBefore += static_cast<int64_t>(t.nbytes());
    st.bytesAfter += static_cast<int64_t>(q.nbytes() + scale.nbytes());
    const std::string name = w.weight->name();
    const std::shared_ptr<Tensor> original = w.weight->constant();
    w.weight->setName(g.freshName(name + "_f32_original"));
    Value *wq = g.addConstant(name + "_quantized", std::move(q));
    Value *ws = g.addConstant(name + "_scale", std::move(scale));
    for (Node *mm : w.users)
      rewriteMatMul(g, mm, wq, ws, onnx);
    g.removeUnusedConstants();
    if (original->isMapped() && original.use_count() == 1) // as installQuantized does
      original->mapping()->release(original->mappingOffset(), original->nbytes());
    return Status::ok();
  };

  std::string smoothLine = "no smoothing (nosmooth)";
  if (!opts_.noSmooth) {
    LLMOPT_ASSIGN_OR_RETURN(calib::Stats * stats, am.get<calib::ActivationStatsAnalysis>(m));
    // Each smoothed group is quantized as soon as its weights are final: one layer's f32
    // copies at a time, not the model's.
    auto onGroup = [&](const std::vector<Value *> &group) -> Status {
      for (Value *v : group) {
        if (!isQuantizableWeight(v))
          continue;
        quantpass::MatMulWeight w{v, {}};
        for (const Use &u : v->uses())
          w.users.push_back(u.user);
        LLMOPT_RETURN_IF_ERROR(quantizeOne(w));
      }
      return Status::ok();
    };
    LLMOPT_ASSIGN_OR_RETURN(quantpass::SmoothStats ss,
                            quantpass::smoothQuant(g, *stats, opts_.smooth, isQuantizableWeight,
                                                   onGroup));
    smoothLine = "smoothquant: " + ss.summary(opts_.smooth);
  }
  // The rest: weights whose activation was not smoothed (or all, with nosmooth).
  for (const quantpass::MatMulWeight &w : quantpass::findMatMulWeights(g, 16, st.skips))
    LLMOPT_RETURN_IF_ERROR(quantizeOne(w));
  if (opts_.perTensor && !onnx && st.weights > 0 && !m.opsets.count("com.microsoft"))
    m.opsets["com.microsoft"] = 1;

  const std::string form =
      opts_.perTensor
          ? std::string(onnx ? "activations per tensor: DynamicQuantizeLinear + MatMulInteger"
                             : "activations per tensor: DynamicQuantizeMatMul")
          : fmt::format("activations per block of {}: {}", opts_.block,
                        onnx ? "DequantizeLinear + MatMul (ORT: MatMulNBits)"
                             : "MatMulNBits bits=8 accuracy_level 4");
  am.context().reportLines.push_back(
      fmt::format("quant-w8a8 ({}): {}; {}", form, smoothLine, st.summary()));
  if (st.weights == 0 && st.gemms == 0)
    return PreservedAnalyses::all();
  LLMOPT_ASSIGN_OR_RETURN(bool converted,
                          quantpass::ensureOnnxOpset(m, am, opts_.perTensor ? 11 : 21));
  (void)converted;
  return PreservedAnalyses::none();
}

} // namespace llmopt

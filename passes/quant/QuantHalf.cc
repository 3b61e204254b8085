// quant-fp16 / quant-bf16: pick weights, convert with clamping, insert the Casts.
#include "passes/quant/QuantHalf.h"

#include <cmath>

namespace llmopt {

namespace {

bool readsAsWeight(const Use &u) {
  const Node *n = u.user;
  if (n->is(OpKind::MatMul) || n->is(OpKind::Gemm))
    return true;
  if (n->is(OpKind::Gather))
    return u.index == 0;
  if (n->is(OpKind::Transpose)) {
    for (const Use &t : n->output(0)->uses())
      if (t.user->is(OpKind::MatMul) || t.user->is(OpKind::Gemm))
        return true;
  }
  return false;
}

bool isWeight(const Value *c) {
  if (c->type().quant || c->isGraphInput() || c->isGraphOutput() ||
      c->constant()->dtype() != DType::F32 || c->constant()->rank() < 2)
    return false;
  for (const Use &u : c->uses())
    if (readsAsWeight(u))
      return true;
  return false;
}

struct Counts {
  int64_t clamped = 0, flushed = 0;
};

/// f32 -> f16 / bf16 with out-of-range values clamped to the largest finite value.
Tensor narrow(const Tensor &t, DType to, Counts &c) {
  Tensor out = Tensor::zeros(to, t.shape());
  auto *dst = reinterpret_cast<uint16_t *>(out.mutableData());
  const float *src = reinterpret_cast<const float *>(t.data());
  const float maxv = to == DType::F16 ? 65504.f : bf16ToFloat(0x7F7F);
  for (int64_t i = 0; i < t.numel(); ++i) {
    float x = src[i];
    if (std::fabs(x) > maxv) { // inf included; NaN passes through
      x = std::copysign(maxv, x);
      ++c.clamped;
    }
    const uint16_t h = to == DType::F16 ? floatToHalf(x) : floatToBf16(x);
    if ((h & 0x7FFF) == 0 && x != 0.f)
      ++c.flushed;
    dst[i] = h;
  }
  return out;
}

} // namespace

namespace quantpass {

Expected<std::pair<int64_t, int64_t>> storeNarrow(Graph &g, Value *c, DType to, int64_t &clamped,
                                                  int64_t &flushed) {
  if (to != DType::F16 && to != DType::BF16)
    return internalErrorf("storeNarrow: {} is not f16 or bf16", dtypeName(to));
  Counts counts;
  const std::string name = c->name();
  const Tensor &t = *c->constant();
  Tensor h = narrow(t, to, counts);
  clamped += counts.clamped;
  flushed += counts.flushed;
  const std::pair<int64_t, int64_t> bytes{static_cast<int64_t>(t.nbytes()),
                                          static_cast<int64_t>(h.nbytes())};
  const std::vector<int64_t> shape = t.shape();
  c->setName(g.freshName(name.empty() ? "weight_f32" : name + "_f32_original"));
  Value *stored = g.addConstant(name.empty() ? g.freshName("weight") : name, std::move(h));
  Node *first = g.nodes().empty() ? nullptr : g.nodes().front().get();
  Node *cast = g.addNode(OpKind::Cast, {stored}, 1, stored->name() + "_Cast", first);
  cast->setAttr(Attribute::makeInt("to", static_cast<int64_t>(DType::F32)));
  Value *wide = cast->output(0);
  wide->setName(g.freshName(stored->name() + "_f32"));
  wide->setType(Type::tensorOf(DType::F32, shape));
  g.replaceAllUsesWith(c, wide);
  return bytes;
}

} // namespace quantpass

Expected<PreservedAnalyses> QuantHalfPass::run(Model &m, AnalysisManager &am) {
  Graph &g = m.graph();
  Counts counts;
  int64_t weights = 0, before = 0, after = 0;
  for (Value *c : g.constants()) {
    if (!isWeight(c))
      continue;
    using BytePair = std::pair<int64_t, int64_t>;
    LLMOPT_ASSIGN_OR_RETURN(BytePair bytes,
                            quantpass::storeNarrow(g, c, to_, counts.clamped, counts.flushed));
    before += bytes.first;
    after += bytes.second;
    ++weights;
  }
  g.removeUnusedConstants();
  am.context().reportLines.push_back(fmt::format("{}: {} weights to {}, {} -> {} bytes; {} values "
                                                 "clamped to the {} range, {} flushed to zero; "
                                                 "compute stays f32 (a Cast after each weight)",
                                                 name(), weights, dtypeName(to_), before, after,
                                                 counts.clamped, dtypeName(to_), counts.flushed));
  return weights ? PreservedAnalyses::none() : PreservedAnalyses::all();
}

} // namespace llmopt

// Structured pruning rewrite: slicing weights (f32 and quantized), sliced constants, size
// constants, graph dims, and residual branch removal (see StructRewrite.h).
#include "passes/prune/StructRewrite.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "ir/QuantFormats.h"
#include "passes/cleanup/Dce.h"

namespace llmopt::structprune {

Tensor sliceTensor(const Tensor &t, int64_t axis, const std::vector<int64_t> &keep) {
  const std::vector<int64_t> &shape = t.shape();
  int64_t outer = 1, inner = 1;
  for (int64_t a = 0; a < axis; ++a)
    outer *= shape[static_cast<size_t>(a)];
  for (size_t a = static_cast<size_t>(axis) + 1; a < shape.size(); ++a)
    inner *= shape[a];
  const int64_t dim = shape[static_cast<size_t>(axis)], kept = static_cast<int64_t>(keep.size());
  std::vector<int64_t> newShape = shape;
  newShape[static_cast<size_t>(axis)] = kept;
  Tensor out = Tensor::zeros(t.dtype(), newShape);
  const uint8_t *src = t.data();
  uint8_t *dst = out.mutableData();
  const int bits = dtypeBits(t.dtype());
  if (bits % 8 == 0) {
    const size_t run = static_cast<size_t>(inner) * static_cast<size_t>(bits / 8);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t k = 0; k < kept; ++k)
        std::memcpy(dst + static_cast<size_t>(o * kept + k) * run,
                    src + static_cast<size_t>(o * dim + keep[static_cast<size_t>(k)]) * run, run);
    return out;
  }
  for (int64_t o = 0; o < outer; ++o) // 4-bit: element by element, raw nibbles
    for (int64_t k = 0; k < kept; ++k)
      for (int64_t i = 0; i < inner; ++i)
        quant::storeElement(
            dst, DType::U4, (o * kept + k) * inner + i,
            quant::loadElement(src, DType::U4,
                               (o * dim + keep[static_cast<size_t>(k)]) * inner + i));
  return out;
}

namespace {

/// Cuts the blocked axis of a 2-D quantized weight: blocks that survive whole keep their
/// integers and parameters; the others are re-quantized round-to-nearest (same encoding).
Status requantizeAlongBlocks(Value *w, const std::vector<int64_t> &keep, RewriteStats &st) {
  const Tensor &t = *w->constant();
  const QuantEncoding enc = *w->type().quant;
  const int64_t axis = enc.axis, bs = enc.blockSize;
  LLMOPT_ASSIGN_OR_RETURN(Tensor dense, quant::dequantize(t, enc));
  const Tensor cut = sliceTensor(dense, axis, keep);
  const int64_t oldDim = t.shape()[static_cast<size_t>(axis)];
  const int64_t newDim = static_cast<int64_t>(keep.size());
  const int64_t other = t.shape()[static_cast<size_t>(1 - axis)];
  const int64_t oldBlocks = (oldDim + bs - 1) / bs, newBlocks = (newDim + bs - 1) / bs;
  LLMOPT_ASSIGN_OR_RETURN(quant::BlockIndexer idx, quant::BlockIndexer::make(cut.shape(), enc));
  const std::vector<quant::BlockParams> old = quant::storedParams(t, enc);
  std::vector<quant::BlockParams> params(static_cast<size_t>(idx.numScales()));
  auto entry = [&](int64_t blk, int64_t o, int64_t blocks) {
    return axis == 0 ? blk * other + o : o * blocks + blk;
  };
  const float *x = cut.view<float>().data();
  int64_t requant = 0;
  for (int64_t b = 0; b < newBlocks; ++b) {
    // The old block this one is, if it is one whole: aligned, contiguous, same length.
    const int64_t first = keep[static_cast<size_t>(b * bs)];
    const int64_t len = std::min(bs, newDim - b * bs);
    bool whole = first % bs == 0 && len == std::min(bs, oldDim - first);
    for (int64_t i = 1; whole && i < len; ++i)
      whole = keep[static_cast<size_t>(b * bs + i)] == first + i;
    for (int64_t o = 0; o < other; ++o) {
      const int64_t s = entry(b, o, newBlocks);
      if (whole) {
        params[static_cast<size_t>(s)] = old[static_cast<size_t>(entry(first / bs, o, oldBlocks))];
        continue;
      }
      const quant::BlockIndexer::Span sp = idx.spans(s).front();
      params[static_cast<size_t>(s)] =
          quant::rtnParams(x + sp.start, sp.count, sp.stride, enc.bits, enc.symmetric);
      ++requant;
    }
  }
  const bool floatZp = t.zeroPoints && t.zeroPoints->dtype() == DType::F32;
  LLMOPT_ASSIGN_OR_RETURN(Tensor q, quant::quantizeWithParams(cut, enc, params, floatZp));
  w->setConstant(std::make_shared<Tensor>(std::move(q)));
  if (requant == 0) { // only whole blocks went: a direct cut
    ++st.quantDirect;
    return Status::ok();
  }
  ++st.quantRequant;
  st.blocksRequant += requant;
  st.blocksTotal += newBlocks * other;
  return Status::ok();
}

int64_t siteSize(const SizeSite &s, const StructInfo &info, const SpaceCut &c) {
  const int64_t kept = static_cast<int64_t>(c.keptUnits.size());
  switch (s.role) {
  case Role::Flat: return kept * info.spaces[static_cast<size_t>(s.space)].unitSize;
  case Role::Unit: return kept * (s.rep > 1 ? c.repAfter : 1);
  case Role::Rep: return c.repAfter;
  default: return -1;
  }
}

std::vector<int64_t> keptChannels(const SpaceCut &c, int64_t unitSize) {
  std::vector<int64_t> out;
  for (int64_t u : c.keptUnits)
    for (int64_t d = 0; d < unitSize; ++d)
      out.push_back(u * unitSize + d);
  return out;
}

} // namespace

Status sliceWeight(Value *w, int64_t axis, const std::vector<int64_t> &keep, RewriteStats &st) {
  ++st.weights;
  const Tensor &t = *w->constant();
  if (!w->type().quant) {
    w->setConstant(std::make_shared<Tensor>(sliceTensor(t, axis, keep)));
    return Status::ok();
  }
  const QuantEncoding enc = *w->type().quant;
  if (enc.blockSize > 0 && enc.axis == axis)
    return requantizeAlongBlocks(w, keep, st);
  auto side = [&](const std::shared_ptr<Tensor> &s) -> std::shared_ptr<Tensor> {
    if (!s)
      return nullptr;
    if (enc.blockSize > 0) // blocked along the other axis: same rank as the weight
      return std::make_shared<Tensor>(sliceTensor(*s, axis, keep));
    if (enc.axis == axis) // one scale per slice of the cut axis
      return std::make_shared<Tensor>(sliceTensor(*s, 0, keep));
    return s;
  };
  Tensor out = sliceTensor(t, axis, keep);
  out.scales = side(t.scales);
  out.zeroPoints = side(t.zeroPoints);
  w->setConstant(std::make_shared<Tensor>(std::move(out)));
  ++st.quantDirect;
  return Status::ok();
}

Status applyCuts(Graph &g, const StructInfo &info, const std::map<int, SpaceCut> &cuts,
                 RewriteStats &st) {
  for (const auto &[s, cut] : cuts) {
    const Space &sp = info.spaces[static_cast<size_t>(s)];
    const std::vector<int64_t> ch = keptChannels(cut, sp.unitSize);
    for (Value *w : sp.columns)
      LLMOPT_RETURN_IF_ERROR(sliceWeight(w, 1, ch, st).withContext(w->name()));
    for (Value *w : sp.rows)
      LLMOPT_RETURN_IF_ERROR(sliceWeight(w, 0, ch, st).withContext(w->name()));
  }
  for (const ConstSlice &c : info.slices) {
    auto it = cuts.find(c.space);
    if (it == cuts.end())
      continue;
    const Value *old = c.node->input(c.operand);
    const std::vector<int64_t> keep =
        c.role == Role::Flat
            ? keptChannels(it->second, info.spaces[static_cast<size_t>(c.space)].unitSize)
            : it->second.keptUnits;
    Graph &owner = *c.node->graph();
    Value *nv = owner.addConstant(owner.freshName(old->name()),
                                  sliceTensor(*constantTensor(old), c.axis, keep));
    c.node->setInput(c.operand, nv);
    ++st.slicedConstants;
  }
  // Size constants: one new constant per (node, operand), all its elements set at once.
  std::map<std::pair<Node *, unsigned>, std::vector<std::pair<int64_t, int64_t>>> edits;
  for (const SizeSite &s : info.sites) {
    auto it = cuts.find(s.space);
    if (s.kind == SizeSite::Kind::Element && it != cuts.end())
      edits[{s.node, s.operand}].emplace_back(s.index, siteSize(s, info, it->second));
  }
  for (const auto &[where, elems] : edits) {
    auto [node, operand] = where;
    const Value *old = node->input(operand);
    const Tensor *t = constantTensor(old);
    Tensor copy = Tensor::fromBytes(t->dtype(), t->shape(), t->data(), t->nbytes());
    for (auto [i, v] : elems) {
      if (copy.dtype() == DType::I64)
        copy.mutableView<int64_t>()[static_cast<size_t>(i)] = v;
      else if (copy.dtype() == DType::I32)
        copy.mutableView<int32_t>()[static_cast<size_t>(i)] = static_cast<int32_t>(v);
      else
        return errorf("'{}': a size constant of type {} cannot be rewritten", old->name(),
                      dtypeName(copy.dtype()));
    }
    Graph &owner = *node->graph();
    node->setInput(operand, owner.addConstant(owner.freshName(old->name()), std::move(copy)));
    ++st.sizeConstants;
  }
  (void)g;
  return Status::ok();
}

void applyGraphDims(const StructInfo &info, const std::map<int, SpaceCut> &cuts,
                    RewriteStats &st) {
  for (const SizeSite &s : info.sites) {
    auto it = cuts.find(s.space);
    if (s.kind == SizeSite::Kind::Element || it == cuts.end() || !s.value->type().dims)
      continue;
    Dims &d = *s.value->mutableType().dims;
    d[static_cast<size_t>(s.index)] = Dim::of(siteSize(s, info, it->second));
    ++st.graphDims;
  }
}

std::vector<std::string> removeBranches(Graph &g,
                                        const std::vector<const ResidualBranch *> &branches) {
  std::vector<Value *> usedInputs;
  for (Value *in : g.inputs())
    if (in->hasUses())
      usedInputs.push_back(in);
  std::vector<std::string> removed;
  // Last branch first: a later branch's stream is an earlier branch's Add, which must still
  // be the value being replaced when the earlier branch goes.
  for (auto it = branches.rbegin(); it != branches.rend(); ++it) {
    const ResidualBranch *br = *it;
    g.replaceAllUsesWith(br->add->output(), br->stream);
    for (Value *o : br->outputs) {
      const auto &outs = g.outputs();
      auto it = std::find(outs.begin(), outs.end(), o);
      if (it == outs.end())
        continue;
      removed.push_back(o->name());
      g.removeOutput(static_cast<size_t>(it - outs.begin()));
    }
  }
  eliminateDeadCode(g);
  for (Value *in : usedInputs) {
    if (in->hasUses() || in->isGraphOutput())
      continue;
    const auto &ins = g.inputs();
    auto it = std::find(ins.begin(), ins.end(), in);
    removed.push_back(in->name());
    g.removeInput(static_cast<size_t>(it - ins.begin()));
  }
  return removed;
}

} // namespace llmopt::structprune

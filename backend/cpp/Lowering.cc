// IR → Steps for --emit=cpp: value classification, glue evaluation, fusion legality, lowering.
#include "backend/cpp/Lowering.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "backend/cpu/kernels/Kernels.h"
#include "backend/interp/Interpreter.h"
#include "ir/GraphAlgorithms.h"
#include "ir/QuantFormats.h"

namespace llmopt::codegen {
namespace {

constexpr int64_t kShortSeq = 7; ///< the second length glue is evaluated at

Status nodeError(const Node *n, const std::string &msg) {
  return errorf("--emit=cpp: node '{}' ({}): {}", n->name(), n->qualifiedOpType(), msg);
}

std::string f(float v) { return fmt::format("{:.9g}f", v); }

/// An int4 weight W [K, N] the kernel library takes: a quantized [K, N] constant blocked
/// along K, or the constant `q` = W^T [N, K] blocked along K (`transposed`: a quantized
/// embedding table, read by a tied LM head through a Transpose and by the lookup directly).
struct Int4Info {
  int64_t k, n, block;
  bool asym;
  const Value *q;
  bool transposed;
  std::string key() const { return (transposed ? "int4T:" : "int4:") + q->name(); }
};
std::optional<Int4Info> int4Constant(const Value *q, bool transposed) {
  if (!q || !q->isConstant() || !q->type().quant || q->constant()->rank() != 2)
    return std::nullopt;
  const QuantEncoding &e = *q->type().quant;
  const auto &shape = q->constant()->shape();
  if (quant::containerBits(e.storage) != 4 || !quant::fitsMatMulNBits(shape, e, transposed) ||
      e.blockSize > 256)
    return std::nullopt;
  if (q->constant()->zeroPoints && q->constant()->zeroPoints->dtype() == DType::F32)
    return std::nullopt; // HQQ's fractional zero points
  return Int4Info{shape[transposed ? 1 : 0], shape[transposed ? 0 : 1], e.blockSize, !e.symmetric, q,
                  transposed};
}
/// The int4 weight a MatMul reads as operand `w`: a quantized constant, or a Transpose of one.
std::optional<Int4Info> int4Weight(const Value *w) {
  if (auto direct = int4Constant(w, false))
    return direct;
  const Node *p = w ? w->producer() : nullptr;
  if (p && p->is(OpKind::Transpose) && (p->attrInts("perm").empty() || p->attrInts("perm") == std::vector<int64_t>{1, 0}))
    return int4Constant(p->input(0), true);
  return std::nullopt;
}

/// An int4 weight repacked from MatMulNBits arrays into the kernel library's format.
Expected<cpu::Int4Buffer> packInt4(const Int4Info &w, const Node *n, int64_t inputCols) {
  if (w.k != inputCols)
    return nodeError(n, "weight rows do not match the input width");
  auto nb = quant::toMatMulNBits(*w.q->constant(), *w.q->type().quant, w.transposed);
  if (!nb)
    return nb.status().withContext(fmt::format("--emit=cpp: node '{}'", n->name()));
  return cpu::packInt4FromMatMulNBits(nb->b.data(), reinterpret_cast<const float *>(nb->scales.data()),
                                      nb->zeroPoints ? nb->zeroPoints->data() : nullptr, w.k, w.n,
                                      static_cast<int>(w.block));
}

bool isMatMul(const Node *n) { return n->is(OpKind::MatMul) || n->is(OpKind::MatMulBias); }

bool unused(const Value *v) { return !v || (!v->hasUses() && !v->isGraphOutput()); }

} // namespace

uint64_t WeightsImage::add(const std::string &key, const void *data, size_t n) {
  if (auto it = byKey.find(key); it != byKey.end())
    return it->second;
  const uint64_t at = (bytes.size() + 63) / 64 * 64;
  bytes.resize(at + n);
  std::memcpy(bytes.data() + at, data, n);
  byKey[key] = at;
  return at;
}

std::string Lowering::ptr(const Act &a) const {
  std::string s = fmt::format("c.buf({})", buffers[static_cast<size_t>(a.buf)].offset);
  return a.col ? fmt::format("({} + {})", s, a.col) : s;
}

int Lowering::newBuffer(int64_t width) {
  buffers.push_back({width, 0, 0, -1});
  return static_cast<int>(buffers.size() - 1);
}

Act Lowering::define(const Value *v, int64_t cols) {
  Act a{newBuffer(cols), 0, cols, cols};
  acts_[v] = a;
  return a;
}

void Lowering::emit(const Node *n, std::string what, std::vector<Act> acts,
                    std::function<std::string()> code) {
  Step s;
  s.comment = fmt::format("{}: {} ({})", what, n->name(), n->qualifiedOpType());
  for (const Act &a : acts)
    s.buffers.push_back(a.buf);
  s.code = std::move(code);
  steps.push_back(std::move(s));
}

// ---------------------------------------------------------------- classification

Status Lowering::classify() {
  LLMOPT_ASSIGN_OR_RETURN(order_, topologicalOrder(g_));
  for (size_t i = 0; i < order_.size(); ++i)
    pos_[order_[i]] = static_cast<int>(i);
  if (g_.inputs().size() != 1) {
    std::string names;
    for (const Value *in : g_.inputs())
      names += (names.empty() ? "'" : ", '") + in->name() + "'";
    return errorf("--emit=cpp: the graph must have one input, the token ids [batch, seq]; it has {} "
                  "({}). Emit the model without past_key_values inputs: the generated state keeps "
                  "the KV cache itself", g_.inputs().size(), names);
  }
  ids_ = g_.inputs()[0];
  const Type &t = ids_->type();
  if (t.elem != DType::I64 || t.rank() != 2)
    return errorf("--emit=cpp: input '{}' must be i64 [batch, seq], got {}", ids_->name(), toString(t));
  const Dim &b = (*t.dims)[0], &s = (*t.dims)[1];
  if (!(b.kind == Dim::Kind::Symbolic || (b.isStatic() && b.value == 1)) || s.kind != Dim::Kind::Symbolic)
    return errorf("--emit=cpp: input '{}' must be [batch or 1, seq] with a symbolic seq, got {}",
                  ids_->name(), toString(t));
  batchSym_ = b.symbol;
  seqSym_ = s.symbol;
  data_.insert(ids_);
  seqDep_.insert(ids_);
  for (Node *n : order_) {
    if (!n->subgraphs().empty())
      return nodeError(n, "ops with subgraphs are not supported");
    const bool shapeOnly = n->is(OpKind::Shape);
    bool isData = false, dep = false;
    for (Value *in : n->inputs()) {
      if (!in)
        continue;
      isData |= !shapeOnly && data_.count(in);
      dep |= seqDep_.count(in) > 0;
      if (shapeOnly && in->type().dims)
        for (const Dim &d : *in->type().dims)
          dep |= !d.isStatic();
    }
    for (Value *out : n->outputs()) {
      if (isData)
        data_.insert(out);
      if (dep)
        seqDep_.insert(out);
    }
  }
  for (Value *out : g_.outputs())
    if (!data_.count(out))
      return errorf("--emit=cpp: graph output '{}' does not depend on the token ids", out->name());
  // Rotary tables cover max_position_embeddings (model metadata "config"), else the default.
  maxPositions = opts_.defaultMaxPositions;
  for (const auto &[key, value] : model_.metadata)
    if (key == "config")
      if (size_t at = value.find("\"max_position_embeddings\":"); at != std::string::npos)
        maxPositions = std::stoll(value.substr(at + 26));
  return Status::ok();
}

/// Evaluates a glue value at sequence length maxPositions (which = 0) or kShortSeq (1).
Expected<const Tensor *> Lowering::glue(const Value *v, int which) {
  if (v->isConstant()) {
    if (v->type().quant)
      return errorf("--emit=cpp: quantized constant '{}' used as shape glue", v->name());
    return v->constant().get();
  }
  if (!seqDep_.count(v))
    which = 0;
  if (auto it = glue_[which].find(v); it != glue_[which].end())
    return &it->second;
  const Node *p = v->producer();
  if (!p || data_.count(v))
    return errorf("--emit=cpp: '{}' is needed at compile time but depends on the token ids", v->name());
  const int64_t seq = which == 0 ? maxPositions : kShortSeq;
  std::vector<Tensor> outs;
  if (p->is(OpKind::Shape)) {
    const Type &t = p->input(0)->type();
    if (!t.dims)
      return nodeError(p, "input rank unknown");
    std::vector<int64_t> dims;
    for (const Dim &d : *t.dims) {
      if (d.isStatic())
        dims.push_back(d.value);
      else if (d.kind == Dim::Kind::Symbolic && d.symbol == seqSym_)
        dims.push_back(seq);
      else if (d.kind == Dim::Kind::Symbolic && d.symbol == batchSym_)
        dims.push_back(1);
      else
        return nodeError(p, fmt::format("dimension '{}' of its input is not batch or seq", toString(d)));
    }
    const int64_t r = static_cast<int64_t>(dims.size());
    auto clampAxis = [&](int64_t a) { return std::clamp(a < 0 ? a + r : a, int64_t{0}, r); };
    const int64_t start = clampAxis(p->attrInt("start", 0)), end = clampAxis(p->attrInt("end", r));
    std::vector<int64_t> sel(dims.begin() + start, dims.begin() + std::max(start, end));
    outs.push_back(Tensor::fromVector(DType::I64, {static_cast<int64_t>(sel.size())}, sel));
  } else {
    std::vector<const Tensor *> ins;
    for (const Value *in : p->inputs()) {
      if (!in) {
        ins.push_back(nullptr);
        continue;
      }
      LLMOPT_ASSIGN_OR_RETURN(const Tensor *t, glue(in, which));
      ins.push_back(t);
    }
    auto r = interp::evaluateNode(*p, ins);
    if (!r)
      return r.status().withContext("--emit=cpp: evaluating glue at compile time");
    outs = r.take();
  }
  for (size_t i = 0; i < outs.size() && i < p->numOutputs(); ++i)
    glue_[which][p->output(i)] = std::move(outs[i]);
  return &glue_[which].at(v);
}

// ---------------------------------------------------------------- fusion legality

Status Lowering::planFusion() {
  // MatMuls reading the same activation with int4 weights of one format and N a multiple of
  // the tile width become one GEMM over the concatenated weight (q/k/v, gate/up).
  std::map<std::pair<const Value *, std::pair<int64_t, bool>>, std::vector<Node *>> byInput;
  for (Node *n : order_)
    if (n->is(OpKind::MatMul) && data_.count(n->output()))
      if (auto w = int4Weight(n->input(1)); w && w->n % cpu::kTileCols == 0 && n->input(0))
        byInput[{n->input(0), {w->block, w->asym}}].push_back(n);
  for (auto &[key, members] : byInput)
    if (members.size() >= 2) {
      groups_[members.front()] = members;
      grouped_.insert(members.begin(), members.end());
    }
  // A MatMul whose only use is a residual Add (or a skip norm's sum) computes that sum in
  // its epilogue, when the other operand is computed before the MatMul (it dominates the
  // GEMM in the straight-line program) and the shapes agree (no broadcast).
  for (Node *m : order_) {
    if (!isMatMul(m) || grouped_.count(m) || !data_.count(m->output()))
      continue;
    const Value *y = m->output();
    if (y->uses().size() != 1 || y->isGraphOutput())
      continue;
    const Node *u = y->uses()[0].user;
    const unsigned idx = y->uses()[0].index;
    const bool add = u->is(OpKind::Add) && idx < 2;
    const bool skip = u->is(OpKind::SkipSimplifiedLayerNormalization) && idx < 2;
    if (!add && !skip)
      continue;
    const Value *r = u->input(1 - idx);
    if (!r || !data_.count(r) || r == ids_ || r->type() != y->type())
      continue;
    if (r->producer() && pos_.at(r->producer()) > pos_.at(m))
      continue; // not available where the GEMM runs
    const Value *bias = skip ? u->input(3) : nullptr;
    if (m->is(OpKind::MatMulBias) && bias)
      continue; // one bias per epilogue
    if (m->is(OpKind::MatMulBias))
      bias = m->input(2);
    fused_[m] = {u, r, bias};
  }
  // A gate/up pair grouped into one GEMM whose only reader is one SwiGLU (gate = input 0):
  // the GEMM runs over gate/up tiles interleaved and writes silu(gate) * up itself.
  for (const auto &[lead, members] : groups_) {
    if (members.size() != 2)
      continue;
    auto soleUser = [](const Value *v) -> const Node * {
      return v->uses().size() == 1 && !v->isGraphOutput() ? v->uses()[0].user : nullptr;
    };
    const Node *s = soleUser(members[0]->output());
    if (!s || !s->is(OpKind::SwiGLU) || s->numInputs() != 2 ||
        soleUser(members[1]->output()) != s || s->input(0) == s->input(1) ||
        int4Weight(members[0]->input(1))->n != int4Weight(members[1]->input(1))->n)
      continue;
    swiglu_[lead] = s;
    swigluFused_.insert(s);
  }
  // An RMSNorm output (not a graph output) whose every reader is an int4 GEMM taking it as A
  // is never written: the GEMMs normalize A while preparing it (cpu::Prologue).
  for (Node *n : order_) {
    if (!n->is(OpKind::SimplifiedLayerNormalization) &&
        !n->is(OpKind::SkipSimplifiedLayerNormalization))
      continue;
    const Value *y = n->output(0);
    if (!y || !y->hasUses() || y->isGraphOutput())
      continue;
    const bool allGemms = std::all_of(y->uses().begin(), y->uses().end(), [&](const auto &u) {
      return isMatMul(u.user) && u.index == 0 && data_.count(u.user->output()) &&
             int4Weight(u.user->input(1));
    });
    if (allGemms)
      normPrologue_.insert(y);
  }
  return Status::ok();
}

// ---------------------------------------------------------------- operands

Expected<int64_t> Lowering::colsOf(const Value *v) const {
  const Type &t = v->type();
  if (t.elem != DType::F32 || !t.dims || t.dims->empty())
    return errorf("--emit=cpp: '{}' must be an f32 tensor of known rank, got {}", v->name(), toString(t));
  int seqDims = 0;
  for (size_t i = 0; i + 1 < t.dims->size(); ++i) {
    const Dim &d = (*t.dims)[i];
    if (d.kind == Dim::Kind::Symbolic && d.symbol == seqSym_)
      ++seqDims;
    else if (!(d.kind == Dim::Kind::Symbolic && d.symbol == batchSym_) && !(d.isStatic() && d.value == 1))
      return errorf("--emit=cpp: '{}' has shape {}: only [batch, seq, C] activations are supported",
                    v->name(), toString(t));
  }
  const Dim &last = t.dims->back();
  if (seqDims != 1 || !last.isStatic())
    return errorf("--emit=cpp: '{}' has shape {}: only [batch, seq, C] activations are supported",
                  v->name(), toString(t));
  return last.value;
}

Expected<Act> Lowering::act(const Value *v, const Node *user) {
  if (!v)
    return nodeError(user, "a required input is missing");
  auto it = acts_.find(v);
  if (it == acts_.end())
    return nodeError(user, fmt::format("input '{}' is not an activation the emitter computed", v->name()));
  return it->second;
}

/// The f32 tensor a constant or static glue value holds (null if it is neither).
Expected<const Tensor *> Lowering::constTensor(const Value *v) {
  if (v->isConstant() && !v->type().quant)
    return v->constant().get();
  if (!v->isConstant() && !data_.count(v) && !seqDep_.count(v))
    return glue(v, 0);
  return static_cast<const Tensor *>(nullptr);
}

/// A constant f32 vector/matrix stored as it is (shared by every reader).
Expected<uint64_t> Lowering::f32Weight(const Value *v, const Node *user, int64_t expectNumel) {
  if (!v)
    return nodeError(user, "a weight input is missing");
  LLMOPT_ASSIGN_OR_RETURN(const Tensor *t, constTensor(v));
  if (!t || t->dtype() != DType::F32)
    return nodeError(user, fmt::format("'{}' must be a constant f32 tensor", v->name()));
  if (expectNumel >= 0 && t->numel() != expectNumel)
    return nodeError(user, fmt::format("'{}' must hold {} values, has {}", v->name(), expectNumel, t->numel()));
  return weights.add("f32:" + v->name(), t->data(), t->nbytes());
}

/// W [K, N] as Wt [N, K] f32: a Transpose of a constant is read as that constant (a tied
/// LM head shares the embedding's bytes); other constants are transposed here.
Expected<uint64_t> Lowering::f32Transposed(const Value *w, const Node *user, int64_t &k, int64_t &n) {
  const Node *p = w->producer();
  if (p && p->is(OpKind::Transpose) && p->input(0)->isConstant() && !p->input(0)->type().quant &&
      p->input(0)->constant()->rank() == 2) {
    const auto perm = p->attrInts("perm");
    if (perm.empty() || perm == std::vector<int64_t>{1, 0}) {
      const Tensor &c = *p->input(0)->constant();
      n = c.shape()[0];
      k = c.shape()[1];
      return f32Weight(p->input(0), user, -1);
    }
  }
  LLMOPT_ASSIGN_OR_RETURN(const Tensor *t, constTensor(w));
  if (!t || t->dtype() != DType::F32)
    return nodeError(user, fmt::format("weight '{}' must be a constant f32 or int4 matrix", w->name()));
  if (t->rank() != 2)
    return nodeError(user, fmt::format("weight '{}' must be 2-D, got rank {}", w->name(), t->rank()));
  k = t->shape()[0];
  n = t->shape()[1];
  std::vector<float> tr(static_cast<size_t>(k * n));
  const auto src = t->view<float>();
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < n; ++j)
      tr[static_cast<size_t>(j * k + i)] = src[static_cast<size_t>(i * n + j)];
  return weights.add("f32T:" + w->name(), tr.data(), tr.size() * sizeof(float));
}

// ---------------------------------------------------------------- lowering

Status Lowering::run() {
  LLMOPT_RETURN_IF_ERROR(classify());
  LLMOPT_RETURN_IF_ERROR(planFusion());
  for (Node *n : order_)
    if (data_.count(n->output()) || (n->numOutputs() > 1 && data_.count(n->output(1))))
      LLMOPT_RETURN_IF_ERROR(lowerNode(n));
  for (const Value *out : g_.outputs()) {
    LLMOPT_ASSIGN_OR_RETURN(Act a, act(out, out->producer()));
    if (a.col != 0 || a.ld != a.cols) { // outputs are copied out as whole buffers
      const Act whole = define(out, a.cols);
      emit(out->producer(), "copy output", {a, whole}, [this, a, whole] {
        return fmt::format("llmopt_rt::add(c.n, {}, {}, {}, nullptr, 0, nullptr, {}, {});", a.cols,
                           ptr(a), a.ld, ptr(whole), whole.ld);
      });
      a = whole;
    }
    outputs.push_back({out->name(), a});
  }
  // Live ranges: from the first step touching a buffer to the last; outputs to the end.
  std::vector<bool> seen(buffers.size(), false);
  for (size_t s = 0; s < steps.size(); ++s)
    for (int b : steps[s].buffers) {
      PlannedBuffer &pb = buffers[static_cast<size_t>(b)];
      if (!seen[static_cast<size_t>(b)])
        pb.def = static_cast<int>(s);
      seen[static_cast<size_t>(b)] = true;
      pb.lastUse = static_cast<int>(s);
    }
  for (const Output &o : outputs)
    buffers[static_cast<size_t>(o.act.buf)].lastUse = static_cast<int>(steps.size());
  arenaWidth = planMemory(buffers);
  return Status::ok();
}

Status Lowering::lowerNode(Node *n) {
  // Absorbed into an earlier GEMM's epilogue.
  for (const auto &[m, fu] : fused_)
    if (fu.user == n && n->is(OpKind::Add))
      return Status::ok();
  switch (n->kind()) {
  case OpKind::Gather: {
    const Value *table = n->input(0);
    if (auto w = int4Constant(table, true); w && n->input(1) == ids_ && n->attrInt("axis", 0) == 0) {
      // A quantized table [V, H] is W^T of an int4 [H, V] weight: stored once in the kernel
      // format, shared with a tied LM head; rows are dequantized on lookup.
      LLMOPT_ASSIGN_OR_RETURN(const cpu::Int4Buffer packed, packInt4(*w, n, w->k));
      const uint64_t off = weights.add(w->key(), packed.storage.get(), packed.layout.bytes());
      embedRows = std::max(embedRows, w->n);
      const Act out = define(n->output(), w->k);
      emit(n, "int4 embedding", {out}, [this, off, w = *w, out] {
        return fmt::format("llmopt_rt::gatherInt4(c.int4({}, {}, {}, {}, {}), ids, c.n, {}, {});", off, w.k, w.n,
                           w.block, w.asym, ptr(out), out.ld);
      });
      return Status::ok();
    }
    if (n->input(1) != ids_ || n->attrInt("axis", 0) != 0 || !table->isConstant() ||
        table->type().quant || table->constant()->rank() != 2 || table->constant()->dtype() != DType::F32)
      return nodeError(n, "only an embedding lookup (a constant f32 [V, H] table indexed by the "
                          "token ids, axis 0, f32 or int4 blocked along H) is supported");
    LLMOPT_ASSIGN_OR_RETURN(uint64_t off, f32Weight(table, n, -1));
    const int64_t rows = table->constant()->shape()[0], cols = table->constant()->shape()[1];
    embedRows = std::max(embedRows, rows);
    const Act out = define(n->output(), cols);
    emit(n, "embedding", {out}, [this, off, rows, cols, out] {
      return fmt::format("llmopt_rt::gather(c.f32({}), {}, {}, ids, c.n, {}, {});", off, rows, cols,
                         ptr(out), out.ld);
    });
    return Status::ok();
  }
  case OpKind::SimplifiedLayerNormalization: {
    for (size_t i = 1; i < n->numOutputs(); ++i)
      if (!unused(n->output(i)))
        return nodeError(n, "only output 0 may be used");
    LLMOPT_ASSIGN_OR_RETURN(Act x, act(n->input(0), n));
    const int64_t axis = n->attrInt("axis", -1);
    if (axis != -1 && axis != n->input(0)->type().rank() - 1)
      return nodeError(n, "only the last axis is supported");
    LLMOPT_ASSIGN_OR_RETURN(uint64_t gamma, f32Weight(n->input(1), n, x.cols));
    const float eps = n->attrFloat("epsilon", 1e-5f);
    if (normPrologue_.count(n->output())) {
      prologues_[n->output()] = {x, gamma, eps};
      return Status::ok();
    }
    const Act out = define(n->output(), x.cols);
    emit(n, "rms norm", {x, out}, [this, x, gamma, eps, out] {
      return fmt::format("llmopt_rt::rmsNorm(c.n, {}, {}, {}, c.f32({}), {}, {}, {});", x.cols, ptr(x),
                         x.ld, gamma, f(eps), ptr(out), out.ld);
    });
    return Status::ok();
  }
  case OpKind::SkipSimplifiedLayerNormalization:
    return lowerSkipNorm(n);
  case OpKind::MatMul:
  case OpKind::MatMulBias:
    return lowerMatMul(n);
  case OpKind::Add: {
    LLMOPT_ASSIGN_OR_RETURN(int64_t cols, colsOf(n->output()));
    const Value *a = n->input(0), *b = n->input(1);
    if (!data_.count(a))
      std::swap(a, b);
    LLMOPT_ASSIGN_OR_RETURN(Act x, act(a, n));
    const Act out = define(n->output(), cols);
    if (data_.count(b)) {
      LLMOPT_ASSIGN_OR_RETURN(Act y, act(b, n));
      if (x.cols != cols || y.cols != cols)
        return nodeError(n, "broadcasting between activations is not supported");
      emit(n, "add", {x, y, out}, [this, x, y, out] {
        return fmt::format("llmopt_rt::add(c.n, {}, {}, {}, {}, {}, nullptr, {}, {});", out.cols, ptr(x),
                           x.ld, ptr(y), y.ld, ptr(out), out.ld);
      });
      return Status::ok();
    }
    if (x.cols != cols)
      return nodeError(n, "broadcasting between activations is not supported");
    LLMOPT_ASSIGN_OR_RETURN(uint64_t bias, f32Weight(b, n, cols));
    emit(n, "add bias", {x, out}, [this, x, bias, out] {
      return fmt::format("llmopt_rt::add(c.n, {}, {}, {}, nullptr, 0, c.f32({}), {}, {});", out.cols,
                         ptr(x), x.ld, bias, ptr(out), out.ld);
    });
    return Status::ok();
  }
  case OpKind::SwiGLU: {
    if (swigluFused_.count(n))
      return Status::ok(); // the gate/up GEMM's epilogue wrote it
    LLMOPT_ASSIGN_OR_RETURN(Act g, act(n->input(0), n));
    LLMOPT_ASSIGN_OR_RETURN(Act u, act(n->input(1), n));
    if (g.cols != u.cols)
      return nodeError(n, "gate and up must have the same width");
    const Act out = define(n->output(), g.cols);
    emit(n, g.buf == u.buf ? "swiglu on the fused gate/up GEMM" : "swiglu", {g, u, out}, [this, g, u, out] {
      return fmt::format("llmopt_rt::swiglu(c.n, {}, {}, {}, {}, {}, {}, {});", g.cols, ptr(g), g.ld,
                         ptr(u), u.ld, ptr(out), out.ld);
    });
    return Status::ok();
  }
  case OpKind::RotaryEmbedding:
    return lowerRope(n);
  case OpKind::GroupQueryAttention:
    return lowerAttention(n);
  default:
    return nodeError(n, "not supported by the C++ emitter (supported on activations: Gather "
                        "(embedding), SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization, "
                        "MatMul (int4 or f32 weights), MatMulBias, Add, llmopt::SwiGLU, "
                        "RotaryEmbedding, GroupQueryAttention)");
  }
}

Status Lowering::lowerMatMul(Node *n) {
  if (grouped_.count(n))
    return groups_.count(n) ? lowerGroup(groups_.at(n)) : Status::ok();
  std::string prologue;
  LLMOPT_ASSIGN_OR_RETURN(Act x, gemmInput(n, prologue));
  // Where the product goes: its own buffer, or the Add / skip sum it absorbs.
  Act out;
  std::vector<Act> touched{x};
  std::optional<Act> res;
  const Value *bias = n->is(OpKind::MatMulBias) ? n->input(2) : nullptr;
  int64_t ncols = 0;
  if (auto w = int4Weight(n->input(1)))
    ncols = w->n;
  else if (n->input(1)->type().dims && n->input(1)->type().isStaticShape() && n->input(1)->type().rank() == 2)
    ncols = n->input(1)->type().staticShape()[1];
  else
    return nodeError(n, fmt::format("weight '{}' must be a constant 2-D matrix", n->input(1)->name()));
  if (auto it = fused_.find(n); it != fused_.end()) {
    const EpilogueFusion &fu = it->second;
    LLMOPT_ASSIGN_OR_RETURN(Act r, act(fu.residual, n));
    res = r;
    touched.push_back(r);
    bias = fu.bias;
    if (fu.user->is(OpKind::Add))
      out = define(fu.user->output(), ncols);
    else {
      out = fu.user->numOutputs() > 3 ? define(fu.user->output(3), ncols) : Act{newBuffer(ncols), 0, ncols, ncols};
      skipSums_[fu.user] = out;
    }
  } else {
    out = define(n->output(), ncols);
  }
  touched.push_back(out);
  std::string biasExpr = "nullptr";
  if (bias) {
    LLMOPT_ASSIGN_OR_RETURN(uint64_t b, f32Weight(bias, n, ncols));
    biasExpr = fmt::format("c.f32({})", b);
  }
  const std::string what = res ? (bias ? "GEMM + bias + residual" : "GEMM + residual") : (bias ? "GEMM + bias" : "GEMM");
  if (auto w = int4Weight(n->input(1))) {
    LLMOPT_ASSIGN_OR_RETURN(const cpu::Int4Buffer packed, packInt4(*w, n, x.cols));
    const uint64_t off = weights.add(w->key(), packed.storage.get(), packed.layout.bytes());
    emit(n, (prologue.empty() ? "int4 " : "RMSNorm + int4 ") + what, touched,
         [this, x, w = *w, off, out, res, biasExpr, prologue] {
           return fmt::format("llmopt_rt::int4MatMul(c, {}, {}, c.int4({}, {}, {}, {}, {}), {}, {}, "
                              "{{{}, {}, {}}}{});",
                              ptr(x), x.ld, off, w.k, w.n, w.block, w.asym, ptr(out), out.ld, biasExpr,
                              res ? ptr(*res) : "nullptr", res ? res->ld : 0, prologue);
         });
    return Status::ok();
  }
  int64_t k = 0, cols = 0;
  LLMOPT_ASSIGN_OR_RETURN(uint64_t off, f32Transposed(n->input(1), n, k, cols));
  if (k != x.cols || cols != ncols)
    return nodeError(n, "weight shape does not match the input width");
  emit(n, "f32 " + what, touched, [this, x, off, k, cols, out, res, biasExpr] {
    return fmt::format("llmopt_rt::f32MatMul({}, {}, c.n, c.f32({}), {}, {}, {}, {}, {{{}, {}, {}}});", ptr(x),
                       x.ld, off, k, cols, ptr(out), out.ld, biasExpr, res ? ptr(*res) : "nullptr",
                       res ? res->ld : 0);
  });
  return Status::ok();
}

/// One GEMM over [W1 | W2 | ...]: each member's output is a column view of one buffer.
/// Packed records are tile-major and every N is a multiple of the tile width, so the
/// concatenated packed bytes are exactly the packing of the concatenated matrix.
Status Lowering::lowerGroup(const std::vector<Node *> &group) {
  Node *lead = group.front();
  std::string prologue;
  LLMOPT_ASSIGN_OR_RETURN(Act x, gemmInput(lead, prologue));
  const std::string norm = prologue.empty() ? "" : "RMSNorm + ";
  const Int4Info first = *int4Weight(lead->input(1));
  std::vector<uint8_t> bytes;
  std::vector<cpu::Int4Buffer> packed;
  std::string names;
  int64_t total = 0;
  for (Node *m : group) {
    const Int4Info w = *int4Weight(m->input(1));
    LLMOPT_ASSIGN_OR_RETURN(cpu::Int4Buffer p, packInt4(w, m, x.cols));
    bytes.insert(bytes.end(), p.storage.get(), p.storage.get() + p.layout.bytes());
    packed.push_back(std::move(p));
    if (!names.empty())
      names += '+';
    names += w.key();
    total += w.n;
  }
  if (auto it = swiglu_.find(lead); it != swiglu_.end()) {
    const Node *s = it->second;
    const bool gateFirst = s->input(0) == group[0]->output();
    const cpu::Int4Buffer pairs = cpu::interleaveInt4Pairs(packed[gateFirst ? 0 : 1].view(),
                                                           packed[gateFirst ? 1 : 0].view());
    const uint64_t off = weights.add("swiglu:" + names, pairs.storage.get(), pairs.layout.bytes());
    const int64_t cols = total / 2, packedN = pairs.layout.n;
    const Act out = define(s->output(), cols);
    emit(lead, norm + "int4 GEMM + SwiGLU epilogue (gate/up tiles interleaved)", {x, out},
         [this, x, out, off, first, cols, packedN, prologue] {
           return fmt::format("llmopt_rt::int4MatMul(c, {}, {}, c.int4({}, {}, {}, {}, {}), {}, {}, "
                              "{{nullptr, nullptr, 0, llmopt::cpu::Activation::SwiGLUPairs, {}}}{});",
                              ptr(x), x.ld, off, first.k, packedN, first.block, first.asym, ptr(out),
                              out.ld, cols, prologue);
         });
    return Status::ok();
  }
  const int buf = newBuffer(total);
  int64_t col = 0;
  for (Node *m : group) {
    const int64_t n = int4Weight(m->input(1))->n;
    acts_[m->output()] = Act{buf, col, n, total};
    col += n;
  }
  const Act out{buf, 0, total, total};
  const uint64_t off = weights.add(names, bytes.data(), bytes.size());
  emit(lead, fmt::format("{}int4 GEMM for {} MatMuls sharing their input", norm, group.size()), {x, out},
       [this, x, out, off, first, total, prologue] {
         return fmt::format("llmopt_rt::int4MatMul(c, {}, {}, c.int4({}, {}, {}, {}, {}), {}, {}, {{}}{});",
                            ptr(x), x.ld, off, first.k, total, first.block, first.asym, ptr(out), out.ld,
                            prologue);
       });
  return Status::ok();
}

/// A GEMM's A: the activation, or, for an RMSNorm folded into the GEMM, the norm's input and
/// `prologue` = ", {gamma, eps}" (the int4MatMul argument that normalizes it on load).
Expected<Act> Lowering::gemmInput(const Node *n, std::string &prologue) {
  auto it = prologues_.find(n->input(0));
  if (it == prologues_.end())
    return act(n->input(0), n);
  prologue = fmt::format(", {{c.f32({}), {}}}", it->second.gamma, f(it->second.eps));
  return it->second.x;
}

Status Lowering::lowerSkipNorm(Node *n) {
  for (size_t i = 1; i < 3 && i < n->numOutputs(); ++i)
    if (!unused(n->output(i)))
      return nodeError(n, "outputs 1 and 2 (mean, inverse std) may not be used");
  LLMOPT_ASSIGN_OR_RETURN(int64_t cols, colsOf(n->output(0)));
  Act sum;
  if (auto it = skipSums_.find(n); it != skipSums_.end()) {
    sum = it->second; // the GEMM's epilogue added input + skip (+ bias)
  } else {
    LLMOPT_ASSIGN_OR_RETURN(Act a, act(n->input(0), n));
    LLMOPT_ASSIGN_OR_RETURN(Act b, act(n->input(1), n));
    if (a.cols != cols || b.cols != cols)
      return nodeError(n, "input and skip must have the same shape");
    sum = n->numOutputs() > 3 ? define(n->output(3), cols) : Act{newBuffer(cols), 0, cols, cols};
    std::string bias = "nullptr";
    if (n->input(3)) {
      LLMOPT_ASSIGN_OR_RETURN(uint64_t off, f32Weight(n->input(3), n, cols));
      bias = fmt::format("c.f32({})", off);
    }
    emit(n, "residual add", {a, b, sum}, [this, a, b, sum, bias] {
      return fmt::format("llmopt_rt::add(c.n, {}, {}, {}, {}, {}, {}, {}, {});", sum.cols, ptr(a), a.ld,
                         ptr(b), b.ld, bias, ptr(sum), sum.ld);
    });
  }
  LLMOPT_ASSIGN_OR_RETURN(uint64_t gamma, f32Weight(n->input(2), n, cols));
  const float eps = n->attrFloat("epsilon", 1e-5f);
  if (normPrologue_.count(n->output(0))) {
    prologues_[n->output(0)] = {sum, gamma, eps};
    return Status::ok();
  }
  const Act out = define(n->output(0), cols);
  emit(n, "rms norm of the residual sum", {sum, out}, [this, sum, gamma, eps, out] {
    return fmt::format("llmopt_rt::rmsNorm(c.n, {}, {}, {}, c.f32({}), {}, {}, {});", sum.cols, ptr(sum),
                       sum.ld, gamma, f(eps), ptr(out), out.ld);
  });
  return Status::ok();
}

Status Lowering::lowerRope(Node *n) {
  LLMOPT_ASSIGN_OR_RETURN(Act x, act(n->input(0), n));
  if (n->input(0)->type().rank() != 3)
    return nodeError(n, "only the 3-D [batch, seq, heads*head] input is supported");
  const Value *pos = n->input(1);
  if (!pos || !pos->isConstant() || pos->constant()->numel() != 1)
    return nodeError(n, "position_ids must be a constant offset (one value): positions then "
                        "continue from the KV cache's length");
  const int64_t pos0 = pos->constant()->getInt(0);
  // The tables at the longest length, checked to be position-indexed: the short evaluation
  // is their prefix, so row p means position p whatever the sequence length.
  const Tensor *tab[2][2];
  for (int w = 0; w < 2; ++w)
    for (int i = 0; i < 2; ++i) {
      LLMOPT_ASSIGN_OR_RETURN(tab[w][i], glue(n->input(2 + i), w));
    }
  const Tensor &cosT = *tab[0][0], &sinT = *tab[0][1];
  if (cosT.rank() != 2 || cosT.shape() != sinT.shape() || cosT.dtype() != DType::F32)
    return nodeError(n, "cos/sin caches must be f32 [positions, rotary_dim/2]");
  const int64_t half = cosT.shape()[1], rows = cosT.shape()[0];
  for (int i = 0; i < 2; ++i) {
    const Tensor &s = *tab[1][i], &l = *tab[0][i];
    if (s.rank() != 2 || s.shape()[1] != half || s.shape()[0] > rows ||
        std::memcmp(s.data(), l.data(), s.nbytes()) != 0)
      return nodeError(n, "the cos/sin caches are not the same position-indexed table at every "
                          "sequence length; the emitter needs them to be");
  }
  if (rows < maxPositions || rows - pos0 <= 0)
    return nodeError(n, "the rotary tables are shorter than max_position_embeddings");
  const int64_t rotDim0 = n->attrInt("rotary_embedding_dim", 0);
  int64_t heads = n->attrInt("num_heads", 0);
  const int64_t rotDim = rotDim0 > 0 ? rotDim0 : 2 * half;
  const int64_t head = rotDim0 > 0 ? (heads > 0 ? x.cols / heads : 0) : 2 * half;
  if (heads == 0 && head > 0)
    heads = x.cols / head;
  if (head <= 0 || heads * head != x.cols || rotDim != 2 * half || rotDim > head)
    return nodeError(n, "cannot split the input into heads for these caches");
  const bool il = n->attrInt("interleaved", 0) != 0;
  const uint64_t cOff = weights.add("rope:" + n->input(2)->name(), cosT.data(), cosT.nbytes());
  const uint64_t sOff = weights.add("rope:" + n->input(3)->name(), sinT.data(), sinT.nbytes());
  // In place when the rotation is the input's only reader.
  const bool inPlace = n->input(0)->uses().size() == 1 && !n->input(0)->isGraphOutput();
  const Act out = inPlace ? x : define(n->output(), x.cols);
  acts_[n->output()] = out;
  emit(n, inPlace ? "rope (in place)" : "rope", {x, out}, [=, this] {
    return fmt::format("llmopt_rt::rope(c.n, {}, {}, {}, {}, {}, {}, c.f32({}), c.f32({}), {}, c.past + {}, {}, {});",
                       heads, head, rotDim, il, ptr(x), x.ld, cOff, sOff, rows, pos0, ptr(out), out.ld);
  });
  return Status::ok();
}

Status Lowering::lowerAttention(Node *n) {
  for (size_t i : {3, 4, 7, 8, 9, 10, 11, 12, 13})
    if (n->input(i))
      return nodeError(n, fmt::format("input {} is given; the emitter supports query, key, value, "
                                      "seqlens_k and total_sequence_length only (the generated state "
                                      "keeps the KV cache itself)", i));
  for (size_t i = 1; i < n->numOutputs(); ++i)
    if (!unused(n->output(i)))
      return nodeError(n, "the present key/value outputs may not be used (the generated state keeps the cache)");
  if (n->attrInt("do_rotary", 0) || n->attrInt("local_window_size", -1) != -1 ||
      n->attrFloat("softcap", 0.f) != 0.f || n->attrInt("smooth_softmax", 0))
    return nodeError(n, "do_rotary, local_window_size, softcap and smooth_softmax are not supported");
  // seqlens_k and total_sequence_length must say "causal over this call's tokens".
  for (int w = 0; w < 2; ++w) {
    const int64_t len = w == 0 ? maxPositions : kShortSeq;
    LLMOPT_ASSIGN_OR_RETURN(const Tensor *sk, glue(n->input(5), w));
    LLMOPT_ASSIGN_OR_RETURN(const Tensor *tot, glue(n->input(6), w));
    if (sk->numel() != 1 || sk->getInt(0) != len - 1 || tot->numel() != 1 || tot->getInt(0) != len)
      return nodeError(n, "seqlens_k / total_sequence_length are not sequence length - 1 / sequence "
                          "length (padding or a caller-provided cache is not supported)");
  }
  LLMOPT_ASSIGN_OR_RETURN(Act q, act(n->input(0), n));
  LLMOPT_ASSIGN_OR_RETURN(Act k, act(n->input(1), n));
  LLMOPT_ASSIGN_OR_RETURN(Act v, act(n->input(2), n));
  const int64_t heads = n->attrInt("num_heads", 0), kvHeads = n->attrInt("kv_num_heads", 0);
  if (heads <= 0 || kvHeads <= 0 || heads % kvHeads || q.cols % heads)
    return nodeError(n, "num_heads must be a positive multiple of kv_num_heads dividing the query width");
  const int64_t head = q.cols / heads;
  if (k.cols != kvHeads * head || v.cols != kvHeads * head)
    return nodeError(n, "key/value widths do not match kv_num_heads * head size");
  float scale = n->attrFloat("scale", 0.f);
  if (scale == 0.f)
    scale = 1.f / std::sqrt(static_cast<float>(head));
  const int layer = static_cast<int>(kv.size());
  kv.push_back({kvHeads, head});
  const Act out = define(n->output(0), q.cols);
  emit(n, fmt::format("attention, KV cache {}", layer), {q, k, v, out}, [=, this] {
    return fmt::format("llmopt_rt::gqa(c, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {});", layer, heads,
                       kvHeads, head, f(scale), ptr(q), q.ld, ptr(k), k.ld, ptr(v), v.ld, ptr(out), out.ld);
  });
  return Status::ok();
}

} // namespace llmopt::codegen

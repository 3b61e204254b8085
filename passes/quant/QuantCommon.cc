// Shared pieces of the weight-only quantization passes.
#include "passes/quant/QuantCommon.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <thread>
#include <unistd.h>

#include "passes/cleanup/Opset.h"
#include "passes/quant/Hqq.h"

namespace llmopt::quantpass {

Expected<std::string> readMethod(OptionReader &r) {
  return r.getChoice("method", {"rtn", "hqq", "gptq", "awq"}, "rtn");
}

Status calibrationMethodError(const std::string &pass, const std::string &method,
                              const PassContext &ctx) {
  if (ctx.calibPath.empty())
    return errorf("pass '{}': method={} needs calibration data: pass --calib FILE (with "
                  "--tokenizer for text); without data use method=rtn or method=hqq",
                  pass, method);
  return errorf("pass '{}': method={} is not available yet (it reads calibration statistics, "
                "which llmopt does not collect yet); use method=rtn or method=hqq",
                pass, method);
}

Expected<int64_t> readBlock(OptionReader &r, const std::string &pass, int64_t dflt) {
  LLMOPT_ASSIGN_OR_RETURN(int64_t b, r.getInt("block", dflt, 16, 256));
  if ((b & (b - 1)) != 0)
    return errorf("pass '{}': option 'block' has value '{}', expected a power of 2 in [16, 256] "
                  "(16|32|64|128|256)",
                  pass, b);
  return b;
}

int64_t effectiveBlock(int64_t block, int64_t k) {
  const int64_t fit = std::max<int64_t>(
      16, static_cast<int64_t>(std::bit_ceil(static_cast<uint64_t>(std::max<int64_t>(k, 1)))));
  return std::min(block, fit);
}

namespace {

enum class TableUse { Gather, LmHead, Other };

// Gather(E, ids) {axis=0}, or Transpose(E) {perm=[1,0]} read only as MatMul's B.
TableUse classifyTableUse(const Use &u) {
  const Node *n = u.user;
  if (n->is(OpKind::Gather) && u.index == 0 && n->attrInt("axis", 0) == 0)
    return TableUse::Gather;
  if (!n->is(OpKind::Transpose))
    return TableUse::Other;
  const std::vector<int64_t> perm = n->attrInts("perm");
  if ((!perm.empty() && perm != std::vector<int64_t>{1, 0}) || n->output(0)->isGraphOutput() ||
      !n->output(0)->hasUses())
    return TableUse::Other;
  for (const Use &t : n->output(0)->uses())
    if (!t.user->is(OpKind::MatMul) || t.index != 1)
      return TableUse::Other;
  return TableUse::LmHead;
}

} // namespace

std::vector<EmbeddingTable> findEmbeddingTables(Graph &g, int64_t minDim, int64_t &skipped) {
  std::vector<EmbeddingTable> out;
  for (Value *c : g.constants()) {
    const Tensor &t = *c->constant();
    if (c->type().quant || c->isGraphInput() || c->isGraphOutput() || t.rank() != 2 ||
        t.dtype() != DType::F32)
      continue;
    int gathers = 0, heads = 0, others = 0;
    for (const Use &u : c->uses())
      switch (classifyTableUse(u)) {
      case TableUse::Gather: ++gathers; break;
      case TableUse::LmHead: ++heads; break;
      case TableUse::Other: ++others; break;
      }
    if (gathers == 0)
      continue;
    if (others || t.shape()[0] < minDim || t.shape()[1] < minDim) {
      ++skipped;
      continue;
    }
    out.push_back({c, heads > 0});
  }
  return out;
}

QuantEncoding tableEncoding(int bits, int64_t block, bool symmetric, int64_t h) {
  return QuantEncoding{quant::storageType(bits, symmetric), bits, 1, effectiveBlock(block, h),
                       symmetric};
}

Expected<Tensor> quantizeTensor(const Tensor &w, const QuantEncoding &enc, Method method,
                                bool integerZeroPoints) {
  if (method == Method::Rtn)
    return quant::quantizeRtn(w, enc);
  LLMOPT_ASSIGN_OR_RETURN(std::vector<quant::BlockParams> p, hqqParams(w, enc, integerZeroPoints));
  return quant::quantizeWithParams(w, enc, p, /*floatZeroPoints=*/!integerZeroPoints);
}

Value *replaceWithQuantized(Graph &g, Value *old, Tensor q, const QuantEncoding &enc) {
  const std::vector<int64_t> shape = q.shape();
  Value *v = g.replaceWithConstant(old, std::move(q));
  Type t = Type::tensorOf(DType::F32, shape);
  t.quant = enc;
  v->setType(std::move(t));
  return v;
}

int64_t storedBytes(const Tensor &t) {
  int64_t b = static_cast<int64_t>(t.nbytes());
  if (t.scales)
    b += static_cast<int64_t>(t.scales->nbytes());
  if (t.zeroPoints)
    b += static_cast<int64_t>(t.zeroPoints->nbytes());
  return b;
}

std::string SkipCounts::summary() const {
  std::string s;
  auto add = [&](int64_t n, const char *what) {
    if (n)
      s += fmt::format("{}{} {}", s.empty() ? "" : ", ", n, what);
  };
  add(tiny, "tiny (K or N < 16)");
  add(otherUses, "also read by non-MatMul ops");
  add(notF32, "not f32");
  add(gemmForm, "Gemm with alpha/beta/transA");
  add(notConstant, "with a non-constant B (activation products)");
  return s.empty() ? "none" : s;
}

namespace {

Tensor transposed2d(const Tensor &b) {
  const int64_t r = b.shape()[0], c = b.shape()[1];
  Tensor t = Tensor::zeros(DType::F32, {c, r});
  const float *src = reinterpret_cast<const float *>(b.data());
  float *dst = reinterpret_cast<float *>(t.mutableData());
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j)
      dst[j * r + i] = src[i * c + j];
  return t;
}

bool isWeightConstant(const Value *v) {
  return v && v->isConstant() && !v->type().quant && !v->isGraphInput() && !v->isGraphOutput() &&
         v->constant()->rank() == 2;
}

} // namespace

// Gemm(A, B, C) {transB}  =>  Add(MatMul(A, W), C), W = transB ? B^T : B
int64_t gemmsToMatMuls(Graph &g, SkipCounts &skips) {
  int64_t rewritten = 0;
  for (Node *n : g.nodeList()) {
    if (!n->is(OpKind::Gemm) || !isWeightConstant(n->input(1)) ||
        n->input(1)->constant()->dtype() != DType::F32)
      continue;
    Value *b = n->input(1), *c = n->input(2);
    if (n->attrFloat("alpha", 1.f) != 1.f || (c && n->attrFloat("beta", 1.f) != 1.f) ||
        n->attrInt("transA", 0) != 0 || b->users().size() != 1) {
      ++skips.gemmForm;
      continue;
    }
    if (n->attrInt("transB", 0) != 0)
      b = g.replaceWithConstant(b, transposed2d(*b->constant()));
    Node *mm = g.addNode(OpKind::MatMul, {n->input(0), b}, 1, n->name(), n);
    Value *out = mm->output(0);
    out->setName(g.freshName(n->name().empty() ? "gemm_matmul" : n->name() + "_matmul"));
    if (c) {
      Node *add =
          g.addNode(OpKind::Add, {out, c}, 1, n->name().empty() ? "" : n->name() + "_bias", n);
      out = add->output(0);
      out->setName(g.freshName(n->name().empty() ? "gemm_bias" : n->name() + "_bias"));
    }
    g.replaceAllUsesWith(n->output(0), out);
    g.eraseNode(n);
    ++rewritten;
  }
  g.removeUnusedConstants();
  return rewritten;
}

std::vector<MatMulWeight> findMatMulWeights(Graph &g, int64_t minDim, SkipCounts &skips) {
  for (const auto &n : g.nodes())
    if (n->is(OpKind::MatMul) && n->input(1) && !n->input(1)->isConstant())
      ++skips.notConstant;
  std::vector<MatMulWeight> out;
  for (Value *c : g.constants()) {
    if (!isWeightConstant(c))
      continue;
    MatMulWeight w{c, {}};
    bool others = false;
    for (const Use &u : c->uses()) {
      if (u.user->is(OpKind::MatMul) && u.index == 1)
        w.users.push_back(u.user);
      else
        others = true;
    }
    if (w.users.empty())
      continue;
    if (others) {
      ++skips.otherUses;
      continue;
    }
    if (c->constant()->dtype() != DType::F32) {
      ++skips.notF32;
      continue;
    }
    const std::vector<int64_t> &s = c->constant()->shape();
    if (s[0] < minDim || s[1] < minDim) {
      ++skips.tiny;
      continue;
    }
    out.push_back(std::move(w));
  }
  return out;
}

std::string WeightQuantStats::summary() const {
  return fmt::format("{} weights{}, {} -> {} bytes ({:.2f} bits per weight); skipped: {}", weights,
                     gemms ? fmt::format(" ({} Gemms made MatMul + Add)", gemms) : std::string(),
                     bytesBefore, bytesAfter,
                     params ? 8.0 * static_cast<double>(bytesAfter) / static_cast<double>(params)
                            : 0.0,
                     skips.summary());
}

Expected<WeightQuantStats>
quantizeMatMulWeights(Graph &g,
                      const std::function<QuantEncoding(int64_t K, int64_t N)> &encodingFor,
                      Method method, bool integerZeroPoints, int threads) {
  WeightQuantStats st;
  st.gemms = gemmsToMatMuls(g, st.skips);
  const std::vector<MatMulWeight> weights = findMatMulWeights(g, 16, st.skips);
  // Weights are quantized on `threads` workers in batches (each worker takes the next
  // weight), then installed in order: the output does not depend on the thread count,
  // and a batch bounds how many quantized copies wait at once.
  const size_t workers = static_cast<size_t>(
      threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency()));
  const size_t batch = 4 * workers;
  for (size_t b0 = 0; b0 < weights.size(); b0 += batch) {
    const size_t b1 = std::min(weights.size(), b0 + batch);
    std::vector<std::optional<Expected<Tensor>>> out(b1 - b0);
    std::atomic<size_t> next{b0};
    auto work = [&] {
      for (size_t i; (i = next.fetch_add(1)) < b1;) {
        const Tensor &t = *weights[i].weight->constant();
        out[i - b0].emplace(quantizeTensor(t, encodingFor(t.shape()[0], t.shape()[1]), method,
                                           integerZeroPoints));
      }
    };
    std::vector<std::thread> pool;
    for (size_t w = 1; w < std::min(workers, b1 - b0); ++w)
      pool.emplace_back(work);
    work();
    for (std::thread &t : pool)
      t.join();
    for (size_t i = b0; i < b1; ++i) {
      Expected<Tensor> &q = *out[i - b0];
      if (!q)
        return q.status().withContext("weight '" + weights[i].weight->name() + "'");
      const Tensor &t = *weights[i].weight->constant();
      installQuantized(g, weights[i], q.take(), encodingFor(t.shape()[0], t.shape()[1]), st);
    }
  }
  return st;
}

namespace {

/// `n` bytes written to an unlinked temporary file and mapped back read-only; null when
/// that fails (no space, no temporary directory).
std::shared_ptr<const MappedFile> spillBytes(const uint8_t *data, size_t n) {
  std::error_code ec;
  std::string path = (std::filesystem::temp_directory_path(ec) / "llmopt-spill-XXXXXX").string();
  if (ec)
    return nullptr;
  int fd = ::mkstemp(path.data());
  if (fd < 0)
    return nullptr;
  bool ok = true;
  for (size_t done = 0; ok && done < n;) {
    ssize_t w = ::write(fd, data + done, n - done);
    if (w < 0 && errno == EINTR)
      continue;
    ok = w > 0;
    done += ok ? static_cast<size_t>(w) : 0;
  }
  ::close(fd);
  std::shared_ptr<const MappedFile> mapped;
  if (ok)
    if (auto file = MappedFile::open(path); file)
      mapped = file.take();
  ::unlink(path.c_str()); // the mapping keeps the data until the last tensor lets go
  return mapped;
}

/// `t` (with its scales and zero points) moved to the page cache (see spillLikeOriginal);
/// `t` itself when spilling fails: a memory optimisation, never a change of the data.
std::shared_ptr<Tensor> spill(std::shared_ptr<Tensor> t) {
  if (!t || t->dtype() == DType::String || t->nbytes() == 0)
    return t;
  auto file = spillBytes(t->data(), t->nbytes());
  if (!file)
    return t;
  auto out = std::make_shared<Tensor>(Tensor::fromMapping(t->dtype(), t->shape(), file, 0));
  out->scales = spill(t->scales);
  out->zeroPoints = spill(t->zeroPoints);
  return out;
}

} // namespace

Tensor spillLikeOriginal(Tensor t, const Tensor &original) {
  if (!original.isMapped())
    return t;
  return std::move(*spill(std::make_shared<Tensor>(std::move(t))));
}

void installQuantized(Graph &g, const MatMulWeight &w, Tensor q, const QuantEncoding &enc,
                      WeightQuantStats &st) {
  const Tensor &t = *w.weight->constant();
  st.weights += 1;
  st.params += t.numel();
  st.bytesBefore += storedBytes(t);
  st.bytesAfter += storedBytes(q);
  // Drop the f32 original now (and its mapped pages), so peak memory follows one layer.
  const std::shared_ptr<Tensor> original = w.weight->constant();
  q = spillLikeOriginal(std::move(q), *original);
  replaceWithQuantized(g, w.weight, std::move(q), enc);
  g.removeUnusedConstants();
  if (original->isMapped() && original.use_count() == 1)
    original->mapping()->release(original->mappingOffset(), original->nbytes());
}

Expected<bool> ensureOnnxOpset(Model &m, AnalysisManager &am, int64_t need) {
  if (am.context().target != "onnx" || m.opsetVersion("") >= need)
    return false;
  OpsetPass convert(OpsetOptions{need});
  LLMOPT_ASSIGN_OR_RETURN(PreservedAnalyses pa, convert.run(m, am));
  (void)pa;
  return true;
}

} // namespace llmopt::quantpass

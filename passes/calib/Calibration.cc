// Calibration data, activation statistics and streamed Hessians (see Calibration.h).
#include "passes/calib/Calibration.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include <fmt/format.h>

#include "backend/interp/Interpreter.h"
#include "backend/interp/Linalg.h"
#include "frontend/tokenizer/Tokenizer.h"
#include "ir/Progress.h"

namespace llmopt::calib {
namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

bool endsWith(const std::string &s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Expected<std::string> readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return errorf("--calib {}: cannot open the file", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Expected<std::vector<int64_t>> readIds(const std::string &path, const std::string &text) {
  std::vector<int64_t> ids;
  std::istringstream in(text);
  std::string tok;
  while (in >> tok) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(tok, &used);
    } catch (...) {
      used = 0;
    }
    if (used != tok.size() || v < 0)
      return errorf("--calib {}: '{}' (token #{}) is not a token id; a .ids file holds "
                    "non-negative integers separated by whitespace",
                    path, tok, ids.size());
    ids.push_back(v);
  }
  return ids;
}

/// Adds one activation tensor to `s` (rows x K, f32 contiguous).
void accumulate(ActStats &s, const Tensor &t, bool hessian, std::vector<float> &scratchT,
                std::vector<float> &scratchH, int threads) {
  const int64_t K = s.channels, rows = t.numel() / K;
  const float *x = reinterpret_cast<const float *>(t.data());
  for (int64_t r = 0; r < rows; ++r) {
    const float *row = x + r * K;
    for (int64_t k = 0; k < K; ++k) {
      const float v = row[k], a = std::fabs(v);
      s.sumAbs[static_cast<size_t>(k)] += a;
      s.sumSq[static_cast<size_t>(k)] += static_cast<double>(v) * v;
      s.maxAbs[static_cast<size_t>(k)] = std::max(s.maxAbs[static_cast<size_t>(k)], a);
    }
  }
  s.rows += rows;
  if (!hessian)
    return;
  // X^T [K, rows]; then H += X^T[:, c] X[c, :] chunk by chunk of 64 rows.
  scratchT.resize(static_cast<size_t>(K * rows));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < K; ++k)
      scratchT[static_cast<size_t>(k * rows + r)] = x[r * K + k];
  scratchH.resize(static_cast<size_t>(K * K));
  constexpr int64_t kChunk = 64;
  for (int64_t c = 0; c < rows; c += kChunk) {
    const int64_t n = std::min(kChunk, rows - c);
    interp::gemm(scratchT.data() + c, rows, x + c * K, K, scratchH.data(), K, K, n, K, false,
                 threads);
    double *h = s.hessian.data();
    for (int64_t i = 0; i < K * K; ++i)
      h[i] += scratchH[static_cast<size_t>(i)];
  }
}

/// The channel count of `v`: its static last dimension, else the K of a constant 2-D
/// weight a MatMul multiplies it by; -1 when neither is known.
int64_t lastDim(const Value *v) {
  const Type &t = v->type();
  if (t.hasRank() && !t.dims->empty() && t.dims->back().isStatic())
    return t.dims->back().value;
  for (const Use &u : v->uses()) {
    const Value *b = u.user->input(1);
    if (u.user->is(OpKind::MatMul) && u.index == 0 && b && b->isConstant() &&
        b->constant()->rank() == 2)
      return b->constant()->shape()[0];
  }
  return -1;
}

} // namespace

double ActStats::norm(int64_t k) const { return std::sqrt(sumSq[static_cast<size_t>(k)]); }

Expected<std::vector<std::vector<int64_t>>> loadWindows(const PassContext &ctx) {
  const std::string &path = ctx.calibPath;
  if (path.empty())
    return errorf("no calibration data: pass --calib FILE (text with --tokenizer, or a .ids file "
                  "of token ids)");
  if (ctx.calibSamples < 1 || ctx.calibSeqLen < 1)
    return errorf("--calib-samples and --calib-seqlen must be at least 1 (got {} and {})",
                  ctx.calibSamples, ctx.calibSeqLen);
  LLMOPT_ASSIGN_OR_RETURN(std::string text, readFile(path));
  std::vector<int64_t> ids;
  if (endsWith(path, ".ids")) {
    LLMOPT_ASSIGN_OR_RETURN(ids, readIds(path, text));
  } else {
    if (ctx.tokenizerPath.empty())
      return errorf("--calib {}: a text file needs --tokenizer tokenizer.json (or give token ids "
                    "in a .ids file)",
                    path);
    LLMOPT_ASSIGN_OR_RETURN(auto tk, tok::loadTokenizer(ctx.tokenizerPath));
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
      text.pop_back();
    for (int32_t id : tk->encode(text, /*addSpecialTokens=*/false))
      ids.push_back(id);
  }
  if (ids.empty())
    return errorf("--calib {}: no tokens in the file", path);
  const int64_t total = static_cast<int64_t>(ids.size()), len = ctx.calibSeqLen;
  std::vector<std::vector<int64_t>> windows;
  if (total <= len) {
    windows.emplace_back(ids.begin(), ids.end());
    return windows;
  }
  // Evenly spread, non-overlapping windows: start_i = i * (total - len) / (n - 1).
  const int64_t n = std::min(ctx.calibSamples, total / len);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t start = n == 1 ? 0 : i * (total - len) / (n - 1);
    windows.emplace_back(ids.begin() + start, ids.begin() + start + len);
  }
  return windows;
}

Expected<std::vector<Tensor>> makeInputs(const Graph &g, const std::vector<int64_t> &ids) {
  std::vector<Tensor> out;
  const int64_t n = static_cast<int64_t>(ids.size());
  for (const Value *in : g.inputs()) {
    std::vector<int64_t> v;
    const std::string &name = in->name();
    if (name == "input_ids")
      v = ids;
    else if (name == "attention_mask")
      v.assign(static_cast<size_t>(n), 1);
    else if (name == "position_ids")
      for (int64_t i = 0; i < n; ++i)
        v.push_back(i);
    else if (name == "token_type_ids")
      v.assign(static_cast<size_t>(n), 0);
    else if (in->isConstant())
      break; // an overridable initializer keeps its value, as do the ones after it
    else
      return errorf("calibration: graph input '{}' is not one llmopt can feed from token ids "
                    "(input_ids, attention_mask, position_ids, token_type_ids)",
                    name);
    const DType dt = in->type().elem;
    if (dt == DType::I32)
      out.push_back(Tensor::fromVector(DType::I32, {1, n}, std::vector<int32_t>(v.begin(), v.end())));
    else if (dt == DType::I64 || dt == DType::Undefined)
      out.push_back(Tensor::fromVector(DType::I64, {1, n}, v));
    else
      return errorf("calibration: graph input '{}' has type {}, expected int64 or int32", name,
                    toString(in->type()));
  }
  return out;
}

Expected<Stats> collect(const Model &m, const std::vector<std::vector<int64_t>> &windows,
                        const std::vector<const Value *> &values, bool hessians, int threads) {
  Stats st;
  for (const Value *v : values) {
    const int64_t K = lastDim(v);
    if (K <= 0)
      return errorf("calibration: value '{}' has no static last dimension ({})", v->name(),
                    toString(v->type()));
    ActStats &a = st.acts[v];
    a.channels = K;
    a.sumAbs.assign(static_cast<size_t>(K), 0.0);
    a.sumSq.assign(static_cast<size_t>(K), 0.0);
    a.maxAbs.assign(static_cast<size_t>(K), 0.f);
    if (hessians)
      a.hessian.assign(static_cast<size_t>(K * K), 0.0);
  }
  Progress progress(hessians ? "calibration (Hessians)" : "calibration",
                    static_cast<int64_t>(windows.size()), "windows");
  std::vector<float> scratchT, scratchH;
  interp::RunOptions ro;
  ro.threads = threads;
  ro.releaseMappedConstants = true; // one layer's weights resident, not the model's
  ro.onValue = [&](const Value &v, const Tensor &t) -> Status {
    auto it = st.acts.find(&v);
    if (it == st.acts.end())
      return Status::ok();
    if (t.dtype() != DType::F32)
      return errorf("calibration: value '{}' is {}, expected f32", v.name(), dtypeName(t.dtype()));
    if (t.shape().empty() || t.shape().back() != it->second.channels)
      return errorf("calibration: value '{}' has shape {}, expected last dimension {}", v.name(),
                    fmt::join(t.shape(), "x"), it->second.channels);
    accumulate(it->second, t, hessians, scratchT, scratchH, threads);
    return Status::ok();
  };
  for (size_t w = 0; w < windows.size(); ++w) {
    LLMOPT_ASSIGN_OR_RETURN(std::vector<Tensor> inputs, makeInputs(m.graph(), windows[w]));
    LLMOPT_ASSIGN_OR_RETURN(std::vector<Tensor> outs, interp::run(m.graph(), inputs, ro));
    (void)outs;
    st.tokens += static_cast<int64_t>(windows[w].size());
    progress.update(static_cast<int64_t>(w + 1),
                    fmt::format("{:.0f} tok/s", static_cast<double>(st.tokens) /
                                                    std::max(progress.seconds(), 1e-9)));
  }
  st.windows = static_cast<int64_t>(windows.size());
  for (const Value *v : values)
    if (st.acts[v].rows == 0)
      return errorf("calibration: value '{}' was never computed by the forward pass", v->name());
  return st;
}

std::vector<const Value *> matmulWeightInputs(const Graph &g) {
  std::vector<const Value *> out;
  std::unordered_set<const Value *> seen;
  for (const Node *n : g.nodeList()) {
    if (n->kind() != OpKind::MatMul || n->numInputs() != 2)
      continue;
    const Value *a = n->input(0), *b = n->input(1);
    if (!a || !b || !b->isConstant() || !b->type().hasRank() || b->type().dims->size() != 2)
      continue;
    if (a->isConstant() || (a->type().elem != DType::F32 && a->type().elem != DType::Undefined) ||
        lastDim(a) <= 0)
      continue;
    if (seen.insert(a).second)
      out.push_back(a);
  }
  return out;
}

Expected<Stats> ActivationStatsAnalysis::run(Model &m, AnalysisManager &am) {
  const auto start = Clock::now();
  LLMOPT_ASSIGN_OR_RETURN(auto windows, loadWindows(am.context()));
  const std::vector<const Value *> values = matmulWeightInputs(m.graph());
  LLMOPT_ASSIGN_OR_RETURN(Stats st, collect(m, windows, values, false, am.context().threads));
  st.source = fmt::format("{}: {} windows x {} tokens", am.context().calibPath, st.windows,
                          windows.empty() ? 0 : windows.front().size());
  am.context().reportLines.push_back(
      fmt::format("calibration: {}, {} activations, per-channel statistics, {:.1f} s", st.source,
                  values.size(), secondsSince(start)));
  return st;
}

Status forEachHessianGroup(Model &m, AnalysisManager &am, const std::vector<const Value *> &values,
                           const std::string &pass, const std::function<Status(Stats &)> &fn) {
  const auto start = Clock::now();
  const PassContext &ctx = am.context();
  // Bad data is an error even when nothing here needs it, so the user hears of it.
  LLMOPT_ASSIGN_OR_RETURN(auto windows, loadWindows(ctx));
  if (values.empty())
    return Status::ok();
  const double budget = static_cast<double>(ctx.calibMemoryMiB) * 1024 * 1024;
  std::vector<std::vector<const Value *>> groups;
  double used = 0;
  for (const Value *v : values) {
    const double k = static_cast<double>(std::max<int64_t>(lastDim(v), 1));
    const double bytes = k * k * sizeof(double);
    if (groups.empty() || used + bytes > budget) {
      groups.emplace_back();
      used = 0;
    }
    groups.back().push_back(v);
    used += bytes;
  }
  for (const auto &group : groups) {
    LLMOPT_ASSIGN_OR_RETURN(Stats st, collect(m, windows, group, true, ctx.threads));
    st.source = fmt::format("{}: {} windows x {} tokens", ctx.calibPath, st.windows,
                            windows.front().size());
    st.complete = groups.size() == 1;
    LLMOPT_RETURN_IF_ERROR(fn(st));
  }
  am.context().reportLines.push_back(fmt::format(
      "{}: calibrated on {}: {} windows x {} tokens; Hessians of {} activations in {} group{} "
      "(--calib-memory {} MiB); {:.1f} s with the pass's own work",
      pass, ctx.calibPath, windows.size(), windows.front().size(), values.size(), groups.size(),
      groups.size() == 1 ? "" : "s", ctx.calibMemoryMiB, secondsSince(start)));
  return Status::ok();
}

} // namespace llmopt::calib

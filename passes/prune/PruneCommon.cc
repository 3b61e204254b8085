// Shared pieces of the pruning passes (see PruneCommon.h).
#include "passes/prune/PruneCommon.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

namespace llmopt::prunepass {

std::string Pattern::describe() const {
  return nm() ? fmt::format("{}:{}", n, m) : fmt::format("{:g}% unstructured", sparsity * 100);
}

Expected<double> readSparsity(OptionReader &r, const std::string &pass) {
  LLMOPT_ASSIGN_OR_RETURN(double s, r.getDouble("sparsity", 0.5, 0.0, 1.0));
  if (s >= 1.0)
    return errorf("pass '{}': option 'sparsity' has value '{}', expected a fraction in [0, 1) "
                  "(1 would zero every weight)",
                  pass, s);
  return s;
}

Expected<Pattern> readNm(OptionReader &r, const std::string &pass) {
  Pattern p;
  LLMOPT_ASSIGN_OR_RETURN(p.n, r.getInt("n", 2, 1, 255));
  LLMOPT_ASSIGN_OR_RETURN(p.m, r.getInt("m", 4, 2, 256));
  if (p.n >= p.m)
    return errorf("pass '{}': n={} keeps every weight of a group of m={}; expected n < m (n:m "
                  "keeps n nonzeros in every m consecutive input channels, e.g. n=2;m=4)",
                  pass, p.n, p.m);
  p.sparsity = 1.0 - static_cast<double>(p.n) / static_cast<double>(p.m);
  return p;
}

Status calibrationError(const std::string &pass, const std::string &method) {
  return errorf("pass '{}'{} needs calibration data: pass --calib FILE (text with --tokenizer, "
                "or a .ids file of token ids); without data use {}",
                pass, method.empty() ? "" : ": method=" + method,
                method.empty() ? "prune-magnitude" : "method=magnitude");
}

void smallestInto(std::span<const float> keys, int64_t count, std::vector<int64_t> &idx) {
  const int64_t n = static_cast<int64_t>(keys.size());
  count = std::clamp<int64_t>(count, 0, n);
  idx.resize(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  auto key = [&](int64_t i) {
    const float k = keys[static_cast<size_t>(i)];
    return std::isnan(k) ? INFINITY : k;
  };
  auto less = [&](int64_t a, int64_t b) {
    const float ka = key(a), kb = key(b);
    return ka < kb || (ka == kb && a < b);
  };
  if (count < n)
    std::nth_element(idx.begin(), idx.begin() + count, idx.end(), less);
  idx.resize(static_cast<size_t>(count));
  std::sort(idx.begin(), idx.end());
}

std::vector<int64_t> smallest(std::span<const float> keys, int64_t count) {
  std::vector<int64_t> idx;
  smallestInto(keys, count, idx);
  return idx;
}

int64_t pruneCount(double sparsity, int64_t total) {
  // The small epsilon absorbs representation error (0.7 * 10 = 7.000000000000001 is fine,
  // but 0.29 * 100 = 28.999999999999996 must give 29).
  return std::min<int64_t>(
      total, static_cast<int64_t>(std::floor(sparsity * static_cast<double>(total) + 1e-6)));
}

Tensor pruneByScore(const Tensor &w, std::span<const float> scores, const Pattern &p, Scope scope) {
  const int64_t K = w.shape()[0], N = w.shape()[1];
  Tensor out = Tensor::fromBytes(DType::F32, w.shape(), w.data(), w.nbytes());
  std::span<float> o = out.mutableView<float>();
  if (!p.nm() && scope == Scope::Weight) {
    for (int64_t i : smallest(scores, pruneCount(p.sparsity, K * N)))
      o[static_cast<size_t>(i)] = 0.f;
    return out;
  }
  // Per column: the whole column (Scope::Output) or each group of m rows (N:M).
  const int64_t group = p.nm() ? p.m : K;
  std::vector<float> col(static_cast<size_t>(group));
  std::vector<int64_t> idx;
  for (int64_t j = 0; j < N; ++j)
    for (int64_t k0 = 0; k0 < K; k0 += group) {
      const int64_t len = std::min(group, K - k0);
      for (int64_t k = 0; k < len; ++k)
        col[static_cast<size_t>(k)] = scores[static_cast<size_t>((k0 + k) * N + j)];
      const int64_t count = p.nm() ? std::max<int64_t>(0, len - p.n) : pruneCount(p.sparsity, len);
      smallestInto(std::span<const float>(col.data(), static_cast<size_t>(len)), count, idx);
      for (int64_t k : idx)
        o[static_cast<size_t>((k0 + k) * N + j)] = 0.f;
    }
  return out;
}

Tensor pruneMagnitude(const Tensor &w, const Pattern &p, Scope scope) {
  std::span<const float> v = w.view<float>();
  std::vector<float> scores(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    scores[i] = std::fabs(v[i]);
  return pruneByScore(w, scores, p, scope);
}

int64_t countZeros(const Tensor &t) {
  std::span<const float> v = t.view<float>();
  return static_cast<int64_t>(std::count(v.begin(), v.end(), 0.f));
}

double zeroFraction(const Tensor &t) {
  const int64_t n = t.numel();
  return n ? static_cast<double>(countZeros(t)) / static_cast<double>(n) : 0.0;
}

bool satisfiesNm(const Tensor &w, int64_t n, int64_t m) {
  const int64_t K = w.shape()[0], N = w.shape()[1];
  std::span<const float> v = w.view<float>();
  for (int64_t j = 0; j < N; ++j)
    for (int64_t k0 = 0; k0 < K; k0 += m) {
      int64_t nonzero = 0;
      for (int64_t k = k0; k < std::min(k0 + m, K); ++k)
        nonzero += v[static_cast<size_t>(k * N + j)] != 0.f;
      if (nonzero > n)
        return false;
    }
  return true;
}

std::string PruneStats::summary() const {
  return fmt::format(
      "{} weights{}, {} of {} parameters zero ({:.2f}%), per weight {:.2f}%..{:.2f}%; "
      "skipped: {}",
      weights, gemms ? fmt::format(" ({} Gemms made MatMul + Add)", gemms) : std::string(), zeros,
      params, params ? 100.0 * zeros / static_cast<double>(params) : 0.0,
      weights ? 100 * minSparsity : 0.0, weights ? 100 * maxSparsity : 0.0, skips.summary());
}

std::vector<quantpass::MatMulWeight> collectWeights(Graph &g, PruneStats &st) {
  st.gemms = quantpass::gemmsToMatMuls(g, st.skips);
  return quantpass::findMatMulWeights(g, /*minDim=*/1, st.skips);
}

void installPruned(const quantpass::MatMulWeight &w, Tensor pruned, PruneStats &st) {
  const int64_t zeros = countZeros(pruned), n = pruned.numel();
  const double z = n ? static_cast<double>(zeros) / static_cast<double>(n) : 0.0;
  st.weights += 1;
  st.params += n;
  st.zeros += zeros;
  st.minSparsity = std::min(st.minSparsity, z);
  st.maxSparsity = std::max(st.maxSparsity, z);
  // Same value, name and position; drop the original now (and its mapped pages), so peak
  // memory follows one layer.
  const std::shared_ptr<Tensor> original = w.weight->constant();
  pruned = quantpass::spillLikeOriginal(std::move(pruned), *original);
  w.weight->setConstant(std::make_shared<Tensor>(std::move(pruned)));
  if (original->isMapped() && original.use_count() == 1)
    original->mapping()->release(original->mappingOffset(), original->nbytes());
}

PreservedAnalyses finish(AnalysisManager &am, const std::string &head, const PruneStats &st,
                         const std::string &extra) {
  am.context().reportLines.push_back(fmt::format("{}: {}{}", head, st.summary(), extra));
  return st.weights == 0 && st.gemms == 0 ? PreservedAnalyses::all() : PreservedAnalyses::none();
}

} // namespace llmopt::prunepass

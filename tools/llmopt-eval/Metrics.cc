// Quality metrics for llmopt-eval (see Metrics.h).
#include "tools/llmopt-eval/Metrics.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <thread>

namespace llmopt::eval {

std::vector<Window> planWindows(int64_t numTokens, int64_t context, int64_t stride) {
  assert(context >= 2 && stride >= 1 && stride <= context);
  std::vector<Window> out;
  if (numTokens < 2)
    return out;
  if (numTokens < context)
    return {Window{0, numTokens, 1}};
  int64_t scoredUpTo = 0; // One past the last token already scored.
  for (int64_t begin = 0; begin + context <= numTokens; begin += stride) {
    int64_t from = std::max<int64_t>(1, scoredUpTo - begin);
    out.push_back(Window{begin, context, from});
    scoredUpTo = begin + context;
  }
  return out;
}

void LogitStats::merge(const LogitStats &o) {
  count += o.count;
  nll += o.nll;
  refNll += o.refNll;
  kl += o.kl;
  top1Agree += o.top1Agree;
  maxAbsDiff = std::max(maxAbsDiff, o.maxAbsDiff);
}

double LogitStats::perplexity() const { return count ? std::exp(nll / count) : 0.0; }
double LogitStats::refPerplexity() const { return count ? std::exp(refNll / count) : 0.0; }

void logSoftmax(std::span<const float> logits, std::vector<double> &out) {
  out.resize(logits.size());
  double m = -std::numeric_limits<double>::infinity();
  for (float x : logits)
    m = std::max(m, static_cast<double>(x));
  double sum = 0;
  for (float x : logits)
    sum += std::exp(static_cast<double>(x) - m);
  double lse = m + std::log(sum);
  for (size_t i = 0; i < logits.size(); ++i)
    out[i] = static_cast<double>(logits[i]) - lse;
}

namespace {

size_t argmax(std::span<const float> v) {
  return static_cast<size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

/// Scores rows [lo, hi) (row r predicts ids[r + 1]).
LogitStats scoreRows(std::span<const float> logits, std::span<const float> ref,
                     std::span<const int64_t> ids, int64_t vocab, int64_t lo, int64_t hi) {
  LogitStats s;
  std::vector<double> lp, lq;
  for (int64_t r = lo; r < hi; ++r) {
    auto row = logits.subspan(r * vocab, vocab);
    int64_t target = ids[r + 1];
    logSoftmax(row, lp);
    s.nll -= lp[target];
    ++s.count;
    if (ref.empty())
      continue;
    auto rrow = ref.subspan(r * vocab, vocab);
    logSoftmax(rrow, lq);
    s.refNll -= lq[target];
    double kl = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      kl += std::exp(lq[v]) * (lq[v] - lp[v]);
      s.maxAbsDiff = std::max(s.maxAbsDiff, std::fabs(static_cast<double>(row[v]) - rrow[v]));
    }
    s.kl += kl;
    s.top1Agree += argmax(row) == argmax(rrow);
  }
  return s;
}

} // namespace

LogitStats scoreWindow(std::span<const float> logits, std::span<const float> ref,
                       std::span<const int64_t> ids, int64_t vocab, const Window &w, int threads) {
  // Row r of the logits predicts token r + 1; the scored targets are
  // [scoreFrom, length).
  int64_t lo = w.scoreFrom - 1, hi = w.length - 1;
  int64_t rows = hi - lo;
  int n = static_cast<int>(std::clamp<int64_t>(threads, 1, std::max<int64_t>(rows / 16, 1)));
  std::vector<LogitStats> parts(n);
  std::vector<std::thread> pool;
  for (int t = 0; t < n; ++t) {
    int64_t a = lo + rows * t / n, b = lo + rows * (t + 1) / n;
    auto work = [&, t, a, b] { parts[t] = scoreRows(logits, ref, ids, vocab, a, b); };
    if (t + 1 == n)
      work();
    else
      pool.emplace_back(work);
  }
  for (auto &th : pool)
    th.join();
  LogitStats total;
  for (const LogitStats &p : parts) // Fixed order: results do not depend on thread timing.
    total.merge(p);
  return total;
}

namespace {

std::vector<std::vector<double>> unitRows(const std::vector<std::vector<float>> &x) {
  std::vector<std::vector<double>> out;
  for (const auto &row : x) {
    double n = 0;
    for (float v : row)
      n += static_cast<double>(v) * v;
    n = std::sqrt(n);
    std::vector<double> u(row.size());
    for (size_t i = 0; i < row.size(); ++i)
      u[i] = n > 0 ? row[i] / n : 0.0;
    out.push_back(std::move(u));
  }
  return out;
}

double dot(const std::vector<double> &a, const std::vector<double> &b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    s += a[i] * b[i];
  return s;
}

/// For each row, the index of its most cosine-similar other row (-1 for a
/// single row).
std::vector<int64_t> nearest(const std::vector<std::vector<double>> &u) {
  std::vector<int64_t> nn(u.size(), -1);
  for (size_t i = 0; i < u.size(); ++i) {
    double best = -std::numeric_limits<double>::infinity();
    for (size_t j = 0; j < u.size(); ++j) {
      if (j == i)
        continue;
      double c = dot(u[i], u[j]);
      if (c > best) {
        best = c;
        nn[i] = static_cast<int64_t>(j);
      }
    }
  }
  return nn;
}

} // namespace

EmbedStats compareEmbeddings(const std::vector<std::vector<float>> &model,
                             const std::vector<std::vector<float>> &ref) {
  assert(model.size() == ref.size());
  EmbedStats s;
  if (model.empty())
    return s;
  auto um = unitRows(model), ur = unitRows(ref);
  s.cosMin = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < um.size(); ++i) {
    double c = dot(um[i], ur[i]);
    s.cosMean += c;
    s.cosMin = std::min(s.cosMin, c);
  }
  s.cosMean /= static_cast<double>(um.size());
  auto nm = nearest(um), nr = nearest(ur);
  int64_t agree = 0;
  for (size_t i = 0; i < nm.size(); ++i)
    agree += nm[i] == nr[i];
  s.nnAgree = static_cast<double>(agree) / static_cast<double>(nm.size());
  return s;
}

} // namespace llmopt::eval

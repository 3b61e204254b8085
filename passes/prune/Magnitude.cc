// prune-magnitude: option parsing, per-weight and global magnitude pruning.
#include "passes/prune/Magnitude.h"

#include <array>
#include <bit>

#include "passes/prune/PruneCommon.h"

namespace llmopt {

Expected<PruneMagnitudeOptions> parsePruneMagnitudeOptions(const PassOptionList &opts) {
  OptionReader r("prune-magnitude", opts);
  PruneMagnitudeOptions o;
  LLMOPT_ASSIGN_OR_RETURN(o.sparsity, prunepass::readSparsity(r, "prune-magnitude"));
  LLMOPT_ASSIGN_OR_RETURN(o.scope, r.getChoice("scope", {"layer", "global"}, "layer"));
  LLMOPT_RETURN_IF_ERROR(r.finish());
  return o;
}

namespace prunepass {
namespace {

/// |x| as an integer key that sorts like |x| (NaN above infinity).
uint32_t magnitudeKey(float x) { return std::bit_cast<uint32_t>(x) & 0x7fffffffu; }

/// The key of the `count`-th smallest (0-based) |w| over `weights`, and how many keys lie
/// below it: two histogram passes, on the high and then the low 16 bits.
std::pair<uint32_t, int64_t> radixSelect(const std::vector<const Tensor *> &weights,
                                         int64_t count) {
  std::vector<int64_t> hist(1 << 16);
  auto histogram = [&](auto &&bucketOf) {
    std::fill(hist.begin(), hist.end(), 0);
    for (const Tensor *w : weights)
      for (float x : w->view<float>())
        if (const int64_t b = bucketOf(magnitudeKey(x)); b >= 0)
          ++hist[static_cast<size_t>(b)];
  };
  // The bucket where the running count passes `count`; adds what lies below it to `below`.
  auto pick = [&](int64_t &below) {
    size_t b = 0;
    while (below + hist[b] <= count)
      below += hist[b++];
    return static_cast<uint32_t>(b);
  };
  int64_t below = 0;
  histogram([](uint32_t k) { return static_cast<int64_t>(k >> 16); });
  const uint32_t high = pick(below);
  histogram([&](uint32_t k) { return (k >> 16) == high ? static_cast<int64_t>(k & 0xffffu) : -1; });
  const uint32_t low = pick(below);
  return {(high << 16) | low, below};
}

} // namespace

MagnitudeCut globalMagnitudeCut(const std::vector<const Tensor *> &weights, double sparsity) {
  int64_t total = 0;
  for (const Tensor *w : weights)
    total += w->numel();
  const int64_t count = pruneCount(sparsity, total);
  if (count >= total) // only with no weights: sparsity < 1
    return {0xffffffffu, 0};
  auto [key, below] = radixSelect(weights, count);
  return {key, count - below};
}

Tensor applyMagnitudeCut(const Tensor &w, MagnitudeCut &cut) {
  Tensor t = Tensor::fromBytes(DType::F32, w.shape(), w.data(), w.nbytes());
  for (float &x : t.mutableView<float>()) {
    const uint32_t k = magnitudeKey(x);
    if (k < cut.key || (k == cut.key && cut.ties > 0)) {
      cut.ties -= k == cut.key;
      x = 0.f;
    }
  }
  return t;
}

} // namespace prunepass

Expected<PreservedAnalyses> PruneMagnitudePass::run(Model &m, AnalysisManager &am) {
  Graph &g = m.graph();
  prunepass::PruneStats st;
  const std::vector<quantpass::MatMulWeight> weights = prunepass::collectWeights(g, st);
  prunepass::Pattern p;
  p.sparsity = opts_.sparsity;
  if (opts_.scope == "global") {
    std::vector<const Tensor *> ts;
    for (const quantpass::MatMulWeight &w : weights)
      ts.push_back(w.weight->constant().get());
    prunepass::MagnitudeCut cut = prunepass::globalMagnitudeCut(ts, opts_.sparsity);
    for (size_t i = 0; i < weights.size(); ++i)
      prunepass::installPruned(weights[i], prunepass::applyMagnitudeCut(*ts[i], cut), st);
  } else {
    for (const quantpass::MatMulWeight &w : weights)
      prunepass::installPruned(w, prunepass::pruneMagnitude(*w.weight->constant(), p), st);
  }
  return prunepass::finish(am,
                           fmt::format("prune-magnitude ({}, {} scope)", p.describe(), opts_.scope),
                           st, "; no calibration (scores |w|)");
}

} // namespace llmopt

// quant-mixed's format allocation: a Lagrangian knapsack over (bytes, error) per weight.
#include "passes/quant/QuantMixed.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace llmopt {

using Choice = quantpass::FormatChoice;

bool quantpass::allocateFormats(std::vector<FormatChoice> &cs, double budget) {
  if (cs.empty())
    return budget >= 0;
  auto pickAll = [&](double lambda) {
    double total = 0;
    for (Choice &c : cs) {
      double best = std::numeric_limits<double>::infinity();
      for (size_t j = 0; j < c.bytes.size(); ++j) {
        const double v = c.error[j] + lambda * static_cast<double>(c.bytes[j]);
        if (v < best || (v == best && c.bytes[j] < c.bytes[static_cast<size_t>(c.picked)])) {
          best = v;
          c.picked = static_cast<int64_t>(j);
        }
      }
      total += static_cast<double>(c.bytes[static_cast<size_t>(c.picked)]);
    }
    return total;
  };
  double minTotal = 0;
  for (const Choice &c : cs)
    minTotal += static_cast<double>(*std::min_element(c.bytes.begin(), c.bytes.end()));
  if (minTotal > budget)
    return false;
  // lambda = 0 picks the least error; if that fits, done. Else bisect on a log scale.
  if (pickAll(0) <= budget)
    return true;
  double lo = 0, hi = 1e-12;
  while (pickAll(hi) > budget)
    hi *= 4;
  for (int it = 0; it < 200; ++it) {
    const double mid = lo == 0 ? hi / 2 : std::sqrt(lo * hi);
    if (pickAll(mid) > budget)
      lo = mid;
    else
      hi = mid;
    if (lo > 0 && hi / lo < 1 + 1e-9)
      break;
  }
  double used = pickAll(hi);
  // Spend what is left on the upgrades that save the most error per byte.
  for (;;) {
    double bestGain = 0;
    Choice *bestC = nullptr;
    int64_t bestJ = -1;
    for (Choice &c : cs) {
      const size_t p = static_cast<size_t>(c.picked);
      for (size_t j = 0; j < c.bytes.size(); ++j) {
        const double extra = static_cast<double>(c.bytes[j] - c.bytes[p]);
        const double saved = c.error[p] - c.error[j];
        if (saved <= 0 || used + extra > budget)
          continue;
        const double gain = extra <= 0 ? std::numeric_limits<double>::infinity() : saved / extra;
        if (gain > bestGain) {
          bestGain = gain;
          bestC = &c;
          bestJ = static_cast<int64_t>(j);
        }
      }
    }
    if (!bestC)
      break;
    used += static_cast<double>(bestC->bytes[static_cast<size_t>(bestJ)] -
                                bestC->bytes[static_cast<size_t>(bestC->picked)]);
    bestC->picked = bestJ;
  }
  // The Lagrangian is not exact for a discrete knapsack: never return worse than giving
  // every weight the same candidate, when that fits.
  double mixed = 0;
  for (const Choice &c : cs)
    mixed += c.error[static_cast<size_t>(c.picked)];
  const size_t formats = cs.front().bytes.size();
  for (size_t j = 0; j < formats; ++j) {
    double bytes = 0, err = 0;
    for (const Choice &c : cs) {
      bytes += static_cast<double>(c.bytes[j]);
      err += c.error[j];
    }
    if (bytes <= budget && err < mixed) {
      mixed = err;
      for (Choice &c : cs)
        c.picked = static_cast<int64_t>(j);
    }
  }
  return true;
}

} // namespace llmopt

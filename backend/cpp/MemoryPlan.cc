// Greedy-by-size offset assignment for the activation arena.
#include "backend/cpp/MemoryPlan.h"

#include <algorithm>
#include <numeric>

namespace llmopt::codegen {

int64_t planMemory(std::vector<PlannedBuffer> &buffers) {
  std::vector<size_t> order(buffers.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return buffers[a].width > buffers[b].width;
  });
  std::vector<size_t> placed;
  int64_t arena = 0;
  for (size_t i : order) {
    PlannedBuffer &b = buffers[i];
    // Intervals [offset, offset+width) of placed buffers live at the same time, by offset.
    std::vector<std::pair<int64_t, int64_t>> busy;
    for (size_t j : placed) {
      const PlannedBuffer &o = buffers[j];
      if (o.def <= b.lastUse && b.def <= o.lastUse)
        busy.push_back({o.offset, o.offset + o.width});
    }
    std::sort(busy.begin(), busy.end());
    int64_t at = 0;
    for (const auto &[lo, hi] : busy) {
      if (at + b.width <= lo)
        break;
      at = std::max(at, hi);
    }
    b.offset = at;
    arena = std::max(arena, at + b.width);
    placed.push_back(i);
  }
  return arena;
}

} // namespace llmopt::codegen

// Static memory plan for activations: buffers with live ranges get offsets in one arena.
#pragma once

#include <cstdint>
#include <vector>

namespace llmopt::codegen {

/// One activation buffer: `width` floats per token, live from step `def` to step
/// `lastUse` (inclusive).
struct PlannedBuffer {
  int64_t width = 0;
  int def = 0, lastUse = 0;
  int64_t offset = -1; ///< set by planMemory: floats per token from the arena start
};

/// Greedy by size (as TFLite's arena planner): buffers are placed widest first, each at
/// the lowest offset that overlaps no already placed buffer whose live range intersects
/// its own. Returns the arena width (floats per token). Buffers whose ranges are disjoint
/// may share memory; two live at once never do.
int64_t planMemory(std::vector<PlannedBuffer> &buffers);

} // namespace llmopt::codegen

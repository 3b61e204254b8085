// distill-student: block selection and width pruning through prune-struct (see
// DistillStudent.h).
#include "passes/distill/DistillStudent.h"

#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "passes/distill/DistillCommon.h"
#include "passes/prune/PruneStruct.h"

namespace llmopt {

namespace {
constexpr const char *kPass = "distill-student";

/// Blocks kept for ratio R of L: n = L - round(R * L) (at least 1), block floor(i * L / n).
std::vector<int64_t> evenlySpaced(double ratio, int64_t L) {
  const int64_t n = std::max<int64_t>(1, L - std::llround(ratio * static_cast<double>(L)));
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i)
    out.push_back(i * L / n);
  return out;
}
} // namespace

Expected<DistillStudentOptions> parseDistillStudentOptions(const PassOptionList &opts) {
  OptionReader r(kPass, opts);
  DistillStudentOptions o;
  LLMOPT_ASSIGN_OR_RETURN(o.keep, r.getIntList("keep", {}));
  LLMOPT_ASSIGN_OR_RETURN(o.ratio, r.getDouble("ratio", -1, 0.0, 1.0));
  LLMOPT_ASSIGN_OR_RETURN(o.width, r.getDouble("width", 0, 0.0, 1.0));
  LLMOPT_RETURN_IF_ERROR(r.finish());
  if (!o.keep.empty() && o.ratio >= 0)
    return errorf("pass '{}': give either keep= or ratio=, not both", kPass);
  if (o.ratio >= 1.0)
    return errorf("pass '{}': option 'ratio' has value '{}', expected the fraction of blocks to "
                  "drop, in [0, 1)", kPass, o.ratio);
  if (o.width >= 1.0)
    return errorf("pass '{}': option 'width' has value '{}', expected the fraction of parameters "
                  "prune-struct removes from heads and channels, in [0, 1)", kPass, o.width);
  if (o.keep.empty() && o.ratio < 0 && o.width == 0)
    return errorf("pass '{}': nothing to do: give keep=0,2,.. or ratio=R (blocks) and/or width=W",
                  kPass);
  return o;
}

Expected<PreservedAnalyses> DistillStudentPass::run(Model &m, AnalysisManager &am) {
  LLMOPT_ASSIGN_OR_RETURN(distill::Blocks blocks, distill::findBlocks(m, kPass));
  const int64_t L = static_cast<int64_t>(blocks.layers.size());
  std::vector<int64_t> keep = opts_.keep;
  if (opts_.ratio >= 0)
    keep = evenlySpaced(opts_.ratio, L);
  if (keep.empty())
    for (int64_t i = 0; i < L; ++i)
      keep.push_back(i);
  LLMOPT_RETURN_IF_ERROR(distill::checkIndices(keep, L, kPass, "keep"));
  std::vector<std::string> drop, map;
  for (int64_t i = 0, s = 0; i < L; ++i) {
    if (s < static_cast<int64_t>(keep.size()) && keep[static_cast<size_t>(s)] == i)
      map.push_back(fmt::format("{}:{}", s++, i));
    else
      drop.push_back(fmt::format("layer{}", i));
  }
  if (!drop.empty()) {
    PruneStructOptions po;
    po.heads = po.channels = false;
    po.layers = true;
    po.unitText = "layer";
    po.drop = drop;
    LLMOPT_ASSIGN_OR_RETURN(PreservedAnalyses pa, PruneStructPass(po).run(m, am));
    (void)pa;
  }
  if (opts_.width > 0) {
    PruneStructOptions po;
    po.ratio = opts_.width;
    LLMOPT_ASSIGN_OR_RETURN(PreservedAnalyses pa, PruneStructPass(po).run(m, am));
    (void)pa;
  }
  m.setMetadata(distill::kMetaLayerMap, fmt::format("{}", fmt::join(map, ",")));
  m.setMetadata(distill::kMetaBlocks, std::to_string(L));
  am.context().reportLines.push_back(fmt::format(
      "{}: kept blocks {} of {} (student:teacher {}){}", kPass, distill::joinInts(keep), L,
      fmt::join(map, ","),
      opts_.width > 0 ? fmt::format("; width: prune-struct ratio {:g} (line above)", opts_.width)
                      : std::string()));
  return PreservedAnalyses::none();
}

} // namespace llmopt

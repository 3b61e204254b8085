// distill-targets: teacher soft labels streamed to disk (see DistillTargets.h).
#include "passes/distill/DistillTargets.h"

#include <chrono>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "backend/interp/Interpreter.h"
#include "ir/Progress.h"
#include "passes/calib/Calibration.h"
#include "passes/distill/DistillCommon.h"
#include "passes/distill/SoftLabels.h"

namespace llmopt {

namespace {
constexpr const char *kPass = "distill-targets";
} // namespace

Expected<DistillTargetsOptions> parseDistillTargetsOptions(const PassOptionList &opts) {
  OptionReader r(kPass, opts);
  DistillTargetsOptions o;
  LLMOPT_ASSIGN_OR_RETURN(o.topk, r.getInt("topk", 32, 1, 1 << 20));
  LLMOPT_ASSIGN_OR_RETURN(o.temperature, r.getDouble("temperature", 2.0, 1e-3, 1e3));
  LLMOPT_ASSIGN_OR_RETURN(o.out, r.getString("out", ""));
  LLMOPT_RETURN_IF_ERROR(r.finish());
  if (o.out.empty())
    return errorf("pass '{}': option 'out' is required: the soft-label file to write "
                  "(out=FILE)", kPass);
  return o;
}

uint64_t modelWeightsHash(const Model &m) {
  // FNV-1a's step over 64-bit words: each constant's name hash, then its tensor's hash
  // (dtype, shape and bytes).
  uint64_t h = 1469598103934665603ull;
  for (const Value *c : m.graph().constants()) {
    const std::string &n = c->name();
    for (uint64_t word : {Tensor::fromBytes(DType::U8, {static_cast<int64_t>(n.size())}, n.data(), n.size()).hash(),
                          c->constant()->hash()})
      h = (h ^ word) * 1099511628211ull;
  }
  return h;
}

Expected<PreservedAnalyses> DistillTargetsPass::run(Model &m, AnalysisManager &am) {
  const auto start = std::chrono::steady_clock::now();
  PassContext &ctx = am.context();
  LLMOPT_ASSIGN_OR_RETURN(auto windows, distill::calibWindows(ctx, kPass, "the text to label"));
  Graph &g = m.graph();
  LLMOPT_ASSIGN_OR_RETURN(Value *logits, distill::findLogits(g, kPass));
  size_t outIndex = 0;
  while (g.outputs()[outIndex] != logits)
    ++outIndex;
  std::unique_ptr<distill::SoftLabelWriter> w;
  Progress progress(kPass, static_cast<int64_t>(windows.size()), "windows");
  interp::RunOptions ro;
  ro.threads = ctx.threads;
  for (size_t i = 0; i < windows.size(); ++i) {
    LLMOPT_ASSIGN_OR_RETURN(std::vector<Tensor> inputs, calib::makeInputs(g, windows[i]));
    LLMOPT_ASSIGN_OR_RETURN(std::vector<Tensor> outs, interp::run(g, inputs, ro));
    const Tensor &t = outs[outIndex];
    const int64_t n = static_cast<int64_t>(windows[i].size());
    if (t.dtype() != DType::F32 || t.rank() != 3 || t.shape()[0] != 1 || t.shape()[1] != n)
      return errorf("pass '{}': output '{}' is {} [{}], expected f32 logits [1, {}, vocab]", kPass,
                    logits->name(), dtypeName(t.dtype()), fmt::join(t.shape(), ", "), n);
    if (!w) {
      distill::SoftLabelHeader h;
      h.vocab = static_cast<uint32_t>(t.shape()[2]);
      h.topk = static_cast<uint32_t>(opts_.topk);
      h.temperature = static_cast<float>(opts_.temperature);
      h.modelHash = modelWeightsHash(m);
      if (opts_.topk > t.shape()[2])
        return errorf("pass '{}': option 'topk' has value {}, but the vocabulary has {} entries",
                      kPass, opts_.topk, t.shape()[2]);
      LLMOPT_ASSIGN_OR_RETURN(w, distill::SoftLabelWriter::create(opts_.out, h));
    }
    LLMOPT_RETURN_IF_ERROR(w->addWindow(windows[i], t.view<float>()));
    progress.update(static_cast<int64_t>(i + 1));
  }
  const distill::SoftLabelHeader h = w->header();
  LLMOPT_RETURN_IF_ERROR(w->finish());
  ctx.reportLines.push_back(fmt::format(
      "{}: wrote {}: {} windows, {} positions, top-{} log-probs at T={:g} over a vocabulary of {}, "
      "model hash {:016x}, {} bytes; {:.1f} s",
      kPass, opts_.out, h.windows, h.positions, h.topk, h.temperature, h.vocab, h.modelHash,
      distill::kSoftLabelHeaderBytes + h.positions * h.recordBytes(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()));
  return PreservedAnalyses::all();
}

} // namespace llmopt

// The distill-* passes' shared helpers (see DistillCommon.h).
#include "passes/distill/DistillCommon.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "passes/analysis/ShapeInference.h"
#include "passes/calib/Calibration.h"

namespace llmopt::distill {

Expected<Blocks> findBlocks(Model &m, const std::string &pass) {
  structprune::TypeSnapshot snap(m.graph());
  if (Expected<ShapeInferenceResult> r = inferShapes(m); !r) {
    snap.restore();
    return r.status().withContext(fmt::format("pass '{}': shape inference", pass));
  }
  Blocks b;
  b.layers = structprune::findLayers(m.graph());
  for (const structprune::Layer &l : b.layers) {
    b.outputs.push_back(l.branches.back().add->output());
    b.types.push_back(b.outputs.back()->type());
  }
  snap.restore();
  if (b.layers.empty())
    return errorf("pass '{}': found no transformer blocks (no chain of residual Adds "
                  "out = Add(stream, f(stream)))", pass);
  return b;
}

Expected<Value *> findLogits(Graph &g, const std::string &pass) {
  Value *found = nullptr;
  int candidates = 0;
  for (Value *o : g.outputs()) {
    if (o->name() == "logits")
      return o;
    if (isFloat(o->type().elem) && o->type().hasRank() && o->type().rank() == 3) {
      found = o;
      ++candidates;
    }
  }
  if (candidates == 1)
    return found;
  return errorf("pass '{}': cannot tell which graph output holds the logits: none is named "
                "'logits' and {} are float tensors of rank 3", pass, candidates);
}

Status checkIndices(const std::vector<int64_t> &idx, int64_t count, const std::string &pass,
                    const std::string &key) {
  for (size_t i = 0; i < idx.size(); ++i) {
    if (idx[i] < 0 || idx[i] >= count)
      return errorf("pass '{}': option '{}' names block {}, but the model has {} blocks "
                    "(0..{})", pass, key, idx[i], count, count - 1);
    if (i > 0 && idx[i] <= idx[i - 1])
      return errorf("pass '{}': option '{}' has value '{}', expected increasing block indices "
                    "without repeats", pass, key, joinInts(idx));
  }
  return Status::ok();
}

Expected<std::vector<std::vector<int64_t>>> calibWindows(const PassContext &ctx, const std::string &pass,
                                                         const std::string &purpose) {
  if (ctx.calibPath.empty())
    return errorf("pass '{}': needs {}: pass --calib FILE (text with --tokenizer, or a .ids file "
                  "of token ids)", pass, purpose);
  return calib::loadWindows(ctx);
}

std::string joinInts(const std::vector<int64_t> &v) { return fmt::format("{}", fmt::join(v, ",")); }

} // namespace llmopt::distill

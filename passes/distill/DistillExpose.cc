// distill-expose: hidden states and logits as extra graph outputs (see DistillExpose.h).
#include "passes/distill/DistillExpose.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "passes/distill/DistillCommon.h"

namespace llmopt {

namespace {
constexpr const char *kPass = "distill-expose";

/// `%name = Identity(%v)` listed as a graph output of type `t`.
Status addExposed(Graph &g, Value *v, const std::string &name, const Type &t) {
  if (g.findValue(name))
    return errorf("pass '{}': the model already has a value named '{}' (run distill-expose once)",
                  kPass, name);
  Node *n = g.addNode(OpKind::Identity, {v}, 1, "distill_expose/" + name);
  n->output()->setName(name);
  n->output()->setType(t);
  g.addOutput(n->output());
  return Status::ok();
}
} // namespace

Expected<DistillExposeOptions> parseDistillExposeOptions(const PassOptionList &opts) {
  OptionReader r(kPass, opts);
  DistillExposeOptions o;
  LLMOPT_ASSIGN_OR_RETURN(std::string hidden, r.getString("hidden", "all"));
  LLMOPT_ASSIGN_OR_RETURN(o.logits, r.getFlag("logits", true));
  if (hidden == "all" || hidden == "none") {
    o.allHidden = hidden == "all";
  } else {
    o.allHidden = false;
    Expected<std::vector<int64_t>> idx = r.getIntList("hidden", {});
    if (!idx || idx->empty())
      return errorf("pass '{}': option 'hidden' has value '{}', expected all, none or a "
                    "comma-separated list of block indices (0,3,5)", kPass, hidden);
    o.hidden = *idx;
  }
  LLMOPT_RETURN_IF_ERROR(r.finish());
  if (!o.allHidden && o.hidden.empty() && !o.logits)
    return errorf("pass '{}': hidden=none with logits=false exposes nothing", kPass);
  return o;
}

Expected<PreservedAnalyses> DistillExposePass::run(Model &m, AnalysisManager &am) {
  Graph &g = m.graph();
  LLMOPT_ASSIGN_OR_RETURN(distill::Blocks blocks, distill::findBlocks(m, kPass));
  const int64_t count = static_cast<int64_t>(blocks.outputs.size());
  std::vector<int64_t> idx = opts_.hidden;
  if (opts_.allHidden)
    for (int64_t i = 0; i < count; ++i)
      idx.push_back(i);
  LLMOPT_RETURN_IF_ERROR(distill::checkIndices(idx, count, kPass, "hidden"));
  Value *logits = nullptr;
  if (opts_.logits) {
    LLMOPT_ASSIGN_OR_RETURN(logits, distill::findLogits(g, kPass));
  }
  std::vector<std::string> names;
  for (int64_t i : idx) {
    names.push_back(fmt::format("teacher.hidden.{}", i));
    const size_t k = static_cast<size_t>(i);
    LLMOPT_RETURN_IF_ERROR(addExposed(g, blocks.outputs[k], names.back(), blocks.types[k]));
  }
  if (logits) {
    names.push_back("teacher.logits");
    LLMOPT_RETURN_IF_ERROR(addExposed(g, logits, names.back(), logits->type()));
  }
  m.setMetadata(distill::kMetaOutputs, fmt::format("{}", fmt::join(names, ",")));
  m.setMetadata(distill::kMetaHidden, distill::joinInts(idx));
  m.setMetadata(distill::kMetaBlocks, std::to_string(count));
  am.context().reportLines.push_back(fmt::format(
      "{}: {} blocks found; exposed {}", kPass, count, fmt::join(names, ", ")));
  return PreservedAnalyses::none();
}

} // namespace llmopt

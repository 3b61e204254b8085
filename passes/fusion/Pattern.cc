// The non-template parts of the fusion matcher.
#include "passes/fusion/Pattern.h"

namespace llmopt::fusion {

int useCount(const Value *v) {
  return static_cast<int>(v->uses().size()) + (v->isGraphOutput() ? 1 : 0);
}

std::optional<float> scalarValue(const Value *v) {
  if (!v->isConstant() || v->type().quant)
    return std::nullopt;
  const Tensor &t = *v->constant();
  if (t.numel() != 1 || !isFloat(t.dtype()))
    return std::nullopt;
  return static_cast<float>(t.getDouble(0));
}

std::optional<std::vector<int64_t>> reduceAxes(const Node &n) {
  if (n.hasAttr("axes"))
    return n.attrInts("axes");
  const Value *a = n.input(1);
  if (a && a->isConstant())
    return a->constant()->toInts();
  return std::nullopt;
}

bool reducesLastAxis(const Node &n) {
  if (n.attrInt("keepdims", 1) != 1)
    return false;
  auto axes = reduceAxes(n);
  if (!axes || axes->size() != 1)
    return false;
  if ((*axes)[0] == -1)
    return true;
  int64_t rank = n.input(0)->type().rank();
  return rank > 0 && (*axes)[0] == rank - 1;
}

bool lastAxisOnly(const Node &n, MatchLog &log) {
  return reducesLastAxis(n) ||
         log.fail(fmt::format("{} is not over the last axis only (keepdims)", n.opType()));
}

} // namespace llmopt::fusion

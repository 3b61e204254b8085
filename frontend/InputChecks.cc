// Input checks beyond the verifier: finite weights, known ai.onnx ops, a graph with outputs.
#include "frontend/InputChecks.h"

#include <cstring>

#include <fmt/format.h>
#include <onnx/defs/schema.h>

namespace llmopt {
namespace {

/// Non-finite test on the raw bits: all exponent bits set. `nan` also needs mantissa bits.
struct FloatBits {
  uint64_t exp, mant;
};

template <typename U>
int64_t firstNonFinite(const uint8_t *p, int64_t n, FloatBits fb, bool nanOnly, bool &isNan,
                       int64_t &count) {
  int64_t first = -1;
  for (int64_t i = 0; i < n; ++i) {
    U u;
    std::memcpy(&u, p + i * static_cast<int64_t>(sizeof(U)), sizeof(U));
    if ((u & fb.exp) != fb.exp)
      continue;
    const bool nan = (u & fb.mant) != 0;
    if (nanOnly && !nan)
      continue;
    if (first < 0) {
      first = i;
      isNan = nan;
    }
    ++count;
  }
  return first;
}

std::string indexText(int64_t flat, const std::vector<int64_t> &shape) {
  std::vector<int64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = shape[d] ? flat % shape[d] : 0;
    flat = shape[d] ? flat / shape[d] : 0;
  }
  return fmt::format("[{}]", fmt::join(idx, ", "));
}

Status checkFinite(const Value &c, const std::string &source) {
  const Tensor &t = *c.constant();
  if (c.type().quant)
    return Status::ok();
  const bool nanOnly = t.rank() < 2;
  const int64_t n = t.numel();
  bool isNan = false;
  int64_t count = 0, first = -1;
  switch (t.dtype()) {
  case DType::F32:
    first = firstNonFinite<uint32_t>(t.data(), n, {0x7f800000u, 0x007fffffu}, nanOnly, isNan, count);
    break;
  case DType::F64:
    first = firstNonFinite<uint64_t>(t.data(), n, {0x7ff0000000000000ull, 0x000fffffffffffffull},
                                     nanOnly, isNan, count);
    break;
  case DType::F16:
    first = firstNonFinite<uint16_t>(t.data(), n, {0x7c00u, 0x03ffu}, nanOnly, isNan, count);
    break;
  case DType::BF16:
    first = firstNonFinite<uint16_t>(t.data(), n, {0x7f80u, 0x007fu}, nanOnly, isNan, count);
    break;
  default:
    return Status::ok();
  }
  if (t.isMapped() && t.mapping())
    t.mapping()->release(t.mappingOffset(), t.nbytes());
  if (first < 0)
    return Status::ok();
  const double v = t.getDouble(first);
  return errorf("{}: tensor '{}': element {} is {} ({} non-finite of {} values); llmopt does not "
                "compress weights that are not finite numbers",
                source, c.name(), indexText(first, t.shape()), isNan ? "nan" : (v > 0 ? "inf" : "-inf"),
                count, n);
}

Status checkGraph(const Graph &g, const std::string &source, int64_t onnxOpset) {
  for (Value *c : g.constants())
    LLMOPT_RETURN_IF_ERROR(checkFinite(*c, source));
  for (const auto &n : g.nodes()) {
    if (onnxOpset > 0 && n->kind() == OpKind::Opaque && n->domain().empty() &&
        !onnx::OpSchemaRegistry::Schema(n->opType(), static_cast<int>(onnxOpset), ""))
      return errorf("{}: node '{}' ({}): unsupported op: ai.onnx has no op '{}' at opset {}",
                    source, n->name(), n->opType(), n->opType(), onnxOpset);
    for (Graph *sg : n->subgraphs())
      LLMOPT_RETURN_IF_ERROR(checkGraph(*sg, source, onnxOpset));
  }
  return Status::ok();
}

} // namespace

Status checkInputModel(const Model &m, const std::string &source) {
  const Graph &g = m.graph();
  if (g.outputs().empty())
    return errorf("{}: graph '{}' has no outputs ({} nodes): an empty model computes nothing",
                  source, g.name(), g.nodes().size());
  // Ops are checked only at opsets this libonnx knows, and not when the model brings
  // its own functions (a local function may live in the default domain).
  int64_t onnxOpset = 0;
  const auto &ranges = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
  auto known = ranges.find("");
  auto it = m.opsets.find("");
  if (it != m.opsets.end() && known != ranges.end() && it->second <= known->second.second &&
      m.functions.empty())
    onnxOpset = it->second;
  return checkGraph(g, source, onnxOpset);
}

} // namespace llmopt

// The op table generated from ir/Ops.def.
#include "ir/Op.h"

#include <array>
#include <cassert>
#include <string>
#include <unordered_map>

namespace llmopt {

static constexpr std::array<OpInfo, static_cast<size_t>(OpKind::NumOps)> kOps = {{
    {OpKind::Opaque, "", "<opaque>", 0, -1, 0, -1, "an op the IR does not know"},
#define LLMOPT_OP(ENUM, DOMAIN, NAME, MININ, MAXIN, MINOUT, MAXOUT, DOC)                           \
  {OpKind::ENUM, DOMAIN, NAME, MININ, MAXIN, MINOUT, MAXOUT, DOC},
#include "ir/Ops.def"
}};

// The table is indexed by OpKind: pin that the enum and the table stay in step.
static_assert(kOps.size() == static_cast<size_t>(OpKind::NumOps));
static_assert(kOps[static_cast<size_t>(OpKind::MatMul)].kind == OpKind::MatMul);
static_assert(kOps[static_cast<size_t>(OpKind::SimplifiedLayerNormalization)].kind ==
              OpKind::SimplifiedLayerNormalization);

const OpInfo &opInfo(OpKind k) {
  assert(k < OpKind::NumOps);
  return kOps[static_cast<size_t>(k)];
}

std::string_view canonicalDomain(std::string_view domain) {
  return domain == "ai.onnx" ? std::string_view() : domain;
}

OpKind lookupOp(std::string_view domain, std::string_view name) {
  static const std::unordered_map<std::string, OpKind> table = [] {
    std::unordered_map<std::string, OpKind> m;
    for (size_t i = 1; i < kOps.size(); ++i)
      m.emplace(std::string(kOps[i].domain) + "::" + std::string(kOps[i].name), kOps[i].kind);
    return m;
  }();
  auto it = table.find(std::string(canonicalDomain(domain)) + "::" + std::string(name));
  return it == table.end() ? OpKind::Opaque : it->second;
}

} // namespace llmopt

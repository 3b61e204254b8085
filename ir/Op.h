// Op identities: the OpKind enum generated from ir/Ops.def, and lookup by domain/name.
#pragma once

#include <cstdint>
#include <string_view>

namespace llmopt {

enum class OpKind : uint16_t {
  Opaque = 0, ///< An op the IR does not know; carried by domain and name.
#define LLMOPT_OP(ENUM, DOMAIN, NAME, MININ, MAXIN, MINOUT, MAXOUT, DOC) ENUM,
#include "ir/Ops.def"
  NumOps
};

/// What Ops.def says about one op.
struct OpInfo {
  OpKind kind;
  std::string_view domain;
  std::string_view name;
  int minInputs, maxInputs, minOutputs, maxOutputs;
  std::string_view doc;
};

/// The declaration of `k` (k != Opaque).
const OpInfo &opInfo(OpKind k);
/// Looks up an op; `ai.onnx` is treated as the default domain. Opaque if unknown.
OpKind lookupOp(std::string_view domain, std::string_view name);
/// Canonical domain spelling: "" for the ONNX default domain.
std::string_view canonicalDomain(std::string_view domain);

} // namespace llmopt

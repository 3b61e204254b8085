// The size/composition report behind `llmopt --report` and the `report` pass.
#pragma once

#include <map>
#include <string>

#include "ir/Graph.h"

namespace llmopt {

/// What a model holds: parameters and bytes by element type, nodes by op.
struct ModelStats {
  struct Bucket {
    int64_t params = 0;  ///< logical elements
    int64_t bytes = 0;   ///< stored bytes incl. scales / zero points
    int64_t tensors = 0;
  };
  std::map<std::string, Bucket> byDType; ///< key: dtype name ("i4 (quantized)")
  std::map<std::string, int64_t> opCounts;
  int64_t nodes = 0;
  int64_t params = 0;
  int64_t bytes = 0;
};

ModelStats collectStats(const Model &m);
/// Human-readable report (`title` names the model).
std::string formatReport(const Model &m, const ModelStats &s, const std::string &title);
/// The same as JSON (stable key order).
std::string formatReportJson(const Model &m, const ModelStats &s, const std::string &title);

} // namespace llmopt

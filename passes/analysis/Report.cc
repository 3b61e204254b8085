// Model statistics and their text / JSON rendering.
#include "passes/analysis/Report.h"

#include <algorithm>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace llmopt {

static void collect(const Graph &g, ModelStats &s) {
  for (Value *c : g.constants()) {
    const Tensor &t = *c->constant();
    std::string key(dtypeName(t.dtype()));
    int64_t bytes = static_cast<int64_t>(t.nbytes());
    if (c->type().quant) {
      key += " (quantized)";
      if (t.scales)
        bytes += static_cast<int64_t>(t.scales->nbytes());
      if (t.zeroPoints)
        bytes += static_cast<int64_t>(t.zeroPoints->nbytes());
    }
    auto &b = s.byDType[key];
    b.params += t.numel();
    b.bytes += bytes;
    b.tensors += 1;
    s.params += t.numel();
    s.bytes += bytes;
  }
  for (const auto &n : g.nodes()) {
    ++s.nodes;
    ++s.opCounts[n->qualifiedOpType()];
    for (Graph *sg : n->subgraphs())
      collect(*sg, s);
  }
}

ModelStats collectStats(const Model &m) {
  ModelStats s;
  collect(m.graph(), s);
  return s;
}

static std::string signature(const std::vector<Value *> &vs) {
  std::string out;
  for (const Value *v : vs)
    out += fmt::format("{}{}: {}", out.empty() ? "" : ", ", v->name(), toString(v->type()));
  return out;
}

static std::string opsetsText(const Model &m) {
  std::string out;
  for (const auto &[d, v] : m.opsets)
    out += fmt::format("{}{} {}", out.empty() ? "" : ", ", d.empty() ? "ai.onnx" : d, v);
  return out;
}

std::string formatReport(const Model &m, const ModelStats &s, const std::string &title) {
  std::string out = fmt::format("== llmopt report: {} ==\n", title);
  out += fmt::format("ir_version {}, opsets: {}\n", m.irVersion, opsetsText(m));
  out += fmt::format("inputs:  {}\n", signature(m.graph().inputs()));
  out += fmt::format("outputs: {}\n", signature(m.graph().outputs()));
  out += fmt::format("parameters: {} in {} bytes", s.params, s.bytes);
  if (s.params)
    out += fmt::format(" ({:.2f} bits per parameter)", 8.0 * static_cast<double>(s.bytes) /
                                                           static_cast<double>(s.params));
  out += "\n";
  out += fmt::format("  {:<18} {:>12} {:>14} {:>8} {:>7}\n", "dtype", "params", "bytes", "tensors",
                     "bytes%");
  for (const auto &[k, b] : s.byDType)
    out += fmt::format("  {:<18} {:>12} {:>14} {:>8} {:>6.1f}%\n", k, b.params, b.bytes, b.tensors,
                       s.bytes ? 100.0 * static_cast<double>(b.bytes) / static_cast<double>(s.bytes)
                               : 0.0);
  out += fmt::format("nodes: {}\n", s.nodes);
  std::vector<std::pair<std::string, int64_t>> ops(s.opCounts.begin(), s.opCounts.end());
  std::stable_sort(ops.begin(), ops.end(),
                   [](const auto &a, const auto &b) { return a.second > b.second; });
  for (const auto &[op, count] : ops)
    out += fmt::format("  {:<34} {:>6}\n", op, count);
  return out;
}

std::string formatReportJson(const Model &m, const ModelStats &s, const std::string &title) {
  nlohmann::ordered_json j;
  j["model"] = title;
  j["ir_version"] = m.irVersion;
  for (const auto &[d, v] : m.opsets)
    j["opsets"][d.empty() ? "ai.onnx" : d] = v;
  j["parameters"] = s.params;
  j["bytes"] = s.bytes;
  for (const auto &[k, b] : s.byDType)
    j["by_dtype"][k] = {{"params", b.params}, {"bytes", b.bytes}, {"tensors", b.tensors}};
  j["nodes"] = s.nodes;
  for (const auto &[op, c] : s.opCounts)
    j["ops"][op] = c;
  return j.dump(2) + "\n";
}

} // namespace llmopt

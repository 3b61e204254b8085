// Model statistics and their text / JSON rendering (the SVG chart is in ReportPlot.cc).
#include "passes/analysis/Report.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ir/QuantFormats.h"

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

namespace {

/// Zeros in a float tensor, read as bits (+0 and -0 both count).
template <typename U> int64_t zerosOf(const Tensor &t, U magnitudeMask) {
  int64_t z = 0;
  const uint8_t *p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) {
    U u;
    std::memcpy(&u, p + i * static_cast<int64_t>(sizeof(U)), sizeof(U));
    z += (u & magnitudeMask) == 0;
  }
  return z;
}

int64_t zeros(const Tensor &t) {
  switch (t.dtype()) {
  case DType::F32: return zerosOf<uint32_t>(t, 0x7fffffffu);
  case DType::F64: return zerosOf<uint64_t>(t, 0x7fffffffffffffffull);
  case DType::F16:
  case DType::BF16: return zerosOf<uint16_t>(t, 0x7fffu);
  case DType::String: return 0;
  default: {
    int64_t z = 0;
    for (int64_t i = 0; i < t.numel(); ++i)
      z += t.getDouble(i) == 0.0;
    return z;
  }
  }
}

std::string formatOf(const Value &c) {
  const Tensor &t = *c.constant();
  if (!c.type().quant)
    return std::string(dtypeName(t.dtype()));
  const QuantEncoding &e = *c.type().quant;
  return fmt::format("int{} {} {}", e.bits, e.symmetric ? "sym" : "asym",
                     e.blockSize > 0 ? fmt::format("block {}", e.blockSize)
                                     : std::string(e.axis < 0 ? "per-tensor" : "per-channel"));
}

void collectLayersIn(const Graph &g, const std::map<std::string, double> &errors,
                     std::vector<LayerStats> &out) {
  for (Value *c : g.constants()) {
    const Tensor &t = *c->constant();
    if (t.rank() < 2 || t.numel() == 0)
      continue;
    LayerStats l;
    l.name = c->name();
    l.shape = t.shape();
    l.format = formatOf(*c);
    l.params = t.numel();
    l.bytes = static_cast<int64_t>(t.nbytes());
    if (t.scales)
      l.bytes += static_cast<int64_t>(t.scales->nbytes());
    if (t.zeroPoints)
      l.bytes += static_cast<int64_t>(t.zeroPoints->nbytes());
    l.bits = 8.0 * static_cast<double>(l.bytes) / static_cast<double>(l.params);
    int64_t z = 0;
    if (c->type().quant) {
      auto f = quant::dequantize(t, *c->type().quant);
      z = f ? zeros(*f) : 0;
    } else {
      z = zeros(t);
    }
    l.sparsity = static_cast<double>(z) / static_cast<double>(l.params);
    if (t.isMapped() && t.mapping())
      t.mapping()->release(t.mappingOffset(), t.nbytes());
    if (auto it = errors.find(l.name); it != errors.end())
      l.error = it->second;
    out.push_back(std::move(l));
  }
  for (const auto &n : g.nodes())
    for (Graph *sg : n->subgraphs())
      collectLayersIn(*sg, errors, out);
}

std::string signature(const std::vector<Value *> &vs) {
  std::string out;
  for (const Value *v : vs)
    out += fmt::format("{}{}: {}", out.empty() ? "" : ", ", v->name(), toString(v->type()));
  return out;
}

std::string opsetsText(const Model &m) {
  std::string out;
  for (const auto &[d, v] : m.opsets)
    out += fmt::format("{}{} {}", out.empty() ? "" : ", ", d.empty() ? "ai.onnx" : d, v);
  return out;
}

double bitsPer(int64_t bytes, int64_t params) {
  return params ? 8.0 * static_cast<double>(bytes) / static_cast<double>(params) : 0.0;
}

/// Long names keep their informative tail: "…layers.3.mlp.down_proj.weight".
std::string fit(const std::string &s, size_t width) {
  return s.size() <= width ? s : "..." + s.substr(s.size() - (width - 3));
}

std::string layerTable(const std::vector<LayerStats> &layers) {
  if (layers.empty())
    return "";
  bool anyError = false;
  size_t nameWidth = 4;
  for (const LayerStats &l : layers) {
    anyError = anyError || l.error.has_value();
    nameWidth = std::max(nameWidth, std::min<size_t>(l.name.size(), 48));
  }
  std::string out = fmt::format("layers: {} weights{}\n", layers.size(),
                                anyError ? " (error: relative output error on the calibration "
                                           "data, |dW X|^2 / |W X|^2)"
                                         : "");
  out += fmt::format("  {:<{}} {:>12} {:<22} {:>6} {:>8} {:>12}{}\n", "name", nameWidth, "shape",
                     "format", "bits", "sparsity", "bytes", anyError ? fmt::format(" {:>10}", "error") : "");
  for (const LayerStats &l : layers) {
    std::string err;
    if (anyError)
      err = l.error ? fmt::format(" {:>10.3e}", *l.error) : fmt::format(" {:>10}", "-");
    out += fmt::format("  {:<{}} {:>12} {:<22} {:>6.2f} {:>7.1f}% {:>12}{}\n", fit(l.name, nameWidth),
                       nameWidth, fmt::format("{}", fmt::join(l.shape, "x")), l.format, l.bits,
                       100.0 * l.sparsity, l.bytes, err);
  }
  return out;
}

} // namespace

std::vector<LayerStats> collectLayers(const Model &m, const std::map<std::string, double> &errors) {
  std::vector<LayerStats> out;
  collectLayersIn(m.graph(), errors, out);
  return out;
}

std::string formatReport(const Model &m, const ModelStats &s, const ReportInfo &info) {
  std::string out = fmt::format("== llmopt report: {} ==\n", info.title);
  out += fmt::format("ir_version {}, opsets: {}\n", m.irVersion, opsetsText(m));
  out += fmt::format("inputs:  {}\n", signature(m.graph().inputs()));
  out += fmt::format("outputs: {}\n", signature(m.graph().outputs()));
  out += fmt::format("parameters: {} in {} bytes", s.params, s.bytes);
  if (s.params)
    out += fmt::format(" ({:.2f} bits per parameter)", bitsPer(s.bytes, s.params));
  out += "\n";
  out += fmt::format("  {:<18} {:>12} {:>14} {:>8} {:>7}\n", "dtype", "params", "bytes", "tensors",
                     "bytes%");
  for (const auto &[k, b] : s.byDType)
    out += fmt::format("  {:<18} {:>12} {:>14} {:>8} {:>6.1f}%\n", k, b.params, b.bytes, b.tensors,
                       s.bytes ? 100.0 * static_cast<double>(b.bytes) / static_cast<double>(s.bytes)
                               : 0.0);
  out += layerTable(info.layers);
  out += fmt::format("nodes: {}\n", s.nodes);
  std::vector<std::pair<std::string, int64_t>> ops(s.opCounts.begin(), s.opCounts.end());
  std::stable_sort(ops.begin(), ops.end(),
                   [](const auto &a, const auto &b) { return a.second > b.second; });
  for (const auto &[op, count] : ops)
    out += fmt::format("  {:<34} {:>6}\n", op, count);
  if (info.pipeline) {
    out += "pipeline: " + *info.pipeline + "\n";
    if (info.before)
      out += fmt::format("  nodes {} -> {}, parameter bytes {} -> {}\n", info.before->nodes,
                         s.nodes, info.before->bytes, s.bytes);
    for (const std::string &line : info.passLines)
      out += "  " + line + "\n";
  }
  if (!info.output.empty())
    out += fmt::format("wrote {} ({} bytes)\n", info.output, info.outputBytes);
  return out;
}

std::string formatReportJson(const Model &m, const ModelStats &s, const ReportInfo &info) {
  nlohmann::ordered_json j;
  j["model"] = info.title;
  j["ir_version"] = m.irVersion;
  for (const auto &[d, v] : m.opsets)
    j["opsets"][d.empty() ? "ai.onnx" : d] = v;
  j["parameters"] = s.params;
  j["bytes"] = s.bytes;
  j["bits_per_parameter"] = bitsPer(s.bytes, s.params);
  for (const auto &[k, b] : s.byDType)
    j["by_dtype"][k] = {{"params", b.params}, {"bytes", b.bytes}, {"tensors", b.tensors}};
  j["layers"] = nlohmann::ordered_json::array();
  for (const LayerStats &l : info.layers) {
    nlohmann::ordered_json e = {{"name", l.name},         {"shape", l.shape},
                                {"format", l.format},     {"params", l.params},
                                {"bytes", l.bytes},       {"bits", l.bits},
                                {"sparsity", l.sparsity}};
    e["error"] = l.error ? nlohmann::ordered_json(*l.error) : nlohmann::ordered_json(nullptr);
    j["layers"].push_back(std::move(e));
  }
  j["nodes"] = s.nodes;
  for (const auto &[op, c] : s.opCounts)
    j["ops"][op] = c;
  if (info.pipeline) {
    j["pipeline"] = *info.pipeline;
    if (info.before)
      j["before"] = {{"nodes", info.before->nodes},
                     {"parameters", info.before->params},
                     {"bytes", info.before->bytes}};
    j["passes"] = info.passLines;
  }
  if (!info.output.empty())
    j["output"] = {{"path", info.output}, {"bytes", info.outputBytes}};
  return j.dump(2) + "\n";
}

} // namespace llmopt

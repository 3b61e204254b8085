// The size/composition report behind `llmopt --report`, `--report-json` and `--report-plot`.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

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

/// One weight (a constant of rank >= 2: MatMul weights, embeddings) as the report lists it.
struct LayerStats {
  std::string name;
  std::vector<int64_t> shape;
  std::string format;          ///< "f32", "f16", "int4 sym block 32", "int8 asym per-channel"
  int64_t params = 0, bytes = 0; ///< bytes include scales and zero points
  double bits = 0;             ///< stored bits per element (bytes * 8 / params)
  double sparsity = 0;         ///< fraction of elements that are exactly zero (dequantized)
  std::optional<double> error; ///< relative output error on calibration data, if measured
};

/// Every weight in graph order (subgraphs after their node); `errors` by weight name
/// (PassContext::layerErrors). Mapped pages are released after they are read.
std::vector<LayerStats> collectLayers(const Model &m, const std::map<std::string, double> &errors);

/// What the report says beyond the model itself.
struct ReportInfo {
  std::string title;                    ///< the input's file name
  std::optional<std::string> pipeline;  ///< the pipeline that ran, if any
  std::optional<ModelStats> before;     ///< the input's statistics when a pipeline ran
  std::vector<std::string> passLines;   ///< PassContext::reportLines
  std::vector<LayerStats> layers;
  std::string output;                   ///< the file written, if any
  int64_t outputBytes = -1;
};

/// The report as text: summary, size by dtype, the per-layer table, ops, pass findings.
std::string formatReport(const Model &m, const ModelStats &s, const ReportInfo &info);
/// The same as JSON (stable key order).
std::string formatReportJson(const Model &m, const ModelStats &s, const ReportInfo &info);
/// A self-contained SVG chart: bits per weight and (when measured) output error per layer.
std::string formatReportSvg(const ReportInfo &info);

} // namespace llmopt

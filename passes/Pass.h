// The pass interface, preserved-analysis sets and the analysis manager (LLVM's new
// pass manager in miniature: passes say what they kept; cached analyses are dropped
// when not kept).
#pragma once

#include <any>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ir/Graph.h"

namespace llmopt {

/// Identifies an analysis: the address of its static `ID` member.
using AnalysisKey = const void *;

/// What a pass kept valid. A pass that changed nothing returns all().
class PreservedAnalyses {
public:
  static PreservedAnalyses all() {
    PreservedAnalyses p;
    p.all_ = true;
    return p;
  }
  static PreservedAnalyses none() { return {}; }
  template <typename A> PreservedAnalyses &preserve() {
    kept_.insert(&A::ID);
    return *this;
  }
  bool areAllPreserved() const { return all_; }
  bool isPreserved(AnalysisKey k) const { return all_ || kept_.count(k); }

private:
  bool all_ = false;
  std::set<AnalysisKey> kept_;
};

/// Settings and sinks every pass may read: data files, target, report lines.
struct PassContext {
  std::string calibPath;     ///< --calib
  std::string tokenizerPath; ///< --tokenizer
  int64_t calibSamples = 32;  ///< --calib-samples: windows of calibration data
  int64_t calibSeqLen = 512;  ///< --calib-seqlen: tokens per window
  /// --calib-memory (MiB): the most memory Hessians (K x K doubles per activation) may
  /// take at once; larger sets are collected in groups, one pass over the data each.
  int64_t calibMemoryMiB = 4096;
  int threads = 0; ///< interpreter threads for calibration runs (0 = all cores)
  std::string target = "ort";
  /// Lines a pass wants in the --report output ("dce: removed 3 nodes").
  std::vector<std::string> reportLines;
  /// Per-weight output error measured on the calibration data, by weight name: the
  /// relative error tr(dW^T H dW) / tr(W^T H W) of the layer's output. Passes with a
  /// Hessian fill it (GPTQ, SparseGPT); --report prints it per layer.
  std::map<std::string, double> layerErrors;
};

class AnalysisManager;

/// A transformation over a whole model. Subclasses are registered in Passes.def.
class Pass {
public:
  virtual ~Pass() = default;
  /// The registered name (`quant-int4`).
  virtual std::string_view name() const = 0;
  /// Transforms `m`; an error stops the pipeline and is reported to the user.
  virtual Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) = 0;
  /// Pipeline text that rebuilds this pass (name plus options), for provenance.
  virtual std::string pipelineText() const {
    return text_.empty() ? std::string(name()) : text_;
  }
  /// Set by the pipeline parser to the element's text as written.
  void setPipelineText(std::string t) { text_ = std::move(t); }

private:
  std::string text_;
};

/// Caches analysis results per model; a result lives until a pass does not preserve it.
///
/// An analysis is a class with `static inline char ID;`, a `Result` type and
/// `static Expected<Result> run(Model &, AnalysisManager &)`.
class AnalysisManager {
public:
  explicit AnalysisManager(PassContext ctx = {}) : ctx_(std::move(ctx)) {}
  PassContext &context() { return ctx_; }

  template <typename A> Expected<typename A::Result *> get(Model &m) {
    auto it = cache_.find(&A::ID);
    if (it != cache_.end())
      return std::any_cast<std::shared_ptr<typename A::Result>>(it->second).get();
    LLMOPT_ASSIGN_OR_RETURN(typename A::Result r, A::run(m, *this));
    auto p = std::make_shared<typename A::Result>(std::move(r));
    cache_[&A::ID] = p;
    ++computed_;
    return p.get();
  }
  template <typename A> bool isCached() const { return cache_.count(&A::ID) > 0; }
  void invalidate(const PreservedAnalyses &pa) {
    for (auto it = cache_.begin(); it != cache_.end();)
      it = pa.isPreserved(it->first) ? std::next(it) : cache_.erase(it);
  }
  /// How many analysis runs happened (for tests of caching).
  size_t computeCount() const { return computed_; }

private:
  PassContext ctx_;
  std::map<AnalysisKey, std::any> cache_;
  size_t computed_ = 0;
};

} // namespace llmopt

// PassManager: runs a pipeline of passes with instrumentation; the pipeline parser
// builds one from LLVM-style text `a,b<key=value;flag>,fixpoint(c,d)`.
#pragma once

#include <chrono>
#include <iosfwd>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "passes/Pass.h"
#include "passes/PassRegistry.h"

namespace llmopt {

/// Hooks around every pass run (nested ones included).
struct Instrumentation {
  bool verifyEach = false;
  bool printAfterAll = false;
  std::set<std::string> printAfter; ///< pass names
  bool timePasses = false;
  std::ostream *out = nullptr;      ///< where prints and timings go (stderr if null)
  /// Filled when timePasses: pass name -> (seconds, runs).
  std::vector<std::tuple<std::string, double, int>> timings;
};

class PassManager : public Pass {
public:
  std::string_view name() const override { return "pipeline"; }
  void add(std::unique_ptr<Pass> p) { passes_.push_back(std::move(p)); }
  size_t size() const { return passes_.size(); }
  void setInstrumentation(Instrumentation *i) { instr_ = i; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
  std::string pipelineText() const override;
  const std::vector<std::unique_ptr<Pass>> &passes() const { return passes_; }

private:
  friend class FixpointPass;
  std::vector<std::unique_ptr<Pass>> passes_;
  Instrumentation *instr_ = nullptr;
};

/// `fixpoint<max=N>(a,b)`: reruns the inner pipeline until a round changes nothing.
class FixpointPass : public Pass {
public:
  FixpointPass(std::unique_ptr<PassManager> inner, int maxRounds)
      : inner_(std::move(inner)), maxRounds_(maxRounds) {}
  std::string_view name() const override { return "fixpoint"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
  PassManager &inner() { return *inner_; }

private:
  std::unique_ptr<PassManager> inner_;
  int maxRounds_;
};

/// Parses pipeline text into a PassManager using `registry`. Errors name the unknown
/// pass or option and list what is accepted.
Expected<std::unique_ptr<PassManager>> parsePipeline(std::string_view text,
                                                     const PassRegistry &registry,
                                                     Instrumentation *instr = nullptr);

} // namespace llmopt

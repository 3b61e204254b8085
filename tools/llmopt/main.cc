// llmopt: reads a model, runs a pass pipeline, writes the result and/or a report.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <fmt/format.h>

#include "backend/onnx/OnnxExporter.h"
#include "frontend/ModelLoader.h"
#include "ir/Printer.h"
#include "ir/Verifier.h"
#include "passes/PassManager.h"
#include "passes/analysis/Report.h"
#include "tools/llmopt/CommandLine.h"

#ifndef LLMOPT_VERSION
#define LLMOPT_VERSION "0.0.0"
#endif

namespace llmopt {
namespace {

namespace fs = std::filesystem;

/// FNV-1a 64 of the input file: provenance, not security.
std::string fileHash(const std::string &path) {
  auto f = MappedFile::open(path);
  if (!f)
    return "unknown";
  uint64_t h = 1469598103934665603ull;
  const uint8_t *p = (*f)->data();
  for (size_t i = 0; i < (*f)->size(); ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return fmt::format("fnv1a64:{:016x}", h);
}

void listPasses(const PassRegistry &reg) {
  std::cout << "passes (use as -passes=NAME or NAME<key=value;flag>):\n";
  for (const PassInfo *p : reg.all()) {
    std::string left = p->name + (p->params.empty() ? "" : "<" + p->params + ">");
    std::cout << fmt::format("  {:<36} {}", left, p->help);
    if (p->origin != "builtin")
      std::cout << " [plugin " << p->origin << "]";
    std::cout << "\n";
  }
  std::cout << fmt::format("  {:<36} {}\n", "fixpoint<max=N>(PIPELINE)",
                           "rerun PIPELINE until it changes nothing (max N rounds, default 16)");
}

int run(const cli::Options &o) {
  if (o.help) {
    std::cout << cli::helpText();
    return 0;
  }
  if (o.version) {
    std::cout << "llmopt " << LLMOPT_VERSION << "\n";
    return 0;
  }
  PassRegistry &reg = PassRegistry::global();
  for (const std::string &plugin : o.plugins) {
    Status st = loadPassPlugin(plugin, reg);
    if (!st)
      throw st;
  }
  if (o.listPasses) {
    listPasses(reg);
    return 0;
  }
  if (o.input.empty())
    throw errorf("no input model given; usage: llmopt INPUT [-passes=PIPELINE] [-o OUTPUT] "
                 "(see --help)");
  if (o.output.empty() && !o.printIr && o.report.empty() && !o.passes)
    throw errorf("nothing to do: give -o OUTPUT, --print-ir or --report (see --help)");
  for (const std::string &name : o.printAfter)
    if (!reg.find(name))
      throw errorf("--print-after={}: unknown pass; accepted: {}", name, reg.namesList());

  Instrumentation instr;
  instr.verifyEach = o.verifyEach;
  instr.printAfterAll = o.printAfterAll;
  instr.printAfter.insert(o.printAfter.begin(), o.printAfter.end());
  instr.timePasses = o.timePasses;
  std::unique_ptr<PassManager> pipeline;
  if (o.passes) {
    auto parsed = parsePipeline(*o.passes, reg, &instr);
    if (!parsed)
      throw parsed.status();
    pipeline = parsed.take();
  }

  auto loaded = loadModel(o.input);
  if (!loaded)
    throw loaded.status();
  std::unique_ptr<Model> model = loaded.take();

  PassContext ctx;
  ctx.calibPath = o.calib;
  ctx.tokenizerPath = o.tokenizer;
  ctx.calibSamples = o.calibSamples;
  ctx.calibSeqLen = o.calibSeqLen;
  ctx.calibMemoryMiB = o.calibMemoryMiB;
  ctx.threads = o.threads;
  ctx.target = o.target;
  AnalysisManager am(ctx);
  const ModelStats before = collectStats(*model);
  if (pipeline) {
    auto pa = pipeline->run(*model, am);
    if (!pa)
      throw pa.status();
    Status st = verify(*model);
    if (!st)
      throw internalErrorf("the pipeline produced an invalid model: {}", st.message());
  }
  if (instr.timePasses) {
    double total = 0;
    for (const auto &t : instr.timings)
      total += std::get<1>(t);
    std::cerr << "=== pass timings ===\n";
    for (const auto &[name, secs, runs] : instr.timings)
      std::cerr << fmt::format("  {:>9.4f}s {:>5.1f}%  {} ({} runs)\n", secs,
                               total > 0 ? 100.0 * secs / total : 0.0, name, runs);
    std::cerr << fmt::format("  {:>9.4f}s total\n", total);
  }
  if (!o.output.empty()) {
    model->setMetadata("llmopt.version", LLMOPT_VERSION);
    model->setMetadata("llmopt.pipeline", pipeline ? pipeline->pipelineText() : "");
    model->setMetadata("llmopt.input_hash", fileHash(o.input));
    ExportOptions eo;
    eo.externalData = o.externalData;
    eo.target = o.target;
    eo.accuracyLevel = o.accuracyLevel;
    Status st = saveOnnx(*model, o.output, eo);
    if (!st)
      throw st;
  }
  if (o.printIr) {
    PrintOptions po;
    po.elideLargeConstants = !o.printIrFull;
    std::cout << printModel(*model, po);
  }
  if (!o.report.empty()) {
    ModelStats s = collectStats(*model);
    std::string title = fs::path(o.input).filename().string();
    if (o.report == "json") {
      std::cout << formatReportJson(*model, s, title);
    } else {
      std::cout << formatReport(*model, s, title);
      if (pipeline) {
        std::cout << "pipeline: " << pipeline->pipelineText() << "\n";
        std::cout << fmt::format("  nodes {} -> {}, parameter bytes {} -> {}\n", before.nodes,
                                 s.nodes, before.bytes, s.bytes);
        for (const std::string &line : am.context().reportLines)
          std::cout << "  " << line << "\n";
      }
      if (!o.output.empty())
        std::cout << fmt::format("wrote {} ({} bytes)\n", o.output, fs::file_size(o.output));
    }
  }
  return 0;
}

} // namespace
} // namespace llmopt

int main(int argc, char **argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    auto opts = llmopt::cli::parse(args);
    if (!opts)
      throw opts.status();
    return llmopt::run(*opts);
  } catch (const llmopt::Status &st) {
    std::cerr << "llmopt: error: " << st.message() << "\n";
    return st.kind() == llmopt::ErrorKind::Internal ? 2 : 1;
  } catch (const std::exception &e) {
    std::cerr << "llmopt: internal error: " << e.what() << "\n";
    return 2;
  }
}

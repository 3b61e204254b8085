// llmopt: reads a model, runs a pass pipeline, writes the result and/or a report.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <fmt/format.h>

#include "backend/cpp/CppEmitter.h"
#include "backend/onnx/OnnxExporter.h"
#include "frontend/ModelLoader.h"
#include "ir/Printer.h"
#include "ir/Progress.h"
#include "ir/Verifier.h"
#include "passes/PassManager.h"
#include "passes/analysis/Report.h"
#include "tools/llmopt/CommandLine.h"
#include "tools/llmopt/LayerErrors.h"

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

/// Writes `text` to `path` through a temporary file renamed into place.
void writeFileAtomic(const std::string &path, const std::string &text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out || !(out << text) || !out.flush()) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw errorf("{}: cannot write", path);
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw errorf("{}: cannot rename into place: {}", path, ec.message());
  }
}

/// A note on stderr under -v.
template <typename... Args> void note(fmt::format_string<Args...> f, Args &&...args) {
  if (verbosity() == Verbosity::Verbose)
    std::cerr << "llmopt: " << fmt::format(f, std::forward<Args>(args)...) << "\n";
}

double secondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

/// Errors from passes name the pass but not the model: add the input file.
Status withInput(const Status &st, const std::string &input) {
  if (st.message().rfind(input, 0) == 0)
    return st;
  return st.withContext(input);
}

void printTimings(const Instrumentation &instr) {
  double total = 0;
  for (const auto &t : instr.timings)
    total += std::get<1>(t);
  std::cerr << "=== pass timings ===\n";
  for (const auto &[name, secs, runs] : instr.timings)
    std::cerr << fmt::format("  {:>9.4f}s {:>5.1f}%  {} ({} runs)\n", secs,
                             total > 0 ? 100.0 * secs / total : 0.0, name, runs);
  std::cerr << fmt::format("  {:>9.4f}s total\n", total);
}

int run(const cli::Options &o) {
  setVerbosity(o.verbosity == 0   ? Verbosity::Quiet
               : o.verbosity == 1 ? Verbosity::Normal
                                  : Verbosity::Verbose);
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
    note("loaded plugin {}", plugin);
  }
  if (o.listPasses) {
    listPasses(reg);
    return 0;
  }
  if (o.input.empty())
    throw errorf("no input model given; usage: llmopt INPUT [-passes=PIPELINE] [-o OUTPUT] "
                 "(see --help)");
  const bool wantReport = !o.report.empty() || !o.reportJson.empty() || !o.reportPlot.empty();
  if (o.output.empty() && !o.printIr && !wantReport && !o.passes)
    throw errorf("nothing to do: give -o OUTPUT, --print-ir or --report (see --help)");
  if (!o.emit.empty() && o.output.empty())
    throw errorf("--emit={} needs -o DIR (the directory the project is written to)", o.emit);
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

  auto t0 = std::chrono::steady_clock::now();
  auto loaded = loadModel(o.input);
  if (!loaded)
    throw loaded.status();
  std::unique_ptr<Model> model = loaded.take();
  const ModelStats before = collectStats(*model);
  note("loaded {}: {} nodes, {} parameters in {} bytes ({:.2f} s)", o.input, before.nodes,
       before.params, before.bytes, secondsSince(t0));

  PassContext ctx;
  ctx.calibPath = o.calib;
  ctx.tokenizerPath = o.tokenizer;
  ctx.calibSamples = o.calibSamples;
  ctx.calibSeqLen = o.calibSeqLen;
  ctx.calibMemoryMiB = o.calibMemoryMiB;
  ctx.threads = o.threads;
  ctx.target = o.target;
  AnalysisManager am(ctx);
  if (pipeline) {
    t0 = std::chrono::steady_clock::now();
    note("running {}", pipeline->pipelineText());
    auto pa = pipeline->run(*model, am);
    if (!pa)
      throw withInput(pa.status(), o.input);
    Status st = verify(*model);
    if (!st)
      throw internalErrorf("the pipeline produced an invalid model: {}", st.message());
    note("pipeline done in {:.2f} s", secondsSince(t0));
    for (const std::string &line : am.context().reportLines)
      note("  {}", line);
  }
  if (instr.timePasses)
    printTimings(instr);
  if (!o.output.empty()) {
    t0 = std::chrono::steady_clock::now();
    model->setMetadata("llmopt.version", LLMOPT_VERSION);
    model->setMetadata("llmopt.pipeline", pipeline ? pipeline->pipelineText() : "");
    model->setMetadata("llmopt.input_hash", fileHash(o.input));
    if (o.emit == "cpp") {
      codegen::CppEmitOptions co;
      co.accuracyLevel = o.accuracyLevel;
      Status st = codegen::emitCpp(*model, o.output, co);
      if (!st)
        throw withInput(st, o.input);
      note("wrote the C++ project {} ({:.2f} s)", o.output, secondsSince(t0));
    } else {
      ExportOptions eo;
      eo.externalData = o.externalData;
      eo.target = o.target;
      eo.accuracyLevel = o.accuracyLevel;
      Status st = saveOnnx(*model, o.output, eo);
      if (!st)
        throw st;
      note("wrote {} ({} bytes, {:.2f} s)", o.output, fs::file_size(o.output), secondsSince(t0));
    }
  }
  if (o.printIr) {
    PrintOptions po;
    po.elideLargeConstants = !o.printIrFull;
    std::cout << printModel(*model, po);
  }
  if (wantReport) {
    ModelStats s = collectStats(*model);
    ReportInfo info;
    info.title = fs::path(o.input).filename().string();
    if (pipeline) {
      info.pipeline = pipeline->pipelineText();
      info.before = before;
      info.passLines = am.context().reportLines;
    }
    if (pipeline && !o.calib.empty()) {
      // Weights the passes changed without measuring it get their error here.
      t0 = std::chrono::steady_clock::now();
      Status st = measureLayerErrors(o.input, *model, am.context(), am.context().layerErrors);
      if (!st)
        throw withInput(st, o.input);
      note("measured per-layer output errors ({:.2f} s)", secondsSince(t0));
    }
    info.layers = collectLayers(*model, am.context().layerErrors);
    if (!o.output.empty()) {
      info.output = o.output;
      info.outputBytes = 0;
      if (!o.emit.empty()) // a project directory: every file in it
        for (const auto &e : fs::recursive_directory_iterator(o.output))
          info.outputBytes += e.is_regular_file() ? static_cast<int64_t>(e.file_size()) : 0;
      else
        info.outputBytes = static_cast<int64_t>(fs::file_size(o.output));
    }
    if (o.report == "json")
      std::cout << formatReportJson(*model, s, info);
    else if (o.report == "text")
      std::cout << formatReport(*model, s, info);
    if (!o.reportJson.empty()) {
      writeFileAtomic(o.reportJson, formatReportJson(*model, s, info));
      note("wrote {}", o.reportJson);
    }
    if (!o.reportPlot.empty()) {
      writeFileAtomic(o.reportPlot, formatReportSvg(info));
      note("wrote {}", o.reportPlot);
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

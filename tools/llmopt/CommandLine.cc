// Flag parsing for llmopt: a table of flags, each with a setter.
#include "tools/llmopt/CommandLine.h"

#include <functional>

#include <fmt/format.h>

namespace llmopt::cli {
namespace {

struct Flag {
  const char *name;  ///< without dashes
  const char *value; ///< value placeholder; null for switches
  const char *help;
  std::function<Status(Options &, const std::string &)> set;
};

Status setTarget(Options &o, const std::string &v) {
  if (v != "ort" && v != "onnx")
    return errorf("--target={}: unknown target; accepted: ort, onnx", v);
  o.target = v;
  return Status::ok();
}

Status setEmit(Options &o, const std::string &v) {
  if (v != "cpp" && v != "onnx")
    return errorf("--emit={}: unknown output kind; accepted: onnx, cpp", v);
  o.emit = v == "cpp" ? v : "";
  return Status::ok();
}

Status setReport(Options &o, const std::string &v) {
  if (v != "text" && v != "json")
    return errorf("--report={}: unknown format; accepted: text, json", v);
  o.report = v;
  return Status::ok();
}

template <typename T>
Status setCount(T &dst, const char *flag, const std::string &v, int64_t lo, int64_t hi) {
  size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(v, &used);
  } catch (...) {
    used = 0;
  }
  if (v.empty() || used != v.size() || n < lo || n > hi)
    return errorf("--{}={}: expected an integer in [{}, {}]", flag, v, lo, hi);
  dst = static_cast<T>(n);
  return Status::ok();
}

const std::vector<Flag> &flags() {
  static const std::vector<Flag> table = {
      {"passes", "PIPELINE", "pass pipeline, e.g. 'dce,cse,fixpoint(const-fold,canonicalize)'",
       [](Options &o, const std::string &v) { o.passes = v; return Status::ok(); }},
      {"o", "FILE", "write the optimized model to FILE (atomically)",
       [](Options &o, const std::string &v) { o.output = v; return Status::ok(); }},
      {"list-passes", nullptr, "list every pass with its options and exit",
       [](Options &o, const std::string &) { o.listPasses = true; return Status::ok(); }},
      {"report", "[text|json]", "print the report to stdout: size by dtype, per-layer table, ops, passes",
       setReport},
      {"report-json", "FILE", "write the report as JSON to FILE (per-layer rows included)",
       [](Options &o, const std::string &v) { o.reportJson = v; return Status::ok(); }},
      {"report-plot", "FILE.svg", "write a per-layer chart (bits per weight, output error) as SVG",
       [](Options &o, const std::string &v) { o.reportPlot = v; return Status::ok(); }},
      {"print-ir", nullptr, "print the IR after the pipeline (large constants elided)",
       [](Options &o, const std::string &) { o.printIr = true; return Status::ok(); }},
      {"print-ir-full", nullptr, "print the IR with every constant (parses back)",
       [](Options &o, const std::string &) { o.printIr = o.printIrFull = true; return Status::ok(); }},
      {"print-after-all", nullptr, "print the IR after every pass (to stderr)",
       [](Options &o, const std::string &) { o.printAfterAll = true; return Status::ok(); }},
      {"print-after", "PASS", "print the IR after each run of PASS (repeatable)",
       [](Options &o, const std::string &v) { o.printAfter.push_back(v); return Status::ok(); }},
      {"time-passes", nullptr, "print time spent in each pass (to stderr)",
       [](Options &o, const std::string &) { o.timePasses = true; return Status::ok(); }},
      {"verify-each", nullptr, "run the IR verifier after every pass",
       [](Options &o, const std::string &) { o.verifyEach = true; return Status::ok(); }},
      {"load-pass-plugin", "LIB.so", "load passes from a plugin library (repeatable)",
       [](Options &o, const std::string &v) { o.plugins.push_back(v); return Status::ok(); }},
      {"external-data", nullptr, "write weights to OUT.data next to the model",
       [](Options &o, const std::string &) { o.externalData = true; return Status::ok(); }},
      {"calib", "FILE", "calibration data for passes that need activations",
       [](Options &o, const std::string &v) { o.calib = v; return Status::ok(); }},
      {"tokenizer", "FILE", "tokenizer.json for text calibration data",
       [](Options &o, const std::string &v) { o.tokenizer = v; return Status::ok(); }},
      {"calib-samples", "N", "calibration windows (default 32)",
       [](Options &o, const std::string &v) { return setCount(o.calibSamples, "calib-samples", v, 1, 1 << 20); }},
      {"calib-seqlen", "N", "tokens per calibration window (default 512)",
       [](Options &o, const std::string &v) { return setCount(o.calibSeqLen, "calib-seqlen", v, 1, 1 << 20); }},
      {"calib-memory", "MiB", "memory for calibration Hessians at once (default 4096)",
       [](Options &o, const std::string &v) { return setCount(o.calibMemoryMiB, "calib-memory", v, 1, 1 << 30); }},
      {"threads", "N", "threads for calibration and data-driven passes (default: all cores)",
       [](Options &o, const std::string &v) { return setCount(o.threads, "threads", v, 0, 4096); }},
      {"accuracy-level", "0|1|2|3|4", "MatMulNBits accuracy_level for --target=ort (default 4: int8 activations on CPU; 0: f32)",
       [](Options &o, const std::string &v) { return setCount(o.accuracyLevel, "accuracy-level", v, 0, 4); }},
      {"target", "ort|onnx", "what the ONNX writer targets (default ort)", setTarget},
      {"emit", "onnx|cpp", "write -o as an ONNX model (default) or a C++ project directory (docs/codegen.md)",
       setEmit},
      {"quiet", nullptr, "print nothing but errors to stderr: no progress bars or notes (-q)",
       [](Options &o, const std::string &) { o.verbosity = 0; return Status::ok(); }},
      {"verbose", nullptr, "also say on stderr what is loaded, run and written (-v)",
       [](Options &o, const std::string &) { o.verbosity = 2; return Status::ok(); }},
      {"help", nullptr, "print this help",
       [](Options &o, const std::string &) { o.help = true; return Status::ok(); }},
      {"version", nullptr, "print the version",
       [](Options &o, const std::string &) { o.version = true; return Status::ok(); }},
  };
  return table;
}

} // namespace

Expected<Options> parse(const std::vector<std::string> &args) {
  Options o;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string &a = args[i];
    if (a.size() < 2 || a[0] != '-' || a == "--") {
      if (!o.input.empty())
        return errorf("unexpected argument '{}': one input model is accepted (already have '{}')",
                      a, o.input);
      o.input = a;
      continue;
    }
    std::string body = a.substr(a[1] == '-' ? 2 : 1);
    std::optional<std::string> value;
    if (auto eq = body.find('='); eq != std::string::npos) {
      value = body.substr(eq + 1);
      body = body.substr(0, eq);
    }
    if (body == "h")
      body = "help";
    else if (body == "v")
      body = "verbose";
    else if (body == "q")
      body = "quiet";
    const Flag *flag = nullptr;
    for (const Flag &f : flags())
      if (body == f.name)
        flag = &f;
    if (!flag)
      return errorf("unknown option '{}'; see llmopt --help", a);
    const bool optionalValue = flag->value && flag->value[0] == '[';
    if (!flag->value && value)
      return errorf("option '--{}' takes no value", body);
    if (flag->value && !value && !optionalValue) {
      if (i + 1 >= args.size())
        return errorf("option '--{}' needs a value ({})", body, flag->value);
      value = args[++i];
    }
    if (optionalValue && !value)
      value = "text";
    LLMOPT_RETURN_IF_ERROR(flag->set(o, value.value_or("")));
  }
  return o;
}

std::string helpText() {
  std::string s =
      "llmopt: shrink LLMs in ONNX form (quantization, pruning, distillation prep)\n\n"
      "usage: llmopt INPUT [-passes=PIPELINE] [-o OUTPUT.onnx] [options]\n\n"
      "INPUT is an .onnx model, llmopt IR text (.llir, from --print-ir-full), or ONNX text\n"
      "syntax (.onnxtxt). PIPELINE is LLVM-style: 'a,b<key=value;flag>,fixpoint(c,d)'.\n"
      "Quote it in shells. Without -o nothing is written.\n\noptions:\n";
  for (const Flag &f : flags()) {
    std::string name = f.name;
    // LLVM's single-dash spelling is the documented one for the pipeline.
    std::string left = (name.size() == 1 || name == "passes" ? "-" : "--") + name;
    if (f.value && f.value[0] == '[')
      left += "[=" + std::string(f.value + 1);
    else if (f.value)
      left += (name == "passes" ? "=" : " ") + std::string(f.value);
    s += fmt::format("  {:<28} {}\n", left, f.help);
  }
  s += "\nexit status: 0 success, 1 bad input or usage (the message says what and where),\n"
       "2 internal error. A failed run never leaves a partial output file.\n";
  return s;
}

} // namespace llmopt::cli

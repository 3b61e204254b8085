// llmopt-run: runs a model on the reference interpreter, optionally comparing its
// outputs with expected tensors or with another model run on the same inputs.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include "backend/interp/Compare.h"
#include "backend/onnx/OnnxExporter.h"
#include "frontend/ModelLoader.h"
#include "frontend/TypeConversion.h"
#include "tools/llmopt-run/Npy.h"

namespace llmopt {
namespace {

namespace fs = std::filesystem;

const char *kUsage =
    "usage: llmopt-run MODEL [--inputs F ...] [--random-inputs [--dims name=N,...] [--seed S]]\n"
    "                  [--expect F ...] [--compare OTHER] [--rtol R] [--atol A]\n"
    "                  [--dump-outputs DIR] [--threads N]\n\n"
    "Runs MODEL (.onnx, .llir, .onnxtxt) on llmopt's reference interpreter.\n"
    "  --inputs F ...        one tensor file per graph input, in order (.pb TensorProto or .npy)\n"
    "  --random-inputs       deterministic random inputs; symbolic dims from --dims (default 2)\n"
    "  --expect F ...        expected outputs (.pb or .npy), in output order\n"
    "  --compare OTHER       run OTHER on the same inputs and compare outputs\n"
    "  --rtol R, --atol A    tolerance |got-want| <= atol + rtol*|want| (default 1e-4, 1e-5)\n"
    "  --dump-outputs DIR    write input_N.pb and output_N.pb (ONNX test-data layout)\n"
    "  --threads N           interpreter threads (default: all cores)\n"
    "exit status: 0 ok (and within tolerance), 1 mismatch or bad input, 2 internal error\n";

struct Options {
  std::string model, compare, dumpDir;
  std::vector<std::string> inputs, expect;
  bool random = false;
  std::map<std::string, int64_t> dims;
  uint64_t seed = 1;
  interp::Tolerance tol;
  int threads = 0;
};

Expected<Tensor> readTensorFile(const std::string &path) {
  if (path.size() > 4 && path.substr(path.size() - 4) == ".npy")
    return readNpy(path);
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return errorf("{}: cannot open", path);
  onnx::TensorProto tp;
  if (!tp.ParseFromIstream(&in))
    return errorf("{}: not a TensorProto (.pb) file", path);
  std::unordered_map<std::string, std::shared_ptr<const MappedFile>> maps;
  TensorSource src{path, fs::absolute(path).parent_path().string(), &maps};
  return convertTensor(tp, src);
}

Expected<double> number(const std::string &flag, const std::string &v) {
  try {
    size_t used = 0;
    double d = std::stod(v, &used);
    if (used == v.size())
      return d;
  } catch (const std::exception &) {
  }
  return errorf("{} {}: expected a number", flag, v);
}

Expected<Options> parse(int argc, char **argv) {
  Options o;
  std::vector<std::string> *list = nullptr;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> Expected<std::string> {
      if (i + 1 >= argc)
        return errorf("{} needs a value", a);
      return std::string(argv[++i]);
    };
    if (a.rfind("--", 0) != 0) {
      if (list)
        list->push_back(a);
      else if (o.model.empty())
        o.model = a;
      else
        return errorf("unexpected argument '{}'", a);
      continue;
    }
    list = nullptr;
    if (a == "--inputs") {
      list = &o.inputs;
    } else if (a == "--expect") {
      list = &o.expect;
    } else if (a == "--random-inputs") {
      o.random = true;
    } else if (a == "--compare") {
      LLMOPT_ASSIGN_OR_RETURN(o.compare, value());
    } else if (a == "--dump-outputs") {
      LLMOPT_ASSIGN_OR_RETURN(o.dumpDir, value());
    } else if (a == "--seed") {
      LLMOPT_ASSIGN_OR_RETURN(std::string v, value());
      LLMOPT_ASSIGN_OR_RETURN(double d, number(a, v));
      o.seed = static_cast<uint64_t>(d);
    } else if (a == "--threads") {
      LLMOPT_ASSIGN_OR_RETURN(std::string v, value());
      LLMOPT_ASSIGN_OR_RETURN(double d, number(a, v));
      o.threads = static_cast<int>(d);
    } else if (a == "--rtol" || a == "--atol") {
      LLMOPT_ASSIGN_OR_RETURN(std::string v, value());
      LLMOPT_ASSIGN_OR_RETURN(double d, number(a, v));
      (a == "--rtol" ? o.tol.rtol : o.tol.atol) = d;
    } else if (a == "--dims") {
      LLMOPT_ASSIGN_OR_RETURN(std::string v, value());
      size_t start = 0;
      while (start < v.size()) {
        size_t comma = v.find(',', start);
        std::string item = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        size_t eq = item.find('=');
        if (eq == std::string::npos)
          return errorf("--dims {}: expected name=N,...", v);
        LLMOPT_ASSIGN_OR_RETURN(double d, number("--dims", item.substr(eq + 1)));
        o.dims[item.substr(0, eq)] = static_cast<int64_t>(d);
        start = comma == std::string::npos ? v.size() : comma + 1;
      }
    } else if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else {
      return errorf("unknown option '{}'; see llmopt-run --help", a);
    }
  }
  if (o.model.empty())
    return errorf("no model given; see llmopt-run --help");
  if (o.random == !o.inputs.empty())
    return errorf("give either --inputs F ... or --random-inputs");
  return o;
}

/// Compares outputs; prints one line per output. Returns true when all are within tolerance.
bool report(const std::vector<Tensor> &got, const std::vector<Tensor> &want,
            const std::vector<std::string> &names, const interp::Tolerance &tol,
            const std::string &against) {
  bool ok = got.size() == want.size();
  if (!ok)
    std::cout << fmt::format("output count: {} vs {} in {}\n", got.size(), want.size(), against);
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    interp::Difference d = interp::compareTensors(got[i], want[i], tol);
    ok &= d.ok;
    std::cout << fmt::format("{} vs {}: {}\n", i < names.size() ? names[i] : std::to_string(i),
                             against, d.summary());
  }
  return ok;
}

int run(const Options &o) {
  auto model = loadModel(o.model);
  if (!model)
    throw model.status();
  const Graph &g = (*model)->graph();
  std::vector<Tensor> inputs;
  if (o.random) {
    interp::RandomInputOptions ro;
    ro.seed = o.seed;
    ro.dims = o.dims;
    auto r = interp::randomInputs(g, ro);
    if (!r)
      throw r.status();
    inputs = r.take();
  } else {
    for (const std::string &f : o.inputs) {
      auto t = readTensorFile(f);
      if (!t)
        throw t.status();
      inputs.push_back(t.take());
    }
  }
  interp::RunOptions runOpts;
  runOpts.threads = o.threads;
  auto outputs = interp::run(g, inputs, runOpts);
  if (!outputs)
    throw outputs.status().withContext(o.model);
  std::vector<std::string> names;
  for (const Value *v : g.outputs())
    names.push_back(v->name());
  for (size_t i = 0; i < outputs->size(); ++i)
    std::cout << fmt::format("output {}: {}\n", names[i], toString((*outputs)[i].type()));
  if (!o.dumpDir.empty()) {
    fs::create_directories(o.dumpDir);
    for (size_t i = 0; i < inputs.size(); ++i) {
      Status st = saveTensorProto(inputs[i], g.inputs()[i]->name(),
                                  fmt::format("{}/input_{}.pb", o.dumpDir, i));
      if (!st)
        throw st;
    }
    for (size_t i = 0; i < outputs->size(); ++i) {
      Status st = saveTensorProto((*outputs)[i], names[i], fmt::format("{}/output_{}.pb", o.dumpDir, i));
      if (!st)
        throw st;
    }
  }
  bool ok = true;
  if (!o.expect.empty()) {
    std::vector<Tensor> want;
    for (const std::string &f : o.expect) {
      auto t = readTensorFile(f);
      if (!t)
        throw t.status();
      want.push_back(t.take());
    }
    ok &= report(*outputs, want, names, o.tol, "expected");
  }
  if (!o.compare.empty()) {
    auto other = loadModel(o.compare);
    if (!other)
      throw other.status();
    auto theirs = interp::run((*other)->graph(), inputs, runOpts);
    if (!theirs)
      throw theirs.status().withContext(o.compare);
    ok &= report(*outputs, *theirs, names, o.tol, fs::path(o.compare).filename().string());
  }
  if (!ok)
    std::cout << fmt::format("MISMATCH (rtol {}, atol {})\n", o.tol.rtol, o.tol.atol);
  return ok ? 0 : 1;
}

} // namespace
} // namespace llmopt

int main(int argc, char **argv) {
  try {
    auto opts = llmopt::parse(argc, argv);
    if (!opts)
      throw opts.status();
    return llmopt::run(*opts);
  } catch (const llmopt::Status &st) {
    std::cerr << "llmopt-run: error: " << st.message() << "\n";
    return st.kind() == llmopt::ErrorKind::Internal ? 2 : 1;
  } catch (const std::exception &e) {
    std::cerr << "llmopt-run: internal error: " << e.what() << "\n";
    return 2;
  }
}

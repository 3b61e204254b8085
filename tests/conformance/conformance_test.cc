// ONNX backend node tests (Debian libonnx-testdata) through the interpreter.
//
// Every test directory holds model.onnx and test_data_set_*/{input,output}_*.pb. A test
// whose model uses only ops the interpreter supports must reproduce every output
// (floats within rtol 1e-3 + atol 1e-5, bf16 within one bf16 ulp, integers, bools and
// strings exactly); a test using any other op must fail with an "unsupported op"
// error. Each test runs in a forked child so that a crash counts as a failure.
// Tests listed in excluded.txt (name, then the reason) are skipped.
//
// Usage: llmopt_conformance_test [--data DIR] [--excluded FILE] [--filter SUBSTR] [-v]
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <csignal>

#include <fmt/ranges.h>
#include <onnx/onnx_pb.h>

#include "backend/interp/Interpreter.h"
#include "frontend/OnnxImporter.h"
#include "frontend/TypeConversion.h"

namespace fs = std::filesystem;
using namespace llmopt;

namespace {

#ifndef LLMOPT_CONFORMANCE_EXCLUDED
#define LLMOPT_CONFORMANCE_EXCLUDED "excluded.txt"
#endif

struct Outcome {
  char kind = 'F'; ///< P(ass), U(nsupported, clean), F(ail)
  std::string detail;
};

Expected<Tensor> readTensor(const fs::path &p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  onnx::TensorProto tp;
  if (!f || !tp.ParseFromString(ss.str()))
    return errorf("{}: not a TensorProto", p.string());
  std::unordered_map<std::string, std::shared_ptr<const MappedFile>> maps;
  return convertTensor(tp, TensorSource{p.string(), p.parent_path().string(), &maps});
}

/// Files `prefix_N.pb` of a data set, by N.
std::vector<fs::path> dataFiles(const fs::path &dir, const std::string &prefix) {
  std::vector<std::pair<int, fs::path>> v;
  for (const auto &e : fs::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    if (name.rfind(prefix + "_", 0) == 0 && e.path().extension() == ".pb")
      v.emplace_back(std::stoi(name.substr(prefix.size() + 1)), e.path());
  }
  std::sort(v.begin(), v.end());
  std::vector<fs::path> out;
  for (auto &p : v)
    out.push_back(p.second);
  return out;
}

/// Compares one output; empty string when it matches.
std::string compare(const Tensor &got, const Tensor &want) {
  if (got.dtype() != want.dtype())
    return fmt::format("dtype {} (expected {})", dtypeName(got.dtype()), dtypeName(want.dtype()));
  if (got.shape() != want.shape())
    return fmt::format("shape [{}] (expected [{}])", fmt::join(got.shape(), ","), fmt::join(want.shape(), ","));
  if (want.dtype() == DType::String)
    return got.stringData() == want.stringData() ? "" : "string contents differ";
  const bool isF = isFloat(want.dtype());
  const double rtol = want.dtype() == DType::BF16 ? 1.0 / 128 : 1e-3, atol = 1e-5;
  for (int64_t i = 0; i < want.numel(); ++i) {
    if (isF) {
      const double g = got.getDouble(i), w = want.getDouble(i);
      if (std::isnan(w) && std::isnan(g))
        continue;
      if (g == w)
        continue;
      if (std::isnan(g) || std::isnan(w) || std::isinf(g) || std::isinf(w) ||
          std::fabs(g - w) > atol + rtol * std::fabs(w))
        return fmt::format("element {}: {} (expected {})", i, g, w);
    } else if (got.getInt(i) != want.getInt(i)) {
      return fmt::format("element {}: {} (expected {})", i, got.getInt(i), want.getInt(i));
    }
  }
  return "";
}

/// ONNX's generated test data store bfloat16 tensors as uint16 (numpy has no bfloat16):
/// read such data as bf16 where the model declares bf16.
Tensor asDeclared(Tensor t, const Value *v) {
  if (v && t.dtype() == DType::U16 && v->type().isTensor() && v->type().elem == DType::BF16)
    return Tensor::fromBytes(DType::BF16, t.shape(), t.data(), t.nbytes());
  return t;
}

Outcome runTest(const fs::path &dir) {
  auto model = importOnnxFile((dir / "model.onnx").string());
  if (!model)
    return {'F', "import: " + model.status().message()};
  const Graph &g = (*model)->graph();
  std::set<std::string> missing;
  g.walk([&](Node *n) {
    if (!interp::canEvaluate(*n))
      missing.insert(n->qualifiedOpType());
  });
  std::vector<fs::path> sets;
  for (const auto &e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string().rfind("test_data_set_", 0) == 0)
      sets.push_back(e.path());
  std::sort(sets.begin(), sets.end());

  if (!missing.empty()) {
    // Must fail cleanly, naming the op; inputs that are not tensors are left out.
    std::vector<Tensor> inputs;
    if (!sets.empty())
      for (const auto &p : dataFiles(sets[0], "input")) {
        auto t = readTensor(p);
        if (!t)
          break;
        inputs.push_back(t.take());
      }
    auto r = interp::run(g, inputs);
    std::string ops;
    for (const auto &m : missing)
      ops += (ops.empty() ? "" : ",") + m;
    if (r)
      return {'F', "ran although it uses unsupported op(s) " + ops};
    if (r.status().message().find("unsupported op") == std::string::npos)
      return {'F', "unsupported op(s) " + ops + " but the error was: " + r.status().message()};
    return {'U', ops};
  }

  if (sets.empty())
    return {'F', "no test_data_set_* directories"};
  for (const auto &set : sets) {
    std::vector<Tensor> inputs, expected;
    for (const auto &p : dataFiles(set, "input")) {
      auto t = readTensor(p);
      if (!t)
        return {'F', t.status().message()};
      const size_t i = inputs.size();
      inputs.push_back(asDeclared(t.take(), i < g.inputs().size() ? g.inputs()[i] : nullptr));
    }
    for (const auto &p : dataFiles(set, "output")) {
      auto t = readTensor(p);
      if (!t)
        return {'F', t.status().message()};
      const size_t i = expected.size();
      expected.push_back(asDeclared(t.take(), i < g.outputs().size() ? g.outputs()[i] : nullptr));
    }
    auto r = interp::run(g, inputs);
    if (!r)
      return {'F', set.filename().string() + ": " + r.status().message()};
    if (r->size() != expected.size())
      return {'F', fmt::format("{}: {} outputs, expected {}", set.filename().string(), r->size(), expected.size())};
    for (size_t i = 0; i < expected.size(); ++i) {
      std::string diff = compare((*r)[i], expected[i]);
      if (!diff.empty())
        return {'F', fmt::format("{}: output {} '{}': {}", set.filename().string(), i,
                                 i < g.outputs().size() ? g.outputs()[i]->name() : "", diff)};
    }
  }
  return {'P', ""};
}

/// Runs one test in a child process (a crash or hang is a failure, not the end).
Outcome runIsolated(const fs::path &dir) {
  int fds[2];
  if (pipe(fds) != 0)
    return {'F', "pipe failed"};
  pid_t pid = fork();
  if (pid < 0)
    return {'F', "fork failed"};
  if (pid == 0) {
    close(fds[0]);
    alarm(120);
    Outcome o = runTest(dir);
    std::string msg = std::string(1, o.kind) + o.detail;
    size_t off = 0;
    while (off < msg.size()) {
      ssize_t w = write(fds[1], msg.data() + off, msg.size() - off);
      if (w <= 0)
        break;
      off += static_cast<size_t>(w);
    }
    close(fds[1]);
    _exit(0);
  }
  close(fds[1]);
  std::string msg;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0)
    msg.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status))
    return {'F', fmt::format("crashed with signal {}{}", WTERMSIG(status),
                             WTERMSIG(status) == SIGALRM ? " (timeout)" : "")};
  if (msg.empty())
    return {'F', "child reported nothing"};
  return {msg[0], msg.substr(1)};
}

std::map<std::string, std::string> readExcluded(const std::string &path) {
  std::map<std::string, std::string> out;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#')
      continue;
    std::istringstream ls(line);
    std::string name, reason;
    ls >> name;
    std::getline(ls, reason);
    out[name] = reason;
  }
  return out;
}

} // namespace

int main(int argc, char **argv) {
  std::string data = "/usr/share/libonnx-testdata/data/node", excludedPath = LLMOPT_CONFORMANCE_EXCLUDED, filter;
  bool verbose = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--data" && i + 1 < argc)
      data = argv[++i];
    else if (a == "--excluded" && i + 1 < argc)
      excludedPath = argv[++i];
    else if (a == "--filter" && i + 1 < argc)
      filter = argv[++i];
    else if (a == "-v")
      verbose = true;
    else {
      std::fprintf(stderr, "usage: %s [--data DIR] [--excluded FILE] [--filter SUBSTR] [-v]\n", argv[0]);
      return 2;
    }
  }
  if (!fs::is_directory(data)) {
    std::fprintf(stderr, "conformance: no test data at %s (install libonnx-testdata)\n", data.c_str());
    return 2;
  }
  const auto excluded = readExcluded(excludedPath);
  std::vector<fs::path> tests;
  for (const auto &e : fs::directory_iterator(data))
    if (e.is_directory() && fs::exists(e.path() / "model.onnx") &&
        e.path().filename().string().find(filter) != std::string::npos)
      tests.push_back(e.path());
  std::sort(tests.begin(), tests.end());

  int passed = 0, failed = 0, unsupported = 0, skipped = 0;
  std::map<std::string, int> missingOps;
  std::vector<std::string> failures;
  for (const auto &t : tests) {
    const std::string name = t.filename().string();
    if (excluded.count(name)) {
      ++skipped;
      continue;
    }
    Outcome o = runIsolated(t);
    if (o.kind == 'P') {
      ++passed;
    } else if (o.kind == 'U') {
      ++unsupported;
      std::istringstream ops(o.detail);
      for (std::string op; std::getline(ops, op, ',');)
        ++missingOps[op];
    } else {
      ++failed;
      failures.push_back(name + ": " + o.detail);
    }
    if (verbose)
      std::printf("%c %s %s\n", o.kind, name.c_str(), o.detail.c_str());
  }
  for (const auto &f : failures)
    std::printf("FAILED %s\n", f.c_str());
  std::string ops;
  for (const auto &[op, count] : missingOps)
    ops += fmt::format("{}{}({})", ops.empty() ? "" : " ", op, count);
  std::printf("unsupported ops: %s\n", ops.c_str());
  std::printf("excluded: %d (see %s)\n", skipped, excludedPath.c_str());
  std::printf("unsupported: %d (clean errors)\n", unsupported);
  std::printf("conformance: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

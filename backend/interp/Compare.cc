// Tensor differences, random graph inputs and graph equivalence checks.
#include "backend/interp/Compare.h"

#include <cmath>

#include <fmt/ranges.h>

#include "backend/interp/Kernel.h"

namespace llmopt::interp {

std::string Difference::summary() const {
  if (!mismatch.empty())
    return mismatch;
  return fmt::format("max abs {:.3g}, max rel {:.3g}, cosine {:.6f}{}", maxAbs, maxRel, cosine,
                     ok ? "" : fmt::format(" (worst element {})", worst));
}

Difference compareTensors(const Tensor &got, const Tensor &want, const Tolerance &tol) {
  Difference d;
  if (got.dtype() != want.dtype() || got.shape() != want.shape()) {
    d.ok = false;
    d.mismatch = fmt::format("{}{} vs expected {}{}", dtypeName(got.dtype()), shapeStr(got.shape()),
                             dtypeName(want.dtype()), shapeStr(want.shape()));
    return d;
  }
  if (want.dtype() == DType::String) {
    d.ok = got.stringData() == want.stringData();
    if (!d.ok)
      d.mismatch = "string contents differ";
    return d;
  }
  const bool isF = isFloat(want.dtype());
  double dot = 0, ng = 0, nw = 0, worstExcess = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double g = isF ? got.getDouble(i) : static_cast<double>(got.getInt(i));
    const double w = isF ? want.getDouble(i) : static_cast<double>(want.getInt(i));
    if (std::isnan(g) || std::isnan(w)) {
      if (std::isnan(g) != std::isnan(w) && worstExcess != INFINITY) {
        d.ok = false;
        worstExcess = INFINITY;
        d.worst = i;
      }
      continue;
    }
    if (g == w) { // also equal infinities
      if (std::isfinite(g)) {
        dot += g * w;
        ng += g * g;
        nw += w * w;
      }
      continue;
    }
    const double diff = std::fabs(g - w);
    d.maxAbs = std::max(d.maxAbs, diff);
    if (w != 0)
      d.maxRel = std::max(d.maxRel, diff / std::fabs(w));
    if (std::isfinite(g) && std::isfinite(w)) {
      dot += g * w;
      ng += g * g;
      nw += w * w;
    }
    const double excess = isF ? diff - (tol.atol + tol.rtol * std::fabs(w)) : diff;
    if (excess > 0 && excess > worstExcess) {
      d.ok = false;
      worstExcess = excess;
      d.worst = i;
    }
  }
  d.cosine = ng == 0 && nw == 0 ? 1.0 : (ng == 0 || nw == 0 ? 0.0 : dot / std::sqrt(ng * nw));
  return d;
}

Expected<std::vector<Tensor>> randomInputs(const Graph &g, const RandomInputOptions &opts) {
  uint64_t state = opts.seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
  auto next = [&] { // splitmix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  std::vector<Tensor> out;
  for (const Value *v : g.inputs()) {
    if (v->isConstant()) {
      out.push_back(*v->constant());
      continue;
    }
    const Type &t = v->type();
    if (!t.isTensor() || !t.dims)
      return errorf("graph input '{}' has type {}: random inputs need a tensor of known rank", v->name(),
                    toString(t));
    Shape shape;
    for (const Dim &d : *t.dims) {
      if (d.isStatic()) {
        shape.push_back(d.value);
        continue;
      }
      auto it = d.kind == Dim::Kind::Symbolic ? opts.dims.find(d.symbol) : opts.dims.end();
      shape.push_back(it != opts.dims.end() ? it->second : opts.defaultDim);
    }
    const int64_t count = numelOf(shape);
    std::vector<double> vals(static_cast<size_t>(count));
    for (double &x : vals) {
      const double u = static_cast<double>(next() >> 11) / 9007199254740992.0; // [0, 1)
      if (isFloat(t.elem))
        x = (2 * u - 1) * opts.floatRange;
      else if (t.elem == DType::Bool)
        x = u < 0.5 ? 0 : 1;
      else
        x = static_cast<double>(opts.intLow + static_cast<int64_t>(u * static_cast<double>(opts.intHigh - opts.intLow)));
    }
    LLMOPT_ASSIGN_OR_RETURN(Tensor wide, castTensor(Tensor::fromVector(DType::F64, shape, vals), t.elem));
    out.push_back(std::move(wide));
  }
  return out;
}

Status checkEquivalent(const Graph &before, const Graph &after, const std::vector<Tensor> &inputs,
                       const Tolerance &tol, const RunOptions &opts) {
  auto want = run(before, inputs, opts);
  if (!want)
    return want.status().withContext("running the graph before");
  auto got = run(after, inputs, opts);
  if (!got)
    return got.status().withContext("running the graph after");
  if (got->size() != want->size())
    return errorf("the graph after has {} outputs, before {}", got->size(), want->size());
  for (size_t i = 0; i < want->size(); ++i) {
    Difference d = compareTensors((*got)[i], (*want)[i], tol);
    if (!d.ok)
      return errorf("output {} '{}' differs beyond rtol {} / atol {}: {}", i,
                    i < after.outputs().size() ? after.outputs()[i]->name() : "", tol.rtol, tol.atol,
                    d.summary());
  }
  return Status::ok();
}

} // namespace llmopt::interp

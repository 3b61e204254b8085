// Numeric comparison of models through the reference interpreter.
#include "tests/support/NumericCheck.h"

#include <random>

#include "backend/interp/Compare.h"

namespace llmopt::test {

std::vector<Tensor> makeInputs(const Graph &g, const std::map<std::string, int64_t> &dims,
                               uint64_t seed, int64_t intHigh) {
  std::mt19937_64 rng(seed);
  std::vector<Tensor> out;
  for (const Value *in : g.inputs()) {
    if (in->isConstant())
      break; // inputs with defaults come last in practice; leave them to their default
    std::vector<int64_t> shape;
    for (const Dim &d : in->type().dims.value_or(Dims{})) {
      if (d.isStatic())
        shape.push_back(d.value);
      else {
        auto it = dims.find(d.symbol);
        shape.push_back(it == dims.end() ? 3 : it->second);
      }
    }
    Tensor t = Tensor::zeros(in->type().elem, shape);
    const int64_t n = t.numel();
    switch (t.dtype()) {
    case DType::F32: {
      std::normal_distribution<float> nd;
      auto v = t.mutableView<float>();
      for (int64_t i = 0; i < n; ++i)
        v[static_cast<size_t>(i)] = nd(rng);
      break;
    }
    case DType::I64: {
      // Segment ids index a 2-row table in BERT-style models.
      const bool segments = in->name().find("token_type") != std::string::npos;
      std::uniform_int_distribution<int64_t> ud(0, segments ? 1 : intHigh - 1);
      auto v = t.mutableView<int64_t>();
      for (int64_t i = 0; i < n; ++i)
        v[static_cast<size_t>(i)] = in->name() == "attention_mask" ? 1 : ud(rng);
      break;
    }
    case DType::I32: {
      std::uniform_int_distribution<int32_t> ud(0, static_cast<int32_t>(intHigh - 1));
      auto v = t.mutableView<int32_t>();
      for (int64_t i = 0; i < n; ++i)
        v[static_cast<size_t>(i)] = ud(rng);
      break;
    }
    case DType::Bool: {
      auto v = t.mutableView<uint8_t>();
      for (int64_t i = 0; i < n; ++i)
        v[static_cast<size_t>(i)] = static_cast<uint8_t>(rng() & 1);
      break;
    }
    default:
      break; // zeros
    }
    out.push_back(std::move(t));
  }
  return out;
}

::testing::AssertionResult outputsClose(const std::vector<Tensor> &expected,
                                        const std::vector<Tensor> &actual, double rtol,
                                        double atol) {
  if (expected.size() != actual.size())
    return ::testing::AssertionFailure()
           << "output count differs: " << expected.size() << " vs " << actual.size();
  for (size_t o = 0; o < expected.size(); ++o) {
    interp::Difference d = interp::compareTensors(actual[o], expected[o], {rtol, atol});
    if (!d.ok)
      return ::testing::AssertionFailure() << "output #" << o << ": " << d.summary() << " (rtol "
                                           << rtol << ", atol " << atol << ")";
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult sameOutputs(const Model &before, const Model &after,
                                       const std::vector<Tensor> &inputs, double rtol,
                                       double atol) {
  auto a = interp::run(before.graph(), inputs);
  if (!a)
    return ::testing::AssertionFailure() << "before: " << a.status().message();
  auto b = interp::run(after.graph(), inputs);
  if (!b)
    return ::testing::AssertionFailure() << "after: " << b.status().message();
  return outputsClose(*a, *b, rtol, atol);
}

} // namespace llmopt::test

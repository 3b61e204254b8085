// Interpreter kernel benchmarks (Google Benchmark): f32 MatMul GFLOP/s through the
// interpreter's own dispatch, at the thread count the machine has (2 here).
#include <random>

#include <benchmark/benchmark.h>

#include "backend/interp/Interpreter.h"

using namespace llmopt;

namespace {

Tensor randomTensor(std::vector<int64_t> shape, uint32_t seed) {
  Tensor t = Tensor::zeros(DType::F32, std::move(shape));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float &v : t.mutableView<float>())
    v = u(rng);
  return t;
}

// Y[M,N] = A[M,K] * B[K,N], as a MatMul node evaluated by the interpreter.
void BM_MatMul(benchmark::State &state) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  Model model;
  Graph &g = model.graph();
  Value *a = g.addInput("a", Type::tensorOf(DType::F32, {m, k}));
  Value *b = g.addInput("b", Type::tensorOf(DType::F32, {k, n}));
  Node *mm = g.addNode(OpKind::MatMul, {a, b});
  Tensor ta = randomTensor({m, k}, 1), tb = randomTensor({k, n}, 2);
  std::vector<const Tensor *> ins = {&ta, &tb};
  for (auto _ : state) {
    auto out = interp::evaluateNode(*mm, ins);
    if (!out) {
      state.SkipWithError(out.status().message().c_str());
      return;
    }
    benchmark::DoNotOptimize(out->front().data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * static_cast<double>(m * k * n) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

} // namespace

// Shapes of a 135M Llama (SmolLM2: hidden 576, MLP 1536, vocab 49152) at 512 tokens,
// plus a square reference and a decode-step GEMV.
BENCHMARK(BM_MatMul)->Args({512, 576, 576})->Args({512, 576, 1536})->Args({512, 1536, 576})
    ->Args({1024, 1024, 1024})->Args({1, 576, 1536})->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();

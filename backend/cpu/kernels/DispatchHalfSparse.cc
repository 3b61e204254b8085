// Entry points of the 16-bit and 2:4 sparse formats: A's rows are copied once per call into
// zero-padded rows, then the weight's column tiles are split across the thread pool.
#include <algorithm>
#include <stdexcept>
#include <vector>

#include "backend/cpu/kernels/HalfSparseInternal.h"

namespace llmopt::cpu {

namespace {

template <class Weights>
using TileFn = void (*)(const detail::FloatJob<Weights> &, int64_t, int64_t);

template <class Weights>
void runFloatJob(Isa isa, const float *a, int64_t m, int64_t lda, const Weights &w, float *c,
                 int64_t ldc, const Epilogue &epilogue, int64_t kPadded,
                 const TileFn<Weights> (&variants)[3]) {
  // These kernels apply bias + residual only: refuse an activation rather than ignore it.
  if (epilogue.act != Activation::None)
    throw std::invalid_argument("llmopt::cpu: the 16-bit and 2:4 formats take no epilogue activation");
  isa = std::min(isa, detectedIsa());
  detail::FloatJob<Weights> job{w, a, m, lda, ldc, c, epilogue, nullptr, kPadded};
  thread_local std::vector<float> act;
  if (isa != Isa::Scalar) { // the scalar reference reads A as it is
    act.assign(m * kPadded, 0.f);
    for (int64_t row = 0; row < m; ++row)
      std::copy_n(a + row * lda, w.layout.k, act.data() + row * kPadded);
    job.act = act.data();
  }
  struct Ctx {
    TileFn<Weights> fn;
    const detail::FloatJob<Weights> *job;
  } ctx{variants[static_cast<int>(isa)], &job};
  detail::parallelRanges(
      w.layout.tiles(),
      [](const void *p, int64_t begin, int64_t end) {
        const auto *x = static_cast<const Ctx *>(p);
        x->fn(*x->job, begin, end);
      },
      &ctx);
}

constexpr TileFn<HalfWeights> kHalfVariants[3] = {
    detail::ref::halfTiles, detail::avx2::halfTiles, detail::avx512::halfTiles};
constexpr TileFn<Sparse24Weights> kSparse24Variants[3] = {
    detail::ref::sparse24Tiles, detail::avx2::sparse24Tiles, detail::avx512::sparse24Tiles};

} // namespace

void halfGemmOn(Isa isa, const float *a, int64_t m, int64_t lda, const HalfWeights &w,
                float *c, int64_t ldc, const Epilogue &epilogue) {
  runFloatJob(isa, a, m, lda, w, c, ldc, epilogue, w.layout.paddedK(), kHalfVariants);
}

void halfGemm(const float *a, int64_t m, int64_t lda, const HalfWeights &w, float *c,
              int64_t ldc, const Epilogue &epilogue) {
  halfGemmOn(activeIsa(), a, m, lda, w, c, ldc, epilogue);
}

void sparse24GemmOn(Isa isa, const float *a, int64_t m, int64_t lda, const Sparse24Weights &w,
                    float *c, int64_t ldc, const Epilogue &epilogue) {
  runFloatJob(isa, a, m, lda, w, c, ldc, epilogue, w.layout.paddedK(), kSparse24Variants);
}

void sparse24Gemm(const float *a, int64_t m, int64_t lda, const Sparse24Weights &w, float *c,
                  int64_t ldc, const Epilogue &epilogue) {
  sparse24GemmOn(activeIsa(), a, m, lda, w, c, ldc, epilogue);
}

} // namespace llmopt::cpu

// Run-time support for code emitted by `llmopt --emit=cpp`: the ops the generated
// forward() calls (norms, RoPE, attention with a KV cache, SwiGLU, f32 GEMM) and the
// description of the model the generated model.cpp fills in. Copied verbatim into every
// emitted project (source: llmopt's backend/cpp/runtime/).
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/cpu/kernels/Kernels.h"

namespace llmopt_rt {

namespace cpu = llmopt::cpu;

/// One KV cache a GroupQueryAttention node keeps.
struct KvSpec {
  int64_t kvHeads, headDim;
};

/// The compiled model, as model.cpp describes it.
struct ModelInfo {
  uint64_t layoutHash;   ///< must match weights.bin's header
  uint64_t weightsBytes; ///< size of weights.bin
  int64_t arenaWidth;    ///< activation arena, floats per token
  int64_t maxPositions;  ///< rows of the rotary tables
  int64_t embedRows;     ///< token ids must be below this
  int accuracyLevel;     ///< 4: int8 activations, 0: f32
  int64_t numKv;
  const KvSpec *kv;
  int64_t numOutputs;
  const char *const *outputNames;
  const int64_t *outputCols;
  const int64_t *outputOffset; ///< arena offset (floats per token) of each output
};
const ModelInfo &modelInfo();

/// What one forward call sees: weights, the arena for n tokens, the caches.
struct Ctx {
  const uint8_t *w = nullptr; ///< weights.bin mapping
  float *arena = nullptr;     ///< arenaWidth * n floats
  int64_t n = 0;              ///< tokens in this call
  int64_t past = 0;           ///< tokens already in the caches
  int64_t maxTokens = 0;      ///< cache capacity
  float *const *k = nullptr;  ///< per KvSpec: [kvHeads, maxTokens, headDim]
  float *const *v = nullptr;
  cpu::Compute compute = cpu::Compute::Int8;
  const float *f32(uint64_t offset) const { return reinterpret_cast<const float *>(w + offset); }
  cpu::Int4Weights int4(uint64_t offset, int64_t k, int64_t n, int block, bool asym) const {
    return {cpu::Int4Layout{k, n, block, asym}, w + offset};
  }
  float *buf(int64_t offset) const { return arena + offset * n; }
};
/// The generated program.
void forward(const Ctx &c, const int64_t *ids);

// ---------------------------------------------------------------- ops (row-major, n rows)

/// out[i, :] = table[ids[i], :]; ids checked against `rows`.
void gather(const float *table, int64_t rows, int64_t cols, const int64_t *ids, int64_t n,
            float *out, int64_t ldo);
/// out[i, :] = W[:, ids[i]] of an int4 W [H, V] (a quantized embedding table, transposed).
void gatherInt4(const cpu::Int4Weights &w, const int64_t *ids, int64_t n, float *out, int64_t ldo);
/// y = x / sqrt(mean(x^2) + eps) * gamma, per row.
void rmsNorm(int64_t n, int64_t cols, const float *x, int64_t ldx, const float *gamma, float eps,
             float *y, int64_t ldy);
/// out = a + b + bias[col], per row; b or bias may be null.
void add(int64_t n, int64_t cols, const float *a, int64_t lda, const float *b, int64_t ldb,
         const float *bias, float *out, int64_t ldo);
/// out = silu(g) * u.
void swiglu(int64_t n, int64_t cols, const float *g, int64_t ldg, const float *u, int64_t ldu,
            float *out, int64_t ldo);
/// C = prologue(A) · W (+ epilogue) with packed int4 weights (the kernel library): the
/// prologue RMS-normalizes A's rows as the kernel reads them, the epilogue adds bias and
/// residual and applies an activation (SwiGLU over interleaved gate/up tiles).
void int4MatMul(const Ctx &c, const float *a, int64_t lda, const cpu::Int4Weights &w, float *out,
                int64_t ldo, const cpu::Epilogue &e, const cpu::Prologue &p = {});
/// C[n, N] = A[n, K] · Wt[N, K]^T (+ bias + residual): f32 weights stored transposed.
void f32MatMul(const float *a, int64_t lda, int64_t n, const float *wt, int64_t k, int64_t cols,
               float *out, int64_t ldo, const cpu::Epilogue &e);
/// Rotary embedding on [n, heads*headDim] rows at positions pos0 + i (rotate-half or
/// interleaved pairs over the first rotDim of each head); may run in place.
void rope(int64_t n, int64_t heads, int64_t headDim, int64_t rotDim, bool interleaved,
          const float *x, int64_t ldx, const float *cosT, const float *sinT, int64_t tableRows,
          int64_t pos0, float *y, int64_t ldy);
/// Causal grouped-query attention: appends k, v (n rows) to cache `layer` at c.past, then
/// out[i] attends to positions 0 .. c.past + i.
void gqa(const Ctx &c, int layer, int64_t heads, int64_t kvHeads, int64_t headDim, float scale,
         const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v, int64_t ldv,
         float *out, int64_t ldo);

} // namespace llmopt_rt

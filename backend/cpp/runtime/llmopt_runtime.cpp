// Run-time support for emitted models: the ops forward() calls and the C API of model.h.
#include "llmopt_runtime.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/cpu/kernels/KernelsInternal.h"
#include "model.h"

namespace llmopt_rt {
namespace {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename Fn> void parallel(int64_t count, const Fn &fn) {
  cpu::detail::parallelRanges(
      count,
      [](const void *ctx, int64_t b, int64_t e) { (*static_cast<const Fn *>(ctx))(b, e); }, &fn);
}

/// Dot product with 16 independent sums (vectorized without -ffast-math).
__attribute__((target_clones("avx512f", "avx2", "default"))) float dot(const float *a,
                                                                        const float *b,
                                                                        int64_t k) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= k; i += 16)
    for (int j = 0; j < 16; ++j)
      acc[j] += a[i + j] * b[i + j];
  float s = 0;
  for (; i < k; ++i)
    s += a[i] * b[i];
  for (int j = 0; j < 16; ++j)
    s += acc[j];
  return s;
}

} // namespace

void gather(const float *table, int64_t rows, int64_t cols, const int64_t *ids, int64_t n,
            float *out, int64_t ldo) {
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= rows)
      throw Error("token id " + std::to_string(ids[i]) + " is outside the embedding's " +
                  std::to_string(rows) + " rows");
    std::memcpy(out + i * ldo, table + ids[i] * cols, static_cast<size_t>(cols) * sizeof(float));
  }
}

void gatherInt4(const cpu::Int4Weights &w, const int64_t *ids, int64_t n, float *out, int64_t ldo) {
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= w.layout.n)
      throw Error("token id " + std::to_string(ids[i]) + " is outside the embedding's " +
                  std::to_string(w.layout.n) + " rows");
    for (int64_t k = 0; k < w.layout.k; ++k)
      out[i * ldo + k] = cpu::int4Weight(w, k, ids[i]);
  }
}

void rmsNorm(int64_t n, int64_t cols, const float *x, int64_t ldx, const float *gamma, float eps,
             float *y, int64_t ldy) {
  for (int64_t i = 0; i < n; ++i) {
    const float *xi = x + i * ldx;
    double ss = 0;
    for (int64_t j = 0; j < cols; ++j)
      ss += static_cast<double>(xi[j]) * xi[j];
    const float inv = 1.f / std::sqrt(static_cast<float>(ss / cols) + eps);
    float *yi = y + i * ldy;
    for (int64_t j = 0; j < cols; ++j)
      yi[j] = xi[j] * inv * gamma[j];
  }
}

void add(int64_t n, int64_t cols, const float *a, int64_t lda, const float *b, int64_t ldb,
         const float *bias, float *out, int64_t ldo) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < cols; ++j)
      out[i * ldo + j] = a[i * lda + j] + (b ? b[i * ldb + j] : 0.f) + (bias ? bias[j] : 0.f);
}

void swiglu(int64_t n, int64_t cols, const float *g, int64_t ldg, const float *u, int64_t ldu,
            float *out, int64_t ldo) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const float x = g[i * ldg + j];
      out[i * ldo + j] = x / (1.f + std::exp(-x)) * u[i * ldu + j];
    }
}

void int4MatMul(const Ctx &c, const float *a, int64_t lda, const cpu::Int4Weights &w, float *out,
                int64_t ldo, const cpu::Epilogue &e, const cpu::Prologue &p) {
  cpu::int4Gemm(a, c.n, lda, w, out, ldo, c.compute, e, p);
}

void f32MatMul(const float *a, int64_t lda, int64_t n, const float *wt, int64_t k, int64_t cols,
               float *out, int64_t ldo, const cpu::Epilogue &e) {
  // Columns split across threads; each weight row is read once for all n rows.
  parallel((cols + 15) / 16, [&](int64_t b, int64_t en) {
    for (int64_t j = b * 16; j < std::min(cols, en * 16); ++j) {
      const float *wj = wt + j * k;
      for (int64_t i = 0; i < n; ++i) // bias, activation, residual as the kernels apply them
        cpu::detail::storeOutput(e, out, ldo, cols, i, j, dot(a + i * lda, wj, k));
    }
  });
}

void rope(int64_t n, int64_t heads, int64_t headDim, int64_t rotDim, bool interleaved,
          const float *x, int64_t ldx, const float *cosT, const float *sinT, int64_t tableRows,
          int64_t pos0, float *y, int64_t ldy) {
  const int64_t half = rotDim / 2;
  std::vector<float> tmp(static_cast<size_t>(headDim));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t at = pos0 + i;
    if (at < 0 || at >= tableRows)
      throw Error("position " + std::to_string(at) + " is outside the rotary tables' " +
                  std::to_string(tableRows) + " rows");
    const float *c = cosT + at * half, *s = sinT + at * half;
    for (int64_t h = 0; h < heads; ++h) {
      const float *xi = x + i * ldx + h * headDim;
      for (int64_t d = 0; d < rotDim; ++d) {
        int64_t ci, j;
        float sign;
        if (interleaved) {
          ci = d / 2;
          sign = d % 2 == 0 ? -1.f : 1.f;
          j = d % 2 == 0 ? d + 1 : d - 1;
        } else {
          ci = d % half;
          sign = d < half ? -1.f : 1.f;
          j = (d + half) % rotDim;
        }
        tmp[static_cast<size_t>(d)] = xi[d] * c[ci] + sign * xi[j] * s[ci];
      }
      for (int64_t d = rotDim; d < headDim; ++d)
        tmp[static_cast<size_t>(d)] = xi[d];
      std::memcpy(y + i * ldy + h * headDim, tmp.data(), static_cast<size_t>(headDim) * sizeof(float));
    }
  }
}

void gqa(const Ctx &c, int layer, int64_t heads, int64_t kvHeads, int64_t headDim, float scale,
         const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v, int64_t ldv,
         float *out, int64_t ldo) {
  if (c.past + c.n > c.maxTokens)
    throw Error("the KV cache holds " + std::to_string(c.maxTokens) + " tokens; " +
                std::to_string(c.past) + " + " + std::to_string(c.n) + " do not fit");
  float *kc = c.k[layer], *vc = c.v[layer];
  const size_t rowBytes = static_cast<size_t>(headDim) * sizeof(float);
  for (int64_t h = 0; h < kvHeads; ++h)
    for (int64_t i = 0; i < c.n; ++i) {
      std::memcpy(kc + (h * c.maxTokens + c.past + i) * headDim, k + i * ldk + h * headDim, rowBytes);
      std::memcpy(vc + (h * c.maxTokens + c.past + i) * headDim, v + i * ldv + h * headDim, rowBytes);
    }
  const int64_t group = heads / kvHeads;
  auto attend = [&](int64_t b, int64_t e) {
    std::vector<float> p(static_cast<size_t>(c.past + c.n));
    for (int64_t t = b; t < e; ++t) {
      const int64_t h = t / c.n, i = t % c.n, kvh = h / group, len = c.past + i + 1;
      const float *qi = q + i * ldq + h * headDim;
      const float *kh = kc + kvh * c.maxTokens * headDim, *vh = vc + kvh * c.maxTokens * headDim;
      float mx = -INFINITY;
      for (int64_t s = 0; s < len; ++s) {
        p[static_cast<size_t>(s)] = dot(qi, kh + s * headDim, headDim) * scale;
        mx = std::max(mx, p[static_cast<size_t>(s)]);
      }
      float sum = 0;
      for (int64_t s = 0; s < len; ++s)
        sum += p[static_cast<size_t>(s)] = std::exp(p[static_cast<size_t>(s)] - mx);
      float *o = out + i * ldo + h * headDim;
      std::fill(o, o + headDim, 0.f);
      for (int64_t s = 0; s < len; ++s) {
        const float w = p[static_cast<size_t>(s)] / sum;
        const float *vs = vh + s * headDim;
        for (int64_t d = 0; d < headDim; ++d)
          o[d] += w * vs[d];
      }
    }
  };
  // A decode step's attention is a few hundred kFLOP: a thread hand-off costs more.
  if (heads * c.n * (c.past + c.n) * headDim < (int64_t{1} << 20))
    attend(0, heads * c.n);
  else
    parallel(heads * c.n, attend);
}

} // namespace llmopt_rt

// ---------------------------------------------------------------- C API

using llmopt_rt::Error;

namespace {
thread_local std::string lastError;

struct Header {
  char magic[8];
  uint64_t layoutHash, bytes;
  uint64_t pad[5];
};
static_assert(sizeof(Header) == 64);

template <typename Fn> int guarded(Fn &&fn) {
  try {
    fn();
    lastError.clear();
    return 0;
  } catch (const std::exception &e) {
    lastError = e.what();
    return -1;
  }
}
} // namespace

struct llmopt_model {
  const uint8_t *map = nullptr;
  size_t size = 0;
  llmopt_rt::cpu::Compute compute = llmopt_rt::cpu::Compute::Int8;
};

struct llmopt_state {
  llmopt_model *model = nullptr;
  int64_t maxTokens = 0, past = 0;
  std::vector<std::vector<float>> k, v;
  std::vector<float *> kp, vp;
  std::vector<float> arena;
};

extern "C" {

const char *llmopt_last_error(void) { return lastError.c_str(); }

void llmopt_model_set_accuracy_level(llmopt_model *m, int level) {
  m->compute = level >= 4 ? llmopt_rt::cpu::Compute::Int8 : llmopt_rt::cpu::Compute::F32;
}

llmopt_model *llmopt_model_load(const char *path) {
  llmopt_model *m = nullptr;
  guarded([&] {
    const llmopt_rt::ModelInfo &info = llmopt_rt::modelInfo();
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      throw Error(std::string(path) + ": cannot open: " + std::strerror(errno));
    struct stat st {};
    ::fstat(fd, &st);
    const size_t size = static_cast<size_t>(st.st_size);
    void *p = size >= sizeof(Header) ? ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    ::close(fd);
    if (p == MAP_FAILED)
      throw Error(std::string(path) + ": cannot map " + std::to_string(size) + " bytes");
    const Header *h = static_cast<const Header *>(p);
    if (std::memcmp(h->magic, "LLMOPTW1", 8) != 0 || h->layoutHash != info.layoutHash ||
        h->bytes != size || size != info.weightsBytes) {
      ::munmap(p, size);
      throw Error(std::string(path) + ": not the weights.bin this model.cpp was generated with");
    }
    m = new llmopt_model;
    m->map = static_cast<const uint8_t *>(p);
    m->size = size;
    llmopt_model_set_accuracy_level(m, info.accuracyLevel);
    if (const char *env = std::getenv("LLMOPT_ACCURACY_LEVEL"))
      llmopt_model_set_accuracy_level(m, std::atoi(env));
  });
  return m;
}

void llmopt_model_free(llmopt_model *m) {
  if (!m)
    return;
  ::munmap(const_cast<uint8_t *>(m->map), m->size);
  delete m;
}

size_t llmopt_model_num_outputs(const llmopt_model *) {
  return static_cast<size_t>(llmopt_rt::modelInfo().numOutputs);
}
int64_t llmopt_model_output_cols(const llmopt_model *, size_t i) {
  const auto &info = llmopt_rt::modelInfo();
  return i < static_cast<size_t>(info.numOutputs) ? info.outputCols[i] : -1;
}
const char *llmopt_model_output_name(const llmopt_model *, size_t i) {
  const auto &info = llmopt_rt::modelInfo();
  return i < static_cast<size_t>(info.numOutputs) ? info.outputNames[i] : nullptr;
}
int64_t llmopt_model_max_positions(const llmopt_model *) { return llmopt_rt::modelInfo().maxPositions; }

void llmopt_set_num_threads(int n) { llmopt::cpu::setNumThreads(n); }

llmopt_state *llmopt_state_new(llmopt_model *m, size_t maxTokens) {
  llmopt_state *s = nullptr;
  guarded([&] {
    const auto &info = llmopt_rt::modelInfo();
    if (!m || maxTokens == 0 || static_cast<int64_t>(maxTokens) > info.maxPositions)
      throw Error("max_tokens must be in [1, " + std::to_string(info.maxPositions) + "]");
    auto st = new llmopt_state;
    st->model = m;
    st->maxTokens = static_cast<int64_t>(maxTokens);
    for (int64_t i = 0; i < info.numKv; ++i) {
      const size_t sz = static_cast<size_t>(info.kv[i].kvHeads * st->maxTokens * info.kv[i].headDim);
      st->k.emplace_back(sz);
      st->v.emplace_back(sz);
    }
    for (int64_t i = 0; i < info.numKv; ++i) {
      st->kp.push_back(st->k[static_cast<size_t>(i)].data());
      st->vp.push_back(st->v[static_cast<size_t>(i)].data());
    }
    s = st;
  });
  return s;
}

void llmopt_state_free(llmopt_state *s) { delete s; }
void llmopt_state_reset(llmopt_state *s) { s->past = 0; }
size_t llmopt_state_length(const llmopt_state *s) { return static_cast<size_t>(s->past); }

} // extern "C"

namespace {
/// Runs n tokens through forward(); outs[i] (may be null) receives output i, rows
/// [firstRow, n).
void decodeInto(llmopt_state *s, const int64_t *ids, size_t count, float *const *outs,
                int64_t firstRow) {
  const auto &info = llmopt_rt::modelInfo();
  const int64_t n = static_cast<int64_t>(count);
  if (n <= 0)
    throw Error("no tokens given");
  if (s->past + n > s->maxTokens)
    throw Error("the state holds " + std::to_string(s->maxTokens) + " tokens; " +
                std::to_string(s->past) + " + " + std::to_string(n) + " do not fit");
  const size_t need = static_cast<size_t>(info.arenaWidth * n);
  if (s->arena.size() < need)
    s->arena.resize(need);
  llmopt_rt::Ctx c;
  c.w = s->model->map;
  c.arena = s->arena.data();
  c.n = n;
  c.past = s->past;
  c.maxTokens = s->maxTokens;
  c.k = s->kp.data();
  c.v = s->vp.data();
  c.compute = s->model->compute;
  llmopt_rt::forward(c, ids);
  for (int64_t o = 0; o < info.numOutputs; ++o) {
    if (!outs[o])
      continue;
    const int64_t cols = info.outputCols[o];
    std::memcpy(outs[o], c.buf(info.outputOffset[o]) + firstRow * cols,
                static_cast<size_t>((n - firstRow) * cols) * sizeof(float));
  }
  s->past += n;
}
} // namespace

extern "C" {

int llmopt_decode(llmopt_state *s, const int64_t *ids, size_t n, float *logits) {
  return guarded([&] {
    std::vector<float *> outs(static_cast<size_t>(llmopt_rt::modelInfo().numOutputs), nullptr);
    outs[0] = logits;
    decodeInto(s, ids, n, outs.data(), 0);
  });
}

int llmopt_decode_last(llmopt_state *s, const int64_t *ids, size_t n, float *logits) {
  return guarded([&] {
    std::vector<float *> outs(static_cast<size_t>(llmopt_rt::modelInfo().numOutputs), nullptr);
    outs[0] = logits;
    decodeInto(s, ids, n, outs.data(), static_cast<int64_t>(n) - 1);
  });
}

int llmopt_model_run(llmopt_model *m, const llmopt_tensor *inputs, size_t nIn,
                     llmopt_tensor *outputs, size_t nOut) {
  const auto &info = llmopt_rt::modelInfo();
  if (nIn != 1 || nOut != static_cast<size_t>(info.numOutputs)) {
    lastError = "llmopt_model_run: expected 1 input and " + std::to_string(info.numOutputs) +
                " outputs";
    return -1;
  }
  const llmopt_tensor &in = inputs[0];
  int64_t seq = 1;
  for (int d = 0; d < in.rank; ++d)
    seq *= in.shape[d];
  if (in.dtype != LLMOPT_I64 || in.rank < 1 || in.rank > 2 || (in.rank == 2 && in.shape[0] != 1) ||
      seq <= 0) {
    lastError = "llmopt_model_run: input 0 must be i64 [1, S] or [S] token ids";
    return -1;
  }
  std::vector<float *> outs;
  for (size_t o = 0; o < nOut; ++o) {
    int64_t numel = 1;
    for (int d = 0; d < outputs[o].rank; ++d)
      numel *= outputs[o].shape[d];
    if (outputs[o].dtype != LLMOPT_F32 || numel != seq * info.outputCols[o]) {
      lastError = "llmopt_model_run: output " + std::to_string(o) + " must be f32 with " +
                  std::to_string(seq * info.outputCols[o]) + " elements";
      return -1;
    }
    outs.push_back(static_cast<float *>(outputs[o].data));
  }
  llmopt_state *s = llmopt_state_new(m, static_cast<size_t>(seq));
  if (!s)
    return -1;
  const int rc = guarded([&] { decodeInto(s, static_cast<const int64_t *>(in.data), static_cast<size_t>(seq), outs.data(), 0); });
  llmopt_state_free(s);
  return rc;
}

} // extern "C"

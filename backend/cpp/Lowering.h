// IR → the emitted program: which op runs where, with which weights, in which buffers.
//
// Values split in two: *data* (depends on the token ids' values: every activation) and
// *glue* (shape arithmetic, constants, RoPE tables). Glue is evaluated at compile time by
// the interpreter at two sequence lengths; what depends on the length must have a meaning
// the runtime reproduces (rotary tables that are position-indexed prefixes of each other,
// GroupQueryAttention's seqlens_k = S - 1 and total = S), or the emitter refuses it.
// Data nodes become Steps: one call of the runtime or kernel library each, with
// activations as [tokens, cols] row-major views into planned buffers.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "backend/cpp/CppEmitter.h"
#include "backend/cpp/MemoryPlan.h"
#include "ir/Graph.h"

namespace llmopt::codegen {

/// Where a value lives: columns [col, col+cols) of a buffer whose rows are `ld` wide.
struct Act {
  int buf = -1;
  int64_t col = 0, cols = 0, ld = 0;
};

struct Step {
  std::string comment;
  std::vector<int> buffers; ///< buffers read or written (liveness)
  std::function<std::string()> code;
};

/// The weights file being built: 64-byte aligned entries after a 64-byte header.
struct WeightsImage {
  std::vector<uint8_t> bytes = std::vector<uint8_t>(64, 0);
  std::map<std::string, uint64_t> byKey;
  uint64_t add(const std::string &key, const void *data, size_t n);
};

class Lowering {
public:
  Lowering(const Model &model, const CppEmitOptions &opts) : model_(model), g_(model.graph()), opts_(opts) {}
  Status run();

  std::vector<Step> steps;
  std::vector<PlannedBuffer> buffers;
  WeightsImage weights;
  int64_t arenaWidth = 0, maxPositions = 0, embedRows = 0;
  std::vector<std::pair<int64_t, int64_t>> kv; ///< (kv heads, head dim) per attention node
  struct Output {
    std::string name;
    Act act;
  };
  std::vector<Output> outputs;
  /// `c.buf(OFFSET) + col`, after planning.
  std::string ptr(const Act &a) const;

private:
  Status classify();
  Status planFusion();
  Status lowerNode(Node *n);
  Status lowerMatMul(Node *n);
  Status lowerGroup(const std::vector<Node *> &group);
  Status lowerSkipNorm(Node *n);
  Expected<Act> gemmInput(const Node *n, std::string &prologue);
  Status lowerRope(Node *n);
  Status lowerAttention(Node *n);
  Expected<const Tensor *> glue(const Value *v, int which);
  Expected<Act> act(const Value *v, const Node *user);
  Act define(const Value *v, int64_t cols);
  Expected<int64_t> colsOf(const Value *v) const;
  Expected<const Tensor *> constTensor(const Value *v);
  Expected<uint64_t> f32Weight(const Value *v, const Node *user, int64_t expectNumel);
  Expected<uint64_t> f32Transposed(const Value *w, const Node *user, int64_t &k, int64_t &n);
  int newBuffer(int64_t width);
  void emit(const Node *n, std::string what, std::vector<Act> acts, std::function<std::string()> code);

  const Model &model_;
  const Graph &g_;
  CppEmitOptions opts_;
  std::vector<Node *> order_;
  std::map<const Node *, int> pos_;
  const Value *ids_ = nullptr;
  std::string batchSym_, seqSym_;
  std::set<const Value *> data_, seqDep_;
  std::map<const Value *, Tensor> glue_[2];
  std::map<const Value *, Act> acts_;
  // Fusion decisions.
  std::map<const Node *, std::vector<Node *>> groups_; ///< leader -> MatMuls sharing A
  std::set<const Node *> grouped_;
  struct EpilogueFusion {
    const Node *user;
    const Value *residual;
    const Value *bias;
  };
  std::map<const Node *, EpilogueFusion> fused_; ///< MatMul -> the Add / skip norm it absorbs
  std::map<const Node *, Act> skipSums_;         ///< skip norm -> its sum, computed by a GEMM
  std::map<const Node *, const Node *> swiglu_;  ///< gate/up group leader -> the SwiGLU it computes
  std::set<const Node *> swigluFused_;           ///< SwiGLU nodes computed by a GEMM's epilogue
  std::set<const Value *> normPrologue_;         ///< RMSNorm outputs read only by int4 GEMMs
  struct NormPrologue {
    Act x;           ///< the norm's input (or the skip norm's sum)
    uint64_t gamma;  ///< weights offset
    float eps;
  };
  std::map<const Value *, NormPrologue> prologues_; ///< normalized in the GEMMs' input load
};

} // namespace llmopt::codegen

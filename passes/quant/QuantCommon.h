// What the weight-only quantization passes share: finding MatMul weights, quantizing a
// tensor by method (RTN / HQQ), swapping a constant for its quantized form, byte counts
// for --report lines, and the opset the ONNX target needs.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "ir/QuantFormats.h"
#include "passes/Pass.h"
#include "passes/PassOptions.h"

namespace llmopt::quantpass {

enum class Method { Rtn, Hqq };

/// Reads `method=rtn|hqq|gptq|awq` for `pass`. gptq / awq need calibration statistics,
/// which do not exist yet: they are rejected at run time with a message that says so.
Expected<std::string> readMethod(OptionReader &r);
/// The error for a method that needs calibration data (`--calib`).
Status calibrationMethodError(const std::string &pass, const std::string &method,
                              const PassContext &ctx);
/// Reads `block=N` (a power of two in [16, 256]).
Expected<int64_t> readBlock(OptionReader &r, const std::string &pass, int64_t dflt);

/// The block a weight with `k` elements along its block axis gets: `block`, or the
/// smallest power of two >= k (at least 16) when k is shorter, so that the one block
/// covering all of K does not pad MatMulNBits' blob to the full block.
int64_t effectiveBlock(int64_t block, int64_t k);

/// Quantizes f32 `w` per `enc` with `method`. HQQ keeps its fractional zero points
/// unless `integerZeroPoints` (DequantizeLinear and GatherBlockQuantized need integer
/// ones; see Hqq.h for how they are then chosen).
Expected<Tensor> quantizeTensor(const Tensor &w, const QuantEncoding &enc, Method method,
                                bool integerZeroPoints);

/// Replaces every use of constant `old` by a quantized constant holding `q`, which takes
/// old's name (old is left unused). Returns the new value.
Value *replaceWithQuantized(Graph &g, Value *old, Tensor q, const QuantEncoding &enc);

/// Bytes a constant stores, with its scales and zero points.
int64_t storedBytes(const Tensor &t);

/// A MatMul weight: constant W [K, N] read as B by `users` (MatMuls, and Gemms that the
/// pass turns into MatMuls first).
struct MatMulWeight {
  Value *weight;
  std::vector<Node *> users;
};
/// Why candidates were left alone, for the report line.
struct SkipCounts {
  int64_t notConstant = 0, tiny = 0, otherUses = 0, notF32 = 0, gemmForm = 0;
  std::string summary() const;
};
/// Gemm(A, B, C) {alpha=1, beta=1, transA=0, transB} with constant 2-D B becomes
/// MatMul(A, W) (+ Add(C)) with W = B or B^T [K, N], so that W can be quantized.
/// Returns the number rewritten; other Gemms count in skips.gemmForm.
int64_t gemmsToMatMuls(Graph &g, SkipCounts &skips);
/// Constant 2-D f32 weights read as B by MatMuls and by nothing else, K and N at least
/// `minDim` (smaller ones are not worth their scales: counted as tiny).
std::vector<MatMulWeight> findMatMulWeights(Graph &g, int64_t minDim, SkipCounts &skips);

/// An embedding table: constant 2-D f32 E [V, H] read by Gather(E, ids) {axis=0} and
/// possibly as a tied LM head, Transpose(E) {perm=[1,0]} read only as MatMul's B.
struct EmbeddingTable {
  Value *table;
  bool tied; ///< also read as an LM head
};
/// The embedding tables of `g` with V and H at least `minDim`; `skipped` counts gathered
/// constants read by other ops too, or smaller.
std::vector<EmbeddingTable> findEmbeddingTables(Graph &g, int64_t minDim, int64_t &skipped);
/// The encoding of a table quantized to `bits` in blocks of `block` along H (axis 1).
QuantEncoding tableEncoding(int bits, int64_t block, bool symmetric, int64_t h);

/// What quantizeMatMulWeights did, for the report line.
struct WeightQuantStats {
  int64_t weights = 0, params = 0, bytesBefore = 0, bytesAfter = 0, gemms = 0;
  SkipCounts skips;
  /// "28 weights, 1179648 -> 184320 bytes (4.50 bits per weight); skipped: none".
  std::string summary() const;
};
/// `t`, the rewritten form of weight `original`: when `original` is mapped (a model read
/// from external data) `t` moves to an unlinked temporary file mapped back read-only, so
/// that it lives in the page cache, not in anonymous memory, and peak RSS follows one
/// layer rather than the model; otherwise (or when spilling fails) `t` unchanged.
Tensor spillLikeOriginal(Tensor t, const Tensor &original);
/// Replaces `w` by its quantized form `q` (encoding `enc`), adds it to `st` and frees the
/// f32 original (spilling `q` as spillLikeOriginal says).
void installQuantized(Graph &g, const MatMulWeight &w, Tensor q, const QuantEncoding &enc,
                      WeightQuantStats &st);
/// Quantizes every weight findMatMulWeights returns (after gemmsToMatMuls) with the
/// encoding `encodingFor(K, N)` picks, on `threads` workers (0 = all cores); the result
/// does not depend on the thread count.
Expected<WeightQuantStats>
quantizeMatMulWeights(Graph &g,
                      const std::function<QuantEncoding(int64_t K, int64_t N)> &encodingFor,
                      Method method, bool integerZeroPoints, int threads = 0);

/// When the context targets onnx and the model's default-domain opset is below `need`,
/// converts it with opset<to=need> (so DequantizeLinear can carry the weights).
Expected<bool> ensureOnnxOpset(Model &m, AnalysisManager &am, int64_t need);

} // namespace llmopt::quantpass

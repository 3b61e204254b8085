// Internal to the ONNX writer: lowers the IR's quantized constants (ir/QuantFormats.h)
// to what ONNX Runtime or plain ONNX runs, choosing the form per consumer:
//
//   target ort:  MatMul(x, Wq)            => com.microsoft::MatMulNBits(x, B, scales[, zp])
//                MatMul(x, Transpose(Eq)) => MatMulNBits(x, B(Eq), ...)   (a tied LM head)
//                Gather(Eq, ids)          => GatherBlockQuantized(Reshape(B(Eq)), ids, ...)
//   either:      Transpose(Wq)            => DequantizeLinear(Transpose(q), Transpose(s), ...)
//                any other use of Wq      => DequantizeLinear(q, scale[, zp]) named Wq
//
// A quantized constant is written once per form (a tied embedding / LM head shares one
// set of MatMulNBits initializers). DequantizeLinear needs opset 21 for blocks or 4-bit
// types (13 per channel); a model below that is an error naming the constant, never a
// silent fallback to f32 weights.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "backend/onnx/OnnxExporter.h"
#include "ir/QuantFormats.h"

namespace llmopt::onnxw {

/// One ONNX node to write, in IR terms.
struct EmittedNode {
  std::string domain, opType, name;
  std::vector<std::string> inputs, outputs;
  std::vector<Attribute> attrs;
};

/// Where the lowering writes: the exporter's naming and proto emission.
struct LoweringSink {
  std::function<std::string(const Value *)> name;
  std::function<std::string(const std::string &base)> freshName;
  std::function<Status(const std::string &name, const Tensor &t)> initializer;
  std::function<Status(EmittedNode n)> node;
};

/// Lowers the quantized constants of one graph while the writer walks its nodes.
class QuantLowering {
public:
  QuantLowering(const Model &m, const Graph &g, const ExportOptions &opts, LoweringSink sink);
  /// Called before node `n` is written; true when the lowering wrote (or dropped) it.
  /// Writes DequantizeLinear for quantized inputs the node reads as they are.
  Expected<bool> lowerNode(const Node &n);
  /// Quantized constants listed as graph outputs get a DequantizeLinear.
  Status lowerOutputs();
  /// True once a com.microsoft op was written (the model must import that domain).
  bool usedContribOps() const { return usedContrib_; }

private:
  struct NBitsNames {
    std::string b, scales, zeroPoints;
    quant::NBitsLayout layout;
    bool floatZeroPoints = false;
  };
  /// The stored integers, scales and zero points as initializers, written once per
  /// constant (both DequantizeLinear forms of a tied table read the same ones).
  struct RawNames {
    std::string data, scale, zeroPoint;
  };
  Expected<const RawNames *> raw(const Value *q);
  Expected<const NBitsNames *> nbits(const Value *q);
  Status ensureDequantized(const Value *q);
  Status dequantizeTransposed(const Node &transpose, const Value *q);
  Status checkDequantizable(const Value *q, const std::string &why) const;
  bool isLmHeadTranspose(const Node &n) const;
  Status matMulNBits(const Node &matmul, const Value *q);
  Expected<bool> gatherBlockQuantized(const Node &gather, const Value *q);
  std::string constantInitializer(const std::string &base, const Tensor &t, Status &st);

  const Model &model_;
  const Graph &graph_;
  const ExportOptions &opts_;
  LoweringSink sink_;
  std::map<const Value *, NBitsNames> nbits_;
  std::map<const Value *, RawNames> raw_;
  std::set<const Value *> dequantized_;
  std::set<const Node *> droppedTransposes_;
  bool usedContrib_ = false;
};

/// The opset DequantizeLinear needs for this encoding (21 blocked or 4-bit, 13 per
/// channel, 10 per tensor).
int64_t dequantizeLinearOpset(const QuantEncoding &enc);

} // namespace llmopt::onnxw

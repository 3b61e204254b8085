// Helpers for the interpreter's unit tests: one-node models and tensor builders.
#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/interp/Interpreter.h"
#include "ir/Graph.h"

namespace llmopt::test {

/// A model holding one node of `kind` (at `opset` for its domain) whose inputs are
/// graph inputs; eval() runs interp::evaluateNode on it.
struct OneNode {
  Model model;
  Node *node = nullptr;

  OneNode(OpKind kind, int64_t opset, size_t numInputs, size_t numOutputs = 1) {
    model.opsets[std::string(opInfo(kind).domain)] = opset;
    Graph &g = model.graph();
    std::vector<Value *> ins;
    for (size_t i = 0; i < numInputs; ++i)
      ins.push_back(g.addInput("in" + std::to_string(i), Type{}));
    node = g.addNode(kind, ins, numOutputs, "n");
    for (size_t i = 0; i < numOutputs; ++i)
      g.addOutput(node->output(i));
  }
  OneNode &attr(Attribute a) {
    node->setAttr(std::move(a));
    return *this;
  }
  /// Evaluates on `inputs`; a tensor of undefined dtype stands for an omitted input.
  Expected<std::vector<Tensor>> eval(const std::vector<Tensor> &inputs) const {
    std::vector<const Tensor *> ptrs;
    for (const Tensor &t : inputs)
      ptrs.push_back(t.dtype() == DType::Undefined ? nullptr : &t);
    return interp::evaluateNode(*node, ptrs);
  }
  /// eval() that must succeed; returns output `i`.
  Tensor out(const std::vector<Tensor> &inputs, size_t i = 0) const {
    auto r = eval(inputs);
    EXPECT_TRUE(r.hasValue()) << (r ? "" : r.status().message());
    if (!r || r->size() <= i)
      return Tensor();
    return (*r)[i];
  }
};

inline Tensor f32(std::vector<int64_t> shape, std::vector<float> v) {
  return Tensor::fromVector(DType::F32, std::move(shape), v);
}
inline Tensor i64(std::vector<int64_t> shape, std::vector<int64_t> v) {
  return Tensor::fromVector(DType::I64, std::move(shape), v);
}
inline Tensor i32(std::vector<int64_t> shape, std::vector<int32_t> v) {
  return Tensor::fromVector(DType::I32, std::move(shape), v);
}
inline Tensor none() { return Tensor(); }

inline std::vector<float> floats(const Tensor &t) { return t.toFloats(); }
inline std::vector<int64_t> ints(const Tensor &t) { return t.toInts(); }

/// Deterministic pseudo-random floats in [-1, 1).
inline std::vector<float> randomFloats(size_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t s = seed * 2654435761u + 1;
  for (float &x : v) {
    s = s * 1664525u + 1013904223u;
    x = static_cast<float>((s >> 8) & 0xffff) / 32768.0f - 1.0f;
  }
  return v;
}

#define EXPECT_FLOATS_NEAR(got, want, tol)                                                         \
  do {                                                                                             \
    auto _g = (got);                                                                               \
    auto _w = (want);                                                                              \
    ASSERT_EQ(_g.size(), _w.size());                                                               \
    for (size_t _i = 0; _i < _g.size(); ++_i)                                                      \
      EXPECT_NEAR(_g[_i], _w[_i], (tol)) << "at " << _i;                                           \
  } while (0)

} // namespace llmopt::test

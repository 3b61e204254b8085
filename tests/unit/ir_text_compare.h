// Structural comparison of two models for the IR text tests: fields, values, nodes,
// attributes (float bits included) and capture links, with values matched by position.
#pragma once

#include <bit>
#include <map>

#include <gtest/gtest.h>

#include "ir/Graph.h"

namespace llmopt::test {

class ModelComparer {
public:
  void model(const Model &a, const Model &b) {
    EXPECT_EQ(a.irVersion, b.irVersion);
    EXPECT_EQ(a.opsets, b.opsets);
    EXPECT_EQ(a.producerName, b.producerName);
    EXPECT_EQ(a.producerVersion, b.producerVersion);
    EXPECT_EQ(a.domain, b.domain);
    EXPECT_EQ(a.doc, b.doc);
    EXPECT_EQ(a.modelVersion, b.modelVersion);
    EXPECT_EQ(a.metadata, b.metadata);
    EXPECT_EQ(a.functions, b.functions);
    EXPECT_EQ(a.trainingInfo, b.trainingInfo);
    graph(a.graph(), b.graph());
  }

  void graph(const Graph &a, const Graph &b) {
    SCOPED_TRACE("graph " + a.name());
    EXPECT_EQ(a.name(), b.name());
    EXPECT_EQ(a.doc, b.doc);
    ASSERT_EQ(a.inputs().size(), b.inputs().size());
    for (size_t i = 0; i < a.inputs().size(); ++i)
      value(a.inputs()[i], b.inputs()[i]);
    std::vector<Value *> ca = pureConstants(a), cb = pureConstants(b);
    ASSERT_EQ(ca.size(), cb.size());
    for (size_t i = 0; i < ca.size(); ++i)
      value(ca[i], cb[i]);
    ASSERT_EQ(a.numNodes(), b.numNodes());
    std::vector<Node *> na = a.nodeList(), nb = b.nodeList();
    for (size_t i = 0; i < na.size(); ++i)
      node(*na[i], *nb[i]);
    ASSERT_EQ(a.outputs().size(), b.outputs().size());
    for (size_t i = 0; i < a.outputs().size(); ++i)
      use(a.outputs()[i], b.outputs()[i]);
  }

private:
  static std::vector<Value *> pureConstants(const Graph &g) {
    std::vector<Value *> out;
    for (Value *v : g.constants())
      if (!v->isGraphInput())
        out.push_back(v);
    return out;
  }

  void value(const Value *a, const Value *b) {
    SCOPED_TRACE("value " + a->name());
    map_[a] = b;
    EXPECT_EQ(a->name(), b->name());
    EXPECT_TRUE(a->type() == b->type()) << toString(a->type()) << " vs " << toString(b->type());
    EXPECT_EQ(a->doc, b->doc);
    EXPECT_EQ(a->hadValueInfo, b->hadValueInfo);
    EXPECT_EQ(a->isGraphInput(), b->isGraphInput());
    EXPECT_EQ(a->isConstant(), b->isConstant());
    tensor(a->constant(), b->constant());
  }

  void use(const Value *a, const Value *b) {
    if (!a) {
      EXPECT_EQ(b, nullptr);
      return;
    }
    auto it = map_.find(a);
    ASSERT_NE(it, map_.end()) << "use of unmapped value " << a->name();
    EXPECT_EQ(it->second, b) << "use of " << a->name() << " resolves elsewhere";
  }

  void node(const Node &a, const Node &b) {
    SCOPED_TRACE("node " + a.name() + " " + a.qualifiedOpType());
    EXPECT_EQ(a.qualifiedOpType(), b.qualifiedOpType());
    EXPECT_EQ(a.kind(), b.kind());
    EXPECT_EQ(a.name(), b.name());
    EXPECT_EQ(a.doc, b.doc);
    ASSERT_EQ(a.numInputs(), b.numInputs());
    for (size_t i = 0; i < a.numInputs(); ++i)
      use(a.input(i), b.input(i));
    ASSERT_EQ(a.numOutputs(), b.numOutputs());
    for (size_t i = 0; i < a.numOutputs(); ++i)
      value(a.output(i), b.output(i));
    ASSERT_EQ(a.attributes().size(), b.attributes().size());
    for (size_t i = 0; i < a.attributes().size(); ++i)
      attr(a.attributes()[i], b.attributes()[i]);
    for (Graph *g : b.subgraphs())
      EXPECT_EQ(g->parentNode(), &b);
  }

  static std::vector<uint32_t> bits(const std::vector<float> &v) {
    std::vector<uint32_t> out;
    for (float f : v)
      out.push_back(std::bit_cast<uint32_t>(f));
    return out;
  }

  void attr(const Attribute &a, const Attribute &b) {
    SCOPED_TRACE("attribute " + a.name);
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.kind, b.kind);
    EXPECT_EQ(a.refAttrName, b.refAttrName);
    EXPECT_EQ(a.doc, b.doc);
    EXPECT_EQ(std::bit_cast<uint32_t>(a.f), std::bit_cast<uint32_t>(b.f));
    EXPECT_EQ(a.i, b.i);
    EXPECT_EQ(a.s, b.s);
    tensor(a.t, b.t);
    ASSERT_EQ(a.g != nullptr, b.g != nullptr);
    if (a.g)
      graph(*a.g, *b.g);
    EXPECT_EQ(bits(a.floats), bits(b.floats));
    EXPECT_EQ(a.ints, b.ints);
    EXPECT_EQ(a.strings, b.strings);
    ASSERT_EQ(a.tensors.size(), b.tensors.size());
    for (size_t i = 0; i < a.tensors.size(); ++i)
      tensor(a.tensors[i], b.tensors[i]);
    ASSERT_EQ(a.graphs.size(), b.graphs.size());
    for (size_t i = 0; i < a.graphs.size(); ++i)
      graph(*a.graphs[i], *b.graphs[i]);
    EXPECT_EQ(a.opaque, b.opaque);
  }

  void tensor(const std::shared_ptr<Tensor> &a, const std::shared_ptr<Tensor> &b) {
    ASSERT_EQ(a != nullptr, b != nullptr);
    if (!a)
      return;
    EXPECT_TRUE(a->sameContents(*b)) << toString(a->type()) << " vs " << toString(b->type());
    tensor(a->scales, b->scales);
    tensor(a->zeroPoints, b->zeroPoints);
  }

  std::map<const Value *, const Value *> map_;
};

inline void expectSameModel(const Model &a, const Model &b) { ModelComparer().model(a, b); }

} // namespace llmopt::test

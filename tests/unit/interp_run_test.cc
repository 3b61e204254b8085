// interp::run: input binding, initializer defaults, errors, unsupported ops, threads,
// and a model imported from ONNX text.
#include "backend/interp/Compare.h"
#include "frontend/OnnxImporter.h"
#include "interp_test_util.h"

namespace llmopt::test {
namespace {

/// x + w -> relu -> outputs (relu, sum); w is an overridable initializer.
struct AddRelu {
  Model m;
  AddRelu() {
    Graph &g = m.graph();
    Value *x = g.addInput("x", Type::tensorOf(DType::F32, {2}));
    Value *w = g.addConstant("w", f32({2}, {1, -5}));
    g.markInput(w);
    Node *add = g.addNode(OpKind::Add, {x, w}, 1, "add");
    Node *relu = g.addNode(OpKind::Relu, {add->output()}, 1, "relu");
    g.addOutput(relu->output());
    g.addOutput(add->output());
  }
};

TEST(InterpRun, BindsInputsInOrderAndUsesInitializerDefaults) {
  AddRelu t;
  auto r = interp::run(t.m.graph(), {f32({2}, {1, 2})});
  ASSERT_TRUE(r) << r.status().message();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ(floats((*r)[0]), (std::vector<float>{2, 0}));
  EXPECT_EQ(floats((*r)[1]), (std::vector<float>{2, -3}));
  r = interp::run(t.m.graph(), {f32({2}, {1, 2}), f32({2}, {0, 0})});
  ASSERT_TRUE(r);
  EXPECT_EQ(floats((*r)[0]), (std::vector<float>{1, 2}));
}

TEST(InterpRun, InputErrorsNameTheInput) {
  AddRelu t;
  auto r = interp::run(t.m.graph(), {});
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("'x'"), std::string::npos) << r.status().message();
  r = interp::run(t.m.graph(), {i64({2}, {1, 2})});
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("expects f32, got i64"), std::string::npos) << r.status().message();
  r = interp::run(t.m.graph(), {f32({3}, {1, 2, 3})});
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("expects shape"), std::string::npos) << r.status().message();
  r = interp::run(t.m.graph(), {f32({2}, {1, 2}), f32({2}, {1, 2}), f32({2}, {1, 2})});
  EXPECT_FALSE(r);
}

TEST(InterpRun, UnsupportedOpIsACleanError) {
  Model m;
  Graph &g = m.graph();
  Value *x = g.addInput("x", Type::tensorOf(DType::F32, {1}));
  Node *n = g.addNode("com.example", "Frobnicate", {x}, 1, "frob");
  g.addOutput(n->output());
  EXPECT_FALSE(interp::canEvaluate(*n));
  auto r = interp::run(g, {f32({1}, {1})});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().message(), "unsupported op com.example::Frobnicate (node 'frob')");
  auto e = interp::evaluateNode(*n, {});
  ASSERT_FALSE(e);
  EXPECT_EQ(e.status().message(), "unsupported op com.example::Frobnicate (node 'frob')");
}

TEST(InterpRun, MissingRequiredInputIsAnError) {
  OneNode mm(OpKind::MatMul, 13, 2);
  auto r = mm.eval({f32({1}, {1}), none()});
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("input 1 is required"), std::string::npos) << r.status().message();
}

TEST(InterpRun, OutputsMayBeInputsConstantsOrRepeated) {
  Model m;
  Graph &g = m.graph();
  Value *x = g.addInput("x", Type::tensorOf(DType::F32, {1}));
  Value *c = g.addConstant("c", f32({1}, {7}));
  Node *split = g.addNode(OpKind::LayerNormalization, {x, c}, 3, "ln"); // Mean / InvStdDev unused
  g.addOutput(x);
  g.addOutput(c);
  g.addOutput(split->output(0));
  auto r = interp::run(g, {f32({1}, {3})});
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_EQ(floats((*r)[0]), (std::vector<float>{3}));
  EXPECT_EQ(floats((*r)[1]), (std::vector<float>{7}));
  EXPECT_EQ(floats((*r)[2]), (std::vector<float>{0}));
}

TEST(InterpRun, ThreadCountDoesNotChangeResults) {
  const int64_t M = 64, K = 96, N = 80;
  Model m;
  Graph &g = m.graph();
  Value *a = g.addInput("a", Type::tensorOf(DType::F32, {M, K}));
  Value *b = g.addConstant("b", f32({K, N}, randomFloats(static_cast<size_t>(K * N), 21)));
  Node *mm = g.addNode(OpKind::MatMul, {a, b}, 1, "mm");
  Node *sm = g.addNode(OpKind::Softmax, {mm->output()}, 1, "sm");
  g.addOutput(sm->output());
  Tensor in = f32({M, K}, randomFloats(static_cast<size_t>(M * K), 22));
  interp::RunOptions oneThread, allThreads;
  oneThread.threads = 1;
  allThreads.threads = 0;
  auto one = interp::run(g, {in}, oneThread);
  auto all = interp::run(g, {in}, allThreads);
  ASSERT_TRUE(one && all);
  EXPECT_FLOATS_NEAR(floats((*one)[0]), floats((*all)[0]), 1e-6);
}

TEST(InterpRun, ImportedOnnxTextModel) {
  auto model = importOnnxText(R"(
    <ir_version: 8, opset_import: ["" : 17]>
    agraph (float[2,3] x) => (float[2] y, int64[2] s) {
      axes = Constant <value_ints = [1]> ()
      sum = ReduceSum <keepdims = 0> (x, axes)
      y = Sqrt(sum)
      s = Shape(y)
      s2 = Concat <axis = 0> (s, s)
    }
  )");
  ASSERT_TRUE(model) << model.status().message();
  auto r = interp::run((*model)->graph(), {f32({2, 3}, {1, 1, 2, 4, 4, 8})});
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_EQ(floats((*r)[0]), (std::vector<float>{2, 4}));
  EXPECT_EQ(ints((*r)[1]), (std::vector<int64_t>{2}));
}

TEST(InterpRun, NodeOutsideAModelUsesLatestSemantics) {
  Graph g; // no Model: opset unknown, so ReduceSum takes axes as an input
  Value *x = g.addInput("x", Type::tensorOf(DType::F32, {2, 2}));
  Value *axes = g.addConstant("axes", i64({1}, {0}));
  Node *n = g.addNode(OpKind::ReduceSum, {x, axes}, 1, "rs");
  g.addOutput(n->output());
  auto r = interp::run(g, {f32({2, 2}, {1, 2, 3, 4})});
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_EQ(floats((*r)[0]), (std::vector<float>{4, 6}));
}

/// y = x * k (as Mul) or x + x (as Add), x of shape [batch, 3].
std::unique_ptr<Model> scaleGraph(bool asAdd, float k) {
  auto m = std::make_unique<Model>();
  Graph &g = m->graph();
  Value *x = g.addInput("x", Type::tensor(DType::F32, Dims{Dim::sym("batch"), Dim::of(3)}));
  Node *n = asAdd ? g.addNode(OpKind::Add, {x, x}, 1, "add")
                  : g.addNode(OpKind::Mul, {x, g.addConstant("k", f32({}, {k}))}, 1, "mul");
  g.addOutput(n->output());
  n->output()->setName("y");
  return m;
}

TEST(InterpCompare, EquivalentGraphsPassAndDifferentOnesNameTheOutput) {
  auto mul = scaleGraph(false, 2), add = scaleGraph(true, 0), off = scaleGraph(false, 2.01f);
  interp::RandomInputOptions ro;
  ro.dims["batch"] = 4;
  auto inputs = interp::randomInputs(mul->graph(), ro);
  ASSERT_TRUE(inputs) << inputs.status().message();
  ASSERT_EQ((*inputs)[0].shape(), (std::vector<int64_t>{4, 3}));
  EXPECT_TRUE(interp::checkEquivalent(mul->graph(), add->graph(), *inputs).isOk());
  Status st = interp::checkEquivalent(mul->graph(), off->graph(), *inputs);
  ASSERT_FALSE(st.isOk());
  EXPECT_NE(st.message().find("output 0 'y'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("max abs"), std::string::npos) << st.message();
  // A looser tolerance accepts it; cosine stays ~1 for a pure rescale.
  EXPECT_TRUE(interp::checkEquivalent(mul->graph(), off->graph(), *inputs, {1e-2, 0}).isOk());
  interp::Difference d = interp::compareTensors(f32({2}, {1, 2}), f32({2}, {1, 2.5f}));
  EXPECT_FALSE(d.ok);
  EXPECT_EQ(d.worst, 1);
  EXPECT_NEAR(d.maxAbs, 0.5, 1e-12);
  EXPECT_NEAR(d.maxRel, 0.2, 1e-12);
  EXPECT_FALSE(interp::compareTensors(f32({2}, {1, 2}), f32({1, 2}, {1, 2})).ok);
}

} // namespace
} // namespace llmopt::test

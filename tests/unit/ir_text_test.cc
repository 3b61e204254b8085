// Tests of the IR text form: print -> parse -> print is byte-identical over models that
// use every dtype, attribute kind and naming corner; parse errors carry line:col.
#include <bit>
#include <cmath>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "ir/Parser.h"
#include "ir/Printer.h"
#include "ir/TextSyntax.h"
#include "ir/Verifier.h"
#include "ir_text_compare.h"

namespace llmopt {
namespace {

PrintOptions fullConstants() {
  PrintOptions o;
  o.elideLargeConstants = false;
  return o;
}

std::unique_ptr<Model> parseOk(std::string_view text) {
  auto m = parseModel(text);
  EXPECT_TRUE(m.hasValue()) << (m ? "" : m.status().message());
  return m ? m.take() : nullptr;
}

std::string parseError(std::string_view text, std::string_view source = "<text>") {
  auto m = parseModel(text, source);
  EXPECT_FALSE(m.hasValue()) << "parsed unexpectedly:\n" << text;
  return m ? "" : m.status().message();
}

/// Prints, parses and prints again: the texts must be byte-equal, both models must
/// verify and the parsed one must match the original structurally.
std::unique_ptr<Model> roundTrip(const Model &m) {
  const std::string first = printModel(m, fullConstants());
  auto parsed = parseOk(first);
  if (!parsed)
    return nullptr;
  EXPECT_EQ(printModel(*parsed, fullConstants()), first);
  Status v = verify(*parsed);
  EXPECT_TRUE(v.isOk()) << v.message() << "\n" << first;
  test::expectSameModel(m, *parsed);
  return parsed;
}

template <typename T>
std::shared_ptr<Tensor> tensor(DType dt, std::vector<int64_t> shape, std::vector<T> v) {
  return std::make_shared<Tensor>(Tensor::fromVector(dt, std::move(shape), v));
}

// ---------------------------------------------------------------- kitchen sink

// One constant of every dtype, small (value list) and large (hex) where it matters.
void addEveryDType(Graph &g) {
  const float nanPayload = std::bit_cast<float>(0x7fc00123u);
  g.addConstant("f32", tensor<float>(DType::F32, {2, 4},
                                     {1.0f, -2.5f, -0.0f, std::numeric_limits<float>::infinity(),
                                      -std::numeric_limits<float>::infinity(), nanPayload,
                                      std::numeric_limits<float>::denorm_min(), 0.1f}));
  g.addConstant("f32_nan", tensor<float>(DType::F32, {2}, {std::nanf(""), -std::nanf("")}));
  g.addConstant("f32_scalar", tensor<float>(DType::F32, {}, {16777216.0f}));
  g.addConstant("f32_empty", tensor<float>(DType::F32, {0, 3}, {}));
  std::vector<float> big(64 * 64);
  for (size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<float>(i) * 0.37f;
  g.addConstant("f32_big", tensor<float>(DType::F32, {64, 64}, big));
  g.addConstant("f64", tensor<double>(DType::F64, {3}, {0.1, 1e300, -0.0}));
  g.addConstant("i8", tensor<int8_t>(DType::I8, {2}, {-128, 127}));
  g.addConstant("i16", tensor<int16_t>(DType::I16, {2}, {-32768, 32767}));
  g.addConstant("i32", tensor<int32_t>(DType::I32, {2}, {INT32_MIN, INT32_MAX}));
  g.addConstant("i64", tensor<int64_t>(DType::I64, {2}, {INT64_MIN, INT64_MAX}));
  g.addConstant("u8", tensor<uint8_t>(DType::U8, {2}, {0, 255}));
  g.addConstant("u16", tensor<uint16_t>(DType::U16, {1}, {65535}));
  g.addConstant("u32", tensor<uint32_t>(DType::U32, {1}, {UINT32_MAX}));
  g.addConstant("u64", tensor<uint64_t>(DType::U64, {2}, {0, UINT64_MAX}));
  g.addConstant("bool", tensor<uint8_t>(DType::Bool, {3}, {1, 0, 1}));
  g.addConstant("bool_odd_byte", tensor<uint8_t>(DType::Bool, {1}, {2})); // only hex is exact
  g.addConstant("f16", tensor<uint16_t>(DType::F16, {2}, {0x3c00, 0x8000}));
  g.addConstant("bf16", tensor<uint16_t>(DType::BF16, {2}, {0x3f80, 0x7fc1}));
  g.addConstant("i4", tensor<uint8_t>(DType::I4, {3}, {0x8f, 0x07}));
  g.addConstant("u4", tensor<uint8_t>(DType::U4, {2}, {0xa5}));
  g.addConstant("i2", tensor<uint8_t>(DType::I2, {5}, {0xe4, 0x03}));
  g.addConstant("u2", tensor<uint8_t>(DType::U2, {4}, {0x1b}));
  g.addConstant("f8", tensor<uint8_t>(DType::F8E4M3FN, {2}, {0x38, 0x7f}));
  g.addConstant("c64", tensor<float>(DType::C64, {1}, {1.0f, -2.0f}));
  g.addConstant("str", Tensor::strings({2}, {"a", std::string("b\n\"\\\x01\xff", 6)}));
  std::vector<std::string> many(20, "w");
  g.addConstant("str_big", Tensor::strings({4, 5}, many));
}

// A 4-bit block-quantized weight with per-block scales and zero points.
Value *addQuantized(Graph &g) {
  auto data = tensor<uint8_t>(DType::U4, {4, 4}, {0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe});
  data->scales = tensor<float>(DType::F32, {2, 4}, {0.5f, 0.25f, 1, 2, 3, 4, 5, 6});
  data->zeroPoints = tensor<uint8_t>(DType::U8, {2, 4}, {8, 8, 8, 8, 7, 7, 7, 7});
  Value *w = g.addConstant("wq", data);
  Type t = Type::tensorOf(DType::F32, {4, 4});
  t.quant = QuantEncoding{DType::U4, 4, 0, 2, false};
  w->setType(t);
  return w;
}

Attribute graphAttr(std::string name, std::unique_ptr<Graph> g) {
  Attribute a;
  a.name = std::move(name);
  a.kind = Attribute::Kind::Graph;
  a.g = std::move(g);
  return a;
}

// Every attribute kind, plus refs, attribute docs and real attributes named like the
// node's reserved keys.
void setEveryAttribute(Node *n, Value *capture) {
  using AK = Attribute::Kind;
  n->setAttr(Attribute::makeFloat("f", -0.0f));
  n->setAttr(Attribute::makeFloat("f_nan", std::bit_cast<float>(0xffc00042u)));
  n->setAttr(Attribute::makeFloat("f_int_valued", 3.0f));
  n->setAttr(Attribute::makeInt("i", -7));
  n->setAttr(Attribute::makeString("s", std::string("bin\0\xff\"\\", 7)));
  n->setAttr(Attribute::makeTensor("t", Tensor::fromVector<float>(DType::F32, {2}, {1, 2})));
  n->setAttr(Attribute::makeFloats("floats", {1.5f, std::numeric_limits<float>::infinity()}));
  n->setAttr(Attribute::makeInts("ints", {1, -2, INT64_MAX}));
  n->setAttr(Attribute::makeInts("ints_empty", {}));
  Attribute strs;
  strs.name = "strings";
  strs.kind = AK::Strings;
  strs.strings = {"x", "", "y z"};
  n->setAttr(std::move(strs));
  Attribute tensors;
  tensors.name = "tensors";
  tensors.kind = AK::Tensors;
  tensors.tensors = {tensor<int64_t>(DType::I64, {1}, {5}),
                     tensor<uint16_t>(DType::F16, {2}, {0x3c00, 0x4000})};
  n->setAttr(std::move(tensors));
  auto sub = std::make_unique<Graph>("attr_body");
  Value *in = sub->addInput("attr_in", Type::tensorOf(DType::F32, {2}));
  Node *add = sub->addNode(OpKind::Add, {in, capture});
  add->output()->setName("attr_sum");
  sub->addOutput(add->output());
  n->setAttr(graphAttr("g", std::move(sub)));
  Attribute graphs;
  graphs.name = "graphs";
  graphs.kind = AK::Graphs;
  graphs.graphs.push_back(std::make_unique<Graph>("empty_a"));
  graphs.graphs.push_back(std::make_unique<Graph>(""));
  graphs.graphs.back()->addOutput(capture);
  n->setAttr(std::move(graphs));
  for (AK k : {AK::TypeProto, AK::SparseTensor, AK::TypeProtos, AK::SparseTensors}) {
    Attribute a;
    a.name = std::string(attrKindName(k));
    a.kind = k;
    a.opaque = {std::string("\x08\x01\x00", 3)};
    if (k == AK::TypeProtos)
      a.opaque.push_back("\x12");
    n->setAttr(std::move(a));
  }
  Attribute ref;
  ref.name = "alpha";
  ref.kind = AK::Float;
  ref.refAttrName = "outer_alpha";
  n->setAttr(std::move(ref));
  Attribute documented = Attribute::makeInt("documented", 1);
  documented.doc = "an attribute doc";
  n->setAttr(std::move(documented));
  n->setAttr(Attribute::makeString("name", "a real attribute called name"));
  n->setAttr(Attribute::makeString("doc_string", "and one called doc_string"));
  n->setAttr(Attribute::makeInt("weird key!", 1));
}

// then_branch captures %y from main and nests an If capturing %x two levels up.
std::unique_ptr<Graph> thenBranch(Value *x, Value *y, Value *cond) {
  auto g = std::make_unique<Graph>("then_g");
  Value *k = g->addConstant("then_k", tensor<float>(DType::F32, {1}, {2}));
  Node *mul = g->addNode(OpKind::Mul, {y, k});
  mul->output()->setName("then_t");
  mul->output()->doc = "inner doc";
  mul->output()->hadValueInfo = true;
  auto inner = std::make_unique<Graph>("inner_g");
  Node *id = inner->addNode(OpKind::Identity, {x});
  id->output()->setName("inner_x");
  inner->addOutput(id->output());
  Node *nested = g->addNode(OpKind::If, {cond});
  nested->output()->setName("nested_r");
  nested->setAttr(graphAttr("then_branch", std::move(inner)));
  auto innerElse = std::make_unique<Graph>("inner_else");
  innerElse->addOutput(x);
  nested->setAttr(graphAttr("else_branch", std::move(innerElse)));
  g->addOutput(mul->output());
  return g;
}

std::unique_ptr<Model> kitchenSink() {
  auto m = std::make_unique<Model>();
  m->irVersion = 9;
  m->opsets = {{"", 17}, {"com.microsoft", 1}, {"custom.debug", 2}};
  m->producerName = "pytorch";
  m->producerVersion = "2.1";
  m->domain = "ai.test";
  m->modelVersion = 7;
  m->doc = "multi\nline \"doc\"";
  m->metadata = {{"llmopt.pipeline", "dce"}, {"k", ""}};
  m->functions = {std::string("\x0a\x03" "abc", 5)};
  m->trainingInfo = {std::string("\x00\xff", 2)};
  Graph &g = m->graph();
  g.doc = "the main graph";
  Value *ids =
      g.addInput("input_ids", Type::tensor(DType::I64, Dims{Dim::sym("batch"), Dim::sym("seq")}));
  ids->doc = "token ids";
  ids->hadValueInfo = true;
  Value *x = g.addInput("x", Type::tensor(DType::F32, Dims{Dim::sym("batch size"), Dim::unknown(),
                                                           Dim::of(4)}));
  Value *cond = g.addInput("cond", Type::tensorOf(DType::Bool, {}));
  g.addInput("unranked", Type::tensor(DType::F32));
  Type seqT;
  seqT.kind = Type::Kind::Sequence;
  seqT.inner = std::make_shared<Type>(Type::tensor(DType::F32, Dims{Dim::unknown()}));
  g.addInput("seq in", seqT);
  Type mapT;
  mapT.kind = Type::Kind::Map;
  mapT.key = DType::I64;
  mapT.inner = std::make_shared<Type>(Type::tensor(DType::String));
  Type optT;
  optT.kind = Type::Kind::Optional;
  optT.inner = std::make_shared<Type>(mapT);
  g.addInput("opt_map", optT);
  Type sparseT = Type::tensorOf(DType::F32, {4, 4});
  sparseT.kind = Type::Kind::SparseTensor;
  g.addInput("sparse", sparseT);
  g.addInput("untyped", Type::unknown());
  g.addInput("$0", Type::tensorOf(DType::F32, {1}));    // looks like a placeholder
  g.addInput("trailing:", Type::tensorOf(DType::F32, {1}));
  g.addInput("a\"quote\n", Type::tensorOf(DType::F32, {1}));
  Value *d = g.addInput("with_default", Type::tensorOf(DType::F32, {2}));
  addEveryDType(g);
  d->setConstant(tensor<float>(DType::F32, {2}, {0.5f, 1.5f})); // after other constants
  d->doc = "an input with an initializer";
  Value *wq = addQuantized(g);
  wq->doc = "quantized weight";
  Value *w = g.findValue("f32");

  Node *mm = g.addNode(OpKind::MatMul, {x, g.findValue("f32_big")}, 1, "/q_proj/MatMul");
  mm->doc = "node doc";
  Value *y = mm->output();
  y->setName("onnx::MatMul_12");
  y->setType(Type::tensor(DType::F32, Dims{Dim::sym("batch"), Dim::sym("seq"), Dim::of(64)}));
  y->hadValueInfo = true;
  Node *split = g.addNode(OpKind::Split, {w, g.findValue("i64")}, 2, "split0");
  split->setAttr(Attribute::makeInt("axis", 1));
  split->output(0)->setName("/model/layers.0/Split_output_0");
  split->output(1)->setName("split b");
  Node *nbits = g.addNode("com.microsoft", "MatMulNBits",
                          {x, wq, g.findValue("f32_scalar"), nullptr, g.findValue("f64")});
  nbits->output()->setName("o");
  for (auto [k, v] : {std::pair{"K", 64}, {"N", 64}, {"bits", 4}, {"block_size", 32}})
    nbits->setAttr(Attribute::makeInt(k, v));
  Node *drop = g.addNode(OpKind::Dropout, {y}, 2);
  drop->output(0)->setName("dropped");
  drop->output(1)->doc = "unused mask"; // the empty-named optional output
  Node *all = g.addNode("", "AllAttrs", {y, nullptr}, 1, "all");
  all->output()->setName("all_out");
  setEveryAttribute(all, y);
  Node *branch = g.addNode(OpKind::If, {cond});
  branch->output()->setName("r");
  branch->setAttr(graphAttr("then_branch", thenBranch(x, y, cond)));
  auto elseG = std::make_unique<Graph>("else_g");
  elseG->addOutput(y);
  branch->setAttr(graphAttr("else_branch", std::move(elseG)));
  g.addNode("custom.debug", "Print", {y, drop->output(1)}, 0); // no results
  g.addNode("", "return", {x}, 0);                               // an op named like a keyword
  g.addNode("graph", "const", {}, 1)->output()->setName("kw");
  m->opsets["graph"] = 1;
  for (Value *out : {y, split->output(0), split->output(1), nbits->output(), branch->output()})
    g.addOutput(out);
  return m;
}

TEST(IrText, KitchenSinkRoundTripsByteExactly) {
  auto m = kitchenSink();
  Status v = verify(*m);
  ASSERT_TRUE(v.isOk()) << v.message();
  auto parsed = roundTrip(*m);
  ASSERT_TRUE(parsed);
  // Captures resolve to the enclosing graphs' values, not to copies.
  const Graph &g = parsed->graph();
  const Node *branch = nullptr;
  for (const auto &n : g.nodes())
    if (n->is(OpKind::If))
      branch = n.get();
  ASSERT_TRUE(branch);
  const Graph *thenG = branch->attr("then_branch")->g.get();
  EXPECT_EQ(thenG->parentNode(), branch);
  const Node *mul = thenG->nodes().front().get();
  EXPECT_EQ(mul->input(0)->graph(), &g);
  EXPECT_EQ(mul->input(0)->name(), "onnx::MatMul_12");
  const Node *nested = thenG->nodes().back().get();
  const Graph *innerG = nested->attr("then_branch")->g.get();
  EXPECT_EQ(innerG->nodes().front()->input(0), g.findValue("x"));
  // Anonymous and placeholder-looking names stay apart.
  EXPECT_TRUE(g.findValue("$0") && g.findValue("$0")->isGraphInput());
  const std::string text = printModel(*parsed, fullConstants());
  EXPECT_NE(text.find("%\"$0\": f32[1]"), std::string::npos);
  EXPECT_NE(text.find("%dropped, %$0 = Dropout(%onnx::MatMul_12)"), std::string::npos);
  EXPECT_NE(text.find("\"name\" = \"a real attribute called name\""), std::string::npos);
  EXPECT_NE(text.find("name = \"all\""), std::string::npos);
  EXPECT_NE(text.find("alpha = ref<float>(\"outer_alpha\")"), std::string::npos);
  EXPECT_NE(text.find("\"return\"(%x)"), std::string::npos);
  EXPECT_NE(text.find("%kw = \"graph\"::\"const\"()"), std::string::npos);
  EXPECT_NE(text.find("f32[\"batch size\",?,4]"), std::string::npos);
  EXPECT_NE(text.find("%wq = const f32[4,4] q<u4,bits=4,axis=0,block=2,asym> hex\"10325476"),
            std::string::npos);
}

// Every prefix of a valid text, and random one-byte damage, fails cleanly with a
// positioned error: no crash and no leak (the sanitizer build runs this too).
TEST(IrText, DamagedTextFailsCleanly) {
  auto m = kitchenSink();
  m->graph().findValue("f32_big")->setConstant(tensor<float>(DType::F32, {1}, {1.0f})); // shorter
  const std::string text = printModel(*m, fullConstants());
  for (size_t cut = 0; cut + 1 < text.size(); cut += 3) {
    auto r = parseModel(std::string_view(text).substr(0, cut));
    ASSERT_FALSE(r.hasValue()) << cut;
    ASSERT_EQ(r.status().message().rfind("<text>:", 0), 0u) << r.status().message();
  }
  std::mt19937 rng(7);
  const std::string_view junk = "%\"(){}[]<>,=:_-0a$\\\n";
  for (int i = 0; i < 3000; ++i) {
    std::string bad = text;
    bad[rng() % bad.size()] = junk[rng() % junk.size()];
    auto r = parseModel(bad); // may still parse (a changed digit, say); must not crash
    if (!r) {
      ASSERT_EQ(r.status().message().rfind("<text>:", 0), 0u) << r.status().message();
    }
  }
}

TEST(IrText, PrintingIsDeterministic) {
  auto m = kitchenSink();
  EXPECT_EQ(printModel(*m), printModel(*m));
  auto copy = kitchenSink();
  EXPECT_EQ(printModel(*m, fullConstants()), printModel(*copy, fullConstants()));
}

TEST(IrText, GoldenText) {
  Model m;
  Graph &g = m.graph();
  Value *x = g.addInput("x", Type::tensor(DType::F32, Dims{Dim::sym("n"), Dim::of(2)}));
  Value *w = g.addConstant("w", Tensor::fromVector<float>(DType::F32, {2, 2}, {1, -2.5f, 3, 4}));
  Node *mm = g.addNode(OpKind::MatMul, {x, w}, 1, "mm");
  mm->output()->setName("y");
  mm->output()->setType(Type::tensor(DType::F32, Dims{Dim::sym("n"), Dim::of(2)}));
  Node *sm = g.addNode(OpKind::Softmax, {mm->output()});
  sm->setAttr(Attribute::makeInt("axis", -1));
  sm->output()->setName("p");
  g.addOutput(sm->output());
  EXPECT_EQ(printModel(m), R"(model ir_version=8 opsets={"": 17} producer="" producer_version="" domain="" model_version=0 doc="" {
  graph main(%x: f32[n,2]) {
    %w = const f32[2,2] [1.0, -2.5, 3.0, 4.0]
    %y: f32[n,2] = MatMul(%x, %w) {name = "mm"}
    %p = Softmax(%y) {axis = -1}
    return %p
  }
}
)");
  EXPECT_EQ(printGraph(g).substr(0, 29), "graph main(%x: f32[n,2]) {\n  ");
}

TEST(IrText, HandWrittenTextParses) {
  auto m = parseOk(R"(
    // comments and free layout are fine
    model ir_version=8 opsets={"": 17, "com.microsoft": 1} producer="pytorch" {
      metadata "llmopt.pipeline" = "dce"
      graph main(%input_ids: i64[batch,seq], %mask: f32[2,4], %c: bool[]) {
        %w = const f32[2,2] [1, -2.5, 3.0, 4.0]   // integer spellings are fine in f32 lists
        %mask = default f32[2,4] [0, 0, 0, 0, 1, 1, 1, 1]
        %s = const string[2] ["a", "b\n"]
        %x: f32[2,2] = MatMul(%w, %w) {name = "/q_proj/MatMul"}
        %a, %b = Split(%x) {axis = 1, name = "split0"}
        %r = If(%c) {then_branch = graph then_g() { %t = Identity(%a) return %t },
                     else_branch = graph else_g() { return %b }}
        return %r, %mask
      }
    })");
  ASSERT_TRUE(m);
  EXPECT_TRUE(verify(*m).isOk());
  const Graph &g = m->graph();
  EXPECT_EQ(g.numNodes(), 3u);
  EXPECT_TRUE(g.inputs()[1]->isConstant());
  EXPECT_EQ(g.inputs()[1]->constant()->toFloats()[4], 1.0f);
  EXPECT_EQ(m->opsetVersion("com.microsoft"), 1);
  EXPECT_EQ(m->producerVersion, "");
  EXPECT_EQ(g.nodeList()[0]->name(), "/q_proj/MatMul");
  EXPECT_EQ(g.outputs()[0]->name(), "r");
}

TEST(IrText, ElidedConstantsDoNotParse) {
  Model m;
  Graph &g = m.graph();
  Value *big = g.addConstant("big", Tensor::zeros(DType::F32, {64, 64}));
  Node *n = g.addNode(OpKind::Constant, {});
  n->setAttr(Attribute::makeTensor("value", Tensor::zeros(DType::I64, {32})));
  g.addOutput(n->output());
  g.addOutput(big);
  const std::string text = printModel(m);
  EXPECT_NE(text.find(fmt::format("%big = const f32[64,64] elided<hash={:016x}>",
                                  big->constant()->hash())),
            std::string::npos);
  EXPECT_EQ(parseError(text), "<text>:3:29: constant %big was elided when printed; print with "
                              "full constants to round-trip");
  g.removeOutput(1);
  g.removeUnusedConstants();
  EXPECT_EQ(parseError(printModel(m)),
            "<text>:3:46: tensor attribute 'value' was elided when printed; print with full "
            "constants to round-trip");
  roundTrip(m);
}

} // namespace
} // namespace llmopt

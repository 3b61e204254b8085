// prune-struct: the dependency analysis finds the tiny Llama's attention (GQA 4/2) and MLP
// groups and the size constants that follow them; slicing keeps quantized blocks that
// survive whole bit for bit and re-quantizes the rest; the pass at ratio 0 is the
// identity; removing units equals zeroing what they contribute (o_proj / down_proj rows,
// whole residual branches) through the interpreter; refusals name the node.
#include <algorithm>
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "backend/interp/Interpreter.h"
#include "frontend/OnnxImporter.h"
#include "ir/Parser.h"
#include "ir/QuantFormats.h"
#include "ir/Verifier.h"
#include "passes/PassManager.h"
#include "passes/analysis/ShapeInference.h"
#include "passes/prune/PruneStruct.h"
#include "passes/prune/StructDeps.h"
#include "passes/prune/StructRewrite.h"
#include "tests/support/NumericCheck.h"

using namespace llmopt;
using namespace llmopt::structprune;

namespace {

std::string modelPath(const char *name) { return std::string(LLMOPT_TEST_MODELS) + "/" + name; }

std::unique_ptr<Model> tinyLlama() {
  auto m = importOnnxFile(modelPath("tiny-llama.onnx"));
  EXPECT_TRUE(m) << m.status().message();
  return m.take();
}

std::vector<std::string> names(const std::vector<Value *> &vs) {
  std::vector<std::string> out;
  for (const Value *v : vs)
    out.push_back(v->name());
  return out;
}

/// Runs `pipeline` on `m` with --verify-each; returns the report lines or the error.
Expected<std::vector<std::string>> runPipeline(Model &m, const std::string &pipeline) {
  Instrumentation instr;
  instr.verifyEach = true;
  auto pm = parsePipeline(pipeline, PassRegistry::global(), &instr);
  if (!pm)
    return pm.status();
  AnalysisManager am;
  auto pa = (*pm)->run(m, am);
  if (!pa)
    return pa.status();
  return am.context().reportLines;
}

Value *constant(Model &m, const std::string &name) {
  Value *v = m.graph().findValue(name);
  EXPECT_TRUE(v && v->isConstant()) << name;
  return v;
}

/// Zeroes rows [r0, r1) of the f32 constant `name` (what removed units contributed).
void zeroRows(Model &m, const std::string &name, int64_t r0, int64_t r1) {
  Value *w = constant(m, name);
  Tensor t = *w->constant();
  const int64_t N = t.shape()[1];
  std::span<float> v = t.mutableView<float>();
  std::fill(v.begin() + r0 * N, v.begin() + r1 * N, 0.f);
  w->setConstant(std::make_shared<Tensor>(std::move(t)));
}

Tensor randomWeight(int64_t K, int64_t N, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> w(static_cast<size_t>(K * N));
  for (float &x : w)
    x = d(rng);
  return Tensor::fromVector(DType::F32, {K, N}, w);
}

std::vector<int64_t> range(int64_t a, int64_t b, std::vector<int64_t> skip = {}) {
  std::vector<int64_t> out;
  for (int64_t i = a; i < b; ++i)
    if (std::find(skip.begin(), skip.end(), i) == skip.end())
      out.push_back(i);
  return out;
}

} // namespace

// ---- the analysis ----

TEST(StructDeps, FindsGqaAttentionAndMlpGroupsOnTheTinyLlama) {
  auto m = tinyLlama();
  KnownValueMap known;
  ShapeInferenceOptions so;
  so.knownValues = &known;
  ASSERT_TRUE(inferShapes(*m, so));
  const StructInfo info = analyzeStructure(m->graph(), known);
  ASSERT_EQ(info.mlps.size(), 4u);
  ASSERT_EQ(info.attns.size(), 4u);
  for (int l = 0; l < 4; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const Space &mlp = info.spaces[static_cast<size_t>(info.mlps[static_cast<size_t>(l)].space)];
    EXPECT_EQ(mlp.channels, 192);
    EXPECT_EQ(mlp.unitSize, 1);
    EXPECT_EQ(names(mlp.columns),
              (std::vector<std::string>{p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"}));
    EXPECT_EQ(names(mlp.rows), std::vector<std::string>{p + "mlp.down_proj.weight"});

    const AttentionGroup &a = info.attns[static_cast<size_t>(l)];
    EXPECT_EQ(a.heads, 4);
    EXPECT_EQ(a.kvHeads, 2);
    EXPECT_EQ(a.rep, 2);
    EXPECT_EQ(a.headDim, 16);
    const Space &q = info.spaces[static_cast<size_t>(a.q)];
    EXPECT_EQ(names(q.columns), std::vector<std::string>{p + "self_attn.q_proj.weight"});
    EXPECT_EQ(names(q.rows), std::vector<std::string>{p + "self_attn.o_proj.weight"});
    ASSERT_EQ(a.kv.size(), 2u);
    std::vector<std::string> kv;
    for (int s : a.kv)
      kv.push_back(info.spaces[static_cast<size_t>(s)].columns.front()->name());
    std::sort(kv.begin(), kv.end());
    EXPECT_EQ(kv, (std::vector<std::string>{p + "self_attn.k_proj.weight",
                                            p + "self_attn.v_proj.weight"}));
    // Size constants per attention: the q / k / v head reshapes (4, 2, 2), the GQA Expand
    // of k and v (2 KV heads, repeat 2 each), the repeat Reshapes (4 each), the output
    // Reshape (64).
    int64_t sites = 0;
    for (const SizeSite &s : info.sites)
      sites += s.space == a.q || std::count(a.kv.begin(), a.kv.end(), s.space);
    EXPECT_EQ(sites, 10);
  }
  // The residual stream (o_proj / down_proj columns) is not prunable, and says why.
  bool residual = false;
  for (const std::string &n : info.notes)
    residual = residual || (n.find("o_proj.weight") != std::string::npos &&
                            n.find("/model/layers.0/Add") != std::string::npos);
  EXPECT_TRUE(residual);
  for (const Space &s : info.spaces)
    EXPECT_TRUE(s.unknownNode.empty()) << s.blocked;
}

TEST(StructDeps, FindsDecoderLayersAsAttentionPlusMlpBranches) {
  auto m = tinyLlama();
  ASSERT_TRUE(inferShapes(*m));
  const std::vector<Layer> layers = findLayers(m->graph());
  ASSERT_EQ(layers.size(), 4u);
  for (size_t l = 0; l < layers.size(); ++l) {
    ASSERT_EQ(layers[l].branches.size(), 2u);
    EXPECT_TRUE(layers[l].branches[0].attention);
    EXPECT_FALSE(layers[l].branches[1].attention);
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<std::string> w = names(layers[l].branches[1].weights);
    std::sort(w.begin(), w.end());
    EXPECT_EQ(w, (std::vector<std::string>{p + "mlp.down_proj.weight", p + "mlp.gate_proj.weight",
                                           p + "mlp.up_proj.weight",
                                           p + "post_attention_layernorm.weight"}));
    EXPECT_EQ(layers[l].branches[0].weights.size(), 5u); // norm, q, k, v, o
  }
}

TEST(StructDeps, AnUnknownOpBetweenAWeightAndItsReaderIsRefusedByName) {
  auto m = parseModel(R"(model ir_version=8 opsets={"": 17, "com.example": 1} {
  graph main(%x: f32[2,8]) {
    %wg = const f32[8,4] [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8]
    %wd = const f32[4,8] [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8]
    %g = MatMul(%x, %wg)
    %a = com.example::Frob(%g) {name = "frob"}
    %y = MatMul(%a, %wd)
    return %y
  }
})");
  ASSERT_TRUE(m) << m.status().message();
  auto r = runPipeline(**m, "prune-struct<ratio=0.1>");
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("cannot prove which weights the columns of 'wg' are coupled"),
            std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("'frob' (com.example::Frob)"), std::string::npos)
      << r.status().message();
}

// ---- slicing ----

TEST(StructRewrite, SliceTensorKeepsTheListedEntriesOfAnyType) {
  const Tensor f = Tensor::fromVector(DType::F32, {2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6});
  EXPECT_EQ(sliceTensor(f, 1, {0, 2}).toFloats(), (std::vector<float>{1, 3, 4, 6}));
  EXPECT_EQ(sliceTensor(f, 0, {1}).toFloats(), (std::vector<float>{4, 5, 6}));
  // i4 packed two per byte: -3, 1, 7, -8, 0, 2 in a [2, 3] tensor.
  Tensor q = Tensor::zeros(DType::I4, {2, 3});
  const std::vector<int32_t> vals = {-3, 1, 7, -8, 0, 2};
  for (size_t i = 0; i < vals.size(); ++i)
    quant::storeElement(q.mutableData(), DType::I4, static_cast<int64_t>(i), vals[i]);
  const Tensor s = sliceTensor(q, 1, {1, 2});
  std::vector<int32_t> got;
  for (int64_t i = 0; i < 4; ++i)
    got.push_back(quant::loadElement(s.data(), DType::I4, i));
  EXPECT_EQ(got, (std::vector<int32_t>{1, 7, 0, 2}));
}

namespace {

/// A quantized constant W [64, 6] blocked along K (block 16) in a throwaway graph.
struct QuantWeight {
  Graph g;
  Value *w = nullptr;
  Tensor original;
  QuantEncoding enc{DType::U4, 4, 0, 16, false};
  QuantWeight() {
    auto q = quant::quantizeRtn(randomWeight(64, 6, 3), enc);
    EXPECT_TRUE(q);
    original = *q;
    w = g.addConstant("w", *q);
    Type t = Type::tensorOf(DType::F32, {64, 6});
    t.quant = enc;
    w->setType(std::move(t));
  }
  std::vector<float> dense() const { return quant::dequantize(*w->constant(), enc)->toFloats(); }
};

} // namespace

TEST(StructRewrite, QuantizedColumnsAreCutWithTheirScalesBitForBit) {
  QuantWeight qw;
  RewriteStats st;
  ASSERT_TRUE(sliceWeight(qw.w, 1, {0, 2, 5}, st));
  EXPECT_EQ(st.quantDirect, 1);
  const Tensor &t = *qw.w->constant();
  ASSERT_EQ(t.shape(), (std::vector<int64_t>{64, 3}));
  EXPECT_TRUE(sliceTensor(qw.original, 1, {0, 2, 5}).sameContents(t));
  EXPECT_TRUE(sliceTensor(*qw.original.scales, 1, {0, 2, 5}).sameContents(*t.scales));
  EXPECT_TRUE(sliceTensor(*qw.original.zeroPoints, 1, {0, 2, 5}).sameContents(*t.zeroPoints));
  EXPECT_TRUE(quant::validate(t, qw.enc));
}

TEST(StructRewrite, QuantizedRowsKeepWholeBlocksAndRequantizeCutOnes) {
  { // Rows 16..31 are block 1: every remaining block survives whole, bit for bit.
    QuantWeight qw;
    RewriteStats st;
    const std::vector<int64_t> keep = range(0, 64, range(16, 32));
    ASSERT_TRUE(sliceWeight(qw.w, 0, keep, st));
    EXPECT_EQ(st.blocksRequant, 0);
    EXPECT_EQ(st.quantDirect, 1);
    EXPECT_TRUE(sliceTensor(qw.original, 0, keep).sameContents(*qw.w->constant()));
    EXPECT_TRUE(sliceTensor(*qw.original.scales, 0, {0, 2, 3}).sameContents(*qw.w->constant()->scales));
  }
  { // Row 40 goes: blocks 0 and 1 stay whole; from row 32 on the blocks are re-formed and
    // re-quantized round-to-nearest from the dequantized values.
    QuantWeight qw;
    const std::vector<float> before = qw.dense();
    RewriteStats st;
    const std::vector<int64_t> keep = range(0, 64, {40});
    ASSERT_TRUE(sliceWeight(qw.w, 0, keep, st));
    EXPECT_EQ(st.quantRequant, 1);
    EXPECT_EQ(st.blocksRequant, 2 * 6);
    const Tensor &t = *qw.w->constant();
    ASSERT_EQ(t.shape(), (std::vector<int64_t>{63, 6}));
    EXPECT_TRUE(quant::validate(t, qw.enc));
    const Tensor rows = sliceTensor(Tensor::fromVector(DType::F32, {64, 6}, before), 0, keep);
    auto rtn = quant::quantizeRtn(rows, qw.enc);
    ASSERT_TRUE(rtn);
    // Whole blocks keep the original integers (rows 0..31); the cut ones equal RTN of
    // the dequantized rows, which also rebuilds them within one quantization step.
    for (int64_t i = 0; i < 63 * 6; ++i) {
      const int32_t got = quant::loadElement(t.data(), DType::U4, i);
      const int32_t want = i < 32 * 6 ? quant::loadElement(qw.original.data(), DType::U4, i)
                                      : quant::loadElement(rtn->data(), DType::U4, i);
      ASSERT_EQ(got, want) << i;
    }
    const std::vector<float> after = quant::dequantize(t, qw.enc)->toFloats();
    const std::vector<float> want = rows.toFloats();
    for (size_t i = 0; i < after.size(); ++i)
      EXPECT_NEAR(after[i], want[i], 0.6f) << i; // |w| <~ 4, 15 steps: one step ~0.5
  }
}

// ---- the pass ----

TEST(PruneStruct, RatioZeroIsTheIdentity) {
  auto before = tinyLlama(), after = tinyLlama();
  auto r = runPipeline(*after, "prune-struct<ratio=0>");
  ASSERT_TRUE(r) << r.status().message();
  ASSERT_EQ(after->graph().numNodes(), before->graph().numNodes());
  for (Value *c : before->graph().constants())
    EXPECT_TRUE(c->constant()->sameContents(*constant(*after, c->name())->constant())) << c->name();
  auto inputs = test::makeInputs(before->graph(), {{"batch", 2}, {"seq", 7}}, 3, 256);
  EXPECT_TRUE(test::sameOutputs(*before, *after, inputs, 0, 0));
}

TEST(PruneStruct, DroppingUnitsEqualsZeroingWhatTheyContribute) {
  // attn1.kv0: KV head 0 of layer 1 with its query heads 0, 1 (o_proj rows 0..31);
  // attn2.q1 + attn2.q2: one query head from each KV group of layer 2 (rows 16..47);
  // mlp3.c7: down_proj row 7 of layer 3.
  auto ref = tinyLlama(), pruned = tinyLlama();
  auto r = runPipeline(*pruned, "prune-struct<drop=attn1.kv0,attn2.q1,attn2.q2,mlp3.c7>");
  ASSERT_TRUE(r) << r.status().message();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_NE((*r)[0].find("query heads 4,2,2,4 of 4, KV heads 2,1,2,2 of 2"), std::string::npos)
      << (*r)[0];
  EXPECT_NE((*r)[0].find("channels 192,192,192,191 of 192"), std::string::npos) << (*r)[0];
  auto shape = [&](const std::string &n) { return constant(*pruned, n)->constant()->shape(); };
  EXPECT_EQ(shape("model.layers.1.self_attn.q_proj.weight"), (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(shape("model.layers.1.self_attn.k_proj.weight"), (std::vector<int64_t>{64, 16}));
  EXPECT_EQ(shape("model.layers.1.self_attn.o_proj.weight"), (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(shape("model.layers.2.self_attn.q_proj.weight"), (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(shape("model.layers.2.self_attn.v_proj.weight"), (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(shape("model.layers.3.mlp.up_proj.weight"), (std::vector<int64_t>{64, 191}));
  EXPECT_EQ(shape("model.layers.3.mlp.down_proj.weight"), (std::vector<int64_t>{191, 64}));
  zeroRows(*ref, "model.layers.1.self_attn.o_proj.weight", 0, 32);
  zeroRows(*ref, "model.layers.2.self_attn.o_proj.weight", 16, 48);
  zeroRows(*ref, "model.layers.3.mlp.down_proj.weight", 7, 8);
  for (int64_t seq : {1, 9, 33}) {
    auto inputs = test::makeInputs(ref->graph(), {{"batch", 2}, {"seq", seq}}, 11, 256);
    // Tolerance: the same sums with the zero terms left out (reassociation only).
    EXPECT_TRUE(test::sameOutputs(*ref, *pruned, inputs, 1e-5, 1e-5)) << seq;
  }
}

TEST(PruneStruct, RatioRemovesAtLeastItsShareAndKeepsOneUnitPerGroup) {
  for (const char *p : {"prune-struct<ratio=0.3>", "prune-struct<ratio=0.3;gqa=query>",
                        "prune-struct<ratio=0.1;unit=head>", "prune-struct<ratio=0.5;unit=channel>"}) {
    auto m = tinyLlama();
    auto r = runPipeline(*m, p);
    ASSERT_TRUE(r) << p << ": " << r.status().message();
    const std::string &line = r->at(0);
    const double pct = std::stod(line.substr(line.find('(', line.find("parameters")) + 1));
    const double want = std::stod(std::string(p).substr(std::string(p).find("ratio=") + 6)) * 100;
    EXPECT_GE(pct, want) << line;
    EXPECT_LT(pct, want + 7) << line; // one unit (a KV group is 2.9%) over at most
    auto inputs = test::makeInputs(m->graph(), {{"batch", 1}, {"seq", 5}}, 1, 256);
    EXPECT_TRUE(interp::run(m->graph(), inputs)) << p;
  }
  auto m = tinyLlama();
  auto r = runPipeline(*m, "prune-struct<ratio=0.05;unit=head;gqa=query>");
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_NE(r->at(0).find("GQA rule: the same number of query heads from every KV group"),
            std::string::npos)
      << r->at(0);
}

TEST(PruneStruct, LayerRemovalEqualsZeroingTheLayersBranches) {
  auto ref = tinyLlama(), pruned = tinyLlama();
  auto r = runPipeline(*pruned, "prune-struct<unit=layer;drop=layer2>");
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_EQ(pruned->graph().findValue("model.layers.2.mlp.up_proj.weight"), nullptr);
  EXPECT_EQ(pruned->graph().findValue("model.layers.2.self_attn.q_proj.weight"), nullptr);
  zeroRows(*ref, "model.layers.2.self_attn.o_proj.weight", 0, 64);
  zeroRows(*ref, "model.layers.2.mlp.down_proj.weight", 0, 192);
  auto inputs = test::makeInputs(ref->graph(), {{"batch", 2}, {"seq", 6}}, 5, 256);
  EXPECT_TRUE(test::sameOutputs(*ref, *pruned, inputs, 1e-5, 1e-5));
}

TEST(PruneStruct, AfterQuantizationWholeBlocksAreCutDirectly) {
  auto q = tinyLlama(), qp = tinyLlama();
  ASSERT_TRUE(runPipeline(*q, "quant-int4"));
  // KV group 0 of layer 1 removes o_proj rows 0..31: exactly block 0 of 32.
  auto r = runPipeline(*qp, "quant-int4,prune-struct<drop=attn1.kv0>");
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_NE(r->back().find("quantized: 4 cut directly (whole columns / blocks), 0 re-quantized"),
            std::string::npos)
      << r->back();
  const Tensor &o = *constant(*q, "model.layers.1.self_attn.o_proj.weight")->constant();
  const Tensor &op = *constant(*qp, "model.layers.1.self_attn.o_proj.weight")->constant();
  EXPECT_TRUE(sliceTensor(o, 0, range(32, 64)).sameContents(op));
  EXPECT_TRUE(sliceTensor(*o.scales, 0, {1}).sameContents(*op.scales));
  auto inputs = test::makeInputs(qp->graph(), {{"batch", 1}, {"seq", 5}}, 1, 256);
  EXPECT_TRUE(interp::run(qp->graph(), inputs));
  // An MLP channel cuts K of down_proj inside a block: re-quantized, and reported.
  auto qc = tinyLlama();
  auto rc = runPipeline(*qc, "quant-int4,prune-struct<drop=mlp0.c40>");
  ASSERT_TRUE(rc) << rc.status().message();
  EXPECT_NE(rc->back().find("1 re-quantized where K was cut (320 of 384 blocks"), std::string::npos)
      << rc->back();
}

TEST(PruneStruct, BadOptionsAreNamed) {
  auto err = [](const std::string &p) {
    auto m = tinyLlama();
    auto r = runPipeline(*m, p);
    return r ? std::string() : r.status().message();
  };
  EXPECT_NE(err("prune-struct<unit=block>").find("option 'unit' has value 'block', expected head|channel|layer|head,channel"), std::string::npos);
  EXPECT_NE(err("prune-struct<unit=layer,head>").find("layer cannot be combined"), std::string::npos);
  EXPECT_NE(err("prune-struct<ratio=1>").find("expected a fraction in [0, 1)"), std::string::npos);
  EXPECT_NE(err("prune-struct<ratio=0.1;drop=mlp0.c1>").find("either ratio= or drop="), std::string::npos);
  EXPECT_NE(err("prune-struct<drop=mlp0.x1>").find("option 'drop' has entry 'mlp0.x1'"), std::string::npos);
  EXPECT_NE(err("prune-struct<drop=mlp9.c1>").find("drop=mlp9.c1: there are 4 MLP groups"), std::string::npos);
  EXPECT_NE(err("prune-struct<drop=attn0.q1>").find("different numbers of query heads per KV head"), std::string::npos);
  EXPECT_NE(err("prune-struct<metric=wanda>").find("metric=wanda needs calibration data"), std::string::npos);
  EXPECT_NE(err("prune-struct<ratio=0.9;unit=head>").find("can remove at most"), std::string::npos);
}

// Pass manager: pipeline parsing, option errors, analysis caching and invalidation,
// fixpoint, instrumentation and plugin loading.
#include <gtest/gtest.h>

#include "passes/PassManager.h"

using namespace llmopt;

namespace {

/// Counts nodes; records how often it was computed.
struct CountNodes {
  static inline char ID;
  using Result = size_t;
  static inline int runs = 0;
  static Expected<Result> run(Model &m, AnalysisManager &) {
    ++runs;
    return m.graph().numNodes();
  }
};

/// Reads CountNodes; preserves it (changes nothing).
class ReaderPass : public Pass {
public:
  std::string_view name() const override { return "reader"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override {
    LLMOPT_ASSIGN_OR_RETURN(size_t *n, am.get<CountNodes>(m));
    seen = *n;
    return PreservedAnalyses::all();
  }
  size_t seen = 0;
};

/// Appends a Relu `budget` times, then reports no change.
class GrowPass : public Pass {
public:
  explicit GrowPass(int budget) : budget_(budget) {}
  std::string_view name() const override { return "grow"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &) override {
    if (budget_-- <= 0)
      return PreservedAnalyses::all();
    Graph &g = m.graph();
    Node *n = g.addNode(OpKind::Relu, {g.outputs()[0]});
    g.setOutput(0, n->output());
    return PreservedAnalyses::none();
  }

private:
  int budget_;
};

std::unique_ptr<Model> tinyModel() {
  auto m = std::make_unique<Model>();
  Graph &g = m->graph();
  Value *x = g.addInput("x", Type::tensorOf(DType::F32, {2}));
  Node *n = g.addNode(OpKind::Neg, {x});
  n->output()->setName("y");
  g.addOutput(n->output());
  return m;
}

} // namespace

TEST(PipelineParser, RoundTripsTextAndNests) {
  auto pm = parsePipeline("dce, cse ,fixpoint<max=3>(const-fold, canonicalize),opset<to=18>",
                          PassRegistry::global());
  ASSERT_TRUE(pm) << pm.status().message();
  EXPECT_EQ((*pm)->size(), 4u);
  EXPECT_EQ((*pm)->pipelineText(),
            "dce,cse,fixpoint<max=3>(const-fold,canonicalize),opset<to=18>");
}

TEST(PipelineParser, ErrorsNameWhatIsWrongAndWhatIsAccepted) {
  auto &reg = PassRegistry::global();
  struct Case {
    const char *text, *expect;
  } cases[] = {
      {"dce,nope", "unknown pass 'nope'; accepted passes: canonicalize, const-fold"},
      {"opset<tu=3>", "pass 'opset': unknown option 'tu'; accepted: to"},
      {"opset<to=99>", "option 'to' has value '99', expected an integer in [7, 23]"},
      {"dce<fast>", "pass 'dce' takes no options, got 'fast'"},
      {"dce(cse)", "pass 'dce' does not take a nested pipeline"},
      {"fixpoint(dce", "expected ')' to close fixpoint("},
      {"opset<to=18", "'<' is never closed by '>'"},
      {"", "the pipeline is empty"},
      {"dce,,cse", "expected a pass name, got ','"},
  };
  for (const Case &c : cases) {
    auto pm = parsePipeline(c.text, reg);
    ASSERT_FALSE(pm) << c.text;
    EXPECT_NE(pm.status().message().find(c.expect), std::string::npos)
        << c.text << " -> " << pm.status().message();
  }
}

TEST(PassOptions, ReaderParsesTypesAndChoices) {
  PassOptionList list;
  list.entries = {{"block", "64"}, {"asym", std::nullopt}, {"keep", "0,2,4"}, {"smooth", "0.5"}};
  OptionReader r("quant-test", list);
  EXPECT_EQ(*r.getInt("block", 32, 16, 256), 64);
  EXPECT_EQ(*r.getChoice("mode", {"sym", "asym"}, "sym"), "asym");
  EXPECT_EQ(*r.getIntList("keep", {}), (std::vector<int64_t>{0, 2, 4}));
  EXPECT_DOUBLE_EQ(*r.getDouble("smooth", 0.0, 0.0, 1.0), 0.5);
  EXPECT_TRUE(r.finish().isOk());
  PassOptionList bad;
  bad.entries = {{"keep", "0,x"}};
  OptionReader r2("distill", bad);
  EXPECT_FALSE(r2.getIntList("keep", {}));
}

TEST(AnalysisManager, CachesUntilAPassDoesNotPreserve) {
  auto m = tinyModel();
  AnalysisManager am;
  CountNodes::runs = 0;
  PassManager pm;
  auto r1 = std::make_unique<ReaderPass>();
  auto r2 = std::make_unique<ReaderPass>();
  ReaderPass *second = r2.get();
  pm.add(std::move(r1));
  pm.add(std::move(r2));                 // cached: no recompute
  pm.add(std::make_unique<GrowPass>(1)); // changes the graph: invalidates
  auto r3 = std::make_unique<ReaderPass>();
  ReaderPass *third = r3.get();
  pm.add(std::move(r3));
  auto pa = pm.run(*m, am);
  ASSERT_TRUE(pa);
  EXPECT_FALSE(pa->areAllPreserved());
  EXPECT_EQ(CountNodes::runs, 2);
  EXPECT_EQ(second->seen, 1u);
  EXPECT_EQ(third->seen, 2u);
}

TEST(Fixpoint, RerunsUntilNothingChangesAndStopsAtMax) {
  auto m = tinyModel();
  AnalysisManager am;
  auto inner = std::make_unique<PassManager>();
  inner->add(std::make_unique<GrowPass>(3));
  FixpointPass fp(std::move(inner), 10);
  ASSERT_TRUE(fp.run(*m, am));
  EXPECT_EQ(m->graph().numNodes(), 4u); // Neg + 3 Relu, then a quiet round
  auto m2 = tinyModel();
  auto inner2 = std::make_unique<PassManager>();
  inner2->add(std::make_unique<GrowPass>(100));
  FixpointPass capped(std::move(inner2), 5);
  ASSERT_TRUE(capped.run(*m2, am));
  EXPECT_EQ(m2->graph().numNodes(), 6u);
}

TEST(Instrumentation, VerifyEachCatchesABrokenPass) {
  class Breaker : public Pass {
  public:
    std::string_view name() const override { return "breaker"; }
    Expected<PreservedAnalyses> run(Model &m, AnalysisManager &) override {
      m.opsets.clear(); // nodes of the default domain now lack an opset import
      return PreservedAnalyses::none();
    }
  };
  auto m = tinyModel();
  Instrumentation instr;
  instr.verifyEach = true;
  PassManager pm;
  pm.setInstrumentation(&instr);
  pm.add(std::make_unique<Breaker>());
  AnalysisManager am;
  auto pa = pm.run(*m, am);
  ASSERT_FALSE(pa);
  EXPECT_NE(pa.status().message().find("verifier failed after pass 'breaker'"), std::string::npos);
  EXPECT_EQ(pa.status().kind(), ErrorKind::Internal);
}

TEST(Plugin, LoadsRegistersAndRunsInAPipeline) {
  PassRegistry reg;
  registerBuiltinPasses(reg);
  ASSERT_TRUE(loadPassPlugin(LLMOPT_PLUGIN_PATH, reg).isOk());
  const PassInfo *info = reg.find("strip-doc");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->origin, LLMOPT_PLUGIN_PATH);
  auto m = tinyModel();
  m->doc = "model doc";
  m->graph().nodeList()[0]->doc = "node doc";
  auto pm = parsePipeline("dce,strip-doc<keep-model-doc>", reg);
  ASSERT_TRUE(pm) << pm.status().message();
  AnalysisManager am;
  ASSERT_TRUE((*pm)->run(*m, am));
  EXPECT_EQ(m->doc, "model doc");
  EXPECT_EQ(m->graph().nodeList()[0]->doc, "");
  // Loading twice is refused: the name is taken.
  Status again = loadPassPlugin(LLMOPT_PLUGIN_PATH, reg);
  ASSERT_FALSE(again.isOk());
  EXPECT_NE(again.message().find("already registered"), std::string::npos);
  Status missing = loadPassPlugin("/nonexistent/plugin.so", reg);
  EXPECT_NE(missing.message().find("cannot load"), std::string::npos);
}

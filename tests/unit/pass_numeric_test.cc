// Every cleanup pass, alone and in the default pipeline, on the bundled tiny Llama and
// tiny BERT: the interpreter's outputs before and after agree, and the pass changed
// what it should (node counts).
#include <cctype>

#include <gtest/gtest.h>

#include "frontend/OnnxImporter.h"
#include "ir/Verifier.h"
#include "passes/PassManager.h"
#include "tests/support/NumericCheck.h"

using namespace llmopt;

namespace {

struct Case {
  const char *model;
  const char *pipeline;
};

std::string modelPath(const char *name) { return std::string(LLMOPT_TEST_MODELS) + "/" + name; }

size_t countOps(const Model &m, std::string_view op) {
  size_t n = 0;
  m.graph().walk([&](Node *node) { n += node->opType() == op; });
  return n;
}

/// Bytes held in constants above 4 KiB: the weights.
size_t weightBytes(const Model &m) {
  size_t total = 0;
  for (Value *c : m.graph().constants())
    if (c->constant()->nbytes() > 4096)
      total += c->constant()->nbytes();
  return total;
}

class CleanupNumeric : public ::testing::TestWithParam<Case> {};

} // namespace

TEST_P(CleanupNumeric, OutputsMatchTheInterpreterBeforeThePipeline) {
  const Case &c = GetParam();
  auto before = importOnnxFile(modelPath(c.model));
  ASSERT_TRUE(before) << before.status().message();
  auto after = importOnnxFile(modelPath(c.model));
  ASSERT_TRUE(after);
  Instrumentation instr;
  instr.verifyEach = true;
  auto pm = parsePipeline(c.pipeline, PassRegistry::global(), &instr);
  ASSERT_TRUE(pm) << pm.status().message();
  AnalysisManager am;
  auto pa = (*pm)->run(**after, am);
  ASSERT_TRUE(pa) << pa.status().message();
  ASSERT_TRUE(verify(**after).isOk());
  for (int64_t seq : {1, 5, 17}) {
    auto inputs = test::makeInputs((*before)->graph(), {{"batch", 2}, {"seq", seq}}, 7);
    // Tolerance: the passes only remove or precompute work, so results agree to
    // float rounding of reassociated constants.
    EXPECT_TRUE(test::sameOutputs(**before, **after, inputs, 1e-5, 1e-6))
        << c.model << " " << c.pipeline << " seq " << seq;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Passes, CleanupNumeric,
    ::testing::Values(Case{"tiny-llama.onnx", "dce"}, Case{"tiny-llama.onnx", "cse"},
                      Case{"tiny-llama.onnx", "const-fold"},
                      Case{"tiny-llama.onnx", "canonicalize"},
                      Case{"tiny-llama.onnx", "fold-shapes"},
                      Case{"tiny-llama.onnx", "infer-shapes"},
                      Case{"tiny-llama.onnx", "opset<to=21>"},
                      Case{"tiny-llama.onnx", "opset<to=21>,opset<to=17>"},
                      Case{"tiny-llama.onnx", "fold-shapes,fixpoint(const-fold,cse,canonicalize,dce)"},
                      Case{"tiny-bert.onnx", "fold-shapes,fixpoint(const-fold,cse,canonicalize,dce)"},
                      Case{"tiny-bert.onnx", "opset<to=21>,cse,const-fold"}),
    [](const ::testing::TestParamInfo<Case> &info) {
      // gtest names allow only [A-Za-z0-9_]: "tiny-llama.onnx" + "opset<to=21>" =>
      // tiny_llama_onnx__opset_to_21_
      std::string name = std::string(info.param.model) + "__" + info.param.pipeline;
      for (char &ch : name)
        if (!std::isalnum(static_cast<unsigned char>(ch)))
          ch = '_';
      return name;
    });

TEST(CleanupEffect, PipelineShrinksTheTinyLlama) {
  auto m = importOnnxFile(modelPath("tiny-llama.onnx"));
  ASSERT_TRUE(m);
  const size_t nodes = (*m)->graph().numNodes();
  const size_t constants = countOps(**m, "Constant");
  const size_t weights = weightBytes(**m);
  ASSERT_GT(constants, 100u);
  auto pm = parsePipeline("fold-shapes,fixpoint(const-fold,cse,canonicalize,dce)",
                          PassRegistry::global());
  ASSERT_TRUE(pm);
  AnalysisManager am;
  ASSERT_TRUE((*pm)->run(**m, am));
  EXPECT_EQ(countOps(**m, "Constant"), 0u);
  // Shape/Gather chains on the static head dims fold; only those on batch/seq stay.
  EXPECT_LT((*m)->graph().numNodes(), nodes * 2 / 3);
  EXPECT_EQ(countOps(**m, "Softmax"), 4u);
  EXPECT_EQ(countOps(**m, "MatMul"), 38u);
  // The tied embedding / LM head stays one tensor: no weight is duplicated by folding.
  EXPECT_EQ(weightBytes(**m), weights);
}

// The quantization passes on the bundled tiny Llama, through the interpreter: the
// quantized model's logits stay close to fp32 (cosine, per pass, stated below), the
// weights shrink as the format says, and HQQ reconstructs weights better than RTN.
#include <cctype>
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "backend/interp/Interpreter.h"
#include "frontend/OnnxImporter.h"
#include "ir/QuantFormats.h"
#include "ir/Verifier.h"
#include "passes/PassManager.h"
#include "passes/quant/Hqq.h"
#include "tests/support/NumericCheck.h"

using namespace llmopt;

namespace {

std::string modelPath(const char *name) { return std::string(LLMOPT_TEST_MODELS) + "/" + name; }

double cosine(const Tensor &a, const Tensor &b) {
  const std::vector<float> x = a.toFloats(), y = b.toFloats();
  double xy = 0, xx = 0, yy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    xy += double(x[i]) * y[i];
    xx += double(x[i]) * x[i];
    yy += double(y[i]) * y[i];
  }
  return xy / std::sqrt(xx * yy);
}

/// Bytes of every constant (quantized ones with their scales / zero points).
int64_t constantBytes(const Model &m) {
  int64_t total = 0;
  for (Value *c : m.graph().constants()) {
    const Tensor &t = *c->constant();
    total += static_cast<int64_t>(t.nbytes());
    if (t.scales)
      total += static_cast<int64_t>(t.scales->nbytes());
    if (t.zeroPoints)
      total += static_cast<int64_t>(t.zeroPoints->nbytes());
  }
  return total;
}

struct Case {
  const char *pipeline;
  const char *target;
  double minCosine; ///< logits vs fp32, worst over the inputs
  double maxBytes;  ///< constant bytes after / before
};

void PrintTo(const Case &c, std::ostream *os) { *os << c.pipeline << " --target=" << c.target; }

class QuantNumeric : public ::testing::TestWithParam<Case> {};

} // namespace

// Tolerances: measured on this random-weight model (its logits are sensitive: 4 layers,
// K = 64), with margin. int8 and 16-bit formats must keep cosine >= 0.99; 4-bit RTN at
// block 32 lands near 0.92-0.94, 3-bit near 0.8.
TEST_P(QuantNumeric, LogitsStayCloseToFp32) {
  const Case &c = GetParam();
  auto before = importOnnxFile(modelPath("tiny-llama.onnx"));
  auto after = importOnnxFile(modelPath("tiny-llama.onnx"));
  ASSERT_TRUE(before && after);
  Instrumentation instr;
  instr.verifyEach = true;
  auto pm = parsePipeline(c.pipeline, PassRegistry::global(), &instr);
  ASSERT_TRUE(pm) << pm.status().message();
  PassContext ctx;
  ctx.target = c.target;
  AnalysisManager am(ctx);
  auto pa = (*pm)->run(**after, am);
  ASSERT_TRUE(pa) << pa.status().message();
  ASSERT_TRUE(verify(**after).isOk());
  if (std::string(c.target) == "onnx") {
    EXPECT_EQ((*after)->opsetVersion(""),
              std::string(c.pipeline).find("int8") != std::string::npos ? 17 : 21);
  }
  double worst = 1;
  for (int64_t seq : {1, 5, 17}) {
    auto inputs = test::makeInputs((*before)->graph(), {{"batch", 2}, {"seq", seq}}, 3, 256);
    auto a = interp::run((*before)->graph(), inputs);
    auto b = interp::run((*after)->graph(), inputs);
    ASSERT_TRUE(a && b) << (b ? "" : b.status().message());
    worst = std::min(worst, cosine((*a)[0], (*b)[0]));
  }
  EXPECT_GE(worst, c.minCosine) << c.pipeline;
  const double ratio = double(constantBytes(**after)) / double(constantBytes(**before));
  EXPECT_LE(ratio, c.maxBytes) << c.pipeline;
  std::cout << "[ quant ] " << c.pipeline << " (" << c.target << "): logits cosine " << worst
            << ", constant bytes x" << ratio << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Passes, QuantNumeric,
    ::testing::Values(
        Case{"quant-int8", "ort", 0.99, 0.34}, Case{"quant-int8<asym>", "onnx", 0.99, 0.34},
        Case{"quant-int4", "ort", 0.88, 0.25}, Case{"quant-int4<asym;block=64>", "ort", 0.88, 0.25},
        Case{"quant-int4<method=hqq>", "ort", 0.90, 0.30},
        Case{"quant-int4<method=hqq>", "onnx", 0.88, 0.25},
        Case{"quant-int4<bits=8>", "onnx", 0.99, 0.35},
        Case{"quant-int4<bits=3;asym>", "ort", 0.7, 0.25}, Case{"quant-fp16", "ort", 0.99999, 0.51},
        Case{"quant-bf16", "ort", 0.9999, 0.51}, Case{"quant-embed", "ort", 0.95, 0.95},
        Case{"quant-embed<bits=8>", "onnx", 0.999, 0.95},
        Case{"quant-embed,quant-int4<block=64>", "onnx", 0.85, 0.20}),
    [](const ::testing::TestParamInfo<Case> &info) {
      std::string name = std::string(info.param.pipeline) + "__" + info.param.target;
      for (char &ch : name)
        if (!std::isalnum(static_cast<unsigned char>(ch)))
          ch = '_';
      return name;
    });

TEST(QuantEffect, EveryLinearWeightIsQuantizedAndTheTiedTableStoredOnce) {
  auto m = importOnnxFile(modelPath("tiny-llama.onnx"));
  ASSERT_TRUE(m);
  auto pm = parsePipeline("quant-embed,quant-int4", PassRegistry::global());
  ASSERT_TRUE(pm);
  AnalysisManager am;
  ASSERT_TRUE((*pm)->run(**m, am));
  int quantized = 0, f32Weights = 0;
  for (Value *c : (*m)->graph().constants()) {
    if (c->type().quant)
      ++quantized;
    else if (c->constant()->rank() == 2 && c->constant()->numel() >= 256)
      ++f32Weights;
  }
  EXPECT_EQ(quantized, 4 * 7 + 1); // q k v o gate up down per layer, and the embedding
  EXPECT_EQ(f32Weights, 0);
  // The LM head reads the quantized table through its Transpose: one constant.
  const Value *table = (*m)->graph().findValue("model.embed_tokens.weight");
  ASSERT_TRUE(table && table->type().quant);
  EXPECT_EQ(table->type().quant->axis, 1);
  EXPECT_EQ(table->users().size(), 2u); // Gather and Transpose
  ASSERT_EQ(am.context().reportLines.size(), 2u);
  EXPECT_NE(am.context().reportLines[0].find("1 tied with an LM head"), std::string::npos);
}

TEST(QuantHqq, ReconstructsWeightsBetterThanRoundToNearest) {
  std::mt19937 rng(1);
  std::student_t_distribution<float> heavy(4.f); // LLM weights have heavier tails than a Gaussian
  std::vector<float> w(256 * 64);
  for (float &x : w)
    x = 0.02f * heavy(rng);
  const Tensor t = Tensor::fromVector(DType::F32, {256, 64}, w);
  auto mse = [&](const Tensor &q, const QuantEncoding &enc) {
    auto d = quant::dequantize(q, enc);
    double s = 0;
    const float *x = reinterpret_cast<const float *>(d->data());
    for (size_t i = 0; i < w.size(); ++i)
      s += (x[i] - w[i]) * (x[i] - w[i]);
    return s / static_cast<double>(w.size());
  };
  for (int bits : {3, 4}) {
    const QuantEncoding enc{DType::U4, bits, 0, 32, false};
    auto rtn = quant::quantizeRtn(t, enc);
    auto pf = quantpass::hqqParams(t, enc, false), pi = quantpass::hqqParams(t, enc, true);
    ASSERT_TRUE(rtn && pf && pi);
    auto hf = quant::quantizeWithParams(t, enc, *pf, true),
         hi = quant::quantizeWithParams(t, enc, *pi, false);
    ASSERT_TRUE(hf && hi);
    const double eRtn = mse(*rtn, enc), eFloat = mse(*hf, enc), eInt = mse(*hi, enc);
    std::cout << "[ hqq ] " << bits << "-bit block 32: weight MSE rtn " << eRtn << ", hqq "
              << eFloat << " (" << 100 * (1 - eFloat / eRtn)
              << "% lower), hqq with integer zero points " << eInt << " ("
              << 100 * (1 - eInt / eRtn) << "% lower)\n";
    EXPECT_LT(eFloat, 0.95 * eRtn);
    EXPECT_LT(eInt, eRtn);
  }
}

// Calibration statistics, GPTQ, AWQ and quant-mixed's allocator on small hand-built graphs:
// Hessians equal a naive X^T X and do not depend on threads or grouping; GPTQ equals RTN
// when the Hessian is diagonal and beats it when inputs are correlated; AWQ's folding keeps
// the fp32 function; the allocator fits its budget and never loses to a uniform format.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "backend/interp/Interpreter.h"
#include "ir/QuantFormats.h"
#include "passes/PassManager.h"
#include "passes/calib/Calibration.h"
#include "passes/quant/Awq.h"
#include "passes/quant/Gptq.h"
#include "passes/quant/QuantMixed.h"
#include "tests/unit/interp_test_util.h"
#include "tests/support/TempPath.h"

using namespace llmopt;
using namespace llmopt::test;

namespace {

constexpr int64_t kVocab = 64, kHidden = 32, kFf = 48;

/// Gaussian-ish floats with a few large input channels (as LLM activations have).
std::vector<float> gaussian(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (float &x : v)
    x = d(rng);
  return v;
}

/// input_ids -> Gather(E) -> Mul(gamma) = h;  q = h Wq, k = h Wk;
/// u = h Wu, g = h Wg; d = (Sigmoid(g) * u) Wd.  Outputs q, k, d.
std::unique_ptr<Model> tinyMlp() {
  auto m = std::make_unique<Model>();
  Graph &g = m->graph();
  Value *ids = g.addInput("input_ids", Type::tensorOf(DType::I64, {1, 16}));
  std::vector<float> emb = gaussian(kVocab * kHidden, 1);
  for (int64_t v = 0; v < kVocab; ++v) // outlier channels 3 and 17
    emb[static_cast<size_t>(v * kHidden + 3)] *= 8, emb[static_cast<size_t>(v * kHidden + 17)] *= 5;
  Value *e = g.addConstant("emb", f32({kVocab, kHidden}, emb));
  Value *x = g.addNode(OpKind::Gather, {e, ids}, 1, "gather")->output();
  x->setName("x");
  std::vector<float> gamma(kHidden);
  for (int64_t i = 0; i < kHidden; ++i)
    gamma[static_cast<size_t>(i)] = 0.5f + 0.05f * static_cast<float>(i % 7);
  Value *h = g.addNode(OpKind::Mul, {x, g.addConstant("gamma", f32({kHidden}, gamma))}, 1, "norm")->output();
  h->setName("h");
  auto linear = [&](Value *in, const char *name, int64_t K, int64_t N, uint32_t seed) {
    Value *w = g.addConstant(std::string(name) + ".weight", f32({K, N}, gaussian(K * N, seed, 0.2f)));
    Value *out = g.addNode(OpKind::MatMul, {in, w}, 1, name)->output();
    out->setName(name);
    return out;
  };
  Value *q = linear(h, "q", kHidden, kHidden, 2), *k = linear(h, "k", kHidden, kHidden, 3);
  Value *u = linear(h, "up", kHidden, kFf, 4), *gt = linear(h, "gate", kHidden, kFf, 5);
  Value *act = g.addNode(OpKind::Sigmoid, {gt}, 1, "act")->output();
  act->setName("act");
  Value *prod = g.addNode(OpKind::Mul, {act, u}, 1, "swiglu")->output();
  prod->setName("prod");
  Value *d = linear(prod, "down", kFf, kHidden, 6);
  g.addOutput(q);
  g.addOutput(k);
  g.addOutput(d);
  return m;
}

std::string writeIds(int64_t n, uint32_t seed) {
  const std::string path = test::tempPath("calib_" + std::to_string(seed) + ".ids");
  std::mt19937 rng(seed);
  std::ofstream out(path);
  for (int64_t i = 0; i < n; ++i)
    out << rng() % kVocab << (i % 20 == 19 ? '\n' : ' ');
  return path;
}

PassContext calibContext(int64_t memoryMiB = 4096) {
  PassContext ctx;
  ctx.calibPath = writeIds(8 * 16, 11);
  ctx.calibSamples = 8;
  ctx.calibSeqLen = 16;
  ctx.calibMemoryMiB = memoryMiB;
  return ctx;
}

const Value *valueNamed(const Graph &g, const std::string &name) {
  for (const Node *n : g.nodeList())
    for (const Value *v : n->outputs())
      if (v->name() == name)
        return v;
  return nullptr;
}

} // namespace

TEST(Calibration, WindowsAreEvenNonOverlappingAndErrorsNameTheFile) {
  PassContext ctx;
  ctx.calibPath = writeIds(100, 3);
  ctx.calibSamples = 4;
  ctx.calibSeqLen = 20;
  auto w = calib::loadWindows(ctx);
  ASSERT_TRUE(w) << w.status().message();
  ASSERT_EQ(w->size(), 4u);
  for (const auto &win : *w)
    EXPECT_EQ(win.size(), 20u);
  ctx.calibSamples = 50; // only 5 windows fit in 100 tokens
  EXPECT_EQ(calib::loadWindows(ctx)->size(), 5u);

  ctx.calibPath = "/nonexistent/calib.txt";
  auto missing = calib::loadWindows(ctx);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.status().message().find("/nonexistent/calib.txt"), std::string::npos);
  const std::string bad = test::tempPath("bad.ids");
  std::ofstream(bad) << "1 2 three 4";
  ctx.calibPath = bad;
  auto parsed = calib::loadWindows(ctx);
  ASSERT_FALSE(parsed);
  EXPECT_NE(parsed.status().message().find("'three'"), std::string::npos);
  ctx.calibPath = test::tempPath("text.txt");
  std::ofstream(ctx.calibPath) << "some text";
  auto noTok = calib::loadWindows(ctx);
  ASSERT_FALSE(noTok);
  EXPECT_NE(noTok.status().message().find("--tokenizer"), std::string::npos);
}

TEST(Calibration, HessianEqualsNaiveSumAndIgnoresThreadsAndGroups) {
  auto m = tinyMlp();
  PassContext ctx = calibContext();
  auto windows = calib::loadWindows(ctx);
  ASSERT_TRUE(windows);
  const std::vector<const Value *> acts = calib::matmulWeightInputs(m->graph());
  ASSERT_EQ(acts.size(), 2u); // h (q, k, up, gate) and prod (down)
  auto one = calib::collect(*m, *windows, acts, true, 1);
  auto two = calib::collect(*m, *windows, acts, true, 2);
  ASSERT_TRUE(one && two) << (one ? two.status() : one.status()).message();
  for (const Value *a : acts)
    EXPECT_EQ(one->find(a)->hessian, two->find(a)->hessian) << a->name();

  // Naive double X^T X of h = E[id] * gamma over every calibration token.
  const Value *h = valueNamed(m->graph(), "h");
  const calib::ActStats *hs = one->find(h);
  ASSERT_TRUE(hs);
  EXPECT_EQ(hs->rows, 8 * 16);
  const Tensor &emb = *m->graph().constants()[0]->constant();
  const float *e = reinterpret_cast<const float *>(emb.data());
  std::vector<double> naive(kHidden * kHidden, 0.0), sumAbs(kHidden, 0.0);
  for (const auto &win : *windows)
    for (int64_t id : win)
      for (int64_t i = 0; i < kHidden; ++i) {
        const float gi = 0.5f + 0.05f * static_cast<float>(i % 7);
        const double xi = static_cast<double>(e[id * kHidden + i] * gi);
        sumAbs[static_cast<size_t>(i)] += std::fabs(xi);
        for (int64_t j = 0; j < kHidden; ++j) {
          const float gj = 0.5f + 0.05f * static_cast<float>(j % 7);
          naive[static_cast<size_t>(i * kHidden + j)] += xi * static_cast<double>(e[id * kHidden + j] * gj);
        }
      }
  for (size_t i = 0; i < naive.size(); ++i)
    EXPECT_NEAR(hs->hessian[i], naive[i], 1e-4 * (1 + std::fabs(naive[i])));
  for (int64_t i = 0; i < kHidden; ++i)
    EXPECT_NEAR(hs->meanAbs(i), sumAbs[static_cast<size_t>(i)] / (8 * 16), 1e-5);

  // Streamed in groups of one (a 1 MiB budget holds one 32x32 or 48x48 Hessian at a time:
  // forced by asking for groups with a zero-ish budget) gives the same numbers.
  AnalysisManager am(calibContext(/*memoryMiB=*/1));
  am.context().calibMemoryMiB = 0; // every value its own group
  int groups = 0;
  auto st = calib::forEachHessianGroup(*m, am, acts, "test", [&](calib::Stats &s) -> Status {
    ++groups;
    EXPECT_FALSE(s.complete);
    for (const auto &[v, a] : s.acts)
      EXPECT_EQ(a.hessian, one->find(v)->hessian) << v->name();
    return Status::ok();
  });
  ASSERT_TRUE(st) << st.message();
  EXPECT_EQ(groups, 2);
}

TEST(Gptq, DiagonalHessianGivesRoundToNearest) {
  const int64_t K = 64, N = 24;
  Tensor w = f32({K, N}, gaussian(K * N, 7));
  std::vector<double> h(K * K, 0.0);
  for (int64_t k = 0; k < K; ++k)
    h[static_cast<size_t>(k * K + k)] = 1.0 + static_cast<double>(k % 5);
  const QuantEncoding enc{DType::I4, 4, 0, 32, true};
  auto r = quantpass::gptqQuantize(w, h, enc, {});
  auto rtn = quant::quantizeRtn(w, enc);
  ASSERT_TRUE(r && rtn);
  // No off-diagonal coupling: nothing to compensate, so GPTQ is RTN byte for byte.
  ASSERT_EQ(r->quantized.nbytes(), rtn->nbytes());
  EXPECT_EQ(0, std::memcmp(r->quantized.data(), rtn->data(), rtn->nbytes()));
  EXPECT_NEAR(r->outputError, r->rtnOutputError, 1e-9 * r->rtnOutputError);
}

TEST(Gptq, CorrelatedInputsCutTheOutputErrorAndActOrderDecodesToTheGrid) {
  const int64_t K = 128, N = 48, rows = 512;
  // X with strongly correlated channels: X = Z A.
  std::vector<float> z = gaussian(rows * K, 8), a = gaussian(K * K, 9, 0.3f);
  for (int64_t k = 0; k < K; ++k)
    a[static_cast<size_t>(k * K + k)] += 1.f;
  std::vector<double> h(K * K, 0.0);
  std::vector<double> x(K);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < K; ++j) {
      double s = 0;
      for (int64_t i = 0; i < K; ++i)
        s += z[static_cast<size_t>(r * K + i)] * a[static_cast<size_t>(i * K + j)];
      x[static_cast<size_t>(j)] = s;
    }
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = 0; j < K; ++j)
        h[static_cast<size_t>(i * K + j)] += x[static_cast<size_t>(i)] * x[static_cast<size_t>(j)];
  }
  Tensor w = f32({K, N}, gaussian(K * N, 10));
  for (bool actOrder : {false, true})
    for (bool sym : {true, false}) {
      const QuantEncoding enc{quant::storageType(4, sym), 4, 0, 32, sym};
      quantpass::GptqOptions o;
      o.actOrder = actOrder;
      auto r = quantpass::gptqQuantize(w, h, enc, o);
      ASSERT_TRUE(r) << r.status().message();
      EXPECT_LT(r->outputError, 0.8 * r->rtnOutputError) << "actorder " << actOrder << " sym " << sym;
      // The stored integers are the ones the stored scales were fitted for: decoding and
      // re-quantizing with the stored parameters gives the same bytes.
      auto deq = quant::dequantize(r->quantized, enc);
      ASSERT_TRUE(deq);
      auto again = quant::quantizeWithParams(*deq, enc, quant::storedParams(r->quantized, enc));
      ASSERT_TRUE(again);
      EXPECT_EQ(0, std::memcmp(again->data(), r->quantized.data(), again->nbytes()));
    }
}

TEST(Awq, FoldingKeepsTheFunctionAndLowersTheCalibratedError) {
  auto m = tinyMlp();
  auto ref = tinyMlp();
  AnalysisManager am(calibContext());
  const QuantEncoding enc{DType::I4, 4, 0, 16, true};
  auto encodingFor = [&](int64_t, int64_t) { return enc; };
  auto detail = quantpass::awqScale(*m, am, quantpass::AwqOptions{}, encodingFor);
  ASSERT_TRUE(detail) << detail.status().message();
  EXPECT_NE(detail->find("folded into 1 norm weights and 1 MatMul weights"), std::string::npos)
      << *detail;
  // Scaled but not yet quantized: same outputs as the original (fp32 rounding only).
  Tensor ids = i64({1, 16}, {1, 5, 9, 13, 2, 63, 40, 7, 7, 30, 22, 11, 0, 58, 33, 4});
  auto a = interp::run(m->graph(), {ids});
  auto b = interp::run(ref->graph(), {ids});
  ASSERT_TRUE(a && b);
  for (size_t i = 0; i < a->size(); ++i)
    EXPECT_FLOATS_NEAR(floats((*a)[i]), floats((*b)[i]), 2e-4);
  EXPECT_NE(detail->find("error vs RTN"), std::string::npos);
  const size_t at = detail->find("error vs RTN ");
  const double ratio = std::stod(detail->substr(at + 13));
  EXPECT_LE(ratio, 1.0); // alpha = 0 (RTN) is on the grid, so the search never loses
}

TEST(QuantMixed, AllocatorFitsTheBudgetAndBeatsEveryUniformFormat) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> u(0.2, 5.0);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<quantpass::FormatChoice> cs(12);
    for (auto &c : cs) {
      const double size = u(rng) * 1000, sens = u(rng);
      for (int bits : {2, 4, 8, 16}) { // error falls ~4x per doubled bit, scaled per weight
        c.bytes.push_back(static_cast<int64_t>(size * bits));
        c.error.push_back(sens * std::pow(4.0, -bits) * (1 + 0.3 * u(rng)));
      }
    }
    double uniformBytes[4] = {0, 0, 0, 0}, uniformErr[4] = {0, 0, 0, 0};
    for (const auto &c : cs)
      for (size_t j = 0; j < 4; ++j)
        uniformBytes[j] += static_cast<double>(c.bytes[j]), uniformErr[j] += c.error[j];
    const double budget = uniformBytes[1] * (0.9 + 0.4 * (trial % 5) / 4.0);
    ASSERT_TRUE(quantpass::allocateFormats(cs, budget));
    double bytes = 0, err = 0;
    for (const auto &c : cs) {
      bytes += static_cast<double>(c.bytes[static_cast<size_t>(c.picked)]);
      err += c.error[static_cast<size_t>(c.picked)];
    }
    EXPECT_LE(bytes, budget);
    for (size_t j = 0; j < 4; ++j) {
      if (uniformBytes[j] <= budget) {
        EXPECT_LE(err, uniformErr[j]) << "trial " << trial << " format " << j;
      }
    }
  }
  std::vector<quantpass::FormatChoice> tiny(1);
  tiny[0].bytes = {100, 200};
  tiny[0].error = {2, 1};
  EXPECT_FALSE(quantpass::allocateFormats(tiny, 99));
}

TEST(QuantMixed, PassRespectsTheBudgetAndRefusesTooFewBits) {
  for (double bpw : {11.0, 20.0}) { // the f32 embedding alone puts the floor at ~10.7
    auto m = tinyMlp();
    AnalysisManager am(calibContext());
    auto pm = parsePipeline(fmt::format("quant-mixed<bpw={};block=16>", bpw), PassRegistry::global());
    ASSERT_TRUE(pm) << pm.status().message();
    auto r = (*pm)->run(*m, am);
    ASSERT_TRUE(r) << r.status().message();
    bool found = false;
    for (const std::string &line : am.context().reportLines)
      if (line.rfind("quant-mixed (", 0) == 0) {
        found = true;
        const size_t at = line.find("whole model ");
        ASSERT_NE(at, std::string::npos) << line;
        EXPECT_LE(std::stod(line.substr(at + 12)), bpw) << line;
      }
    EXPECT_TRUE(found);
  }
  auto m = tinyMlp();
  AnalysisManager am(calibContext());
  auto pm = parsePipeline("quant-mixed<bpw=8>", PassRegistry::global());
  ASSERT_TRUE(pm);
  auto r = (*pm)->run(*m, am);
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("below what the candidates reach"), std::string::npos);
}

TEST(QuantMixed, EmbedAllocatesTheEmbeddingTableToo) {
  // bpw=8 is below the floor of the f32 embedding (the test above); with `embed` the table
  // is a candidate and the budget holds.
  auto m = tinyMlp();
  AnalysisManager am(calibContext());
  auto pm = parsePipeline("quant-mixed<bpw=8;block=16;metric=kl;embed;mode=both;probe-windows=3>", PassRegistry::global());
  ASSERT_TRUE(pm) << pm.status().message();
  auto r = (*pm)->run(*m, am);
  ASSERT_TRUE(r) << r.status().message();
  bool table = false, summary = false;
  for (const std::string &line : am.context().reportLines) {
    table = table || line.find("(embedding") != std::string::npos;
    if (line.rfind("quant-mixed (", 0) == 0) {
      summary = true;
      EXPECT_NE(line.find("and 1 embedding tables"), std::string::npos) << line;
      const size_t at = line.find("whole model ");
      ASSERT_NE(at, std::string::npos) << line;
      EXPECT_LE(std::stod(line.substr(at + 12)), 8.0) << line;
    }
  }
  EXPECT_TRUE(table);
  EXPECT_TRUE(summary);
  for (const auto &c : m->graph().constants())
    EXPECT_FALSE(c->constant()->dtype() == DType::F32 && c->constant()->numel() >= 16 * 16)
        << c->name() << " left f32";

  auto bad = parsePipeline("quant-mixed<bpw=8;metric=hessian;embed>", PassRegistry::global());
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.status().message().find("option 'embed' needs metric=kl or metric=weight"),
            std::string::npos)
      << bad.status().message();
}

TEST(QuantMixed, ProbeAllScoresEveryFormatEndToEnd) {
  auto m = tinyMlp();
  AnalysisManager am(calibContext());
  auto pm = parsePipeline("quant-mixed<bpw=11;block=16;blocks=16,32;candidates=2,4,8;metric=kl;probe=all>",
                          PassRegistry::global());
  ASSERT_TRUE(pm) << pm.status().message();
  auto r = (*pm)->run(*m, am);
  ASSERT_TRUE(r) << r.status().message();
  bool summary = false;
  for (const std::string &line : am.context().reportLines)
    if (line.rfind("quant-mixed (", 0) == 0) {
      summary = true;
      EXPECT_NE(line.find("end-to-end probe at every format"), std::string::npos) << line;
      const size_t at = line.find("whole model ");
      ASSERT_NE(at, std::string::npos) << line;
      EXPECT_LE(std::stod(line.substr(at + 12)), 11.0) << line;
    }
  EXPECT_TRUE(summary);

  auto bad = parsePipeline("quant-mixed<bpw=8;metric=relative;probe=all>", PassRegistry::global());
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.status().message().find("option 'probe=all' needs metric=kl"), std::string::npos)
      << bad.status().message();
}

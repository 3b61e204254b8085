// distill-*: the soft-label file round-trips and holds the exact top-k; distill-expose's
// outputs equal the interpreter's intermediate values; distill-student keeps the blocks it
// names; the masked ridge fit equals a direct solve; distill-reconstruct keeps masks and
// brings a pruned or quantized tiny Llama closer to its teacher; bad options are refused.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "backend/interp/Interpreter.h"
#include "frontend/OnnxImporter.h"
#include "ir/QuantFormats.h"
#include "passes/PassManager.h"
#include "passes/calib/Calibration.h"
#include "passes/distill/DistillCommon.h"
#include "passes/distill/ReconstructSolve.h"
#include "passes/distill/SoftLabels.h"
#include "tests/support/NumericCheck.h"

using namespace llmopt;
using namespace llmopt::distill;
namespace fs = std::filesystem;

namespace {

std::string modelPath(const char *name) { return std::string(LLMOPT_TEST_MODELS) + "/" + name; }

/// A scratch path of this process (ctest runs each case as its own process, in parallel).
std::string tmpPath(const std::string &name) {
  return (fs::temp_directory_path() / fmt::format("llmopt_distill_test_{}_{}", ::getpid(), name)).string();
}

/// A .ids file of `tokens` deterministic ids below the tiny Llama's vocabulary.
std::string idsFile(int64_t tokens, uint32_t seed) {
  const std::string path = tmpPath(fmt::format("calib_{}_{}.ids", tokens, seed));
  std::ofstream out(path);
  std::mt19937 rng(seed);
  for (int64_t i = 0; i < tokens; ++i)
    out << rng() % 256 << ' ';
  return path;
}

std::unique_ptr<Model> tinyLlama() {
  auto m = importOnnxFile(modelPath("tiny-llama.onnx"));
  EXPECT_TRUE(m) << m.status().message();
  return m.take();
}

/// Runs `pipeline` with --verify-each and `samples` x 32 tokens of calibration ids
/// (distill-reconstruct fits K up to 192 inputs: it gets 64 windows, 2048 rows).
Expected<std::vector<std::string>> runPipeline(Model &m, const std::string &pipeline,
                                               int64_t samples = 4) {
  Instrumentation instr;
  instr.verifyEach = true;
  auto pm = parsePipeline(pipeline, PassRegistry::global(), &instr);
  if (!pm)
    return pm.status();
  PassContext ctx;
  ctx.calibPath = idsFile(samples * 32, 7);
  ctx.calibSamples = samples;
  ctx.calibSeqLen = 32;
  ctx.threads = 1;
  AnalysisManager am(ctx);
  auto pa = (*pm)->run(m, am);
  if (!pa)
    return pa.status();
  return am.context().reportLines;
}

std::string metadata(const Model &m, const std::string &key) {
  for (const auto &[k, v] : m.metadata)
    if (k == key)
      return v;
  return "<missing>";
}

/// The interpreter's outputs of `m` on held-out inputs (2 x 9 tokens).
std::vector<Tensor> outputsOf(const Model &m) {
  auto inputs = test::makeInputs(m.graph(), {{"batch", 2}, {"seq", 9}}, 11, 256);
  auto r = interp::run(m.graph(), inputs);
  EXPECT_TRUE(r) << r.status().message();
  return r.take();
}

/// Squared distance of two models' first outputs (the logits).
double logitsDistance(const Model &a, const Model &b) {
  const std::vector<float> x = outputsOf(a)[0].toFloats(), y = outputsOf(b)[0].toFloats();
  EXPECT_EQ(x.size(), y.size());
  double d = 0;
  for (size_t i = 0; i < x.size(); ++i)
    d += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
  return d;
}

/// The tiny Llama after `compress`, and after `compress` + distill-reconstruct (2048
/// calibration rows: K goes up to 192), with the reconstruct report.
struct Reconstructed {
  std::unique_ptr<Model> teacher, compressed, refit;
  std::vector<std::string> report;
};
Reconstructed reconstructAfter(const std::string &compress, const std::string &options = "") {
  Reconstructed r{tinyLlama(), tinyLlama(), tinyLlama(), {}};
  EXPECT_TRUE(runPipeline(*r.compressed, compress));
  auto rep = runPipeline(*r.refit, fmt::format("{},distill-reconstruct<teacher={}{}>", compress,
                                               modelPath("tiny-llama.onnx"), options), 64);
  EXPECT_TRUE(rep) << rep.status().message();
  if (rep)
    r.report = *rep;
  return r;
}

} // namespace

// ---- soft-label file ----

TEST(SoftLabels, TopKIsTheExactLogSoftmaxAtTemperature) {
  const std::vector<float> logits = {1.f, 3.f, 3.f, -2.f, 0.5f};
  std::vector<int32_t> ids;
  std::vector<float> logp;
  topKLogProbs(logits, 3, 2.f, ids, logp);
  ASSERT_EQ(ids, (std::vector<int32_t>{1, 2, 0})); // the tie goes to the lower id
  double z = 0;
  for (float l : logits)
    z += std::exp(l / 2.0);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_NEAR(logp[i], logits[static_cast<size_t>(ids[i])] / 2.0 - std::log(z), 1e-6);
}

TEST(SoftLabels, RoundTripsAndWritesAtomically) {
  const std::string path = tmpPath("roundtrip.soft");
  fs::remove(path);
  SoftLabelHeader h;
  h.vocab = 7;
  h.topk = 3;
  h.temperature = 1.5f;
  h.modelHash = 0x0123456789abcdefull;
  std::mt19937 rng(3);
  std::normal_distribution<float> d;
  std::vector<std::vector<int64_t>> tokens = {{4, 1, 6}, {2, 5}};
  std::vector<std::vector<float>> logits;
  {
    auto w = SoftLabelWriter::create(path, h);
    ASSERT_TRUE(w) << w.status().message();
    for (const auto &t : tokens) {
      logits.emplace_back(t.size() * h.vocab);
      for (float &x : logits.back())
        x = d(rng);
      ASSERT_TRUE((*w)->addWindow(t, logits.back()));
    }
    EXPECT_FALSE(fs::exists(path)) << "visible before finish()";
    ASSERT_TRUE((*w)->finish());
  }
  EXPECT_EQ(fs::file_size(path), 64u + 5u * (8u + 8u * 3u));
  EXPECT_NE(fs::status(path).permissions() & fs::perms::others_read, fs::perms::none)
      << "the temporary's 0600 was kept";
  auto r = SoftLabelReader::open(path);
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_EQ((*r)->header().vocab, 7u);
  EXPECT_EQ((*r)->header().topk, 3u);
  EXPECT_EQ((*r)->header().temperature, 1.5f);
  EXPECT_EQ((*r)->header().modelHash, h.modelHash);
  EXPECT_EQ((*r)->header().positions, 5u);
  EXPECT_EQ((*r)->header().windows, 2u);
  SoftLabelRecord rec;
  std::vector<int32_t> ids;
  std::vector<float> logp;
  for (size_t w = 0; w < tokens.size(); ++w)
    for (size_t p = 0; p < tokens[w].size(); ++p) {
      ASSERT_TRUE((*r)->next(rec));
      EXPECT_EQ(rec.token, tokens[w][p]);
      EXPECT_EQ(rec.pos, p);
      topKLogProbs(std::span<const float>(logits[w]).subspan(p * 7, 7), 3, 1.5f, ids, logp);
      EXPECT_EQ(rec.ids, ids);
      EXPECT_EQ(rec.logp, logp);
    }
  EXPECT_FALSE((*r)->next(rec));
  EXPECT_TRUE((*r)->status());

  // Destroyed unfinished: nothing appears, no temporary stays behind.
  const std::string gone = tmpPath("unfinished.soft");
  fs::remove(gone);
  {
    auto w = SoftLabelWriter::create(gone, h);
    ASSERT_TRUE(w);
    ASSERT_TRUE((*w)->addWindow(tokens[1], std::vector<float>(14, 0.f)));
  }
  EXPECT_FALSE(fs::exists(gone));
  for (const auto &e : fs::directory_iterator(fs::temp_directory_path()))
    EXPECT_EQ(e.path().filename().string().find(fs::path(gone).filename().string() + ".tmp"), std::string::npos);
}

TEST(SoftLabels, ReaderRefusesOtherFiles) {
  auto r = SoftLabelReader::open(modelPath("tiny-llama.onnx"));
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("not a soft-label file"), std::string::npos) << r.status().message();
}

TEST(DistillTargets, WritesOneRecordPerCalibrationToken) {
  auto m = tinyLlama();
  const std::string out = tmpPath("targets.soft");
  fs::remove(out);
  auto rep = runPipeline(*m, fmt::format("distill-targets<topk=5;temperature=2;out={}>", out));
  ASSERT_TRUE(rep) << rep.status().message();
  auto r = SoftLabelReader::open(out);
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_EQ((*r)->header().positions, 128u);
  EXPECT_EQ((*r)->header().windows, 4u);
  EXPECT_EQ((*r)->header().topk, 5u);
  EXPECT_EQ((*r)->header().vocab, 256u);
  // The first window's first position against the interpreter's logits.
  std::ifstream ids(idsFile(128, 7));
  int64_t first = 0;
  ids >> first;
  auto logits = interp::run(m->graph(), {Tensor::fromVector(DType::I64, {1, 1}, std::vector<int64_t>{first})});
  ASSERT_TRUE(logits) << logits.status().message();
  std::vector<int32_t> topIds;
  std::vector<float> logp;
  topKLogProbs((*logits)[0].view<float>(), 5, 2.f, topIds, logp);
  SoftLabelRecord rec;
  ASSERT_TRUE((*r)->next(rec));
  EXPECT_EQ(rec.token, first);
  EXPECT_EQ(rec.ids, topIds); // causal: position 0 sees only its own token
  for (size_t i = 0; i < logp.size(); ++i)
    EXPECT_NEAR(rec.logp[i], logp[i], 1e-5);
}

// ---- distill-expose ----

TEST(DistillExpose, OutputsEqualTheInterpretersBlockOutputs) {
  auto teacher = tinyLlama();
  auto m = tinyLlama();
  auto rep = runPipeline(*m, "distill-expose<hidden=all;logits>");
  ASSERT_TRUE(rep) << rep.status().message();
  ASSERT_EQ(m->graph().outputs().size(), 6u);
  EXPECT_EQ(metadata(*m, kMetaOutputs),
            "teacher.hidden.0,teacher.hidden.1,teacher.hidden.2,teacher.hidden.3,teacher.logits");
  EXPECT_EQ(metadata(*m, kMetaBlocks), "4");
  // Block i's output is the last Add directly in scope /model/layers.i (the generator's
  // naming, independent of the pass's analysis).
  std::map<std::string, const Value *> lastAdd;
  for (const auto &n : teacher->graph().nodes())
    for (int i = 0; i < 4; ++i)
      if (n->is(OpKind::Add) && n->name().rfind(fmt::format("/model/layers.{}/Add", i), 0) == 0)
        lastAdd[fmt::format("teacher.hidden.{}", i)] = n->output();
  ASSERT_EQ(lastAdd.size(), 4u);
  std::map<const Value *, Tensor> seen;
  auto inputs = test::makeInputs(teacher->graph(), {{"batch", 2}, {"seq", 9}}, 11, 256);
  interp::RunOptions ro;
  ro.onValue = [&](const Value &v, const Tensor &t) {
    seen.emplace(&v, t);
    return Status::ok();
  };
  auto ref = interp::run(teacher->graph(), inputs, ro);
  ASSERT_TRUE(ref);
  auto got = interp::run(m->graph(), inputs);
  ASSERT_TRUE(got) << got.status().message();
  for (size_t o = 1; o < 5; ++o) {
    const std::string &name = m->graph().outputs()[o]->name();
    ASSERT_TRUE(lastAdd.count(name)) << name;
    EXPECT_TRUE(test::outputsClose({seen.at(lastAdd[name])}, {(*got)[o]}, 0, 0)) << name;
  }
  EXPECT_TRUE(test::outputsClose({(*ref)[0]}, {(*got)[5]}, 0, 0)) << "teacher.logits";
  EXPECT_TRUE(test::outputsClose({(*ref)[0]}, {(*got)[0]}, 0, 0)) << "logits unchanged";
}

TEST(DistillExpose, ChosenBlocksAndRefusals) {
  auto m = tinyLlama();
  ASSERT_TRUE(runPipeline(*m, "distill-expose<hidden=1,3;logits=false>"));
  ASSERT_EQ(m->graph().outputs().size(), 3u);
  EXPECT_EQ(m->graph().outputs()[1]->name(), "teacher.hidden.1");
  EXPECT_EQ(m->graph().outputs()[2]->name(), "teacher.hidden.3");
  EXPECT_EQ(metadata(*m, kMetaHidden), "1,3");
  auto again = runPipeline(*m, "distill-expose<hidden=1>");
  ASSERT_FALSE(again);
  EXPECT_NE(again.status().message().find("already has a value named 'teacher.hidden.1'"), std::string::npos);
  auto m2 = tinyLlama();
  auto bad = runPipeline(*m2, "distill-expose<hidden=4>");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.status().message().find("option 'hidden' names block 4, but the model has 4 blocks"),
            std::string::npos) << bad.status().message();
  auto parse = runPipeline(*m2, "distill-expose<hidden=first>");
  ASSERT_FALSE(parse);
  EXPECT_NE(parse.status().message().find("option 'hidden'"), std::string::npos) << parse.status().message();
}

// ---- distill-student ----

TEST(DistillStudent, KeepsTheNamedBlocksWithTheTeachersWeights) {
  auto teacher = tinyLlama();
  auto m = tinyLlama();
  auto rep = runPipeline(*m, "distill-student<keep=0,2>");
  ASSERT_TRUE(rep) << rep.status().message();
  EXPECT_EQ(metadata(*m, kMetaLayerMap), "0:0,1:2");
  auto blocks = findBlocks(*m, "test");
  ASSERT_TRUE(blocks);
  EXPECT_EQ(blocks->layers.size(), 2u);
  EXPECT_EQ(m->graph().findValue("model.layers.1.self_attn.q_proj.weight"), nullptr);
  EXPECT_EQ(m->graph().findValue("model.layers.3.mlp.down_proj.weight"), nullptr);
  const Value *w = m->graph().findValue("model.layers.2.mlp.down_proj.weight");
  ASSERT_TRUE(w);
  EXPECT_TRUE(w->constant()->sameContents(*teacher->graph().findValue(w->name())->constant()));
  bool listed = false;
  for (const std::string &l : *rep)
    listed = listed || l.find("distill-student: kept blocks 0,2 of 4") != std::string::npos;
  EXPECT_TRUE(listed);
  auto out = outputsOf(*m);
  for (float x : out[0].toFloats())
    ASSERT_TRUE(std::isfinite(x));
}

TEST(DistillStudent, RatioAndWidth) {
  auto m = tinyLlama();
  ASSERT_TRUE(runPipeline(*m, "distill-student<ratio=0.5;width=0.2>"));
  EXPECT_EQ(metadata(*m, kMetaLayerMap), "0:0,1:2"); // DistilBERT's every other block
  const Value *up = m->graph().findValue("model.layers.0.mlp.up_proj.weight");
  ASSERT_TRUE(up);
  auto teacher = tinyLlama();
  EXPECT_LT(up->constant()->numel() + m->graph().findValue("model.layers.0.self_attn.q_proj.weight")->constant()->numel(),
            teacher->graph().findValue(up->name())->constant()->numel() +
                teacher->graph().findValue("model.layers.0.self_attn.q_proj.weight")->constant()->numel());
  auto bad = runPipeline(*m, "distill-student<keep=0;ratio=0.5>");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.status().message().find("either keep= or ratio="), std::string::npos);
}

// ---- distill-reconstruct ----

TEST(ReconstructSolve, MaskedRidgeFitEqualsADirectSolve) {
  std::mt19937 rng(5);
  std::normal_distribution<float> d;
  const int64_t rows = 200, ks = 6, kt = 8, n = 3;
  RowMatrixF xs(rows, ks), xt(rows, kt), wt(kt, n), ws(ks, n);
  for (auto *m : {&xs, &xt, &wt, &ws})
    for (int64_t i = 0; i < m->size(); ++i)
      m->data()[i] = d(rng);
  ws(1, 0) = ws(4, 0) = ws(0, 2) = 0.f; // the mask
  const RowMatrixF w0 = ws;
  NormalEquations a(ks, kt), b(ks, kt);
  a.add(xs.data(), xt.data(), 130); // the two halves of the windows
  b.add(xs.data() + 130 * ks, xt.data() + 130 * kt, rows - 130);
  const double ridge = 0.05;
  FitResult fit = ridgeFit(a, b, wt, ws, ridge, false);
  EXPECT_LT(fit.errorAfter, fit.errorBefore);
  EXPECT_EQ(fit.solves, 3);
  // Directly: per column, (A^T A + l I) w = A^T y + l w0 over the unmasked rows.
  const Eigen::MatrixXd Xs = xs.cast<double>(), Y = (xt * wt).cast<double>();
  const double lambda = ridge * (Xs.transpose() * Xs).diagonal().mean();
  for (int64_t j = 0; j < n; ++j) {
    std::vector<int64_t> S;
    for (int64_t k = 0; k < ks; ++k)
      if (w0(k, j) != 0.f)
        S.push_back(k);
    Eigen::MatrixXd A(rows, static_cast<int64_t>(S.size()));
    Eigen::VectorXd prior(static_cast<int64_t>(S.size()));
    for (size_t i = 0; i < S.size(); ++i) {
      A.col(static_cast<int64_t>(i)) = Xs.col(S[i]);
      prior(static_cast<int64_t>(i)) = w0(S[i], j);
    }
    const Eigen::MatrixXd H = A.transpose() * A + lambda * Eigen::MatrixXd::Identity(A.cols(), A.cols());
    const Eigen::VectorXd w = H.ldlt().solve(A.transpose() * Y.col(j) + lambda * prior);
    for (int64_t k = 0, i = 0; k < ks; ++k) {
      if (w0(k, j) == 0.f) {
        EXPECT_EQ(ws(k, j), 0.f);
        continue;
      }
      EXPECT_NEAR(ws(k, j), w(i++), 1e-4) << "row " << k << " column " << j;
    }
  }
}

TEST(ReconstructSolve, AutoRidgeKeepsTheStartWhenTheDataCannotImproveIt) {
  // The teacher's own weight on matching inputs cannot be improved: auto keeps it exactly.
  std::mt19937 rng(6);
  std::normal_distribution<float> d;
  const int64_t rows = 64, k = 5, n = 2;
  RowMatrixF x(rows, k), wt(k, n);
  for (auto *m : {&x, &wt})
    for (int64_t i = 0; i < m->size(); ++i)
      m->data()[i] = d(rng);
  NormalEquations a(k, k), b(k, k);
  a.add(x.data(), x.data(), 32);
  b.add(x.data() + 32 * k, x.data() + 32 * k, 32);
  RowMatrixF ws = wt;
  FitResult fit = ridgeFit(a, b, wt, ws, -1, false);
  EXPECT_LT(fit.ridge, 0);
  EXPECT_EQ(ws, wt);
  // A perturbed start on the same data: auto picks a ridge and moves towards the teacher.
  ws = wt;
  ws(0, 0) += 1.f;
  ws(3, 1) -= 1.f;
  fit = ridgeFit(a, b, wt, ws, -1, false);
  EXPECT_GT(fit.ridge, 0);
  EXPECT_LT(fit.errorAfter, 0.01 * fit.errorBefore);
}

TEST(DistillReconstruct, MagnitudePrunedModelMovesTowardsTheTeacher) {
  Reconstructed r = reconstructAfter("prune-magnitude<sparsity=0.5>");
  // The mask stays: zeros exactly where magnitude pruning put them, refit values elsewhere.
  int64_t changed = 0;
  for (Value *c : r.compressed->graph().constants()) {
    if (c->name().find("proj.weight") == std::string::npos)
      continue;
    const std::vector<float> before = c->constant()->toFloats(),
                             after = r.refit->graph().findValue(c->name())->constant()->toFloats();
    for (size_t i = 0; i < before.size(); ++i) {
      ASSERT_EQ(before[i] == 0.f, after[i] == 0.f) << c->name() << " element " << i;
      changed += before[i] != after[i];
    }
  }
  EXPECT_GT(changed, 0);
  const double before = logitsDistance(*r.compressed, *r.teacher), after = logitsDistance(*r.refit, *r.teacher);
  EXPECT_LT(after, 0.7 * before) << "before " << before << " after " << after;
}

TEST(DistillReconstruct, DenseRefitsTheZerosToo) {
  Reconstructed r = reconstructAfter("prune-magnitude<sparsity=0.5>", ";dense");
  const Value *before = r.compressed->graph().findValue("model.layers.1.mlp.down_proj.weight");
  const std::vector<float> a = before->constant()->toFloats(),
                           b = r.refit->graph().findValue(before->name())->constant()->toFloats();
  int64_t revived = 0;
  for (size_t i = 0; i < a.size(); ++i)
    revived += a[i] == 0.f && b[i] != 0.f;
  EXPECT_GT(revived, static_cast<int64_t>(a.size()) / 4); // about half were zero; most come back
  EXPECT_LT(logitsDistance(*r.refit, *r.teacher), logitsDistance(*r.compressed, *r.teacher));
}

TEST(DistillReconstruct, StructuredPrunedColumnsAreMatched) {
  Reconstructed r = reconstructAfter("prune-struct<ratio=0.25;unit=channel>");
  const double before = logitsDistance(*r.compressed, *r.teacher), after = logitsDistance(*r.refit, *r.teacher);
  EXPECT_LT(after, 0.9 * before) << "before " << before << " after " << after;
}

TEST(DistillReconstruct, ResidualCorrectionBringsTheStreamBack) {
  // With `residual`, o_proj and down_proj also make up the residual stream's drift from the
  // teacher's, so the blocks' outputs (and the logits) end closer than with the plain fit.
  Reconstructed plain = reconstructAfter("prune-struct<ratio=0.25;unit=channel>");
  Reconstructed res = reconstructAfter("prune-struct<ratio=0.25;unit=channel>", ";residual");
  const double p = logitsDistance(*plain.refit, *plain.teacher), r = logitsDistance(*res.refit, *res.teacher);
  EXPECT_LT(r, p) << "residual " << r << " plain " << p;
}

TEST(DistillReconstruct, QuantizedWeightsStayOnTheirGrid) {
  Reconstructed r = reconstructAfter("quant-int4<bits=3;block=32;sym>");
  int64_t refit = 0;
  for (Value *c : r.compressed->graph().constants()) {
    if (!c->type().quant)
      continue;
    const Value *now = r.refit->graph().findValue(c->name());
    ASSERT_TRUE(now->type().quant) << c->name();
    EXPECT_EQ(*now->type().quant, *c->type().quant);
    EXPECT_TRUE(now->constant()->scales->sameContents(*c->constant()->scales)) << c->name();
    refit += !now->constant()->sameContents(*c->constant());
  }
  EXPECT_GT(refit, 0);
  const double before = logitsDistance(*r.compressed, *r.teacher), after = logitsDistance(*r.refit, *r.teacher);
  EXPECT_LT(after, 0.9 * before) << "before " << before << " after " << after;
}

/// The mean relative output error per layer after the fit, from the report line.
static double errorAfterFit(const std::vector<std::string> &report) {
  for (const std::string &l : report) {
    const size_t at = l.find("relative output error per layer, mean ");
    const size_t arrow = at == std::string::npos ? at : l.find(" -> ", at);
    if (arrow != std::string::npos)
      return std::stod(l.substr(arrow + 4));
  }
  ADD_FAILURE() << "no error figure in the report";
  return 0;
}

TEST(DistillReconstruct, GptqRoundingBeatsRoundToNearestOnTheGrid) {
  // The same refit rounded back onto the same scales: GPTQ's error feedback (round=gptq,
  // the default) against round-to-nearest. GPTQ minimises the output error on the
  // calibration rows, so that is what it must lower (the tiny model's random ids give
  // nearly diagonal Hessians: held-out logits move little either way).
  Reconstructed g = reconstructAfter("quant-int4<bits=3;block=32;sym>");
  Reconstructed n = reconstructAfter("quant-int4<bits=3;block=32;sym>", ";round=rtn");
  int64_t differ = 0;
  for (Value *c : g.refit->graph().constants())
    if (c->type().quant) {
      const Value *r = n.refit->graph().findValue(c->name());
      EXPECT_TRUE(r->constant()->scales->sameContents(*c->constant()->scales)) << c->name();
      differ += !r->constant()->sameContents(*c->constant());
    }
  EXPECT_GT(differ, 0);
  const double gptq = errorAfterFit(g.report), rtn = errorAfterFit(n.report);
  EXPECT_LT(gptq, 0.95 * rtn) << "gptq " << gptq << " rtn " << rtn;
}

TEST(DistillReconstruct, TheTeacherItselfIsAFixedPoint) {
  // Xs = Xt and W = Wt solve the unregularised problem exactly: nothing may move.
  Reconstructed r = reconstructAfter("dce", ";ridge=0");
  EXPECT_TRUE(test::sameOutputs(*r.teacher, *r.refit,
                                test::makeInputs(r.refit->graph(), {{"batch", 2}, {"seq", 9}}, 11, 256), 1e-4, 1e-4));
}

/// Per bias Add(MatMul(x, W), b) node of `m` (by node name): its output's column means over
/// the calibration windows `ctx` describes.
std::map<std::string, std::vector<double>> biasedOutputMeans(const Model &m, const PassContext &ctx) {
  std::map<const Value *, std::string> watch;
  for (const auto &n : m.graph().nodes())
    for (int i : {0, 1}) // Add(b, MatMul) as the exporter writes it, or Add(MatMul, b)
      if (n->is(OpKind::Add) && n->input(1 - i)->producer() &&
          n->input(1 - i)->producer()->is(OpKind::MatMul) && n->input(i)->isConstant() &&
          n->input(i)->type().rank() == 1)
        watch[n->output()] = n->name();
  std::map<std::string, std::vector<double>> sums;
  int64_t rows = 0;
  auto windows = calib::loadWindows(ctx);
  EXPECT_TRUE(windows);
  for (const auto &ids : *windows) {
    interp::RunOptions ro;
    ro.onValue = [&](const Value &v, const Tensor &t) {
      auto it = watch.find(&v);
      if (it == watch.end())
        return Status::ok();
      std::vector<double> &s = sums[it->second];
      const int64_t N = t.shape().back();
      s.resize(static_cast<size_t>(N));
      const std::vector<float> x = t.toFloats();
      for (size_t i = 0; i < x.size(); ++i)
        s[i % static_cast<size_t>(N)] += x[i];
      return Status::ok();
    };
    auto inputs = calib::makeInputs(m.graph(), ids);
    EXPECT_TRUE(inputs);
    EXPECT_TRUE(interp::run(m.graph(), *inputs, ro));
    rows += static_cast<int64_t>(ids.size());
  }
  for (auto &[name, s] : sums)
    for (double &x : s)
      x /= static_cast<double>(rows);
  return sums;
}

TEST(DistillReconstruct, BiasCorrectionRestoresTheTeachersMeanOutputs) {
  // Tiny BERT: every linear layer is Add(MatMul(x, W), b). After the fit, each one's mean
  // output over the calibration rows equals the teacher's (b absorbs the mean residual).
  auto load = [] {
    auto m = importOnnxFile(modelPath("tiny-bert.onnx"));
    EXPECT_TRUE(m) << m.status().message();
    return m.take();
  };
  auto teacher = load(), pruned = load(), fixed = load(), nobias = load();
  ASSERT_TRUE(runPipeline(*pruned, "prune-magnitude<sparsity=0.5>", 64));
  const std::string rec = fmt::format("prune-magnitude<sparsity=0.5>,distill-reconstruct<teacher={}", modelPath("tiny-bert.onnx"));
  auto rep = runPipeline(*fixed, rec + ">", 64);
  ASSERT_TRUE(rep) << rep.status().message();
  ASSERT_TRUE(runPipeline(*nobias, rec + ";bias=false>", 64));
  PassContext ctx;
  ctx.calibPath = idsFile(64 * 32, 7);
  ctx.calibSamples = 64;
  ctx.calibSeqLen = 32;
  const auto want = biasedOutputMeans(*teacher, ctx), got = biasedOutputMeans(*fixed, ctx),
             before = biasedOutputMeans(*pruned, ctx);
  ASSERT_EQ(want.size(), 12u); // q, k, v, o, up, down in 2 layers
  for (const auto &[name, w] : want) {
    double err = 0, errBefore = 0, scale = 0;
    for (size_t j = 0; j < w.size(); ++j) {
      err = std::max(err, std::fabs(got.at(name)[j] - w[j]));
      errBefore = std::max(errBefore, std::fabs(before.at(name)[j] - w[j]));
      scale = std::max(scale, std::fabs(w[j]));
    }
    EXPECT_LT(err, 1e-4 + 1e-4 * scale) << name;
    EXPECT_GT(errBefore, 10 * (1e-4 + 1e-4 * scale)) << name << ": the check could not fail";
  }
  int64_t biases = 0;
  for (Value *c : pruned->graph().constants())
    if (c->type().rank() == 1 && c->name().find("bias") != std::string::npos) {
      EXPECT_TRUE(c->constant()->sameContents(*nobias->graph().findValue(c->name())->constant())) << c->name();
      biases += !c->constant()->sameContents(*fixed->graph().findValue(c->name())->constant());
    }
  EXPECT_EQ(biases, 12);
}

TEST(DistillReconstruct, Refusals) {
  auto m = tinyLlama();
  auto noTeacher = runPipeline(*m, "distill-reconstruct");
  ASSERT_FALSE(noTeacher);
  EXPECT_NE(noTeacher.status().message().find("option 'teacher' is required"), std::string::npos);
  auto missing = runPipeline(*m, "distill-reconstruct<teacher=/nonexistent/t.onnx>");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.status().message().find("/nonexistent/t.onnx"), std::string::npos) << missing.status().message();
  auto badRound = runPipeline(*m, fmt::format("distill-reconstruct<teacher={};round=up>", modelPath("tiny-llama.onnx")));
  ASSERT_FALSE(badRound);
  EXPECT_NE(badRound.status().message().find("option 'round' has value 'up', expected gptq or rtn"),
            std::string::npos) << badRound.status().message();
  auto badLayers = runPipeline(*m, fmt::format("distill-reconstruct<teacher={};layers=9>", modelPath("tiny-llama.onnx")));
  ASSERT_FALSE(badLayers);
  EXPECT_NE(badLayers.status().message().find("option 'layers' names block 9"), std::string::npos)
      << badLayers.status().message();
}

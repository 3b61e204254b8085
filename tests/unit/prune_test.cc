// The pruning passes: masks hit the requested sparsity (per weight, per output, N:M in
// every group), magnitude keeps the largest entries, Wanda matches a hand-computed
// example, SparseGPT leaves weights alone at sparsity 0, matches a direct (non-lazy)
// implementation of the same algorithm, and reconstructs a layer with a correlated
// Hessian better than magnitude and Wanda; then every pass on the tiny Llama with
// calibration data, deterministic, through the interpreter.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <gtest/gtest.h>

#include "backend/interp/Interpreter.h"
#include "frontend/OnnxImporter.h"
#include "ir/Verifier.h"
#include "passes/PassManager.h"
#include "passes/prune/Magnitude.h"
#include "passes/prune/PruneNm.h"
#include "passes/prune/SparseGpt.h"
#include "passes/prune/Wanda.h"
#include "passes/quant/Gptq.h"
#include "tests/support/NumericCheck.h"
#include "tests/support/TempPath.h"

using namespace llmopt;
using prunepass::Pattern;

namespace {

Tensor randomWeight(int64_t K, int64_t N, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> w(static_cast<size_t>(K * N));
  for (float &x : w)
    x = d(rng);
  return Tensor::fromVector(DType::F32, {K, N}, w);
}

Pattern unstructured(double s) {
  Pattern p;
  p.sparsity = s;
  return p;
}

Pattern nm(int64_t n, int64_t m) {
  Pattern p;
  p.n = n;
  p.m = m;
  p.sparsity = 1.0 - double(n) / double(m);
  return p;
}

int64_t zerosInColumn(const Tensor &t, int64_t j) {
  const int64_t K = t.shape()[0], N = t.shape()[1];
  int64_t z = 0;
  for (int64_t k = 0; k < K; ++k)
    z += t.view<float>()[static_cast<size_t>(k * N + j)] == 0.f;
  return z;
}

/// Activations X [rows, K] whose channels are correlated (X = Z A, A mixing neighbours)
/// and of uneven scale, and H = X^T X; plus the Wanda norms sqrt(H_kk).
struct Calib {
  std::vector<double> h, norms;
};
Calib correlatedCalib(int64_t K, int64_t rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0, 1);
  Eigen::MatrixXd Z(rows, K), A = Eigen::MatrixXd::Zero(K, K);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < K; ++k)
      Z(r, k) = d(rng);
  for (int64_t k = 0; k < K; ++k) {
    const double scale = 0.2 + 3.0 * ((k * 37) % 11) / 10.0; // outlier-ish channels
    for (int64_t j = std::max<int64_t>(0, k - 3); j <= k; ++j)
      A(j, k) = scale * (j == k ? 1.0 : 0.6);
  }
  const Eigen::MatrixXd X = Z * A, H = X.transpose() * X;
  Calib c;
  for (int64_t i = 0; i < K; ++i) {
    for (int64_t j = 0; j < K; ++j)
      c.h.push_back(H(i, j));
    c.norms.push_back(std::sqrt(H(i, i)));
  }
  return c;
}

double hessianError(const Tensor &w, const Tensor &p, const std::vector<double> &h) {
  return quantpass::hessianError(w.view<float>().data(), p.view<float>().data(), w.shape()[0],
                                 w.shape()[1], h);
}

/// SparseGPT written directly from the paper, without lazy batches: after each row,
/// every later row gets its OBS update at once; the unstructured mask of a block is chosen
/// on the block's current values with the same count as the pass. Used to check the
/// pass's blocked, lazy version computes the same thing.
Tensor directSparseGpt(const Tensor &w, const std::vector<double> &h, double sparsity, int64_t bs) {
  const int64_t K = w.shape()[0], N = w.shape()[1];
  Eigen::MatrixXd H =
      Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(h.data(), K, K);
  H.diagonal().array() += 0.01 * H.diagonal().mean();
  const Eigen::MatrixXd inv = H.llt().solve(Eigen::MatrixXd::Identity(K, K));
  const Eigen::MatrixXd U = inv.llt().matrixU();
  std::vector<double> W(w.view<float>().begin(), w.view<float>().end());
  int64_t done = 0;
  for (int64_t i1 = 0; i1 < K; i1 += bs) {
    const int64_t i2 = std::min(K, i1 + bs);
    std::vector<float> keys;
    for (int64_t k = i1; k < i2; ++k)
      for (int64_t j = 0; j < N; ++j)
        keys.push_back(float(W[k * N + j] * W[k * N + j] / (U(k, k) * U(k, k))));
    const int64_t target = prunepass::pruneCount(sparsity, i2 * N) - done;
    done += target;
    std::vector<uint8_t> mask(keys.size(), 0);
    for (int64_t i : prunepass::smallest(keys, target))
      mask[static_cast<size_t>(i)] = 1;
    for (int64_t k = i1; k < i2; ++k)
      for (int64_t j = 0; j < N; ++j) {
        if (!mask[static_cast<size_t>((k - i1) * N + j)])
          continue;
        const double e = W[k * N + j] / U(k, k);
        for (int64_t r = k; r < K; ++r)
          W[r * N + j] -= e * U(k, r);
        W[k * N + j] = 0;
      }
  }
  return Tensor::fromVector(DType::F32, {K, N}, std::vector<float>(W.begin(), W.end()));
}

} // namespace

TEST(PruneOptions, BadValuesAreNamed) {
  auto parse = [](const std::string &pipeline) {
    auto pm = parsePipeline(pipeline, PassRegistry::global());
    return pm ? std::string() : pm.status().message();
  };
  EXPECT_EQ(parse("prune-magnitude,prune-wanda<sparsity=0.7>,prune-sparsegpt<blocksize=64>,"
                  "prune-nm<n=1;m=4;method=sparsegpt>,prune-magnitude<scope=global>"),
            "");
  EXPECT_NE(parse("prune-magnitude<sparsity=1>").find("expected a fraction in [0, 1)"),
            std::string::npos);
  EXPECT_NE(parse("prune-wanda<sparsity=-0.1>").find("option 'sparsity' has value '-0.1'"),
            std::string::npos);
  EXPECT_NE(parse("prune-magnitude<scope=row>").find("expected one of layer|global"),
            std::string::npos);
  EXPECT_NE(parse("prune-nm<n=4;m=4>").find("expected n < m"), std::string::npos);
  EXPECT_NE(parse("prune-nm<method=random>").find("expected one of magnitude|wanda|sparsegpt"),
            std::string::npos);
  EXPECT_NE(parse("prune-sparsegpt<blocksize=0>").find("option 'blocksize'"), std::string::npos);
}

TEST(PruneMagnitude, ExactSparsityPerWeightAndKeepsTheLargest) {
  const Tensor w = randomWeight(64, 48, 1);
  for (double s : {0.0, 0.3, 0.5, 0.77}) {
    const Tensor p = prunepass::pruneMagnitude(w, unstructured(s));
    EXPECT_EQ(prunepass::countZeros(p), static_cast<int64_t>(std::floor(s * 64 * 48 + 1e-9))) << s;
    float maxPruned = 0, minKept = INFINITY;
    for (size_t i = 0; i < w.view<float>().size(); ++i) {
      const float a = std::fabs(w.view<float>()[i]);
      if (p.view<float>()[i] == 0.f)
        maxPruned = std::max(maxPruned, a);
      else {
        minKept = std::min(minKept, a);
        EXPECT_EQ(p.view<float>()[i], w.view<float>()[i]); // kept entries untouched
      }
    }
    EXPECT_LE(maxPruned, minKept) << s;
  }
}

TEST(PruneMagnitude, TiesGoToTheLowerPosition) {
  const Tensor w = Tensor::fromVector(DType::F32, {2, 2}, std::vector<float>{1, -1, 1, 2});
  const Tensor p = prunepass::pruneMagnitude(w, unstructured(0.5));
  EXPECT_EQ(std::vector<float>(p.view<float>().begin(), p.view<float>().end()),
            (std::vector<float>{0, 0, 1, 2}));
}

TEST(PruneMagnitude, GlobalScopeUsesOneThresholdOverAllWeights) {
  const Tensor a = randomWeight(32, 32, 2, 1.f), b = randomWeight(64, 16, 3, 0.3f);
  std::vector<const Tensor *> ws{&a, &b};
  prunepass::MagnitudeCut cut = prunepass::globalMagnitudeCut(ws, 0.5);
  const Tensor pa = prunepass::applyMagnitudeCut(a, cut), pb = prunepass::applyMagnitudeCut(b, cut);
  EXPECT_EQ(cut.ties, 0);
  EXPECT_EQ(prunepass::countZeros(pa) + prunepass::countZeros(pb), (32 * 32 + 64 * 16) / 2);
  // The small-scale weight loses far more than half, the large one far less.
  EXPECT_GT(prunepass::zeroFraction(pb), 0.65);
  EXPECT_LT(prunepass::zeroFraction(pa), 0.35);
  float maxPruned = 0, minKept = INFINITY;
  for (auto [w, p] : {std::pair{&a, &pa}, std::pair{&b, &pb}})
    for (size_t i = 0; i < w->view<float>().size(); ++i) {
      const float x = std::fabs(w->view<float>()[i]);
      if (p->view<float>()[i] == 0.f)
        maxPruned = std::max(maxPruned, x);
      else
        minKept = std::min(minKept, x);
    }
  EXPECT_LE(maxPruned, minKept);
  // Same as scope=layer on one weight.
  std::vector<const Tensor *> one{&a};
  prunepass::MagnitudeCut c1 = prunepass::globalMagnitudeCut(one, 0.37);
  EXPECT_TRUE(prunepass::applyMagnitudeCut(a, c1).sameContents(
      prunepass::pruneMagnitude(a, unstructured(0.37))));
}

TEST(PruneMagnitude, NmPatternHoldsInEveryGroupAndKeepsTheLargest) {
  for (auto [n, m, K] : {std::tuple{2, 4, 64}, std::tuple{1, 4, 64}, std::tuple{4, 8, 70}}) {
    const Tensor w = randomWeight(K, 24, 4);
    const Tensor p = prunepass::pruneMagnitude(w, nm(n, m));
    EXPECT_TRUE(prunepass::satisfiesNm(p, n, m)) << n << ":" << m;
    EXPECT_FALSE(prunepass::satisfiesNm(w, n, m));
    // Exactly n kept in every full group; the survivors are the group's largest.
    for (int64_t j = 0; j < 24; ++j)
      for (int64_t k0 = 0; k0 + m <= K; k0 += m) {
        int kept = 0;
        float minKept = INFINITY, maxPruned = 0;
        for (int64_t k = k0; k < k0 + m; ++k) {
          const float orig = std::fabs(w.view<float>()[k * 24 + j]);
          if (p.view<float>()[k * 24 + j] != 0.f) {
            ++kept;
            minKept = std::min(minKept, orig);
          } else {
            maxPruned = std::max(maxPruned, orig);
          }
        }
        EXPECT_EQ(kept, n);
        EXPECT_LE(maxPruned, minKept);
      }
  }
}

TEST(PruneWanda, HandBuiltExample) {
  // W [4, 2]; ||X[:, k]|| = 10, 1, 1, 0.1. Column 0: |w| = 1, 2, 3, 4 -> scores 10, 2, 3,
  // 0.4: rows 3 and 1 go (magnitude would prune rows 0 and 1). Column 1: |w| = 0.6, 5, 1, 7
  // -> scores 6, 5, 1, 0.7: rows 3 and 2 go.
  const Tensor w =
      Tensor::fromVector(DType::F32, {4, 2}, std::vector<float>{1, 0.6f, -2, 5, 3, -1, 4, 7});
  const std::vector<double> norms{10, 1, 1, 0.1};
  const Tensor p = prunepass::pruneWanda(w, norms, unstructured(0.5));
  EXPECT_EQ(std::vector<float>(p.view<float>().begin(), p.view<float>().end()),
            (std::vector<float>{1, 0.6f, 0, 5, 3, 0, 0, 0}));
  // 1:2 groups (rows 0-1, 2-3) per column: keep the larger score of each pair.
  const Tensor q = prunepass::pruneWanda(w, norms, nm(1, 2));
  EXPECT_EQ(std::vector<float>(q.view<float>().begin(), q.view<float>().end()),
            (std::vector<float>{1, 0.6f, 0, 0, 3, -1, 0, 0}));
  // Equal norms: Wanda is magnitude per output.
  const Tensor r = prunepass::pruneWanda(w, std::vector<double>(4, 2.0), unstructured(0.5));
  EXPECT_TRUE(
      r.sameContents(prunepass::pruneMagnitude(w, unstructured(0.5), prunepass::Scope::Output)));
}

TEST(PruneWanda, ExactSparsityInEveryOutput) {
  const Tensor w = randomWeight(96, 40, 5);
  std::vector<double> norms;
  for (int k = 0; k < 96; ++k)
    norms.push_back(0.1 + k % 7);
  for (double s : {0.25, 0.5, 0.6}) {
    const Tensor p = prunepass::pruneWanda(w, norms, unstructured(s));
    for (int64_t j = 0; j < 40; ++j)
      EXPECT_EQ(zerosInColumn(p, j), static_cast<int64_t>(std::floor(s * 96))) << s << " col " << j;
  }
}

TEST(PruneSparseGpt, SparsityZeroLeavesWeightsUnchanged) {
  const Tensor w = randomWeight(96, 32, 6);
  const Calib c = correlatedCalib(96, 400, 7);
  auto r = prunepass::pruneSparseGpt(w, c.h, unstructured(0.0), {32, 0.01});
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_TRUE(r->pruned.sameContents(w));
}

TEST(PruneSparseGpt, ExactSparsityAndNmPattern) {
  const Tensor w = randomWeight(200, 24, 8); // K not a multiple of the block
  const Calib c = correlatedCalib(200, 600, 9);
  for (double s : {0.3, 0.5}) {
    auto r = prunepass::pruneSparseGpt(w, c.h, unstructured(s), {64, 0.01});
    ASSERT_TRUE(r);
    EXPECT_EQ(prunepass::countZeros(r->pruned), prunepass::pruneCount(s, 200 * 24)) << s;
  }
  for (auto [n, m] : {std::pair{2, 4}, std::pair{4, 8}, std::pair{1, 3}}) {
    auto r = prunepass::pruneSparseGpt(w, c.h, nm(n, m), {50, 0.01});
    ASSERT_TRUE(r);
    EXPECT_TRUE(prunepass::satisfiesNm(r->pruned, n, m)) << n << ":" << m;
    // Full groups keep exactly n (the updates never land on exactly zero here).
    EXPECT_EQ(prunepass::countZeros(r->pruned),
              (200 / m) * (m - n) * 24 + std::max<int64_t>(0, 200 % m - n) * 24);
  }
}

TEST(PruneSparseGpt, LazyBlocksMatchTheDirectAlgorithm) {
  const Tensor w = randomWeight(160, 20, 10);
  const Calib c = correlatedCalib(160, 500, 11);
  auto r = prunepass::pruneSparseGpt(w, c.h, unstructured(0.5), {64, 0.01});
  ASSERT_TRUE(r);
  const Tensor ref = directSparseGpt(w, c.h, 0.5, 64);
  double maxAbs = 0, maxDiff = 0;
  for (size_t i = 0; i < ref.view<float>().size(); ++i) {
    const float a = ref.view<float>()[i], b = r->pruned.view<float>()[i];
    EXPECT_EQ(a == 0.f, b == 0.f) << "mask differs at " << i;
    maxAbs = std::max(maxAbs, double(std::fabs(a)));
    maxDiff = std::max(maxDiff, double(std::fabs(a - b)));
  }
  EXPECT_LE(maxDiff, 1e-4 * maxAbs);
}

TEST(PruneSparseGpt, ReconstructsBetterThanMagnitudeAndWanda) {
  const Tensor w = randomWeight(256, 64, 12);
  const Calib c = correlatedCalib(256, 1024, 13);
  for (const Pattern &p : {unstructured(0.5), nm(2, 4)}) {
    auto r = prunepass::pruneSparseGpt(w, c.h, p, {128, 0.01});
    ASSERT_TRUE(r);
    const double eS = hessianError(w, r->pruned, c.h);
    const double eM = hessianError(w, prunepass::pruneMagnitude(w, p), c.h);
    const double eW = hessianError(w, prunepass::pruneWanda(w, c.norms, p), c.h);
    std::cout << "[ prune ] " << p.describe() << ": tr(dW^T H dW) magnitude " << eM << ", wanda "
              << eW << ", sparsegpt " << eS << "\n";
    EXPECT_LT(eW, eM) << p.describe(); // uneven channel scales: the norms matter
    EXPECT_LT(eS, 0.8 * eW) << p.describe();
  }
}

TEST(PruneSparseGpt, DeterministicAndDeadChannelsZeroed) {
  const Tensor w = randomWeight(64, 16, 14);
  Calib c = correlatedCalib(64, 300, 15);
  for (int64_t j = 0; j < 64; ++j) // channel 5 never active
    c.h[static_cast<size_t>(5 * 64 + j)] = c.h[static_cast<size_t>(j * 64 + 5)] = 0;
  auto a = prunepass::pruneSparseGpt(w, c.h, unstructured(0.5), {16, 0.01});
  auto b = prunepass::pruneSparseGpt(w, c.h, unstructured(0.5), {16, 0.01});
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(a->pruned.sameContents(b->pruned));
  for (int64_t j = 0; j < 16; ++j)
    EXPECT_EQ(a->pruned.view<float>()[5 * 16 + j], 0.f);
}

// ---- the passes on the tiny Llama ----

namespace {

std::string modelPath(const char *name) { return std::string(LLMOPT_TEST_MODELS) + "/" + name; }

/// A .ids calibration file of `tokens` deterministic ids below the tiny Llama's vocabulary.
std::string calibFile(int64_t tokens) {
  const std::string path = test::tempPath(fmt::format("prune_test_calib_{}.ids", tokens));
  std::ofstream out(path);
  std::mt19937 rng(42);
  for (int64_t i = 0; i < tokens; ++i)
    out << rng() % 256 << (i % 16 == 15 ? '\n' : ' ');
  return path;
}

struct Pruned {
  std::unique_ptr<Model> model;
  std::vector<std::string> report;
};

Pruned runPipeline(const std::string &pipeline, bool calib = true, int64_t samples = 4,
                   int64_t seqLen = 32) {
  auto m = importOnnxFile(modelPath("tiny-llama.onnx"));
  EXPECT_TRUE(m);
  Instrumentation instr;
  instr.verifyEach = true;
  auto pm = parsePipeline(pipeline, PassRegistry::global(), &instr);
  EXPECT_TRUE(pm) << pm.status().message();
  PassContext ctx;
  if (calib)
    ctx.calibPath = calibFile(samples * seqLen);
  ctx.calibSamples = samples;
  ctx.calibSeqLen = seqLen;
  AnalysisManager am(ctx);
  auto pa = (*pm)->run(**m, am);
  EXPECT_TRUE(pa) << pa.status().message();
  return {m.take(), am.context().reportLines};
}

/// 2-D f32 constants read as MatMul's B (the prunable weights), by name.
std::map<std::string, const Tensor *> matmulWeights(const Model &m) {
  std::map<std::string, const Tensor *> out;
  for (const auto &n : m.graph().nodes())
    if (n->is(OpKind::MatMul) && n->input(1)->isConstant() && n->input(1)->constant()->rank() == 2)
      out[n->input(1)->name()] = n->input(1)->constant().get();
  return out;
}

/// How close the pruned model's logits stay to the dense model's on held-out random ids
/// (2 x 3 and 2 x 17 tokens): worst cosine over the inputs, and the mean KL(dense || pruned)
/// of the next-token distributions.
struct Closeness {
  double worstCosine = 1, meanKl = 0;
};
Closeness closeness(const Model &pruned) {
  auto dense = importOnnxFile(modelPath("tiny-llama.onnx"));
  EXPECT_TRUE(dense);
  Closeness c;
  int64_t positions = 0;
  for (int64_t seq : {3, 17}) {
    auto inputs = test::makeInputs((*dense)->graph(), {{"batch", 2}, {"seq", seq}}, 5, 256);
    auto x = interp::run((*dense)->graph(), inputs);
    auto y = interp::run(pruned.graph(), inputs);
    EXPECT_TRUE(x && y);
    const std::vector<float> p = (*x)[0].toFloats(), q = (*y)[0].toFloats();
    double pq = 0, pp = 0, qq = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      pq += double(p[i]) * q[i];
      pp += double(p[i]) * p[i];
      qq += double(q[i]) * q[i];
    }
    c.worstCosine = std::min(c.worstCosine, pq / std::sqrt(pp * qq));
    const size_t V = static_cast<size_t>((*x)[0].shape().back());
    for (size_t r = 0; r < p.size() / V; ++r, ++positions) {
      auto logSoftmax = [&](const std::vector<float> &l) {
        const double mx = *std::max_element(l.begin() + r * V, l.begin() + (r + 1) * V);
        double z = 0;
        for (size_t v = 0; v < V; ++v)
          z += std::exp(l[r * V + v] - mx);
        std::vector<double> out(V);
        for (size_t v = 0; v < V; ++v)
          out[v] = l[r * V + v] - mx - std::log(z);
        return out;
      };
      const std::vector<double> lp = logSoftmax(p), lq = logSoftmax(q);
      for (size_t v = 0; v < V; ++v)
        c.meanKl += std::exp(lp[v]) * (lp[v] - lq[v]);
    }
  }
  c.meanKl /= static_cast<double>(positions);
  return c;
}

} // namespace

struct PassCase {
  const char *pipeline;
  double sparsity;  ///< per weight
  int64_t n, m;     ///< N:M when m > 0
  double minCosine; ///< logits vs the dense model, worst over the inputs
};

class PruneTinyLlama : public ::testing::TestWithParam<PassCase> {};

// Cosine bounds: measured on this random-weight model with margin; it is very sensitive
// (half of 4 layers' weights gone), so these only catch a broken pass, not rank methods:
// with 128 calibration tokens SparseGPT fits the calibration windows better than magnitude
// does but generalises worse (see SparseGptBeatsMagnitudeWithEnoughData).
TEST_P(PruneTinyLlama, SparsityPerWeightReportAndDeterminism) {
  const PassCase &c = GetParam();
  Pruned a = runPipeline(c.pipeline), b = runPipeline(c.pipeline);
  ASSERT_TRUE(a.model && b.model);
  ASSERT_TRUE(verify(*a.model).isOk());
  const auto wa = matmulWeights(*a.model), wb = matmulWeights(*b.model);
  ASSERT_EQ(wa.size(), 28u); // q k v o gate up down in 4 layers
  int64_t zeros = 0, params = 0;
  for (const auto &[name, t] : wa) {
    EXPECT_EQ(prunepass::countZeros(*t), prunepass::pruneCount(c.sparsity, t->numel())) << name;
    if (c.m) {
      EXPECT_TRUE(prunepass::satisfiesNm(*t, c.n, c.m)) << name;
    }
    ASSERT_TRUE(wb.count(name));
    EXPECT_TRUE(t->sameContents(*wb.at(name))) << "not deterministic: " << name;
    zeros += prunepass::countZeros(*t);
    params += t->numel();
  }
  const std::string line = a.report.back();
  EXPECT_NE(line.find(fmt::format("28 weights, {} of {} parameters zero", zeros, params)),
            std::string::npos)
      << line;
  std::cout << "[ prune ] " << c.pipeline << ":\n";
  for (const std::string &l : a.report)
    std::cout << "          " << l << "\n";

  const double worst = closeness(*a.model).worstCosine;
  std::cout << "          logits cosine vs dense: " << worst << "\n";
  EXPECT_GE(worst, c.minCosine);
}

INSTANTIATE_TEST_SUITE_P(
    Passes, PruneTinyLlama,
    ::testing::Values(PassCase{"prune-magnitude", 0.5, 0, 0, 0.5},
                      PassCase{"prune-magnitude<sparsity=0.25>", 0.25, 0, 0, 0.8},
                      PassCase{"prune-wanda", 0.5, 0, 0, 0.5},
                      PassCase{"prune-sparsegpt", 0.5, 0, 0, 0.5},
                      PassCase{"prune-sparsegpt<sparsity=0.3;blocksize=32>", 0.3, 0, 0, 0.7},
                      PassCase{"prune-nm", 0.5, 2, 4, 0.4},
                      PassCase{"prune-nm<n=2;m=4;method=wanda>", 0.5, 2, 4, 0.4},
                      PassCase{"prune-nm<n=2;m=4;method=sparsegpt>", 0.5, 2, 4, 0.25}),
    [](const ::testing::TestParamInfo<PassCase> &info) {
      std::string name = info.param.pipeline;
      for (char &ch : name)
        if (!std::isalnum(static_cast<unsigned char>(ch)))
          ch = '_';
      return name;
    });

TEST(PruneTinyLlamaGlobal, GlobalScopeHitsTheTotalNotEachWeight) {
  Pruned r = runPipeline("prune-magnitude<scope=global;sparsity=0.5>", false);
  int64_t zeros = 0, total = 0;
  double lo = 1, hi = 0;
  for (const auto &[name, t] : matmulWeights(*r.model)) {
    zeros += prunepass::countZeros(*t);
    total += t->numel();
    lo = std::min(lo, prunepass::zeroFraction(*t));
    hi = std::max(hi, prunepass::zeroFraction(*t));
  }
  EXPECT_EQ(zeros, total / 2);
  EXPECT_LT(lo, hi); // layers of different scale end up with different sparsities
  EXPECT_NE(r.report.back().find("global scope"), std::string::npos);
}

TEST(PruneTinyLlamaCalib, CalibrationMethodsNeedData) {
  for (const char *p : {"prune-wanda", "prune-sparsegpt", "prune-nm<method=wanda>"}) {
    auto m = importOnnxFile(modelPath("tiny-llama.onnx"));
    ASSERT_TRUE(m);
    auto pm = parsePipeline(p, PassRegistry::global());
    ASSERT_TRUE(pm);
    AnalysisManager am;
    auto pa = (*pm)->run(**m, am);
    ASSERT_FALSE(pa) << p;
    EXPECT_NE(pa.status().message().find("needs calibration data: pass --calib FILE"),
              std::string::npos)
        << pa.status().message();
  }
}

// SparseGPT's weight reconstruction needs enough calibration rows to estimate H (the
// tiny model's down projection has K = 192): with 128 tokens it fits the calibration
// windows and loses to magnitude on held-out inputs, with 1024 it beats magnitude there.
// (Measured here: KL magnitude 1.01, SparseGPT 0.83 with 1024 tokens; on 8 x 64 other ids
// in ORT: magnitude 1.26, SparseGPT 1.42 with 128 tokens, 1.16 with 1024.)
TEST(PruneTinyLlamaCalib, SparseGptBeatsMagnitudeWithEnoughData) {
  Pruned mag = runPipeline("prune-magnitude", false);
  Pruned sgpt = runPipeline("prune-sparsegpt", true, 16, 64);
  const Closeness cm = closeness(*mag.model), cs = closeness(*sgpt.model);
  std::cout << "[ prune ] 50% on the tiny Llama, held-out KL vs dense: magnitude " << cm.meanKl
            << ", sparsegpt (16 x 64 calibration tokens) " << cs.meanKl << "\n";
  EXPECT_LT(cs.meanKl, 0.95 * cm.meanKl);
}

// distill-reconstruct: targets, stages, capture of activations, refit (see
// DistillReconstruct.h; the numerics are in ReconstructSolve.h).
#include "passes/distill/DistillReconstruct.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <tuple>
#include <unordered_map>

#include <fmt/format.h>

#include "backend/interp/Interpreter.h"
#include "frontend/ModelLoader.h"
#include "ir/GraphAlgorithms.h"
#include "ir/Progress.h"
#include "ir/QuantFormats.h"
#include "passes/calib/Calibration.h"
#include "passes/distill/DistillCommon.h"
#include "passes/distill/ReconstructSolve.h"
#include "passes/quant/Gptq.h"

namespace llmopt {

using distill::RowMatrixF;

namespace {
constexpr const char *kPass = "distill-reconstruct";

/// One linear layer to refit: the student's weight and input, the teacher's, biases.
struct Target {
  Value *ws = nullptr, *xs = nullptr, *bs = nullptr;
  const Value *wt = nullptr, *xt = nullptr, *bt = nullptr;
  /// residual: the stream the layer's output is added to, in the model and the teacher.
  const Value *rs = nullptr, *rt = nullptr;
  int stage = 0;
};

/// The activations one set of normal equations is summed over: the inputs (q, k, v share
/// theirs) and, with the residual correction, the streams.
struct SumKey {
  const Value *xs, *xt, *rs, *rt;
  bool operator<(const SumKey &o) const {
    return std::tie(xs, xt, rs, rt) < std::tie(o.xs, o.xt, o.rs, o.rt);
  }
};
SumKey keyOf(const Target &t) { return {t.xs, t.xt, t.rs, t.rt}; }

/// MatMul(x, w) is w's only reader, x not constant: the MatMul, else null.
Node *soleMatMul(const Value *w) {
  const std::vector<Node *> users = w->users();
  if (users.size() != 1 || w->uses().size() != 1 || w->isGraphOutput())
    return nullptr;
  Node *mm = users[0];
  if (!mm->is(OpKind::MatMul) || mm->input(1) != w || !mm->input(0) || mm->input(0)->isConstant())
    return nullptr;
  return mm;
}

/// The constant bias b of Add(MatMul, b), b 1-D and read only there; else null.
Value *biasOf(const Node *mm) {
  const Value *y = mm->output();
  if (y->uses().size() != 1 || !y->uses()[0].user->is(OpKind::Add))
    return nullptr;
  const Node *add = y->uses()[0].user;
  Value *b = add->input(add->input(0) == y ? 1 : 0);
  return b && b->isConstant() && b->type().elem == DType::F32 && b->constant()->rank() == 1 &&
                 b->uses().size() == 1
             ? b
             : nullptr;
}

/// The residual stream r of Add(r, MatMul) or Add(r, Add(MatMul, b)) (b a constant bias),
/// r not constant; else null.
const Value *residualOf(const Node *mm) {
  const Value *y = mm->output();
  for (int hop = 0; hop < 2; ++hop) {
    if (y->uses().size() != 1 || !y->uses()[0].user->is(OpKind::Add))
      return nullptr;
    const Node *add = y->uses()[0].user;
    const Value *other = add->input(add->input(0) == y ? 1 : 0);
    if (!other)
      return nullptr;
    if (!other->isConstant())
      return other;
    y = add->output(); // the bias Add: the residual may come next
  }
  return nullptr;
}

Expected<RowMatrixF> denseWeight(const Value *w) {
  Tensor t = *w->constant();
  if (w->type().quant) {
    LLMOPT_ASSIGN_OR_RETURN(t, quant::dequantize(t, *w->type().quant));
  }
  if (t.dtype() != DType::F32)
    return errorf("pass '{}': weight '{}' is {}, expected f32 or quantized", kPass, w->name(),
                  dtypeName(t.dtype()));
  return RowMatrixF(Eigen::Map<const RowMatrixF>(t.view<float>().data(), t.shape()[0], t.shape()[1]));
}

/// Teacher column of each student column: the identity when N matches, else (columns
/// removed by prune-struct) the next teacher column equal to it wherever it is nonzero.
Expected<std::vector<int64_t>> matchColumns(const RowMatrixF &ws, const RowMatrixF &wt,
                                            const std::string &name) {
  std::vector<int64_t> map;
  if (ws.cols() == wt.cols()) {
    for (int64_t j = 0; j < ws.cols(); ++j)
      map.push_back(j);
    return map;
  }
  if (ws.rows() != wt.rows() || ws.cols() > wt.cols())
    return errorf("pass '{}': weight '{}' is [{}, {}] in the model and [{}, {}] in the teacher; "
                  "only output columns removed (or fewer input rows with the same columns) can "
                  "be matched", kPass, name, ws.rows(), ws.cols(), wt.rows(), wt.cols());
  for (int64_t j = 0, i = 0; j < ws.cols(); ++j, ++i) {
    auto same = [&](int64_t c) {
      for (int64_t k = 0; k < ws.rows(); ++k)
        if (ws(k, j) != 0.f && ws(k, j) != wt(k, c))
          return false;
      return true;
    };
    while (i < wt.cols() && !same(i))
      ++i;
    if (i == wt.cols())
      return errorf("pass '{}': column {} of weight '{}' matches no teacher column (was the "
                    "weight changed other than by removing columns?)", kPass, j, name);
    map.push_back(i);
  }
  return map;
}

/// The targets (every linear layer when `chosen` is null, else the chosen weights) in
/// topological order, each with its stage: 1 + the
/// largest stage of a target its input depends on.
Expected<std::vector<Target>> findTargets(Model &m, Model &teacher, const std::set<const Value *> *chosen,
                                          bool residual) {
  LLMOPT_ASSIGN_OR_RETURN(std::vector<Node *> order, topologicalOrder(m.graph()));
  std::unordered_map<const Node *, int> level; // stages of targets the node's outputs depend on
  std::vector<Target> out;
  for (Node *n : order) {
    int lvl = 0;
    for (const Value *v : n->inputs())
      if (v && v->producer() && level.count(v->producer()))
        lvl = std::max(lvl, level[v->producer()]);
    level[n] = lvl;
    Value *w = n->is(OpKind::MatMul) ? n->input(1) : nullptr;
    if (!w || !w->isConstant() || (chosen && !chosen->count(w)) || soleMatMul(w) != n ||
        w->type().rank() != 2 || !isFloat(w->type().elem))
      continue;
    Target t;
    t.ws = w;
    t.xs = n->input(0);
    t.bs = biasOf(n);
    t.stage = lvl;
    level[n] = lvl + 1;
    t.wt = teacher.graph().findValue(w->name());
    const Node *tm = t.wt && t.wt->isConstant() ? soleMatMul(t.wt) : nullptr;
    if (!tm)
      return errorf("pass '{}': the teacher has no weight '{}' read by one MatMul (is it the "
                    "model this one was compressed from?)", kPass, w->name());
    t.xt = tm->input(0);
    t.bt = biasOf(tm);
    if (residual) {
      t.rs = residualOf(n);
      t.rt = residualOf(tm);
      if (!t.rs || !t.rt || w->constant()->shape()[1] != t.wt->constant()->shape()[1])
        t.rs = t.rt = nullptr; // not added to a stream (q, k, v, gate, up), or widths differ
    }
    out.push_back(t);
  }
  return out;
}

/// Runs `g` on one window until every value in `want` was computed; returns them.
Expected<std::unordered_map<const Value *, Tensor>>
capture(const Graph &g, const std::vector<int64_t> &ids, const std::set<const Value *> &want, int threads) {
  std::unordered_map<const Value *, Tensor> got;
  bool done = false;
  interp::RunOptions ro;
  ro.threads = threads;
  ro.onValue = [&](const Value &v, const Tensor &t) -> Status {
    if (!want.count(&v))
      return Status::ok();
    got.emplace(&v, t);
    done = got.size() == want.size();
    return done ? errorf("stop") : Status::ok(); // the rest of the graph is not needed
  };
  LLMOPT_ASSIGN_OR_RETURN(std::vector<Tensor> inputs, calib::makeInputs(g, ids));
  Expected<std::vector<Tensor>> r = interp::run(g, inputs, ro);
  if (!r && !done)
    return r.status();
  for (auto &[v, t] : got)
    if (t.dtype() != DType::F32)
      return errorf("pass '{}': activation '{}' is {}, expected f32", kPass, v->name(), dtypeName(t.dtype()));
  if (got.size() != want.size())
    return errorf("pass '{}': the forward pass never computed {} of the activations it needs", kPass,
                  want.size() - got.size());
  return got;
}

/// The teacher's inputs of stages [from, to), per window: as many stages as fit in
/// `budget` bytes (at least one), so the teacher runs once per group of stages, not per stage.
struct TeacherCache {
  int from = 0, to = 0;
  std::vector<std::unordered_map<const Value *, Tensor>> windows;
};

Status fillTeacherCache(TeacherCache &c, int from, int stages, const std::vector<Target> &targets,
                        const Graph &teacher, const std::vector<std::vector<int64_t>> &windows,
                        double budget, int threads) {
  double tokens = 0;
  for (const auto &w : windows)
    tokens += static_cast<double>(w.size());
  std::set<const Value *> want;
  double bytes = 0;
  int to = from;
  for (; to < stages; ++to) {
    double more = 0;
    for (const Target &t : targets)
      if (t.stage == to) {
        if (!want.count(t.xt))
          more += tokens * static_cast<double>(t.wt->constant()->shape()[0]) * sizeof(float);
        if (t.rt && !want.count(t.rt))
          more += tokens * static_cast<double>(t.wt->constant()->shape()[1]) * sizeof(float);
      }
    if (to > from && bytes + more > budget)
      break;
    bytes += more;
    for (const Target &t : targets)
      if (t.stage == to) {
        want.insert(t.xt);
        if (t.rt)
          want.insert(t.rt);
      }
  }
  c.windows.clear(); // free the previous group first
  for (const auto &ids : windows) {
    LLMOPT_ASSIGN_OR_RETURN(auto got, capture(teacher, ids, want, threads));
    c.windows.push_back(std::move(got));
  }
  c.from = from;
  c.to = to;
  return Status::ok();
}

/// Refits one target from its sums over the even and the odd windows; returns the fit.
Expected<distill::FitResult> refit(const Target &t, const std::vector<distill::NormalEquations> &halves,
                                   const DistillReconstructOptions &o, int64_t &biases) {
  distill::NormalEquations ne = halves[0];
  ne += halves[1];
  LLMOPT_ASSIGN_OR_RETURN(RowMatrixF ws, denseWeight(t.ws));
  LLMOPT_ASSIGN_OR_RETURN(RowMatrixF wtFull, denseWeight(t.wt));
  LLMOPT_ASSIGN_OR_RETURN(std::vector<int64_t> map, matchColumns(ws, wtFull, t.ws->name()));
  RowMatrixF wt(wtFull.rows(), ws.cols());
  for (int64_t j = 0; j < ws.cols(); ++j)
    wt.col(j) = wtFull.col(map[static_cast<size_t>(j)]);
  const bool quantized = t.ws->type().quant.has_value();
  distill::FitResult fit = distill::ridgeFit(halves[0], halves[1], wt, ws, o.ridge, quantized || o.dense);
  Tensor nw = Tensor::fromBytes(DType::F32, {ws.rows(), ws.cols()}, ws.data(),
                                static_cast<size_t>(ws.size()) * sizeof(float));
  if (quantized) {
    const Tensor &q = *t.ws->constant();
    const QuantEncoding &enc = *t.ws->type().quant;
    const std::vector<quant::BlockParams> grid = quant::storedParams(q, enc);
    const bool floatZp = q.zeroPoints && q.zeroPoints->dtype() == DType::F32;
    if (o.gptqRound && enc.axis == 0 && enc.blockSize > 0) {
      // GPTQ onto the stored grid with H = Xs^T Xs (all rows): keeps Xs Q near Xs W*.
      const std::vector<double> h(ne.ss.data(), ne.ss.data() + ne.ss.size()); // symmetric
      quantpass::GptqOptions go;
      go.measure = false;
      LLMOPT_ASSIGN_OR_RETURN(quantpass::GptqFactor f, quantpass::gptqFactor(h, ws.rows(), go));
      LLMOPT_ASSIGN_OR_RETURN(quantpass::GptqResult r,
                              quantpass::gptqQuantizeOnGrid(nw, f, h, enc, go, grid, floatZp));
      nw = std::move(r.quantized);
    } else {
      LLMOPT_ASSIGN_OR_RETURN(nw, quant::quantizeWithParams(nw, enc, grid, floatZp));
    }
    LLMOPT_ASSIGN_OR_RETURN(Tensor back, quant::dequantize(nw, enc));
    ws = Eigen::Map<const RowMatrixF>(back.view<float>().data(), ws.rows(), ws.cols());
    fit.errorAfter = distill::relativeError(ne, wt, ws);
  }
  t.ws->setConstant(std::make_shared<Tensor>(std::move(nw)));
  if (o.bias && t.bs && t.bt && t.bs->constant()->numel() == ws.cols()) {
    const std::vector<float> bt = t.bt->constant()->toFloats();
    Eigen::VectorXd shift = wt.cast<double>().transpose() * ne.sumT - ws.cast<double>().transpose() * ne.sumS;
    if (ne.nd > 0)
      shift += ne.sumD;
    shift /= static_cast<double>(ne.rows);
    std::vector<float> b(static_cast<size_t>(ws.cols()));
    for (int64_t j = 0; j < ws.cols(); ++j)
      b[static_cast<size_t>(j)] = bt[static_cast<size_t>(map[static_cast<size_t>(j)])] + static_cast<float>(shift(j));
    t.bs->setConstant(std::make_shared<Tensor>(Tensor::fromVector(DType::F32, {ws.cols()}, b)));
    ++biases;
  }
  return fit;
}
} // namespace

Expected<DistillReconstructOptions> parseDistillReconstructOptions(const PassOptionList &opts) {
  OptionReader r(kPass, opts);
  DistillReconstructOptions o;
  LLMOPT_ASSIGN_OR_RETURN(o.teacher, r.getString("teacher", ""));
  LLMOPT_ASSIGN_OR_RETURN(std::string layers, r.getString("layers", "all"));
  if (layers != "all") {
    Expected<std::vector<int64_t>> idx = r.getIntList("layers", {});
    if (!idx || idx->empty())
      return errorf("pass '{}': option 'layers' has value '{}', expected all or a comma-separated "
                    "list of block indices (0,3,5)", kPass, layers);
    o.allLayers = false;
    o.layers = *idx;
  }
  LLMOPT_ASSIGN_OR_RETURN(std::string ridge, r.getString("ridge", "auto"));
  if (ridge != "auto") {
    LLMOPT_ASSIGN_OR_RETURN(o.ridge, r.getDouble("ridge", 0.1, 0.0, 1e6));
  }
  LLMOPT_ASSIGN_OR_RETURN(o.bias, r.getFlag("bias", true));
  LLMOPT_ASSIGN_OR_RETURN(o.dense, r.getFlag("dense", false));
  LLMOPT_ASSIGN_OR_RETURN(o.residual, r.getFlag("residual", false));
  LLMOPT_ASSIGN_OR_RETURN(std::string round, r.getString("round", "gptq"));
  if (round != "gptq" && round != "rtn")
    return errorf("pass '{}': option 'round' has value '{}', expected gptq or rtn (how a refit "
                  "quantized weight goes back onto its grid)", kPass, round);
  o.gptqRound = round == "gptq";
  LLMOPT_RETURN_IF_ERROR(r.finish());
  if (o.teacher.empty())
    return errorf("pass '{}': option 'teacher' is required: the uncompressed model to fit to "
                  "(teacher=FILE.onnx)", kPass);
  return o;
}

Expected<PreservedAnalyses> DistillReconstructPass::run(Model &m, AnalysisManager &am) {
  const auto start = std::chrono::steady_clock::now();
  PassContext &ctx = am.context();
  LLMOPT_ASSIGN_OR_RETURN(auto windows, distill::calibWindows(ctx, kPass, "calibration data"));
  if (opts_.ridge < 0 && windows.size() < 2)
    return errorf("pass '{}': ridge=auto cross-validates over two halves of the calibration windows "
                  "and got {}: give --calib-samples 2 or more, or a fixed ridge=R", kPass, windows.size());
  Expected<std::unique_ptr<Model>> teacher = loadModel(opts_.teacher);
  if (!teacher)
    return teacher.status().withContext(fmt::format("pass '{}': teacher", kPass));
  std::set<const Value *> chosen;
  if (!opts_.allLayers) {
    LLMOPT_ASSIGN_OR_RETURN(distill::Blocks blocks, distill::findBlocks(m, kPass));
    LLMOPT_RETURN_IF_ERROR(distill::checkIndices(opts_.layers, static_cast<int64_t>(blocks.layers.size()),
                                                 kPass, "layers"));
    for (int64_t i : opts_.layers)
      for (const structprune::ResidualBranch &b : blocks.layers[static_cast<size_t>(i)].branches)
        chosen.insert(b.weights.begin(), b.weights.end());
  }
  LLMOPT_ASSIGN_OR_RETURN(std::vector<Target> targets,
                          findTargets(m, **teacher, opts_.allLayers ? nullptr : &chosen, opts_.residual));
  if (targets.empty())
    return errorf("pass '{}': no linear layer (MatMul with a constant 2-D weight read by it alone) "
                  "{}", kPass, opts_.allLayers ? "in the model" : "in blocks " + distill::joinInts(opts_.layers));
  const int stages = targets.back().stage + 1;
  Progress progress(kPass, stages, "stages");
  double before = 0, after = 0;
  int64_t biases = 0, solves = 0;
  std::map<std::string, int> ridges; // chosen ridge (auto) -> weights
  TeacherCache cache;
  int64_t teacherRuns = 0;
  for (int s = 0; s < stages; ++s) {
    if (s >= cache.to && ++teacherRuns)
      LLMOPT_RETURN_IF_ERROR(fillTeacherCache(cache, s, stages, targets, (*teacher)->graph(), windows,
                                              static_cast<double>(ctx.calibMemoryMiB) * 1024 * 1024,
                                              ctx.threads));
    std::set<const Value *> wantS;
    std::set<SumKey> keys; // q, k, v share one
    for (const Target &t : targets)
      if (t.stage == s) {
        wantS.insert(t.xs);
        if (t.rs)
          wantS.insert(t.rs);
        keys.insert(keyOf(t));
      }
    std::map<SumKey, std::vector<distill::NormalEquations>> sums;
    std::vector<float> d;
    for (size_t w = 0; w < windows.size(); ++w) {
      const auto &xt = cache.windows[w];
      LLMOPT_ASSIGN_OR_RETURN(auto xs, capture(m.graph(), windows[w], wantS, ctx.threads));
      for (const SumKey &k : keys) {
        const Tensor &a = xs.at(k.xs), &b = xt.at(k.xt);
        const int64_t ks = a.shape().back(), kt = b.shape().back(), rows = a.numel() / ks;
        if (b.numel() / kt != rows)
          return errorf("pass '{}': '{}' has {} rows in the model but {} in the teacher", kPass,
                        k.xs->name(), rows, b.numel() / kt);
        int64_t nd = 0;
        if (k.rs) { // D = teacher stream - student stream
          const Tensor &rs = xs.at(k.rs), &rt = xt.at(k.rt);
          nd = rs.shape().back();
          if (rs.numel() != rows * nd || rt.numel() != rows * nd)
            return errorf("pass '{}': residual stream '{}' has {} values in the model and {} in the "
                          "teacher, expected {} x {}", kPass, k.rs->name(), rs.numel(), rt.numel(), rows, nd);
          d.resize(static_cast<size_t>(rows * nd));
          const float *ps = rs.view<float>().data(), *pt = rt.view<float>().data();
          for (size_t i = 0; i < d.size(); ++i)
            d[i] = pt[i] - ps[i];
        }
        auto &halves = sums[k];
        if (halves.empty())
          halves.assign(2, distill::NormalEquations(ks, kt, nd));
        halves[w % 2].add(a.view<float>().data(), b.view<float>().data(), rows, nd ? d.data() : nullptr);
      }
    }
    for (const Target &t : targets) {
      if (t.stage != s)
        continue;
      LLMOPT_ASSIGN_OR_RETURN(distill::FitResult fit, refit(t, sums.at(keyOf(t)), opts_, biases));
      before += fit.errorBefore;
      ridges[fit.ridge < 0 ? std::string("kept") : fmt::format("{:g}", fit.ridge)] += 1;
      after += fit.errorAfter;
      solves += fit.solves;
      ctx.layerErrors[t.ws->name()] = fit.errorAfter;
    }
    progress.update(s + 1);
  }
  const double n = static_cast<double>(targets.size());
  std::string ridgeText;
  for (const auto &[r, count] : ridges)
    ridgeText += fmt::format("{}{} x{}", ridgeText.empty() ? "" : ", ", r, count);
  ctx.reportLines.push_back(fmt::format(
      "{}: teacher {} (run {} times per window, --calib-memory {} MiB); refit {} weights in {} "
      "stages ({} solves; ridge {}: {}) on {} windows x {} tokens; relative output error per layer, mean {:.4g} -> {:.4g}; {} biases corrected; {:.1f} s",
      kPass, opts_.teacher, teacherRuns, ctx.calibMemoryMiB, targets.size(), stages, solves, opts_.ridge < 0 ? "auto" : fmt::format("{:g}", opts_.ridge),
      ridgeText, windows.size(),
      windows.front().size(), before / n, after / n, biases,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()));
  return PreservedAnalyses::none();
}

} // namespace llmopt

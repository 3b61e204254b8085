// quant-mixed: sensitivity per weight and format, Lagrangian knapsack, application.
#include "passes/quant/QuantMixed.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <tuple>
#include <unordered_map>

#include <fmt/format.h>

#include "ir/QuantFormats.h"
#include "passes/analysis/Report.h"
#include "passes/calib/Calibration.h"
#include "passes/quant/EndToEndProbe.h"
#include "passes/quant/Gptq.h"
#include "passes/quant/QuantCommon.h"
#include "passes/quant/QuantHalf.h"

namespace llmopt {
namespace {

using quantpass::MatMulWeight;

using Choice = quantpass::FormatChoice;

QuantEncoding encodingOf(int64_t bits, int64_t block, bool sym, int64_t K) {
  return QuantEncoding{quant::storageType(static_cast<int>(bits), sym), static_cast<int>(bits), 0,
                       quantpass::effectiveBlock(block, K), sym};
}

/// Bytes the ONNX file stores for W [K, N] in format `bits` (see QuantMixed.h).
/// A table read by Gather keeps 2-bit values in 4-bit containers (`packTwoBit` false).
int64_t emittedBytes(int64_t K, int64_t N, int64_t bits, int64_t block, bool sym, bool ort,
                     bool packTwoBit = true) {
  if (bits == 16)
    return K * N * 2;
  const int64_t bs = quantpass::effectiveBlock(block, K), kb = (K + bs - 1) / bs;
  const int64_t stored = bits == 2 && ort && packTwoBit ? 2 : bits == 8 ? 8 : 4;
  int64_t b = ort ? N * kb * (bs * stored / 8) : (K * N * stored + 7) / 8;
  b += N * kb * 4; // f32 scales
  if (!sym)
    b += ort ? N * ((kb * stored + 7) / 8) : (N * kb * stored + 7) / 8;
  return b;
}

/// f16 round trip of w.
std::vector<float> halfRoundTrip(const Tensor &w) {
  const float *x = reinterpret_cast<const float *>(w.data());
  std::vector<float> out(static_cast<size_t>(w.numel()));
  for (int64_t i = 0; i < w.numel(); ++i) {
    const float v = std::clamp(x[i], -65504.f, 65504.f);
    out[static_cast<size_t>(i)] = halfToFloat(floatToHalf(v));
  }
  return out;
}

/// The f32 values of quantized `q` (encoding `enc`).
Expected<std::vector<float>> values(const Tensor &q, const QuantEncoding &enc) {
  LLMOPT_ASSIGN_OR_RETURN(Tensor d, quant::dequantize(q, enc));
  const float *dv = reinterpret_cast<const float *>(d.data());
  return std::vector<float>(dv, dv + d.numel());
}

double sqDiff(const float *a, const float *b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    s += d * d;
  }
  return s;
}

/// One candidate format: `bits` (2..8) in blocks of `block` along K, or 16 (f16).
struct Format {
  int64_t bits = 4, block = 128;
  bool sym = true; ///< symmetric (no zero points)
  bool operator==(const Format &) const = default;
  bool operator<(const Format &o) const {
    return std::tie(bits, block, o.sym) < std::tie(o.bits, o.block, sym); // sym first
  }
};

std::string formatName(const Format &f) {
  return f.bits == 16 ? "f16" : fmt::format("int{}/b{}{}", f.bits, f.block, f.sym ? "" : "/asym");
}

/// Quantizes `w` in format `f` (2..8 bits) with the pass's method.
Expected<Tensor> quantizeAs(const Tensor &w, const Format &f, const QuantMixedOptions &o,
                            const quantpass::GptqFactor *factor, const std::vector<double> *h) {
  const QuantEncoding enc = encodingOf(f.bits, f.block, f.sym, w.shape()[0]);
  if (o.method == "gptq" && factor && h) {
    quantpass::GptqOptions go;
    go.measure = false;
    LLMOPT_ASSIGN_OR_RETURN(quantpass::GptqResult r, quantpass::gptqQuantize(w, *factor, *h, enc, go));
    return std::move(r.quantized);
  }
  return quant::quantizeRtn(w, enc);
}

} // namespace


Expected<QuantMixedOptions> parseQuantMixedOptions(const PassOptionList &opts) {
  OptionReader r("quant-mixed", opts);
  QuantMixedOptions o;
  LLMOPT_ASSIGN_OR_RETURN(o.bpw, r.getDouble("bpw", 4.5, 1.0, 32.0));
  LLMOPT_ASSIGN_OR_RETURN(o.candidates, r.getIntList("candidates", o.candidates));
  LLMOPT_ASSIGN_OR_RETURN(o.block, quantpass::readBlock(r, "quant-mixed", 128));
  LLMOPT_ASSIGN_OR_RETURN(o.blocks, r.getIntList("blocks", {}));
  LLMOPT_ASSIGN_OR_RETURN(std::string mode, r.getChoice("mode", {"sym", "asym", "both"}, "sym"));
  o.symmetric = mode != "asym";
  o.asymToo = mode == "both";
  LLMOPT_ASSIGN_OR_RETURN(o.method, r.getChoice("method", {"rtn", "gptq"}, "gptq"));
  LLMOPT_ASSIGN_OR_RETURN(o.metric,
                          r.getChoice("metric", {"hessian", "relative", "weight", "kl"}, "hessian"));
  LLMOPT_ASSIGN_OR_RETURN(o.embed, r.getFlag("embed", false));
  LLMOPT_ASSIGN_OR_RETURN(o.probeWindows, r.getInt("probe-windows", 2, 1, 1024));
  LLMOPT_ASSIGN_OR_RETURN(std::string probe, r.getChoice("probe", {"one", "all"}, "one"));
  o.probeAll = probe == "all";
  LLMOPT_RETURN_IF_ERROR(r.finish());
  if (o.probeAll && o.metric != "kl")
    return errorf("pass 'quant-mixed': option 'probe=all' needs metric=kl (it probes each "
                  "format end to end)");
  if (o.embed && o.metric != "kl" && o.metric != "weight")
    return errorf("pass 'quant-mixed': option 'embed' needs metric=kl or metric=weight (an "
                  "embedding table has no input Hessian for metric={})",
                  o.metric);
  if (o.candidates.empty())
    return errorf("pass 'quant-mixed': option 'candidates' is empty; expected formats from 2, 3, "
                  "4, 8, 16");
  std::sort(o.candidates.begin(), o.candidates.end());
  o.candidates.erase(std::unique(o.candidates.begin(), o.candidates.end()), o.candidates.end());
  for (int64_t c : o.candidates)
    if (c != 2 && c != 3 && c != 4 && c != 8 && c != 16)
      return errorf("pass 'quant-mixed': candidate '{}' is not a format; expected 2, 3, 4, 8 "
                    "(bits, blocked int) or 16 (f16)",
                    c);
  for (int64_t b : o.blocks)
    if (b < 16 || b > 256 || (b & (b - 1)) != 0)
      return errorf("pass 'quant-mixed': option 'blocks' has value '{}', expected powers of 2 in "
                    "[16, 256]",
                    b);
  if (o.blocks.empty())
    o.blocks.push_back(o.block);
  return o;
}

Expected<PreservedAnalyses> QuantMixedPass::run(Model &m, AnalysisManager &am) {
  const QuantMixedOptions &o = opts_;
  const bool needCalib = o.metric != "weight" || o.method == "gptq";
  if (needCalib && am.context().calibPath.empty())
    return errorf("pass 'quant-mixed': metric={} with method={} needs calibration data: pass "
                  "--calib FILE (with --tokenizer for text); without data use "
                  "metric=weight;method=rtn",
                  o.metric, o.method);
  const bool ort = am.context().target != "onnx";
  Graph &g = m.graph();
  quantpass::SkipCounts skips;
  const int64_t gemms = quantpass::gemmsToMatMuls(g, skips);
  const std::vector<MatMulWeight> weights = quantpass::findMatMulWeights(g, 16, skips);
  int64_t tableSkips = 0;
  const std::vector<quantpass::EmbeddingTable> tables =
      o.embed ? quantpass::findEmbeddingTables(g, 16, tableSkips)
              : std::vector<quantpass::EmbeddingTable>{};
  if (weights.empty() && tables.empty()) {
    am.context().reportLines.push_back(
        fmt::format("quant-mixed: no weights to quantize; skipped: {}", skips.summary()));
    return gemms ? PreservedAnalyses::none() : PreservedAnalyses::all();
  }

  // The budget for the weights this pass allocates.
  const ModelStats stats = collectStats(m);
  int64_t ownBytes = 0;
  for (const MatMulWeight &w : weights)
    ownBytes += static_cast<int64_t>(w.weight->constant()->nbytes());
  for (const quantpass::EmbeddingTable &t : tables)
    ownBytes += static_cast<int64_t>(t.table->constant()->nbytes());
  const double fixedBytes = static_cast<double>(stats.bytes - ownBytes);
  const double budget = o.bpw * static_cast<double>(stats.params) / 8.0 - fixedBytes;

  // Weights grouped by their input activation (one Hessian each); a weight read with
  // several inputs has none and is measured by the weight metric.
  std::unordered_map<const Value *, std::vector<size_t>> byAct;
  std::vector<size_t> noHessian;
  for (size_t i = 0; i < weights.size(); ++i) {
    const Value *a = weights[i].users.front()->input(0);
    bool same = true;
    for (const Node *u : weights[i].users)
      same = same && u->input(0) == a;
    (same && needCalib ? byAct[a] : noHessian).push_back(i);
  }
  std::vector<const Value *> acts;
  for (const Value *a : calib::matmulWeightInputs(g))
    if (byAct.count(a))
      acts.push_back(a);

  std::vector<Choice> choices(weights.size() + tables.size()); // weights, then tables
  // metric=kl: the local (Hessian) errors, rescaled per weight by the end-to-end response
  // to its quantization in the probe format (4 bits, or the candidate nearest below it).
  std::optional<quantpass::EndToEndProbe> e2e;
  std::vector<Format> formats;
  for (int64_t bits : o.candidates)
    if (bits == 16)
      formats.push_back({16, 0});
    else
      for (int64_t b : o.blocks) {
        formats.push_back({bits, b, o.symmetric});
        if (o.asymToo)
          formats.push_back({bits, b, false});
      }
  std::sort(formats.begin(), formats.end());
  // The probe: 4 bits (else the largest candidate below) in blocks of `block` when that is
  // among `blocks`, else the largest block.
  const bool haveBlock = std::find(o.blocks.begin(), o.blocks.end(), o.block) != o.blocks.end();
  auto probeRank = [&](const Format &f) {
    return std::tuple<int64_t, int64_t, bool>(f.bits <= 4 ? f.bits : -f.bits,
                                              haveBlock && f.block == o.block ? 1000 : f.block,
                                              f.sym == o.symmetric);
  };
  Format probe = formats.front();
  for (const Format &f : formats)
    if (probeRank(f) > probeRank(probe))
      probe = f;
  if (o.metric == "kl") {
    LLMOPT_ASSIGN_OR_RETURN(auto windows, calib::loadWindows(am.context()));
    LLMOPT_ASSIGN_OR_RETURN(quantpass::EndToEndProbe e, quantpass::EndToEndProbe::make(m, windows, static_cast<size_t>(o.probeWindows), am.context().threads));
    e2e = std::move(e);
  }
  // metric=kl: scales one weight's local errors so the probe format's equals its
  // end-to-end response.
  auto rescale = [&](Choice &c, Value *w, std::vector<float> probeDeq) -> Status {
    const size_t pj =
        static_cast<size_t>(std::find(formats.begin(), formats.end(), probe) - formats.begin());
    LLMOPT_ASSIGN_OR_RETURN(double resp, e2e->probe(w, std::move(probeDeq)));
    const double local = std::max(c.error[pj], 1e-30);
    for (double &e : c.error)
      e = e / local * resp;
    return Status::ok();
  };
  // Every format's error and stored bytes for one weight `v`: `roundTrip(f)` gives the
  // dequantized values of a 2..8-bit format (f16 is a half round trip), `error` scores
  // them; with metric=kl the errors are rescaled by the probe format's response.
  auto measureFormats = [&](Choice &c, Value *v, const auto &roundTrip, const auto &error,
                            const auto &bytes) -> Status {
    std::vector<float> probeDeq;
    for (const Format &f : formats) {
      std::vector<float> deq;
      if (f.bits == 16) {
        deq = halfRoundTrip(*v->constant());
      } else {
        LLMOPT_ASSIGN_OR_RETURN(deq, roundTrip(f));
      }
      c.bytes.push_back(bytes(f));
      if (o.probeAll) { // the end-to-end response of this very format
        LLMOPT_ASSIGN_OR_RETURN(double resp, e2e->probe(v, std::move(deq)));
        c.error.push_back(resp);
        continue;
      }
      c.error.push_back(error(deq));
      if (e2e && f == probe)
        probeDeq = std::move(deq);
    }
    return e2e && !o.probeAll ? rescale(c, v, std::move(probeDeq)) : Status::ok();
  };
  auto measure = [&](size_t i, const quantpass::GptqFactor *factor,
                     const std::vector<double> *h) -> Status {
    const Tensor &w = *weights[i].weight->constant();
    const int64_t K = w.shape()[0], N = w.shape()[1];
    const float *x = reinterpret_cast<const float *>(w.data());
    const bool useH = h && o.metric != "weight";
    double energy = 1;
    if (useH && o.metric == "relative") {
      std::vector<float> zero(static_cast<size_t>(K * N), 0.f);
      energy = std::max(quantpass::hessianError(x, zero.data(), K, N, *h), 1e-30);
    }
    auto roundTrip = [&](const Format &f) -> Expected<std::vector<float>> {
      auto q = quantizeAs(w, f, o, factor, h);
      if (!q)
        return q.status().withContext("weight '" + weights[i].weight->name() + "'");
      return values(*q, encodingOf(f.bits, f.block, f.sym, K));
    };
    auto error = [&](const std::vector<float> &deq) {
      return useH ? quantpass::hessianError(x, deq.data(), K, N, *h) / energy
                  : sqDiff(x, deq.data(), K * N);
    };
    auto bytes = [&](const Format &f) {
      return emittedBytes(K, N, f.bits, f.block, f.sym, ort);
    };
    return measureFormats(choices[i], weights[i].weight, roundTrip, error, bytes);
  };
  // An embedding table, quantized by RTN in blocks along H.
  auto measureTable = [&](size_t t) -> Status {
    Value *v = tables[t].table;
    const Tensor &w = *v->constant();
    const int64_t V = w.shape()[0], H = w.shape()[1];
    const float *x = reinterpret_cast<const float *>(w.data());
    auto roundTrip = [&](const Format &f) -> Expected<std::vector<float>> {
      const QuantEncoding enc =
          quantpass::tableEncoding(static_cast<int>(f.bits), f.block, f.sym, H);
      auto q = quantpass::quantizeTensor(w, enc, quantpass::Method::Rtn, true);
      if (!q)
        return q.status().withContext("table '" + v->name() + "'");
      return values(*q, enc);
    };
    auto error = [&](const std::vector<float> &deq) { return sqDiff(x, deq.data(), V * H); };
    auto bytes = [&](const Format &f) {
      return emittedBytes(H, V, f.bits, f.block, f.sym, ort, /*packTwoBit=*/false);
    };
    return measureFormats(choices[weights.size() + t], v, roundTrip, error, bytes);
  };

  std::optional<calib::Stats> kept;
  if (!acts.empty()) {
    LLMOPT_RETURN_IF_ERROR(calib::forEachHessianGroup(
        m, am, acts, "quant-mixed", [&](calib::Stats &st) -> Status {
          for (const Value *a : acts)
            if (const calib::ActStats *as = st.find(a)) {
              std::optional<quantpass::GptqFactor> factor;
              if (o.method == "gptq") {
                LLMOPT_ASSIGN_OR_RETURN(factor, quantpass::gptqFactor(as->hessian, as->channels, {}));
              }
              for (size_t i : byAct[a])
                LLMOPT_RETURN_IF_ERROR(measure(i, factor ? &*factor : nullptr, &as->hessian));
            }
          if (st.complete && o.method == "gptq")
            kept = std::move(st);
          return Status::ok();
        }));
  }
  for (size_t i : noHessian)
    LLMOPT_RETURN_IF_ERROR(measure(i, nullptr, nullptr));
  for (size_t t = 0; t < tables.size(); ++t)
    LLMOPT_RETURN_IF_ERROR(measureTable(t));

  if (!quantpass::allocateFormats(choices, budget)) {
    double minBytes = fixedBytes;
    for (const Choice &c : choices)
      minBytes += static_cast<double>(*std::min_element(c.bytes.begin(), c.bytes.end()));
    return errorf("pass 'quant-mixed': bpw={} is below what the candidates reach: the smallest "
                  "formats give {:.3f} bits per parameter over the whole model",
                  o.bpw, 8.0 * minBytes / static_cast<double>(stats.params));
  }

  // Apply the choices. GPTQ needs the Hessians again unless they were kept.
  std::map<Format, std::pair<int64_t, int64_t>> perFormat; // -> (weights, bytes)
  double errorSum = 0;
  int64_t allocated = 0;
  quantpass::WeightQuantStats wst;
  int64_t clamped = 0, flushed = 0;
  auto apply = [&](size_t i, const quantpass::GptqFactor *factor,
                   const std::vector<double> *h) -> Status {
    const Choice &c = choices[i];
    const Format f = formats[static_cast<size_t>(c.picked)];
    const MatMulWeight &w = weights[i];
    const Tensor &t = *w.weight->constant();
    perFormat[f].first += 1;
    perFormat[f].second += c.bytes[static_cast<size_t>(c.picked)];
    allocated += c.bytes[static_cast<size_t>(c.picked)];
    errorSum += c.error[static_cast<size_t>(c.picked)];
    am.context().reportLines.push_back(fmt::format("  quant-mixed: {} [{}x{}] -> {}",
                                                   w.weight->name(), t.shape()[0], t.shape()[1],
                                                   formatName(f)));
    if (f.bits == 16) {
      LLMOPT_ASSIGN_OR_RETURN(auto b, quantpass::storeNarrow(g, w.weight, DType::F16, clamped, flushed));
      (void)b;
      g.removeUnusedConstants();
      return Status::ok();
    }
    auto q = quantizeAs(t, f, o, factor, h);
    if (!q)
      return q.status().withContext("weight '" + w.weight->name() + "'");
    quantpass::installQuantized(g, w, q.take(),
                                encodingOf(f.bits, f.block, f.sym, t.shape()[0]), wst);
    return Status::ok();
  };
  auto applyGroup = [&](calib::Stats &st) -> Status {
    for (const Value *a : acts)
      if (const calib::ActStats *as = st.find(a)) {
        LLMOPT_ASSIGN_OR_RETURN(quantpass::GptqFactor factor,
                                quantpass::gptqFactor(as->hessian, as->channels, {}));
        for (size_t i : byAct[a])
          LLMOPT_RETURN_IF_ERROR(apply(i, &factor, &as->hessian));
      }
    return Status::ok();
  };
  if (o.method == "gptq" && !acts.empty()) {
    if (kept)
      LLMOPT_RETURN_IF_ERROR(applyGroup(*kept));
    else
      LLMOPT_RETURN_IF_ERROR(calib::forEachHessianGroup(m, am, acts, "quant-mixed (apply)", applyGroup));
  } else {
    for (const Value *a : acts)
      for (size_t i : byAct[a])
        LLMOPT_RETURN_IF_ERROR(apply(i, nullptr, nullptr));
  }
  for (size_t i : noHessian)
    LLMOPT_RETURN_IF_ERROR(apply(i, nullptr, nullptr));
  kept.reset();
  // Tables last: re-calibration above (GPTQ without kept Hessians) sees them unquantized.
  for (size_t t = 0; t < tables.size(); ++t) {
    const Choice &c = choices[weights.size() + t];
    const Format f = formats[static_cast<size_t>(c.picked)];
    Value *v = tables[t].table;
    const std::vector<int64_t> shape = v->constant()->shape();
    perFormat[f].first += 1;
    perFormat[f].second += c.bytes[static_cast<size_t>(c.picked)];
    allocated += c.bytes[static_cast<size_t>(c.picked)];
    errorSum += c.error[static_cast<size_t>(c.picked)];
    am.context().reportLines.push_back(
        fmt::format("  quant-mixed: {} [{}x{}] (embedding{}) -> {}", v->name(), shape[0], shape[1],
                    tables[t].tied ? ", tied LM head" : "", formatName(f)));
    if (f.bits == 16) {
      LLMOPT_ASSIGN_OR_RETURN(auto b, quantpass::storeNarrow(g, v, DType::F16, clamped, flushed));
      (void)b;
      continue;
    }
    const QuantEncoding enc =
        quantpass::tableEncoding(static_cast<int>(f.bits), f.block, f.sym, shape[1]);
    auto q = quantpass::quantizeTensor(*v->constant(), enc, quantpass::Method::Rtn, true);
    if (!q)
      return q.status().withContext("quant-mixed: table '" + v->name() + "'");
    quantpass::replaceWithQuantized(g, v, q.take(), enc);
  }
  if (!tables.empty())
    g.removeUnusedConstants();

  std::string alloc;
  for (const auto &[f, nb] : perFormat)
    alloc += fmt::format("{}{}: {} weights, {} bytes", alloc.empty() ? "" : "; ",
                         formatName(f), nb.first, nb.second);
  const double achieved = 8.0 * (fixedBytes + static_cast<double>(allocated)) /
                          static_cast<double>(stats.params);
  am.context().reportLines.push_back(fmt::format(
      "quant-mixed (bpw {}, candidates {}, blocks {}, {}, method {}, metric {}): {} weights{} "
      "allocated {} bytes of a {:.0f}-byte budget; whole model {:.4f} bits per parameter as "
      "written for --target={}; {}; summed {} error {:.6g}{}; skipped: {}",
      o.bpw, fmt::join(o.candidates, ","), fmt::join(o.blocks, ","), o.asymToo ? "sym+asym" : o.symmetric ? "sym" : "asym",
      o.method,
      e2e ? fmt::format("kl (end-to-end probe at {} on {})", o.probeAll ? std::string("every format") : formatName(probe), e2e->what())
          : o.metric,
      weights.size(),
      o.embed ? fmt::format(" and {} embedding tables (skipped {})", tables.size(), tableSkips)
              : std::string(),
      allocated, budget, achieved, ort ? "ort" : "onnx", alloc, o.metric, errorSum, clamped ? fmt::format("; {} f16 values clamped", clamped) : "", skips.summary()));
  LLMOPT_ASSIGN_OR_RETURN(bool converted, quantpass::ensureOnnxOpset(m, am, 21));
  (void)converted;
  return PreservedAnalyses::none();
}

} // namespace llmopt

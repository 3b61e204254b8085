// quant-mixed's end-to-end probe (see EndToEndProbe.h).
#include "passes/quant/EndToEndProbe.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "backend/interp/Interpreter.h"
#include "passes/calib/Calibration.h"

namespace llmopt::quantpass {
namespace {

/// Mean over rows of KL(softmax(ref) || softmax(got)) on the last axis.
double meanKl(const Tensor &ref, const Tensor &got) {
  const int64_t V = ref.shape().back(), rows = ref.numel() / V;
  const float *p = reinterpret_cast<const float *>(ref.data());
  const float *q = reinterpret_cast<const float *>(got.data());
  double kl = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float *a = p + r * V, *b = q + r * V;
    const double ma = *std::max_element(a, a + V), mb = *std::max_element(b, b + V);
    double za = 0, zb = 0;
    for (int64_t v = 0; v < V; ++v) {
      za += std::exp(a[v] - ma);
      zb += std::exp(b[v] - mb);
    }
    const double la = std::log(za) + ma, lb = std::log(zb) + mb;
    double s = 0;
    for (int64_t v = 0; v < V; ++v) {
      const double lpa = a[v] - la;
      s += std::exp(lpa) * (lpa - (b[v] - lb));
    }
    kl += s;
  }
  return kl / static_cast<double>(rows);
}

/// ||ref - got||^2 / ||ref||^2.
double relError(const Tensor &ref, const Tensor &got) {
  const float *p = reinterpret_cast<const float *>(ref.data());
  const float *q = reinterpret_cast<const float *>(got.data());
  double num = 0, den = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    num += (static_cast<double>(p[i]) - q[i]) * (static_cast<double>(p[i]) - q[i]);
    den += static_cast<double>(p[i]) * p[i];
  }
  return num / std::max(den, 1e-30);
}

} // namespace

Expected<EndToEndProbe> EndToEndProbe::make(const Model &m, const std::vector<std::vector<int64_t>> &windows,
                                            size_t maxWindows, int threads) {
  EndToEndProbe e;
  e.model_ = &m;
  e.threads_ = threads;
  e.kl_ = !m.graph().outputs().empty() && m.graph().outputs().front()->name() == "logits";
  for (size_t i = 0; i < windows.size() && i < maxWindows; ++i) {
    std::vector<int64_t> ids(windows[i].begin(),
                             windows[i].begin() + std::min<size_t>(windows[i].size(), kTokens));
    LLMOPT_ASSIGN_OR_RETURN(std::vector<Tensor> in, calib::makeInputs(m.graph(), ids));
    LLMOPT_ASSIGN_OR_RETURN(Tensor ref, e.first(in));
    e.inputs_.push_back(std::move(in));
    e.refs_.push_back(std::move(ref));
  }
  return e;
}

Expected<double> EndToEndProbe::probe(Value *w, std::vector<float> deq) {
  const std::shared_ptr<Tensor> saved = w->constant();
  w->setConstant(std::make_shared<Tensor>(Tensor::fromVector(DType::F32, saved->shape(), std::move(deq))));
  double total = 0;
  Status st = Status::ok();
  for (size_t i = 0; i < inputs_.size(); ++i) {
    auto out = first(inputs_[i]);
    if (!out) {
      st = out.status();
      break;
    }
    total += kl_ ? meanKl(refs_[i], *out) : relError(refs_[i], *out);
  }
  w->setConstant(saved);
  LLMOPT_RETURN_IF_ERROR(st);
  return total / static_cast<double>(inputs_.size());
}

std::string EndToEndProbe::what() const {
  return fmt::format("{} window{} of {} tokens", inputs_.size(), inputs_.size() == 1 ? "" : "s",
                     refs_.empty() ? 0 : refs_.front().shape().size() > 1 ? refs_.front().shape()[1] : 0);
}

Expected<Tensor> EndToEndProbe::first(const std::vector<Tensor> &in) const {
  interp::RunOptions ro;
  ro.threads = threads_;
  LLMOPT_ASSIGN_OR_RETURN(std::vector<Tensor> outs, interp::run(model_->graph(), in, ro));
  if (outs.empty() || outs.front().dtype() != DType::F32)
    return errorf("quant-mixed metric=kl: the model's first output is not f32");
  return std::move(outs.front());
}

} // namespace llmopt::quantpass

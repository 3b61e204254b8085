// Quality metrics for llmopt-eval: perplexity windows, per-position logit
// statistics (NLL, KL vs a reference, top-1 agreement) and embedding
// similarity.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace llmopt::eval {

/// One forward pass: tokens [begin, begin + length) of the text; the targets
/// scored are the tokens at window positions [scoreFrom, length), each
/// predicted from the logits of the position before it (so scoreFrom >= 1).
struct Window {
  int64_t begin = 0, length = 0, scoreFrom = 1;
};

/// Windows over `numTokens` tokens, `context` long, starting every `stride`
/// tokens:
///   stride == context: non-overlapping windows, each scoring all its positions
///   but the first
///     (matches scripts/baselines.py);
///   stride <  context: later windows score only the positions not already
///   scored (HF's
///     sliding-window convention, one prediction per token).
/// Only full windows are made; the tail shorter than a window is dropped. When
/// the text is shorter than one window, it is a single window of all its
/// tokens.
std::vector<Window> planWindows(int64_t numTokens, int64_t context, int64_t stride);

/// Sums over scored positions; merge() adds another accumulator (e.g. from a
/// thread).
struct LogitStats {
  int64_t count = 0;     ///< Scored positions.
  double nll = 0;        ///< Sum of -log p_model(target).
  double refNll = 0;     ///< Sum of -log p_ref(target) (with a reference).
  double kl = 0;         ///< Sum of KL(p_ref || p_model), nats.
  int64_t top1Agree = 0; ///< Positions where argmax(model) == argmax(ref).
  double maxAbsDiff = 0; ///< Max |logit_model - logit_ref| over scored positions.

  void merge(const LogitStats &o);
  double perplexity() const;
  double refPerplexity() const;
};

/// log-softmax of `logits` in double into `out` (resized to logits.size()).
void logSoftmax(std::span<const float> logits, std::vector<double> &out);

/// Scores positions [w.scoreFrom, w.length) of one window: `logits` is [length,
/// vocab] (row i predicts token i + 1), `ids` the window's tokens, `ref` the
/// reference's logits of the same shape or empty. Rows are split over `threads`
/// workers.
LogitStats scoreWindow(std::span<const float> logits, std::span<const float> ref,
                       std::span<const int64_t> ids, int64_t vocab, const Window &w, int threads);

/// Embedding agreement between a model and a reference, one row per sentence.
struct EmbedStats {
  double cosMean = 0, cosMin = 0;
  double nnAgree = 0; ///< Fraction of rows whose nearest other row is the same in both.
};

EmbedStats compareEmbeddings(const std::vector<std::vector<float>> &model,
                             const std::vector<std::vector<float>> &ref);

} // namespace llmopt::eval

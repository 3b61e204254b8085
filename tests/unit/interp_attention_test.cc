// Interpreter attention contrib ops: MultiHeadAttention against a naive reference,
// GroupQueryAttention prompt vs step-by-step decoding with a KV cache.
#include <cmath>

#include "interp_test_util.h"

namespace llmopt::test {
namespace {

/// Naive attention for one batch: q [S, N*H], k/v [T, N*H] (kv heads shared by groups),
/// keep(s, t) masks with -inf; returns [S, N*H].
std::vector<float> naiveAttention(const std::vector<float> &q, const std::vector<float> &k, const std::vector<float> &v,
                                  int64_t S, int64_t T, int64_t N, int64_t Nkv, int64_t H,
                                  const std::function<bool(int64_t, int64_t)> &keep) {
  std::vector<float> out(static_cast<size_t>(S * N * H), 0);
  const double scale = 1 / std::sqrt(static_cast<double>(H));
  for (int64_t n = 0; n < N; ++n) {
    const int64_t kh = n / (N / Nkv);
    for (int64_t s = 0; s < S; ++s) {
      std::vector<double> w(static_cast<size_t>(T));
      double mx = -INFINITY, sum = 0;
      for (int64_t t = 0; t < T; ++t) {
        double d = 0;
        for (int64_t i = 0; i < H; ++i)
          d += q[static_cast<size_t>(s * N * H + n * H + i)] * k[static_cast<size_t>(t * Nkv * H + kh * H + i)];
        w[static_cast<size_t>(t)] = keep(s, t) ? d * scale : -INFINITY;
        mx = std::max(mx, w[static_cast<size_t>(t)]);
      }
      for (double &x : w)
        sum += (x = std::exp(x - mx));
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < H; ++i)
          out[static_cast<size_t>(s * N * H + n * H + i)] +=
              static_cast<float>(w[static_cast<size_t>(t)] / sum) * v[static_cast<size_t>(t * Nkv * H + kh * H + i)];
    }
  }
  return out;
}

TEST(InterpAttention, MultiHeadAttentionCausalPaddedWithBias) {
  const int64_t S = 3, N = 2, H = 4, D = N * H;
  auto q = randomFloats(S * D, 31), k = randomFloats(S * D, 32), v = randomFloats(S * D, 33);
  auto bias = randomFloats(3 * D, 34);
  OneNode mha(OpKind::MultiHeadAttention, 1, 5, 3);
  mha.attr(Attribute::makeInt("num_heads", N)).attr(Attribute::makeInt("unidirectional", 1))
      .attr(Attribute::makeFloat("mask_filter_value", -1e9f));
  // Key 2 padded out, causal on top.
  auto r = mha.eval({f32({1, S, D}, q), f32({1, S, D}, k), f32({1, S, D}, v), f32({3 * D}, bias), i32({1, S}, {1, 1, 0})});
  ASSERT_TRUE(r) << r.status().message();
  for (int64_t i = 0; i < S * D; ++i) {
    q[static_cast<size_t>(i)] += bias[static_cast<size_t>(i % D)];
    k[static_cast<size_t>(i)] += bias[static_cast<size_t>(D + i % D)];
    v[static_cast<size_t>(i)] += bias[static_cast<size_t>(2 * D + i % D)];
  }
  auto want = naiveAttention(q, k, v, S, S, N, N, H, [](int64_t s, int64_t t) { return t <= s && t < 2; });
  EXPECT_FLOATS_NEAR(floats((*r)[0]), want, 1e-5);
  EXPECT_EQ((*r)[1].shape(), (std::vector<int64_t>{1, N, S, H})); // present_key
}

/// GQA over [1, S] new tokens after `past` cached ones; returns output, present k/v.
std::vector<Tensor> gqaStep(const OneNode &g, const std::vector<float> &q, const std::vector<float> &k,
                            const std::vector<float> &v, int64_t S, int64_t N, int64_t Nkv, int64_t H,
                            const std::vector<Tensor> &past, int64_t totalLen, const Tensor &cosC, const Tensor &sinC) {
  auto r = g.eval({f32({1, S, N * H}, q), f32({1, S, Nkv * H}, k), f32({1, S, Nkv * H}, v),
                   past.empty() ? none() : past[0], past.empty() ? none() : past[1],
                   i32({1}, {static_cast<int32_t>(totalLen - 1)}), i32({}, {static_cast<int32_t>(totalLen)}), cosC, sinC});
  EXPECT_TRUE(r) << (r ? "" : r.status().message());
  return r ? *r : std::vector<Tensor>{};
}

TEST(InterpAttention, GroupQueryAttentionDecodingMatchesPrompt) {
  const int64_t T = 4, N = 4, Nkv = 2, H = 16;
  auto q = randomFloats(T * N * H, 41), k = randomFloats(T * Nkv * H, 42), v = randomFloats(T * Nkv * H, 43);
  auto cosv = randomFloats(8 * 4, 44), sinv = randomFloats(8 * 4, 45);
  const Tensor cosC = f32({8, 4}, cosv), sinC = f32({8, 4}, sinv);
  for (int64_t rotary : {0, 1}) {
    OneNode g(OpKind::GroupQueryAttention, 1, 9, 3);
    g.attr(Attribute::makeInt("num_heads", N)).attr(Attribute::makeInt("kv_num_heads", Nkv))
        .attr(Attribute::makeInt("do_rotary", rotary));
    const Tensor c = rotary ? cosC : none(), s = rotary ? sinC : none();
    // The whole prompt at once.
    auto full = gqaStep(g, q, k, v, T, N, Nkv, H, {}, T, c, s);
    ASSERT_EQ(full.size(), 3u);
    if (!rotary)
      EXPECT_FLOATS_NEAR(floats(full[0]), naiveAttention(q, k, v, T, T, N, Nkv, H, [](int64_t a, int64_t b) { return b <= a; }), 1e-5);
    // T-1 tokens, then one decoding step with the cache.
    auto head = [&](const std::vector<float> &x, int64_t width, int64_t from, int64_t count) {
      return std::vector<float>(x.begin() + from * width, x.begin() + (from + count) * width);
    };
    auto prompt = gqaStep(g, head(q, N * H, 0, T - 1), head(k, Nkv * H, 0, T - 1), head(v, Nkv * H, 0, T - 1),
                          T - 1, N, Nkv, H, {}, T - 1, c, s);
    auto step = gqaStep(g, head(q, N * H, T - 1, 1), head(k, Nkv * H, T - 1, 1), head(v, Nkv * H, T - 1, 1), 1, N,
                        Nkv, H, {prompt[1], prompt[2]}, T, c, s);
    ASSERT_EQ(step.size(), 3u);
    EXPECT_FLOATS_NEAR(floats(step[0]), head(floats(full[0]), N * H, T - 1, 1), 1e-5);
    EXPECT_FLOATS_NEAR(floats(step[1]), floats(full[1]), 1e-6); // present_key
  }
}

} // namespace
} // namespace llmopt::test

// Interpreter kernels: opset-dependent semantics, dtypes, broadcasting, and the
// LLM ops, each against values worked out by hand or by a naive loop.
#include <cmath>

#include "interp_test_util.h"

namespace llmopt::test {
namespace {

// ---------------------------------------------------------------- opset semantics

TEST(InterpOpset, ReduceSumAxesAttributeBefore13InputFrom13) {
  Tensor x = f32({2, 3}, {1, 2, 3, 4, 5, 6});
  OneNode v11(OpKind::ReduceSum, 11, 1);
  v11.attr(Attribute::makeInts("axes", {1})).attr(Attribute::makeInt("keepdims", 0));
  EXPECT_EQ(floats(v11.out({x})), (std::vector<float>{6, 15}));
  OneNode v13(OpKind::ReduceSum, 13, 2);
  v13.attr(Attribute::makeInt("keepdims", 0));
  EXPECT_EQ(floats(v13.out({x, i64({1}, {0})})), (std::vector<float>{5, 7, 9}));
  // No axes: all axes, unless noop_with_empty_axes.
  EXPECT_EQ(floats(v13.out({x})), (std::vector<float>{21}));
  v13.attr(Attribute::makeInt("noop_with_empty_axes", 1));
  EXPECT_EQ(v13.out({x}).shape(), (std::vector<int64_t>{2, 3}));
}

TEST(InterpOpset, ReduceMeanAxesInputFrom18) {
  Tensor x = f32({2, 2}, {1, 2, 3, 5});
  OneNode v17(OpKind::ReduceMean, 17, 1);
  v17.attr(Attribute::makeInts("axes", {-1}));
  Tensor y = v17.out({x});
  EXPECT_EQ(y.shape(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(floats(y), (std::vector<float>{1.5f, 4.f}));
  OneNode v18(OpKind::ReduceMean, 18, 2);
  EXPECT_EQ(floats(v18.out({x, i64({1}, {0})})), (std::vector<float>{2.f, 3.5f}));
  OneNode max18(OpKind::ReduceMax, 18, 2);
  EXPECT_EQ(floats(max18.out({x, i64({1}, {1})})), (std::vector<float>{2.f, 5.f}));
}

TEST(InterpOpset, SplitAttributeInputAndNumOutputs) {
  Tensor x = f32({5}, {1, 2, 3, 4, 5});
  OneNode v11(OpKind::Split, 11, 1, 2);
  v11.attr(Attribute::makeInts("split", {2, 3}));
  auto r = v11.eval({x});
  ASSERT_TRUE(r);
  EXPECT_EQ(floats((*r)[1]), (std::vector<float>{3, 4, 5}));
  OneNode v13(OpKind::Split, 13, 2, 2);
  r = v13.eval({x, i64({2}, {4, 1})});
  ASSERT_TRUE(r);
  EXPECT_EQ(floats((*r)[0]), (std::vector<float>{1, 2, 3, 4}));
  // Opset 18: num_outputs with an uneven last chunk.
  OneNode v18(OpKind::Split, 18, 1, 3);
  v18.attr(Attribute::makeInt("num_outputs", 3));
  r = v18.eval({x});
  ASSERT_TRUE(r);
  EXPECT_EQ(floats((*r)[2]), (std::vector<float>{5}));
  // Without num_outputs the split must be even.
  OneNode uneven(OpKind::Split, 13, 1, 2);
  EXPECT_FALSE(uneven.eval({x}));
}

TEST(InterpOpset, SqueezeUnsqueezeAttributeVsInput) {
  Tensor x = f32({1, 3, 1}, {1, 2, 3});
  OneNode sq11(OpKind::Squeeze, 11, 1);
  sq11.attr(Attribute::makeInts("axes", {0}));
  EXPECT_EQ(sq11.out({x}).shape(), (std::vector<int64_t>{3, 1}));
  OneNode sq13(OpKind::Squeeze, 13, 2);
  EXPECT_EQ(sq13.out({x, i64({1}, {-1})}).shape(), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(sq13.out({x}).shape(), (std::vector<int64_t>{3}));
  EXPECT_FALSE(sq13.eval({x, i64({1}, {1})})); // size 3 cannot be squeezed
  OneNode un11(OpKind::Unsqueeze, 11, 1);
  un11.attr(Attribute::makeInts("axes", {0, 4}));
  EXPECT_EQ(un11.out({x}).shape(), (std::vector<int64_t>{1, 1, 3, 1, 1}));
  OneNode un13(OpKind::Unsqueeze, 13, 2);
  EXPECT_EQ(un13.out({x, i64({2}, {-1, 1})}).shape(), (std::vector<int64_t>{1, 1, 3, 1, 1}));
}

TEST(InterpOpset, ClipAttributesBefore11InputsAfter) {
  Tensor x = f32({4}, {-3, -0.5f, 0.5f, 3});
  OneNode v6(OpKind::Clip, 6, 1);
  v6.attr(Attribute::makeFloat("min", -1)).attr(Attribute::makeFloat("max", 1));
  EXPECT_EQ(floats(v6.out({x})), (std::vector<float>{-1, -0.5f, 0.5f, 1}));
  OneNode v13(OpKind::Clip, 13, 3);
  EXPECT_EQ(floats(v13.out({x, none(), f32({}, {0})})), (std::vector<float>{-3, -0.5f, 0, 0}));
  Tensor xi = Tensor::fromVector<int8_t>(DType::I8, {3}, {-100, 5, 100});
  Tensor lo = Tensor::scalar<int8_t>(DType::I8, -10), hi = Tensor::scalar<int8_t>(DType::I8, 10);
  EXPECT_EQ(ints(v13.out({xi, lo, hi})), (std::vector<int64_t>{-10, 5, 10}));
}

TEST(InterpOpset, SliceAttributesBefore10InputsAfter) {
  Tensor x = f32({2, 4}, {0, 1, 2, 3, 4, 5, 6, 7});
  OneNode v9(OpKind::Slice, 9, 1);
  v9.attr(Attribute::makeInts("starts", {1})).attr(Attribute::makeInts("ends", {100}))
      .attr(Attribute::makeInts("axes", {1}));
  EXPECT_EQ(floats(v9.out({x})), (std::vector<float>{1, 2, 3, 5, 6, 7}));
  OneNode v13(OpKind::Slice, 13, 5);
  // Reverse the last axis with a negative step; clamp out-of-range starts.
  Tensor y = v13.out({x, i64({1}, {100}), i64({1}, {INT64_MIN}), i64({1}, {-1}), i64({1}, {-2})});
  EXPECT_EQ(floats(y), (std::vector<float>{3, 1, 7, 5}));
}

TEST(InterpOpset, SoftmaxCoercesTo2dBefore13) {
  Tensor x = f32({2, 2}, {0, 0, 0, 0});
  OneNode v11(OpKind::Softmax, 11, 1);
  v11.attr(Attribute::makeInt("axis", 0)); // opset 11: one softmax over all 4 elements
  EXPECT_FLOATS_NEAR(floats(v11.out({x})), (std::vector<float>{.25f, .25f, .25f, .25f}), 1e-6);
  OneNode v13(OpKind::Softmax, 13, 1);
  v13.attr(Attribute::makeInt("axis", 0)); // opset 13: along axis 0 only
  EXPECT_FLOATS_NEAR(floats(v13.out({x})), (std::vector<float>{.5f, .5f, .5f, .5f}), 1e-6);
  OneNode log13(OpKind::LogSoftmax, 13, 1);
  EXPECT_FLOATS_NEAR(floats(log13.out({f32({2}, {1, 1})})), (std::vector<float>{-std::log(2.f), -std::log(2.f)}), 1e-6);
}

TEST(InterpOpset, GeluNeedsOpset20) {
  OneNode v17(OpKind::Gelu, 17, 1);
  EXPECT_FALSE(interp::canEvaluate(*v17.node));
  auto r = v17.eval({f32({1}, {1})});
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("unsupported op Gelu"), std::string::npos) << r.status().message();
  OneNode v20(OpKind::Gelu, 20, 1);
  Tensor x = f32({3}, {-1, 0, 2});
  EXPECT_FLOATS_NEAR(floats(v20.out({x})), (std::vector<float>{-0.158655f, 0, 1.954500f}), 1e-5);
  v20.attr(Attribute::makeString("approximate", "tanh"));
  EXPECT_FLOATS_NEAR(floats(v20.out({x})), (std::vector<float>{-0.158808f, 0, 1.954598f}), 1e-5);
  OneNode ms(OpKind::MsGelu, 1, 1);
  EXPECT_FLOATS_NEAR(floats(ms.out({x})), (std::vector<float>{-0.158655f, 0, 1.954500f}), 1e-5);
  OneNode fast(OpKind::FastGelu, 1, 2);
  EXPECT_FLOATS_NEAR(floats(fast.out({x, f32({1}, {1})})), (std::vector<float>{0, 0.841192f, 2.996363f}), 1e-5);
}

// ---------------------------------------------------------------- shapes and dtypes

TEST(InterpShape, ReshapeZeroMinusOneAllowZero) {
  Tensor x = f32({2, 3, 4}, std::vector<float>(24, 1));
  OneNode r(OpKind::Reshape, 14, 2);
  EXPECT_EQ(r.out({x, i64({2}, {0, -1})}).shape(), (std::vector<int64_t>{2, 12}));
  EXPECT_FALSE(r.eval({x, i64({2}, {5, -1})}));
  r.attr(Attribute::makeInt("allowzero", 1));
  Tensor empty = f32({0, 3}, {});
  EXPECT_EQ(r.out({empty, i64({2}, {3, 0})}).shape(), (std::vector<int64_t>{3, 0}));
  OneNode shape(OpKind::Shape, 15, 1);
  shape.attr(Attribute::makeInt("start", -2));
  EXPECT_EQ(ints(shape.out({x})), (std::vector<int64_t>{3, 4}));
}

TEST(InterpDType, CastHalfBf16BoolAndTruncation) {
  OneNode cast(OpKind::Cast, 19, 1);
  cast.attr(Attribute::makeInt("to", static_cast<int64_t>(DType::F16)));
  Tensor h = cast.out({f32({3}, {1.0f, 0.1f, 70000.f})});
  EXPECT_EQ(h.dtype(), DType::F16);
  EXPECT_EQ(h.view<uint16_t>()[0], 0x3c00);
  EXPECT_EQ(h.view<uint16_t>()[1], 0x2e66); // 0.1 rounds to nearest even
  EXPECT_TRUE(std::isinf(h.getDouble(2)));
  cast.attr(Attribute::makeInt("to", static_cast<int64_t>(DType::BF16)));
  Tensor b = cast.out({f32({1}, {1.00390625f})}); // halfway: rounds to even (1.0)
  EXPECT_EQ(b.view<uint16_t>()[0], 0x3f80);
  cast.attr(Attribute::makeInt("to", static_cast<int64_t>(DType::I32)));
  EXPECT_EQ(ints(cast.out({f32({2}, {-2.7f, 2.7f})})), (std::vector<int64_t>{-2, 2}));
  cast.attr(Attribute::makeInt("to", static_cast<int64_t>(DType::Bool)));
  EXPECT_EQ(ints(cast.out({f32({2}, {0.f, -0.5f})})), (std::vector<int64_t>{0, 1}));
  cast.attr(Attribute::makeInt("to", static_cast<int64_t>(DType::I4)));
  Tensor q = cast.out({i64({3}, {-8, 7, 1})});
  EXPECT_EQ(q.dtype(), DType::I4);
  EXPECT_EQ(ints(q), (std::vector<int64_t>{-8, 7, 1}));
}

TEST(InterpDType, HalfInputsComputeInFloatAndRoundBack) {
  OneNode add(OpKind::Add, 17, 2);
  Tensor a = Tensor::fromVector<uint16_t>(DType::F16, {2}, {floatToHalf(1.5f), floatToHalf(2.f)});
  Tensor b = Tensor::fromVector<uint16_t>(DType::F16, {1}, {floatToHalf(0.25f)});
  Tensor y = add.out({a, b});
  EXPECT_EQ(y.dtype(), DType::F16);
  EXPECT_EQ(floats(y), (std::vector<float>{1.75f, 2.25f}));
  Tensor bf = Tensor::fromVector<uint16_t>(DType::BF16, {1}, {floatToBf16(3.f)});
  OneNode sq(OpKind::Sqrt, 17, 1);
  Tensor s = sq.out({bf});
  EXPECT_EQ(s.dtype(), DType::BF16);
  EXPECT_NEAR(s.getDouble(0), std::sqrt(3.0), 1e-2);
}

TEST(InterpElementwise, IntegerDivTruncatesAndNeverTraps) {
  OneNode div(OpKind::Div, 14, 2);
  Tensor a = i64({4}, {-7, 7, 5, INT64_MIN}), b = i64({4}, {2, -2, 0, -1});
  EXPECT_EQ(ints(div.out({a, b})), (std::vector<int64_t>{-3, -3, 0, INT64_MIN}));
  Tensor u = Tensor::fromVector<uint8_t>(DType::U8, {2}, {200, 7});
  Tensor v = Tensor::fromVector<uint8_t>(DType::U8, {2}, {3, 2});
  EXPECT_EQ(ints(div.out({u, v})), (std::vector<int64_t>{66, 3}));
}

TEST(InterpElementwise, BroadcastingMatchesNaiveIndexing) {
  Tensor a = f32({2, 1, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = f32({4, 1}, {10, 20, 30, 40});
  OneNode sub(OpKind::Sub, 14, 2);
  Tensor y = sub.out({a, b});
  ASSERT_EQ(y.shape(), (std::vector<int64_t>{2, 4, 3}));
  std::vector<float> v = floats(y);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 3; ++k)
        EXPECT_EQ(v[static_cast<size_t>((i * 4 + j) * 3 + k)], (i * 3 + k + 1) - 10.f * (j + 1));
  EXPECT_FALSE(sub.eval({f32({2}, {1, 2}), f32({3}, {1, 2, 3})}));
  OneNode where(OpKind::Where, 16, 3);
  Tensor c = Tensor::fromVector<uint8_t>(DType::Bool, {2, 1}, {1, 0});
  EXPECT_EQ(floats(where.out({c, f32({2}, {1, 2}), f32({}, {9})})), (std::vector<float>{1, 2, 9, 9}));
  OneNode pw(OpKind::Pow, 15, 2);
  EXPECT_EQ(floats(pw.out({f32({2}, {2, 3}), i64({}, {2})})), (std::vector<float>{4, 9}));
  OneNode mx(OpKind::Max, 13, 3);
  EXPECT_EQ(floats(mx.out({f32({2}, {1, 5}), f32({1}, {3}), f32({2}, {0, 6})})), (std::vector<float>{3, 6}));
}

TEST(InterpMovement, TransposeTileExpandTriluCumSumGatherElements) {
  Tensor x = f32({2, 3}, {1, 2, 3, 4, 5, 6});
  OneNode tr(OpKind::Transpose, 13, 1);
  EXPECT_EQ(floats(tr.out({x})), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  OneNode tile(OpKind::Tile, 13, 2);
  EXPECT_EQ(floats(tile.out({f32({2}, {1, 2}), i64({1}, {3})})), (std::vector<float>{1, 2, 1, 2, 1, 2}));
  OneNode ex(OpKind::Expand, 13, 2);
  EXPECT_EQ(floats(ex.out({f32({2, 1}, {1, 2}), i64({2}, {2, 2})})), (std::vector<float>{1, 1, 2, 2}));
  OneNode tri(OpKind::Trilu, 14, 2);
  tri.attr(Attribute::makeInt("upper", 0));
  EXPECT_EQ(floats(tri.out({x, i64({}, {0})})), (std::vector<float>{1, 0, 0, 4, 5, 0}));
  OneNode cs(OpKind::CumSum, 14, 2);
  cs.attr(Attribute::makeInt("exclusive", 1)).attr(Attribute::makeInt("reverse", 1));
  EXPECT_EQ(floats(cs.out({x, i32({}, {1})})), (std::vector<float>{5, 3, 0, 11, 6, 0}));
  OneNode ge(OpKind::GatherElements, 13, 2);
  ge.attr(Attribute::makeInt("axis", 1));
  EXPECT_EQ(floats(ge.out({x, i64({2, 2}, {2, 0, -1, 1})})), (std::vector<float>{3, 1, 6, 5}));
  OneNode g(OpKind::Gather, 13, 2);
  EXPECT_EQ(floats(g.out({x, i64({1}, {-1})})), (std::vector<float>{4, 5, 6}));
  EXPECT_FALSE(g.eval({x, i64({1}, {2})})); // out of range
}

// ---------------------------------------------------------------- normalization

TEST(InterpNn, LayerNormAndRmsNorm) {
  Tensor x = f32({2, 2}, {1, 3, -1, 1});
  OneNode ln(OpKind::LayerNormalization, 17, 3, 3);
  auto r = ln.eval({x, f32({2}, {1, 2}), f32({2}, {0, 1})});
  ASSERT_TRUE(r);
  const float k = 1.0f / std::sqrt(1.0f + 1e-5f);
  EXPECT_FLOATS_NEAR(floats((*r)[0]), (std::vector<float>{-k, 2 * k + 1, -k, 2 * k + 1}), 1e-5);
  EXPECT_EQ(floats((*r)[1]), (std::vector<float>{2, 0}));
  OneNode rms(OpKind::SimplifiedLayerNormalization, 17, 2);
  rms.attr(Attribute::makeFloat("epsilon", 0));
  const float inv = 1 / std::sqrt(5.f);
  EXPECT_FLOATS_NEAR(floats(rms.out({x, f32({2}, {1, 1})})), (std::vector<float>{inv, 3 * inv, -1, 1}), 1e-6);
  OneNode skip(OpKind::SkipSimplifiedLayerNormalization, 1, 3, 4);
  skip.attr(Attribute::makeFloat("epsilon", 0));
  r = skip.eval({x, f32({2, 2}, {0, 0, 0, 0}), f32({2}, {1, 1})});
  ASSERT_TRUE(r);
  EXPECT_FLOATS_NEAR(floats((*r)[0]), (std::vector<float>{inv, 3 * inv, -1, 1}), 1e-6);
}

// ---------------------------------------------------------------- matrix products

std::vector<float> naiveMatMul(const std::vector<float> &a, const std::vector<float> &b, int64_t batches,
                               int64_t M, int64_t K, int64_t N, bool broadcastB) {
  std::vector<float> c(static_cast<size_t>(batches * M * N));
  for (int64_t p = 0; p < batches; ++p)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k)
          s += a[static_cast<size_t>((p * M + i) * K + k)] *
               b[static_cast<size_t>(((broadcastB ? 0 : p) * K + k) * N + j)];
        c[static_cast<size_t>((p * M + i) * N + j)] = static_cast<float>(s);
      }
  return c;
}

TEST(InterpMatMul, BatchedBroadcastAndVectors) {
  auto av = randomFloats(2 * 3 * 4, 1), bv = randomFloats(4 * 5, 2);
  OneNode mm(OpKind::MatMul, 13, 2);
  Tensor y = mm.out({f32({2, 3, 4}, av), f32({4, 5}, bv)});
  EXPECT_EQ(y.shape(), (std::vector<int64_t>{2, 3, 5}));
  EXPECT_FLOATS_NEAR(floats(y), naiveMatMul(av, bv, 2, 3, 4, 5, true), 1e-5);
  // [4] x [4,5] -> [5]
  Tensor v = mm.out({f32({4}, std::vector<float>(av.begin(), av.begin() + 4)), f32({4, 5}, bv)});
  EXPECT_EQ(v.shape(), (std::vector<int64_t>{5}));
  EXPECT_FALSE(mm.eval({f32({2, 3}, std::vector<float>(6)), f32({4, 5}, bv)}));
}

TEST(InterpMatMul, LargeMultithreadedMatchesNaive) {
  const int64_t B = 2, M = 67, K = 129, N = 131;
  auto av = randomFloats(static_cast<size_t>(B * M * K), 3), bv = randomFloats(static_cast<size_t>(B * K * N), 4);
  OneNode mm(OpKind::MatMul, 13, 2);
  std::vector<float> want = naiveMatMul(av, bv, B, M, K, N, false);
  EXPECT_FLOATS_NEAR(floats(mm.out({f32({B, M, K}, av), f32({B, K, N}, bv)})), want, 1e-4);
  // GEMV shape (M = 1) splits over columns.
  auto a1 = std::vector<float>(av.begin(), av.begin() + K);
  EXPECT_FLOATS_NEAR(floats(mm.out({f32({1, K}, a1), f32({K, N}, std::vector<float>(bv.begin(), bv.begin() + K * N))})),
                     naiveMatMul(a1, bv, 1, 1, K, N, true), 1e-4);
}

TEST(InterpMatMul, GemmTransposesAlphaBeta) {
  OneNode gemm(OpKind::Gemm, 13, 3);
  gemm.attr(Attribute::makeInt("transA", 1)).attr(Attribute::makeFloat("alpha", 2))
      .attr(Attribute::makeFloat("beta", 0.5f));
  // A^T = [[1,2],[3,4]] from A = [[1,3],[2,4]]; B = I.
  Tensor y = gemm.out({f32({2, 2}, {1, 3, 2, 4}), f32({2, 2}, {1, 0, 0, 1}), f32({2}, {10, 20})});
  EXPECT_EQ(floats(y), (std::vector<float>{7, 14, 11, 18}));
}

TEST(InterpMatMul, EinsumFormsMatchReference) {
  auto av = randomFloats(2 * 3 * 4, 5), bv = randomFloats(2 * 4 * 5, 6);
  OneNode bmm(OpKind::Einsum, 12, 2);
  bmm.attr(Attribute::makeString("equation", "bij,bjk->bik"));
  EXPECT_FLOATS_NEAR(floats(bmm.out({f32({2, 3, 4}, av), f32({2, 4, 5}, bv)})),
                     naiveMatMul(av, bv, 2, 3, 4, 5, false), 1e-5);
  // Attention scores: q . k over d, k transposed by the equation.
  OneNode qk(OpKind::Einsum, 12, 2);
  qk.attr(Attribute::makeString("equation", "bqd,bkd->bqk"));
  std::vector<float> kT(2 * 4 * 5);
  for (int b = 0; b < 2; ++b)
    for (int d = 0; d < 4; ++d)
      for (int k = 0; k < 5; ++k)
        kT[static_cast<size_t>((b * 5 + k) * 4 + d)] = bv[static_cast<size_t>((b * 4 + d) * 5 + k)];
  EXPECT_FLOATS_NEAR(floats(qk.out({f32({2, 3, 4}, av), f32({2, 5, 4}, kT)})),
                     naiveMatMul(av, bv, 2, 3, 4, 5, false), 1e-5);
  OneNode diag(OpKind::Einsum, 12, 1);
  diag.attr(Attribute::makeString("equation", "...ii->...i"));
  EXPECT_EQ(floats(diag.out({f32({1, 2, 2}, {1, 2, 3, 4})})), (std::vector<float>{1, 4}));
  OneNode dot(OpKind::Einsum, 12, 2);
  dot.attr(Attribute::makeString("equation", "i,i"));
  EXPECT_EQ(floats(dot.out({f32({3}, {1, 2, 3}), f32({3}, {4, 5, 6})})), (std::vector<float>{32}));
  OneNode tr(OpKind::Einsum, 12, 1);
  tr.attr(Attribute::makeString("equation", "ij->ji"));
  EXPECT_EQ(floats(tr.out({f32({2, 2}, {1, 2, 3, 4})})), (std::vector<float>{1, 3, 2, 4}));
}

TEST(InterpContrib, RotaryEmbeddingHalvesInterleavedAndLayouts) {
  // One head of size 4 (rotary dim 4), two positions looked up by position_ids.
  const std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<float> cosv = {1, 1, 0.5f, 0.25f, 0, -1}, sinv = {0, 0, 0.75f, 0.5f, 1, 0};
  auto expected = [&](bool interleaved, const std::vector<int64_t> &pos) {
    std::vector<float> y(8);
    for (int s = 0; s < 2; ++s) {
      const float *xi = x.data() + s * 4, *c = cosv.data() + pos[static_cast<size_t>(s)] * 2,
                  *sn = sinv.data() + pos[static_cast<size_t>(s)] * 2;
      float *yo = y.data() + s * 4;
      if (interleaved) {
        for (int k = 0; k < 2; ++k) {
          yo[2 * k] = xi[2 * k] * c[k] - xi[2 * k + 1] * sn[k];
          yo[2 * k + 1] = xi[2 * k + 1] * c[k] + xi[2 * k] * sn[k];
        }
      } else {
        for (int k = 0; k < 2; ++k) {
          yo[k] = xi[k] * c[k] - xi[k + 2] * sn[k];
          yo[k + 2] = xi[k + 2] * c[k] + xi[k] * sn[k];
        }
      }
    }
    return y;
  };
  OneNode rope(OpKind::RotaryEmbedding, 1, 4);
  const Tensor cs = f32({3, 2}, cosv), sn = f32({3, 2}, sinv);
  EXPECT_FLOATS_NEAR(floats(rope.out({f32({1, 2, 4}, x), i64({1, 2}, {2, 0}), cs, sn})), expected(false, {2, 0}), 1e-6);
  // One offset: positions offset, offset+1.
  EXPECT_FLOATS_NEAR(floats(rope.out({f32({1, 2, 4}, x), i64({1}, {1}), cs, sn})), expected(false, {1, 2}), 1e-6);
  // [B,N,S,H] with one head is the same data.
  EXPECT_FLOATS_NEAR(floats(rope.out({f32({1, 1, 2, 4}, x), i64({1}, {1}), cs, sn})), expected(false, {1, 2}), 1e-6);
  rope.attr(Attribute::makeInt("interleaved", 1));
  EXPECT_FLOATS_NEAR(floats(rope.out({f32({1, 2, 4}, x), i64({1, 2}, {2, 0}), cs, sn})), expected(true, {2, 0}), 1e-6);
  EXPECT_FALSE(rope.eval({f32({1, 2, 4}, x), i64({1}, {2}), cs, sn})); // position 3 is past the cache
}

TEST(InterpIndex, TopKGatherNDScatterNDPad) {
  OneNode topk(OpKind::TopK, 11, 2, 2);
  auto r = topk.eval({f32({2, 3}, {1, 3, 3, 0, -1, 2}), i64({1}, {2})});
  ASSERT_TRUE(r);
  EXPECT_EQ(floats((*r)[0]), (std::vector<float>{3, 3, 2, 0}));
  EXPECT_EQ(ints((*r)[1]), (std::vector<int64_t>{1, 2, 2, 0})); // ties: lower index first
  OneNode gnd(OpKind::GatherND, 13, 2);
  EXPECT_EQ(floats(gnd.out({f32({2, 2}, {1, 2, 3, 4}), i64({2, 1}, {1, 0})})), (std::vector<float>{3, 4, 1, 2}));
  OneNode snd(OpKind::ScatterND, 16, 3);
  snd.attr(Attribute::makeString("reduction", "add"));
  EXPECT_EQ(floats(snd.out({f32({3}, {1, 1, 1}), i64({2, 1}, {2, 2}), f32({2}, {5, 6})})), (std::vector<float>{1, 1, 12}));
  OneNode pad(OpKind::Pad, 13, 3);
  pad.attr(Attribute::makeString("mode", "reflect"));
  EXPECT_EQ(floats(pad.out({f32({3}, {1, 2, 3}), i64({2}, {2, 1}), none()})), (std::vector<float>{3, 2, 1, 2, 3, 2}));
  OneNode padc(OpKind::Pad, 13, 3);
  EXPECT_EQ(floats(padc.out({f32({2}, {1, 2}), i64({2}, {1, -1}), f32({}, {9})})), (std::vector<float>{9, 1}));
}

} // namespace
} // namespace llmopt::test

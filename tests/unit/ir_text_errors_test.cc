// IR text form: parse errors with line:col, number and string spellings, type syntax,
// and naming corners (anonymous, quoted, placeholder-like names).
#include <bit>
#include <random>

#include <gtest/gtest.h>

#include "ir/Parser.h"
#include "ir/Printer.h"
#include "ir/TextSyntax.h"
#include "ir/Verifier.h"
#include "ir_text_compare.h"

namespace llmopt {
namespace {

// A minimal model around graph body lines; the body starts on line 3.
std::string wrap(std::string_view body, std::string_view inputs = "%x: f32[2]") {
  return fmt::format("model {{\n  graph main({}) {{\n{}  }}\n}}\n", inputs, body);
}

std::string parseError(std::string_view text, std::string_view source = "<text>") {
  auto m = parseModel(text, source);
  EXPECT_FALSE(m.hasValue()) << "parsed unexpectedly:\n" << text;
  return m ? "" : m.status().message();
}

TEST(IrTextErrors, ValuesMustBeDefinedBeforeUse) {
  EXPECT_EQ(parseError(wrap("    %y = Relu(%z)\n    return %y\n")),
            "<text>:3:15: undefined value %z (values are defined before their uses)");
  EXPECT_EQ(parseError(wrap("    %a = Relu(%b)\n    %b = Relu(%x)\n    return %a\n")),
            "<text>:3:15: undefined value %b (values are defined before their uses)");
  EXPECT_EQ(parseError(wrap("    %x = Relu(%x)\n")), "<text>:3:5: redefinition of %x");
  EXPECT_EQ(parseError(wrap("    doc %q \"d\"\n")), "<text>:3:9: undefined value %q in this graph");
  // A subgraph sees its parents' values, but its own values stay inside it.
  EXPECT_EQ(parseError(wrap("    %r = If(%c) {then_branch = graph t() {%i = Relu(%x) return %i}}\n"
                            "    %u = Relu(%i)\n",
                            "%x: f32[2], %c: bool[]")),
            "<text>:4:15: undefined value %i (values are defined before their uses)");
}

TEST(IrTextErrors, SyntaxErrorsNameWhatWasExpected) {
  EXPECT_EQ(parseError("graph", "foo.ir"), "foo.ir:1:1: expected 'model', got 'graph'");
  EXPECT_EQ(parseError("model foo=1 {"),
            "<text>:1:7: expected a model field (ir_version, opsets, producer, producer_version, "
            "domain, model_version, doc) or '{', got 'foo'");
  EXPECT_EQ(parseError("model {\n}\n"),
            "<text>:2:1: expected 'graph', 'metadata', 'function' or 'training_info', got '}'");
  EXPECT_EQ(parseError(wrap("    %y: f33[2] = Relu(%x)\n")),
            "<text>:3:9: expected a type, got 'f33'");
  EXPECT_EQ(parseError(wrap("", "%x")), "<text>:2:16: expected ':', got ')'");
  EXPECT_EQ(parseError(wrap("    %y = Relu(%x) {k = ints[1, 1.5]}\n")),
            "<text>:3:32: expected an integer, got '1.5'");
  EXPECT_EQ(parseError(wrap("    %y = Relu(%x) {k = 1, k = 2}\n")),
            "<text>:3:27: duplicate attribute 'k'");
  EXPECT_EQ(parseError(wrap("    %y = Relu(%x) {k = oops}\n")),
            "<text>:3:24: expected an attribute value, got 'oops'");
  EXPECT_EQ(parseError(wrap("    %y = Relu(%x) #\n")), "<text>:3:19: unexpected character \"#\"");
  EXPECT_EQ(parseError(wrap("    %y = Relu(%x) {name = \"abc\n")),
            "<text>:3:27: unterminated string");
  EXPECT_EQ(parseError(wrap("    %y = Relu(%x) {name = \"a\\q\"}\n")),
            "<text>:3:27: invalid escape in string (expected \\n \\t \\r \\\" \\\\ or \\xHH)");
  EXPECT_EQ(parseError(wrap("    return %x\n    %y = Relu(%x)\n")),
            "<text>:4:5: expected '}', got '%y'");
  EXPECT_EQ(parseError(wrap("") + "extra"), "<text>:5:1: expected end of input, got 'extra'");
}

TEST(IrTextErrors, ConstantBodiesAreChecked) {
  EXPECT_EQ(parseError(wrap("    %w = const f32[2,2] [1.0, 2.0, 3.0]\n")),
            "<text>:3:25: constant %w: expected 4 values, got 3");
  EXPECT_EQ(parseError(wrap("    %w = const f16[3] hex\"0000\"\n")),
            "<text>:3:23: constant %w: expected 6 bytes of f16 data, got 2");
  EXPECT_EQ(parseError(wrap("    %w = const i8[1] [300]\n")),
            "<text>:3:23: expected i8 value #0, got '300'");
  EXPECT_EQ(parseError(wrap("    %w = const f16[1] [1.0]\n")),
            "<text>:3:24: expected hex\"...\" data (f16 has no value-list form), got '1.0'");
  EXPECT_EQ(parseError(wrap("    %w = const f32[n] [1.0]\n")),
            "<text>:3:16: constant %w: expected a tensor type with a static shape, got 'f32[n]'");
  EXPECT_EQ(parseError(wrap("    %w = default f32[1] [1.0]\n")),
            "<text>:3:5: default %w must name an input of this graph that has no default yet");
  EXPECT_EQ(parseError(wrap("    %w = const f32[1] hex\"zz\"\n")),
            "<text>:3:26: expected a string of hex digit pairs, got '\"zz\"'");
}

TEST(IrTextErrors, ParseTypeAcceptsWhatToStringPrints) {
  Type quantUnranked = Type::tensor(DType::F32);
  quantUnranked.quant = QuantEncoding{DType::I4, 3, -1, 0, true};
  Type sparse = Type::tensorOf(DType::F16, {3, 3});
  sparse.kind = Type::Kind::SparseTensor;
  Type seqOfOpt;
  seqOfOpt.kind = Type::Kind::Sequence;
  seqOfOpt.inner = std::make_shared<Type>();
  seqOfOpt.inner->kind = Type::Kind::Optional;
  seqOfOpt.inner->inner = std::make_shared<Type>(Type::tensorOf(DType::I64, {}));
  Type map;
  map.kind = Type::Kind::Map;
  map.key = DType::String;
  map.inner = std::make_shared<Type>(seqOfOpt);
  const Type types[] = {
      Type::unknown(),
      Type::tensor(DType::F32),
      Type::tensorOf(DType::I4, {64, 64}),
      Type::tensor(DType::BF16, Dims{Dim::sym("batch"), Dim::unknown(), Dim::of(0)}),
      Type::tensor(DType::F32,
                   Dims{Dim::sym("past + 1"), Dim::sym(""), Dim::sym("?"), Dim::sym("7")}),
      quantUnranked, sparse, seqOfOpt, map};
  for (const Type &t : types) {
    auto parsed = parseType(toString(t));
    ASSERT_TRUE(parsed.hasValue()) << toString(t) << ": " << parsed.status().message();
    EXPECT_TRUE(*parsed == t) << toString(t) << " read back as " << toString(*parsed);
  }
  EXPECT_EQ(toString(types[4]), "f32[\"past + 1\",\"\",\"?\",\"7\"]");
  EXPECT_EQ(parseType("f32[2").status().message(), "<type>:1:6: expected ']', got 'end of input'");
  EXPECT_EQ(parseType("f32[2] q<i4,bits=4>").status().message(),
            "<type>:1:19: expected ',', got '>'");
}

TEST(IrTextSyntax, FloatsRoundTripBitExactly) {
  EXPECT_EQ(text::formatFloat(1.0f), "1.0");
  EXPECT_EQ(text::formatFloat(-0.0f), "-0.0");
  EXPECT_EQ(text::formatFloat(0.1f), "0.1");
  EXPECT_EQ(text::formatFloat(1e20f), "1e+20");
  EXPECT_EQ(text::formatFloat(std::nanf("")), "nan");
  EXPECT_EQ(text::formatFloat(-std::numeric_limits<float>::infinity()), "-inf");
  EXPECT_EQ(text::formatFloat(std::bit_cast<float>(0x7f800001u)), "nan(0x7f800001)");
  EXPECT_EQ(text::formatDouble(0.1), "0.1");
  std::mt19937_64 rng(42);
  for (int i = 0; i < 200000; ++i) {
    const uint64_t bits = rng();
    const float f = std::bit_cast<float>(static_cast<uint32_t>(bits));
    const std::string s = text::formatFloat(f);
    ASSERT_TRUE(text::looksLikeFloat(s)) << s;
    auto back = text::parseFloat(s);
    ASSERT_TRUE(back) << s;
    ASSERT_EQ(std::bit_cast<uint32_t>(*back), static_cast<uint32_t>(bits)) << s;
    const double d = std::bit_cast<double>(bits);
    const std::string sd = text::formatDouble(d);
    auto backD = text::parseDouble(sd);
    ASSERT_TRUE(backD && text::looksLikeFloat(sd)) << sd;
    ASSERT_EQ(std::bit_cast<uint64_t>(*backD), bits) << sd;
  }
  EXPECT_FALSE(text::parseFloat("1e99"));  // out of f32 range
  EXPECT_FALSE(text::parseFloat("infinity"));
  EXPECT_FALSE(text::parseFloat("nan(0x3f800000)")); // bits of 1.0, not a NaN
}

TEST(IrTextSyntax, EveryByteSurvivesQuoting) {
  std::string all;
  for (int c = 0; c < 256; ++c)
    all += static_cast<char>(c);
  Model m;
  m.doc = all;
  m.metadata = {{all, all}};
  Graph &g = m.graph();
  Node *n = g.addNode("", "Custom", {}, 1, all);
  n->setAttr(Attribute::makeString(all, all));
  n->output()->setName(all);
  g.addOutput(n->output());
  const std::string text = printModel(m);
  for (char c : text) // the text itself is printable ASCII plus newlines
    ASSERT_TRUE(c == '\n' || (c >= 0x20 && c < 0x7f)) << int(c);
  auto parsed = parseModel(text);
  ASSERT_TRUE(parsed.hasValue()) << parsed.status().message();
  test::expectSameModel(m, **parsed);
  EXPECT_EQ(printModel(**parsed), text);
}

TEST(IrTextSyntax, NamingCornersRoundTrip) {
  Model m;
  Graph &g = m.graph();
  const std::string names[] = {"",       "$0",  "$1", "0",  "-1",  "a b", "a%b", "a:b",
                               "ends:", "::", "x/y.z-w_1", "\xce\xbb", "\"", "name"};
  Value *prev = g.addInput("in", Type::tensorOf(DType::F32, {1}));
  for (const std::string &name : names) {
    Node *n = g.addNode(OpKind::Identity, {prev});
    n->output()->setName(name);
    prev = n->output();
  }
  g.addInput("", Type::tensorOf(DType::F32, {1})); // an anonymous input, too
  g.addConstant("", Tensor::fromVector<float>(DType::F32, {1}, {1.0f}));
  g.addOutput(prev);
  const std::string text = printModel(m);
  // The anonymous input and constant print first, so the first node result is %$2.
  EXPECT_NE(text.find("%$2 = Identity(%in)"), std::string::npos) << text;
  EXPECT_NE(text.find("%\"$0\" = Identity(%$2)"), std::string::npos) << text;
  EXPECT_NE(text.find("%\"ends:\" = Identity(%a:b)"), std::string::npos) << text;
  auto parsed = parseModel(text);
  ASSERT_TRUE(parsed.hasValue()) << parsed.status().message();
  EXPECT_TRUE(verify(**parsed).isOk());
  test::expectSameModel(m, **parsed);
  EXPECT_EQ(printModel(**parsed), text);
}

TEST(IrTextSyntax, ThresholdPicksValuesHexOrElision) {
  Model m;
  Graph &g = m.graph();
  g.addOutput(g.addConstant("w", Tensor::fromVector<float>(DType::F32, {3}, {1, 2, 3})));
  PrintOptions small;
  small.elideThreshold = 2;
  small.elideLargeConstants = false;
  EXPECT_NE(printModel(m, small).find("%w = const f32[3] hex\"0000803f0000004000004040\""),
            std::string::npos);
  small.elideLargeConstants = true;
  EXPECT_NE(printModel(m, small).find("%w = const f32[3] elided<hash="), std::string::npos);
  EXPECT_NE(printModel(m).find("%w = const f32[3] [1.0, 2.0, 3.0]"), std::string::npos);
}

} // namespace
} // namespace llmopt

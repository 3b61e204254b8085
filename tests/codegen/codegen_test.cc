// --emit=cpp without compiling the output: the memory planner's invariants and the
// fusion decisions model.cpp records (the generated code's numbers are checked against
// the interpreter in tests/python/test_codegen.py).
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "backend/cpp/CppEmitter.h"
#include "backend/cpp/MemoryPlan.h"
#include "ir/Parser.h"

namespace llmopt::codegen {
namespace {
namespace fs = std::filesystem;

bool overlaps(const PlannedBuffer &a, const PlannedBuffer &b) {
  const bool live = a.def <= b.lastUse && b.def <= a.lastUse;
  return live && a.offset < b.offset + b.width && b.offset < a.offset + a.width;
}

TEST(MemoryPlan, DisjointLifetimesShareMemory) {
  std::vector<PlannedBuffer> b = {{64, 0, 1}, {64, 2, 3}, {32, 1, 2}};
  EXPECT_EQ(planMemory(b), 96); // buffers 0 and 1 never live together: same offset
  EXPECT_EQ(b[0].offset, b[1].offset);
  EXPECT_FALSE(overlaps(b[0], b[2]));
  EXPECT_FALSE(overlaps(b[1], b[2]));
}

TEST(MemoryPlan, LiveBuffersNeverOverlap) {
  std::mt19937 rng(7);
  for (int round = 0; round < 50; ++round) {
    std::vector<PlannedBuffer> b;
    int64_t sum = 0;
    for (int i = 0; i < 40; ++i) {
      const int def = static_cast<int>(rng() % 60);
      b.push_back({1 + static_cast<int64_t>(rng() % 100), def, def + static_cast<int>(rng() % 10)});
      sum += b.back().width;
    }
    const int64_t arena = planMemory(b);
    EXPECT_LE(arena, sum);
    for (size_t i = 0; i < b.size(); ++i) {
      EXPECT_GE(b[i].offset, 0);
      EXPECT_LE(b[i].offset + b[i].width, arena);
      for (size_t j = i + 1; j < b.size(); ++j)
        EXPECT_FALSE(overlaps(b[i], b[j])) << i << " and " << j;
    }
  }
}

std::string matrix(int k, int n, float base) {
  std::string s;
  for (int i = 0; i < k * n; ++i)
    s += fmt::format("{}{:.3f}", i ? ", " : "", base + 0.01f * static_cast<float>(i % 7));
  return "[" + s + "]";
}

/// Emits `body` (nodes over %ids -> %x = embedding) and returns model.cpp.
std::string emit(const std::string &body, const std::string &ret, std::string *error = nullptr) {
  const std::string text = fmt::format(
      "model ir_version=8 opsets={{\"\": 17}} {{\n  graph g(%ids: i64[batch,seq]) {{\n"
      "    %E = const f32[16,8] {}\n    %W1 = const f32[8,8] {}\n    %W2 = const f32[8,8] {}\n"
      "    %x: f32[batch,seq,8] = Gather(%E, %ids) {{name = \"embed\"}}\n{}    return {}\n  }}\n}}\n",
      matrix(16, 8, 0.f), matrix(8, 8, 0.5f), matrix(8, 8, -0.5f), body, ret);
  auto model = parseModel(text);
  EXPECT_TRUE(model) << (model ? "" : model.status().message());
  const fs::path dir = fs::temp_directory_path() / fmt::format("llmopt-codegen-test-{}", ::getpid());
  fs::remove_all(dir);
  Status st = emitCpp(**model, dir.string());
  if (!st) {
    if (error)
      *error = st.message();
    EXPECT_FALSE(fs::exists(dir));
    return "";
  }
  std::ifstream f(dir / "model.cpp");
  std::stringstream ss;
  ss << f.rdbuf();
  fs::remove_all(dir);
  return ss.str();
}

int count(const std::string &s, const std::string &what) {
  int n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1))
    ++n;
  return n;
}

// MatMul(x, W) + r  =>  GEMM with the residual in its epilogue.
TEST(Fusion, ResidualAddBecomesEpilogue) {
  const std::string cpp = emit("    %y: f32[batch,seq,8] = MatMul(%x, %W1) {name = \"mm\"}\n"
                               "    %z: f32[batch,seq,8] = Add(%y, %x) {name = \"res\"}\n",
                               "%z");
  EXPECT_EQ(count(cpp, "f32 GEMM + residual: mm"), 1) << cpp;
  EXPECT_EQ(count(cpp, "(Add)"), 0) << cpp;
}

// Both operands of the Add are MatMuls: only the second GEMM sees the first one's result
// (the residual must be computed before the GEMM that absorbs it), so one fusion, not two.
TEST(Fusion, ResidualMustDominateTheGemm) {
  const std::string cpp = emit("    %a: f32[batch,seq,8] = MatMul(%x, %W1) {name = \"first\"}\n"
                               "    %b: f32[batch,seq,8] = MatMul(%x, %W2) {name = \"second\"}\n"
                               "    %z: f32[batch,seq,8] = Add(%a, %b) {name = \"sum\"}\n",
                               "%z");
  EXPECT_EQ(count(cpp, "f32 GEMM: first"), 1) << cpp;
  EXPECT_EQ(count(cpp, "f32 GEMM + residual: second"), 1) << cpp;
}

// No change expected: the product has a second reader, so the Add stays an Add.
TEST(Fusion, NoEpilogueWhenTheProductIsReadTwice) {
  const std::string cpp = emit("    %y: f32[batch,seq,8] = MatMul(%x, %W1) {name = \"mm\"}\n"
                               "    %z: f32[batch,seq,8] = Add(%y, %x) {name = \"res\"}\n"
                               "    %w: f32[batch,seq,8] = Add(%z, %y) {name = \"again\"}\n",
                               "%w");
  EXPECT_EQ(count(cpp, "f32 GEMM: mm"), 1) << cpp;
  EXPECT_EQ(count(cpp, "add: res (Add)"), 1) << cpp;
}

// The prologue fusion is for int4 GEMMs only: an RMSNorm feeding an f32 GEMM stays a pass.
TEST(Fusion, RmsNormBeforeAnF32GemmStaysAPass) {
  const std::string cpp = emit("    %g = const f32[8] [1, 1, 1, 1, 1, 1, 1, 1]\n"
                               "    %n: f32[batch,seq,8] = SimplifiedLayerNormalization(%x, %g) "
                               "{name = \"norm\"}\n"
                               "    %y: f32[batch,seq,8] = MatMul(%n, %W1) {name = \"mm\"}\n",
                               "%y");
  EXPECT_EQ(count(cpp, "rms norm: norm"), 1) << cpp;
  EXPECT_EQ(count(cpp, "RMSNorm + "), 0) << cpp;
  EXPECT_EQ(count(cpp, "f32 GEMM: mm"), 1) << cpp;
}

TEST(Errors, UnsupportedOpIsNamed) {
  std::string error;
  emit("    %y: f32[batch,seq,8] = Relu(%x) {name = \"act\"}\n", "%y", &error);
  EXPECT_NE(error.find("node 'act' (Relu): not supported"), std::string::npos) << error;
}

} // namespace
} // namespace llmopt::codegen

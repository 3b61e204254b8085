// ONNX import -> export round trips over every model in Debian's libonnx-testdata:
// each exported model passes onnx::checker and re-imports to identical IR text.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include "backend/onnx/OnnxExporter.h"
#include "frontend/OnnxImporter.h"
#include "ir/Printer.h"
#include "tests/support/TempPath.h"

namespace fs = std::filesystem;
using namespace llmopt;

namespace {

const char *kTestData = "/usr/share/libonnx-testdata/data";

std::vector<fs::path> allModels() {
  std::vector<fs::path> out;
  for (const char *sub : {"node", "pytorch-converted", "pytorch-operator", "simple"})
    for (const auto &e : fs::recursive_directory_iterator(fs::path(kTestData) / sub))
      if (e.path().filename() == "model.onnx")
        out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::string fullText(const Model &m) {
  PrintOptions po;
  po.elideLargeConstants = false;
  return printModel(m, po);
}

} // namespace

TEST(OnnxRoundTrip, EveryTestdataModelPassesCheckerAndReimportsIdentically) {
  auto models = allModels();
  ASSERT_GT(models.size(), 1000u) << "libonnx-testdata looks incomplete";
  size_t passed = 0;
  std::vector<std::string> failures;
  for (const auto &path : models) {
    auto m = importOnnxFile(path.string());
    if (!m) {
      failures.push_back(path.string() + ": import: " + m.status().message());
      continue;
    }
    auto proto = exportOnnx(**m);
    if (!proto) {
      failures.push_back(path.string() + ": export: " + proto.status().message());
      continue;
    }
    try {
      onnx::checker::check_model(*proto);
    } catch (const std::exception &e) {
      failures.push_back(path.string() + ": checker: " + e.what());
      continue;
    }
    auto again = importOnnx(*proto, path.parent_path().string(), path.string() + " (re-import)");
    if (!again) {
      failures.push_back(path.string() + ": re-import: " + again.status().message());
      continue;
    }
    if (fullText(**m) != fullText(**again)) {
      failures.push_back(path.string() + ": IR differs after the round trip");
      continue;
    }
    ++passed;
  }
  std::cout << "onnx round trip: " << passed << "/" << models.size() << " models\n";
  for (const auto &f : failures)
    std::cout << "  FAIL " << f << "\n";
  EXPECT_EQ(passed, models.size());
}

TEST(OnnxRoundTrip, ExternalDataIsWrittenAndMappedBack) {
  auto m = importOnnxFile(std::string(kTestData) + "/node/test_matmul_2d/model.onnx");
  ASSERT_TRUE(m) << m.status().message();
  // Give the model a big constant so it lands in the external file.
  Graph &g = (*m)->graph();
  std::vector<float> data(4096);
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<float>(i) * 0.5f;
  Value *c = g.addConstant("big_weight", Tensor::fromVector(DType::F32, {64, 64}, data));
  g.addOutput(c);
  fs::path dir = fs::path(test::tempPath("ext_test"));
  fs::remove_all(dir);
  fs::create_directories(dir);
  ExportOptions eo;
  eo.externalData = true;
  ASSERT_TRUE(saveOnnx(**m, (dir / "m.onnx").string(), eo).isOk());
  ASSERT_TRUE(fs::exists(dir / "m.onnx.data"));
  EXPECT_GE(fs::file_size(dir / "m.onnx.data"), data.size() * sizeof(float));
  auto back = importOnnxFile((dir / "m.onnx").string());
  ASSERT_TRUE(back) << back.status().message();
  Value *b = (*back)->graph().findValue("big_weight");
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(b->constant()->isMapped());
  EXPECT_EQ(b->constant()->toFloats(), data);
  // No temporary files are left behind.
  size_t files = 0;
  for (const auto &e : fs::directory_iterator(dir))
    files += e.is_regular_file();
  EXPECT_EQ(files, 2u);
  fs::remove_all(dir);
}

TEST(OnnxImport, RefusesExternalDataOutsideTheModelDirectory) {
  onnx::ModelProto p;
  p.set_ir_version(8);
  p.add_opset_import()->set_version(17);
  auto *g = p.mutable_graph();
  g->set_name("g");
  auto *t = g->add_initializer();
  t->set_name("w");
  t->set_data_type(onnx::TensorProto::FLOAT);
  t->add_dims(4);
  t->set_data_location(onnx::TensorProto::EXTERNAL);
  auto *loc = t->add_external_data();
  loc->set_key("location");
  for (const char *bad : {"../../etc/passwd", "/etc/passwd", "a/../../x"}) {
    loc->set_value(bad);
    auto m = importOnnx(p, fs::temp_directory_path().string(), "evil.onnx");
    ASSERT_FALSE(m) << bad;
    EXPECT_NE(m.status().message().find("w"), std::string::npos);
    EXPECT_NE(m.status().message().find("directory"), std::string::npos) << m.status().message();
  }
}

TEST(OnnxImport, TruncatedAndGarbageFilesGiveClearErrors) {
  fs::path dir = fs::path(test::tempPath("bad_test"));
  fs::create_directories(dir);
  std::ifstream in(std::string(kTestData) + "/node/test_matmul_2d/model.onnx", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  ASSERT_GT(bytes.size(), 20u);
  std::ofstream(dir / "trunc.onnx", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  std::ofstream(dir / "garbage.onnx", std::ios::binary) << "this is not a protobuf \xff\xff\xff";
  for (const char *f : {"trunc.onnx", "garbage.onnx"}) {
    auto m = importOnnxFile((dir / f).string());
    ASSERT_FALSE(m) << f;
    EXPECT_NE(m.status().message().find(f), std::string::npos) << m.status().message();
  }
  auto missing = importOnnxFile((dir / "nope.onnx").string());
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.status().message().find("no such file"), std::string::npos);
  fs::remove_all(dir);
}

TEST(OnnxRoundTrip, ContribDomainsAndValueInfoSurvive) {
  // ONNX text syntax through libonnx's parser: a com.microsoft op, value_info, metadata.
  const char *text = R"(
    <ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1], producer_name: "t">
    agraph (float[N, 8] x) => (float[N, 8] z) <float[N, 8] y> {
      y = com.microsoft.FastGelu(x)
      z = Relu(y)
    }
  )";
  auto m = importOnnxText(text);
  ASSERT_TRUE(m) << m.status().message();
  EXPECT_EQ((*m)->opsetVersion("com.microsoft"), 1);
  Node *gelu = (*m)->graph().nodeList()[0];
  EXPECT_EQ(gelu->kind(), OpKind::FastGelu);
  EXPECT_EQ(gelu->opsetVersion(), 1);
  Value *y = (*m)->graph().findValue("y");
  ASSERT_NE(y, nullptr);
  EXPECT_TRUE(y->hadValueInfo);
  auto proto = exportOnnx(**m);
  ASSERT_TRUE(proto);
  ASSERT_EQ(proto->graph().value_info_size(), 1);
  EXPECT_EQ(proto->graph().value_info(0).name(), "y");
  EXPECT_EQ(proto->graph().node(0).domain(), "com.microsoft");
  bool hasMs = false;
  for (const auto &op : proto->opset_import())
    hasMs |= op.domain() == "com.microsoft" && op.version() == 1;
  EXPECT_TRUE(hasMs);
  EXPECT_NO_THROW(onnx::checker::check_model(*proto));
}

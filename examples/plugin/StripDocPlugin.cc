// An out-of-tree pass as a plugin: `strip-doc` removes doc strings from the model.
// Build it as a shared library linked against llmopt_passes, then:
//   llmopt in.onnx --load-pass-plugin=libllmopt_strip_doc.so -passes=strip-doc -o out.onnx
#include "passes/PassRegistry.h"

namespace {

using namespace llmopt;

struct StripDocOptions {
  bool keepModelDoc = false;
};

/// Clears doc_string on nodes, values and graphs (and the model unless keep-model-doc).
class StripDocPass : public Pass {
public:
  explicit StripDocPass(StripDocOptions o) : opts_(o) {}
  std::string_view name() const override { return "strip-doc"; }

  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override {
    size_t cleared = strip(m.graph());
    if (!opts_.keepModelDoc && !m.doc.empty()) {
      m.doc.clear();
      ++cleared;
    }
    am.context().reportLines.push_back(fmt::format("strip-doc: cleared {} doc strings", cleared));
    // Doc strings feed no analysis: everything stays valid.
    return PreservedAnalyses::all();
  }

private:
  static size_t clear(std::string &s) {
    size_t had = s.empty() ? 0 : 1;
    s.clear();
    return had;
  }
  static size_t strip(Graph &g) {
    size_t n = clear(g.doc);
    for (Value *v : g.values())
      n += clear(v->doc);
    for (Node *node : g.nodeList()) {
      n += clear(node->doc);
      for (Graph *sg : node->subgraphs())
        n += strip(*sg);
    }
    return n;
  }
  StripDocOptions opts_;
};

Expected<std::unique_ptr<Pass>> create(const PassOptionList &opts) {
  OptionReader r("strip-doc", opts);
  StripDocOptions o;
  LLMOPT_ASSIGN_OR_RETURN(o.keepModelDoc, r.getFlag("keep-model-doc", false));
  LLMOPT_RETURN_IF_ERROR(r.finish());
  return std::unique_ptr<Pass>(std::make_unique<StripDocPass>(o));
}

} // namespace

extern "C" int llmoptPluginApiVersion() { return llmopt::kPluginApiVersion; }

extern "C" void llmoptRegisterPasses(llmopt::PassRegistry &r) {
  (void)r.add({"strip-doc", "keep-model-doc", "remove doc strings (example plugin)", &create});
}

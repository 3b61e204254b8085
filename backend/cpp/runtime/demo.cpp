// llmopt_model_demo: runs an emitted model from the command line (tests, benchmarks, and an
// example of the C API in model.h).
//   llmopt_model_demo weights.bin --ids 1,2,3 [--mode full|decode] [--prefill K]
//                     [--out logits.f32] [--generate N] [--bench-steps N] [--threads T]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "model.h"

namespace {
int fail(const char *what) {
  std::fprintf(stderr, "llmopt_model_demo: %s: %s\n", what, llmopt_last_error());
  return 1;
}
std::vector<int64_t> parseIds(const char *s) {
  std::vector<int64_t> ids;
  for (const char *p = s; *p;) {
    char *end = nullptr;
    ids.push_back(std::strtoll(p, &end, 10));
    p = *end == ',' ? end + 1 : end;
    if (end == p && *p)
      break;
  }
  return ids;
}
int64_t argmax(const float *x, int64_t n) { return std::max_element(x, x + n) - x; }
} // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s weights.bin --ids 1,2,3 [--mode full|decode] [--prefill K] "
                         "[--out FILE] [--generate N] [--bench-steps N] [--threads T]\n", argv[0]);
    return 2;
  }
  std::string mode = "full", out;
  std::vector<int64_t> ids;
  long prefill = -1, generate = 0, benchSteps = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string f = argv[i];
    if (f == "--ids") ids = parseIds(argv[i + 1]);
    else if (f == "--mode") mode = argv[i + 1];
    else if (f == "--prefill") prefill = std::atol(argv[i + 1]);
    else if (f == "--out") out = argv[i + 1];
    else if (f == "--generate") generate = std::atol(argv[i + 1]);
    else if (f == "--bench-steps") benchSteps = std::atol(argv[i + 1]);
    else if (f == "--threads") llmopt_set_num_threads(std::atoi(argv[i + 1]));
    else { std::fprintf(stderr, "unknown flag %s\n", f.c_str()); return 2; }
  }
  if (ids.empty()) { std::fprintf(stderr, "--ids is required\n"); return 2; }
  llmopt_model *m = llmopt_model_load(argv[1]);
  if (!m) return fail("load");
  const int64_t vocab = llmopt_model_output_cols(m, 0), n = static_cast<int64_t>(ids.size());
  std::vector<float> logits(static_cast<size_t>(n * vocab));
  if (mode == "full" && generate == 0 && benchSteps == 0) {
    llmopt_tensor in{LLMOPT_I64, 2, {1, n}, ids.data()};
    std::vector<std::vector<float>> extra;
    std::vector<llmopt_tensor> outs;
    for (size_t o = 0; o < llmopt_model_num_outputs(m); ++o) {
      const int64_t cols = llmopt_model_output_cols(m, o);
      float *data = logits.data();
      if (o > 0) { extra.emplace_back(static_cast<size_t>(n * cols)); data = extra.back().data(); }
      outs.push_back({LLMOPT_F32, 3, {1, n, cols}, data});
    }
    if (llmopt_model_run(m, &in, 1, outs.data(), outs.size()) != 0) return fail("run");
  } else {
    const int64_t cap = n + std::max(generate, benchSteps);
    llmopt_state *s = llmopt_state_new(m, static_cast<size_t>(cap));
    if (!s) return fail("state");
    const int64_t k = prefill < 0 ? n : std::min<int64_t>(prefill, n);
    if (k > 0 && llmopt_decode(s, ids.data(), static_cast<size_t>(k), logits.data()) != 0) return fail("prefill");
    for (int64_t i = k; i < n; ++i)
      if (llmopt_decode(s, &ids[static_cast<size_t>(i)], 1, logits.data() + i * vocab) != 0) return fail("decode");
    int64_t next = argmax(logits.data() + (n - 1) * vocab, vocab);
    std::vector<float> row(static_cast<size_t>(vocab));
    if (generate > 0) {
      std::printf("%lld", static_cast<long long>(next));
      for (long g = 1; g < generate; ++g) {
        if (llmopt_decode_last(s, &next, 1, row.data()) != 0) return fail("generate");
        next = argmax(row.data(), vocab);
        std::printf(" %lld", static_cast<long long>(next));
      }
      std::printf("\n");
    }
    if (benchSteps > 0) {
      std::vector<double> ms;
      for (long b = 0; b < benchSteps; ++b) {
        auto t0 = std::chrono::steady_clock::now();
        if (llmopt_decode_last(s, &next, 1, row.data()) != 0) return fail("bench");
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        next = argmax(row.data(), vocab);
      }
      std::sort(ms.begin(), ms.end());
      std::printf("decode_step_ms median %.3f min %.3f (context %lld, %ld steps)\n", ms[ms.size() / 2], ms[0],
                  static_cast<long long>(n), benchSteps);
    }
    llmopt_state_free(s);
  }
  if (!out.empty()) {
    FILE *f = std::fopen(out.c_str(), "wb");
    if (!f || std::fwrite(logits.data(), sizeof(float), logits.size(), f) != logits.size()) return 1;
    std::fclose(f);
  }
  llmopt_model_free(m);
  return 0;
}

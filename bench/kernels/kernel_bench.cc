// llmopt CPU kernel benchmark: GEMV/GEMM timings (int4, fp16, bf16, 2:4 sparse f32 / int4)
// on weights that stay in cache or rotate through more copies than the caches hold, and the
// machine's streaming read bandwidth. One JSON object per line; bench/kernel_vs_ort.py runs
// it beside ONNX Runtime.
//   llmopt_kernel_bench --bandwidth-mib 2048
//   llmopt_kernel_bench --k 4096 --n 4096 --block 32 --ms 1,32,128 --computes int8,f32
//   llmopt_kernel_bench --format fp16 --ms 1,32   (fp16, bf16, sparse-f32, sparse-int4)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/cpu/kernels/Kernels.h"

using namespace llmopt::cpu;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  int64_t k = 4096, n = 4096;
  int block = 32;
  bool asym = false;
  std::string format = "int4";
  std::vector<int64_t> ms{1};
  std::vector<std::string> computes{"int8", "f32"};
  std::vector<std::string> cases{"cache", "dram"};
  double dramMib = 1200, minTime = 0.4;
  int threads = 0;
  std::string isa;
  int64_t bandwidthMib = 0;
};

std::vector<std::string> splitList(const char *s) {
  std::vector<std::string> out;
  std::string cur;
  for (const char *p = s;; ++p) {
    if (*p == ',' || !*p) {
      if (!cur.empty())
        out.push_back(cur);
      cur.clear();
      if (!*p)
        break;
    } else {
      cur += *p;
    }
  }
  return out;
}

[[noreturn]] void usage(const char *why) {
  std::fprintf(stderr,
               "llmopt_kernel_bench: %s\nusage: llmopt_kernel_bench [--k K] [--n N] [--block B] "
               "[--asym] [--format int4|fp16|bf16|sparse-f32|sparse-int4] [--ms 1,32] "
               "[--computes int8,f32] [--cases cache,dram] [--dram-mib MiB] "
               "[--min-time S] [--threads T] [--isa scalar|avx2|avx512] | --bandwidth-mib MiB\n",
               why);
  std::exit(1);
}

Options parse(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char * {
      if (i + 1 >= argc)
        usage(("missing value after " + arg).c_str());
      return argv[++i];
    };
    if (arg == "--k") o.k = std::atoll(value());
    else if (arg == "--n") o.n = std::atoll(value());
    else if (arg == "--block") o.block = std::atoi(value());
    else if (arg == "--asym") o.asym = true;
    else if (arg == "--format") o.format = value();
    else if (arg == "--ms") {
      o.ms.clear();
      for (const std::string &m : splitList(value()))
        o.ms.push_back(std::atoll(m.c_str()));
    } else if (arg == "--computes") o.computes = splitList(value());
    else if (arg == "--cases") o.cases = splitList(value());
    else if (arg == "--dram-mib") o.dramMib = std::atof(value());
    else if (arg == "--min-time") o.minTime = std::atof(value());
    else if (arg == "--threads") o.threads = std::atoi(value());
    else if (arg == "--isa") o.isa = value();
    else if (arg == "--bandwidth-mib") o.bandwidthMib = std::atoll(value());
    else usage(("unknown option " + arg).c_str());
  }
  return o;
}

// Streaming read bandwidth: every thread sums its contiguous share of a buffer of 64-bit
// words (eight independent sums, so the loads, not the adds, set the pace), prefetching
// 0, 4, 16 or 64 KiB ahead; the best of 3 runs at each distance (without prefetching one
// core reads markedly less on some machines, and the GEMV kernels do prefetch).
double readBandwidth(int64_t mib, int threads) {
  const size_t words = static_cast<size_t>(mib) << 17;
  std::vector<uint64_t> buf(words);
  for (size_t i = 0; i < words; ++i)
    buf[i] = i;
  double best = 0;
  size_t bestAhead = 0;
  std::vector<uint64_t> sums(threads);
  for (size_t ahead : {0, 4096, 16384, 65536})
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = Clock::now();
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
          const size_t b = words * t / threads, e = words * (t + 1) / threads;
          uint64_t s[8] = {};
          size_t i = b;
          for (; i + 8 <= e; i += 8) {
            if (ahead)
              __builtin_prefetch(&buf[i] + ahead / 8);
            for (int j = 0; j < 8; ++j)
              s[j] += buf[i + j];
          }
          for (; i < e; ++i)
            s[0] += buf[i];
          sums[t] = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
        });
      for (std::thread &t : pool)
        t.join();
      const double gbps =
          words * 8.0 / std::chrono::duration<double>(Clock::now() - t0).count() / 1e9;
      if (gbps > best)
        best = gbps, bestAhead = ahead;
    }
  uint64_t total = 0;
  for (uint64_t s : sums)
    total += s;
  std::printf("{\"bandwidth_gbps\": %.3f, \"mib\": %lld, \"threads\": %d, \"prefetch_bytes\": %zu, "
              "\"check\": %llu}\n",
              best, static_cast<long long>(mib), threads, bestAhead,
              static_cast<unsigned long long>(total % 1000));
  return best;
}

// Mean microseconds per call: calls rotate through the copies; best of 7 timed runs of
// about minTime/7 seconds each (at least one call; for the DRAM case at M=1, at least a
// whole rotation). Best-of favours quiet moments on a shared machine.
// gemm(data, a, m, c, compute) runs one call on the weight bytes at `data`.
using GemmFn = std::function<void(const uint8_t *, const float *, int64_t, float *, Compute)>;

double timeCalls(const std::vector<const uint8_t *> &copies, const GemmFn &gemm,
                 const std::vector<float> &a, int64_t m, std::vector<float> &c, Compute compute,
                 double minTime) {
  size_t next = 0;
  auto call = [&] {
    gemm(copies[next], a.data(), m, c.data(), compute);
    next = (next + 1) % copies.size();
  };
  const auto w0 = Clock::now();
  int64_t warm = 0;
  do {
    call();
    ++warm;
  } while (warm < static_cast<int64_t>(copies.size()) &&
           std::chrono::duration<double>(Clock::now() - w0).count() < minTime);
  const double perCall = std::chrono::duration<double>(Clock::now() - w0).count() / warm;
  int64_t calls = std::max<int64_t>(1, static_cast<int64_t>(minTime / 7 / perCall));
  if (m == 1)
    calls = std::max<int64_t>(calls, static_cast<int64_t>(copies.size()));
  double best = 1e30;
  for (int rep = 0; rep < 7; ++rep) {
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < calls; ++i)
      call();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count() / calls);
  }
  return best * 1e6;
}

} // namespace

int main(int argc, char **argv) {
  const Options o = parse(argc, argv);
  if (o.threads > 0)
    setNumThreads(o.threads);
  if (o.bandwidthMib > 0) {
    readBandwidth(o.bandwidthMib, numThreads());
    return 0;
  }
  if (o.isa == "scalar") forceIsa(Isa::Scalar);
  else if (o.isa == "avx2") forceIsa(Isa::Avx2);
  else if (o.isa == "avx512") forceIsa(Isa::Avx512);
  else if (!o.isa.empty()) usage("--isa takes scalar, avx2 or avx512");

  // The weight, packed once; copies are byte copies of it.
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> ua(-1.f, 1.f);
  size_t bytes = 0;
  const uint8_t *source = nullptr;
  GemmFn gemm;
  Int4Buffer int4;
  HalfBuffer half;
  Sparse24Buffer sparse;
  if (o.format == "int4") {
    // Random MatMulNBits arrays.
    const int64_t blocks = (o.k + o.block - 1) / o.block;
    std::vector<uint8_t> b(o.n * blocks * o.block / 2), zp(o.n * ((blocks + 1) / 2));
    for (uint8_t &x : b)
      x = static_cast<uint8_t>(rng());
    for (uint8_t &x : zp)
      x = static_cast<uint8_t>(rng());
    std::vector<float> scales(o.n * blocks);
    std::uniform_real_distribution<float> u(0.001f, 0.02f);
    for (float &s : scales)
      s = u(rng);
    int4 = packInt4FromMatMulNBits(b.data(), scales.data(), o.asym ? zp.data() : nullptr, o.k,
                                   o.n, o.block);
    bytes = int4.layout.bytes(), source = int4.storage.get();
    gemm = [l = int4.layout](const uint8_t *d, const float *a, int64_t m, float *c, Compute cm) {
      int4Gemm(a, m, l.k, Int4Weights{l, d}, c, l.n, cm);
    };
  } else {
    std::vector<float> w(o.k * o.n);
    for (float &x : w)
      x = ua(rng);
    if (o.format == "fp16" || o.format == "bf16") {
      half = packHalf(w.data(), o.k, o.n, o.format == "fp16" ? HalfType::Fp16 : HalfType::Bf16);
      bytes = half.layout.bytes(), source = half.storage.get();
      gemm = [l = half.layout](const uint8_t *d, const float *a, int64_t m, float *c, Compute) {
        halfGemm(a, m, l.k, HalfWeights{l, d}, c, l.n);
      };
    } else if (o.format == "sparse-f32" || o.format == "sparse-int4") {
      // Two of every four K kept, at random positions.
      for (int64_t g = 0; g < o.k; g += 4)
        for (int64_t col = 0; col < o.n; ++col) {
          const int drop0 = static_cast<int>(rng() % 4), drop1 = (drop0 + 1 + rng() % 3) % 4;
          for (int drop : {drop0, drop1})
            if (g + drop < o.k)
              w[(g + drop) * o.n + col] = 0.f;
        }
      sparse = o.format == "sparse-f32" ? packSparse24F32(w.data(), o.k, o.n)
                                        : packSparse24Int4(w.data(), o.k, o.n, o.block);
      bytes = sparse.layout.bytes(), source = sparse.storage.get();
      gemm = [l = sparse.layout](const uint8_t *d, const float *a, int64_t m, float *c, Compute) {
        sparse24Gemm(a, m, l.k, Sparse24Weights{l, d}, c, l.n);
      };
    } else {
      usage("--format takes int4, fp16, bf16, sparse-f32 or sparse-int4");
    }
  }
  // The 16-bit and sparse kernels compute in f32 only.
  std::vector<std::string> computes = o.computes;
  if (o.format != "int4")
    computes = {"f32"};

  for (const std::string &kase : o.cases) {
    const size_t count =
        kase == "dram" ? static_cast<size_t>(o.dramMib * 1048576.0 / bytes) + 1 : 1;
    std::vector<AlignedBytes> storage;
    std::vector<const uint8_t *> copies;
    for (size_t i = 0; i < count; ++i) {
      storage.push_back(allocateAligned(bytes));
      std::memcpy(storage.back().get(), source, bytes);
      copies.push_back(storage.back().get());
    }
    for (int64_t m : o.ms) {
      std::vector<float> a(m * o.k), c(m * o.n);
      for (float &x : a)
        x = ua(rng);
      for (const std::string &comp : computes) {
        const Compute compute = comp == "f32" ? Compute::F32 : Compute::Int8;
        const double us = timeCalls(copies, gemm, a, m, c, compute, o.minTime);
        std::printf("{\"format\": \"%s\", \"k\": %lld, \"n\": %lld, \"m\": %lld, "
                    "\"block\": %d, \"asym\": %s, "
                    "\"compute\": \"%s\", \"case\": \"%s\", \"copies\": %zu, \"isa\": \"%s\", "
                    "\"threads\": %d, \"weight_bytes\": %zu, \"us\": %.2f, \"gbps\": %.3f}\n",
                    o.format.c_str(), static_cast<long long>(o.k), static_cast<long long>(o.n),
                    static_cast<long long>(m), o.block, o.asym ? "true" : "false", comp.c_str(),
                    kase.c_str(), count, isaName(activeIsa()), numThreads(), bytes, us,
                    bytes / us / 1e3);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

// The interpreter's thread pool (Eigen's) and parallelFor over it.
#include <algorithm>
#include <memory>
#include <thread>

#define EIGEN_USE_THREADS
#include <unsupported/Eigen/CXX11/ThreadPool>

#include "backend/interp/Kernel.h"

namespace llmopt::interp {
namespace {

int hardwareThreads() {
  static const int n = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  return n;
}

Eigen::ThreadPool &pool() {
  // Created on first parallel use; lives until exit.
  static Eigen::ThreadPool *p = new Eigen::ThreadPool(hardwareThreads());
  return *p;
}

thread_local int tlBudget = 0;
thread_local bool tlInParallel = false;

} // namespace

int threadBudget() {
  int hw = hardwareThreads();
  return tlBudget <= 0 ? hw : std::min(tlBudget, hw);
}

ThreadBudgetScope::ThreadBudgetScope(int threads) : saved_(tlBudget) { tlBudget = threads; }
ThreadBudgetScope::~ThreadBudgetScope() { tlBudget = saved_; }

void parallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)> &fn) {
  if (n <= 0)
    return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = std::min<int64_t>(threadBudget(), (n + grain - 1) / grain);
  if (chunks <= 1 || tlInParallel) {
    fn(0, n);
    return;
  }
  const int64_t per = n / chunks, rem = n % chunks;
  auto begin = [&](int64_t c) { return c * per + std::min(c, rem); };
  Eigen::Barrier barrier(static_cast<unsigned>(chunks - 1));
  for (int64_t c = 1; c < chunks; ++c) {
    int64_t b = begin(c), e = begin(c + 1);
    pool().Schedule([&fn, &barrier, b, e] {
      tlInParallel = true; // nested parallelFor inside a worker runs inline
      fn(b, e);
      barrier.Notify();
    });
  }
  tlInParallel = true;
  fn(0, begin(1));
  tlInParallel = false;
  barrier.Wait();
}

} // namespace llmopt::interp

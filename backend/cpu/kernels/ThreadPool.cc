// The kernels' thread pool: persistent workers that spin briefly between calls (a GEMV is
// a few hundred microseconds, too short to pay for thread start-up or a futex wake each
// time) and then sleep. Work is handed out in contiguous chunks from an atomic counter.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "backend/cpu/kernels/KernelsInternal.h"

namespace llmopt::cpu {
namespace {

using RangeFn = void (*)(const void *, int64_t, int64_t);

class Pool {
public:
  explicit Pool(int threads) : threads_(std::max(1, threads)) {
    for (int i = 1; i < threads_; ++i)
      workers_.emplace_back([this, i] { workerLoop(i); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (std::thread &t : workers_)
      t.join();
  }
  int threads() const { return threads_; }

  void run(int64_t count, RangeFn fn, const void *ctx) {
    const int parts = static_cast<int>(std::min<int64_t>(threads_, count));
    if (parts <= 1) {
      fn(ctx, 0, count);
      return;
    }
    std::lock_guard<std::mutex> serial(runMu_);
    fn_ = fn, ctx_ = ctx, count_ = count;
    chunk_ = std::max<int64_t>(1, count / (parts * 8));
    next_.store(0, std::memory_order_relaxed);
    pending_.store(threads_ - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    drain();
    while (pending_.load(std::memory_order_acquire) != 0)
      std::this_thread::yield();
  }

private:
  void workerLoop(int index) {
    uint64_t seen = 0;
    for (;;) {
      uint64_t g = waitForWork(seen);
      if (stop_)
        return;
      seen = g;
      drain();
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
  // Takes chunks of about 1/8 of a thread's share until none is left, so a thread the OS
  // descheduled (a busy machine) does not hold the others up. Which thread computes a
  // column never changes its result.
  void drain() {
    for (;;) {
      const int64_t begin = next_.fetch_add(chunk_, std::memory_order_relaxed);
      if (begin >= count_)
        return;
      fn_(ctx_, begin, std::min(count_, begin + chunk_));
    }
  }
  // Spins up to ~200 us for the next call, then sleeps on the condition variable.
  uint64_t waitForWork(uint64_t seen) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
    for (int i = 0;; ++i) {
      const uint64_t g = generation_.load(std::memory_order_acquire);
      if (g != seen)
        return g;
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline)
        break;
    }
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
    return generation_.load(std::memory_order_acquire);
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_, runMu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  RangeFn fn_ = nullptr;
  const void *ctx_ = nullptr;
  int64_t count_ = 0, chunk_ = 1;
  std::atomic<int64_t> next_{0};
};

std::mutex poolMu;
std::unique_ptr<Pool> pool;
int requestedThreads = 0;

Pool &thePool() {
  std::lock_guard<std::mutex> lock(poolMu);
  if (!pool)
    pool = std::make_unique<Pool>(requestedThreads > 0
                                      ? requestedThreads
                                      : static_cast<int>(std::thread::hardware_concurrency()));
  return *pool;
}

} // namespace

void setNumThreads(int n) {
  std::lock_guard<std::mutex> lock(poolMu);
  requestedThreads = n;
  pool.reset();
}

int numThreads() { return thePool().threads(); }

namespace detail {
void parallelRanges(int64_t count, RangeFn fn, const void *ctx) { thePool().run(count, fn, ctx); }
} // namespace detail

} // namespace llmopt::cpu

// The kernels' thread pool: persistent workers that spin briefly between calls (a GEMV is
// a few hundred microseconds, too short to pay for thread start-up or a futex wake each
// time) and then sleep. Work is handed out in contiguous chunks from an atomic counter.
// Calls from several threads at once each run with whoever is free (all chunks are shared).
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

// One call's work: chunks of [0, count) claimed from `next`; the call is over when `done`
// reaches `chunks`. Shared-owned, so a worker that wakes after the call has returned
// still reads live memory (and finds nothing left to claim).
struct Work {
  RangeFn fn;
  const void *ctx;
  int64_t count, chunk, chunks;
  std::atomic<int64_t> next{0}, done{0};
};

class Pool {
public:
  explicit Pool(int threads) : threads_(std::max(1, threads)) {
    for (int i = 1; i < threads_; ++i)
      workers_.emplace_back([this] { workerLoop(); });
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

  // The caller works too, and returns as soon as every chunk is done: it never waits for a
  // worker the OS has not scheduled yet (a busy machine), only for chunks being computed.
  void run(int64_t count, RangeFn fn, const void *ctx) {
    const int parts = static_cast<int>(std::min<int64_t>(threads_, count));
    if (parts <= 1) {
      fn(ctx, 0, count);
      return;
    }
    auto work = std::make_shared<Work>();
    work->fn = fn, work->ctx = ctx, work->count = count;
    work->chunk = std::max<int64_t>(1, count / (parts * 8));
    work->chunks = (count + work->chunk - 1) / work->chunk;
    {
      std::lock_guard<std::mutex> lock(mu_);
      work_ = work;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    drain(*work);
    while (work->done.load(std::memory_order_acquire) < work->chunks)
      std::this_thread::yield();
  }

private:
  void workerLoop() {
    uint64_t seen = 0;
    for (;;) {
      seen = waitForWork(seen);
      std::shared_ptr<Work> work;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_)
          return;
        work = work_;
      }
      if (work)
        drain(*work);
    }
  }
  // Claims chunks of about 1/8 of a thread's share until none is left. Which thread computes
  // a column never changes its result.
  static void drain(Work &w) {
    for (;;) {
      const int64_t begin = w.next.fetch_add(w.chunk, std::memory_order_relaxed);
      if (begin >= w.count)
        return;
      w.fn(w.ctx, begin, std::min(w.count, begin + w.chunk));
      w.done.fetch_add(1, std::memory_order_release);
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
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::shared_ptr<Work> work_; // guarded by mu_
  bool stop_ = false;          // guarded by mu_
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

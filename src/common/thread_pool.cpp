// ThreadPool: workers draining a moodycamel BlockingConcurrentQueue.
#include "rill/thread_pool.hpp"

#include "common/user_code.hpp"

#include <atomic>
#include <thread>
#include <vector>

#if defined(__SANITIZE_THREAD__)
#define RILL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RILL_TSAN 1
#endif
#endif

#ifdef RILL_TSAN
#include <condition_variable>
#include <deque>
#include <mutex>
#else
#include <concurrentqueue/blockingconcurrentqueue.h>
#endif

namespace rill {

namespace {

#ifdef RILL_TSAN
// ThreadSanitizer does not model the standalone fences moodycamel's queue
// relies on and would report races in correct code (g++ even refuses to
// compile them under -fsanitize=thread). The ThreadSanitizer build uses
// this locked queue with the same two calls; every other build, moodycamel.
class TaskQueue {
 public:
  void enqueue(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
  }
  void wait_dequeue(std::function<void()>& task) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !tasks_.empty(); });
    task = std::move(tasks_.front());
    tasks_.pop_front();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
};
#else
using TaskQueue = moodycamel::BlockingConcurrentQueue<std::function<void()>>;
#endif

}  // namespace

struct ThreadPool::Impl {
  TaskQueue queue;
  std::vector<std::thread> workers;
  std::atomic<std::uint64_t> failed{0};
  // Tasks submitted and not yet run: the destructor waits for 0 before its
  // stop markers (the queue is FIFO per producer only, so markers alone
  // could overtake other threads' tasks).
  std::atomic<std::uint64_t> pending{0};

  void work() {
    for (;;) {
      std::function<void()> task;
      queue.wait_dequeue(task);
      if (!task) return;  // the stop marker: one per worker
      if (detail::user_code_threw(task)) failed.fetch_add(1, std::memory_order_relaxed);
      task = nullptr;  // its captures are released before the count says done
      if (pending.fetch_sub(1, std::memory_order_acq_rel) == 1) pending.notify_all();
    }
  }
};

ThreadPool::ThreadPool(std::size_t threads) : impl_(std::make_unique<Impl>()) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  for (std::size_t i = 0; i < threads; ++i) impl_->workers.emplace_back([this] { impl_->work(); });
}

ThreadPool::~ThreadPool() {
  // Every task submitted before destruction (from any thread) runs first.
  for (std::uint64_t n; (n = impl_->pending.load(std::memory_order_acquire)) != 0;) impl_->pending.wait(n);
  for (std::size_t i = 0; i < impl_->workers.size(); ++i) impl_->queue.enqueue(std::function<void()>());
  for (std::thread& t : impl_->workers) t.join();
}

void ThreadPool::submit(std::function<void()> task) {
  if (!task) return;
  impl_->pending.fetch_add(1, std::memory_order_relaxed);
  impl_->queue.enqueue(std::move(task));
}

std::size_t ThreadPool::size() const noexcept { return impl_->workers.size(); }

std::uint64_t ThreadPool::failed_tasks() const noexcept { return impl_->failed.load(std::memory_order_relaxed); }

}  // namespace rill

// rill/thread_pool.hpp — a fixed set of worker threads fed by a lock-free
// queue (moodycamel's BlockingConcurrentQueue).
//
// rill uses it to run pull-model selectors and allocators for many events
// in parallel (ConsumerOptions::thread_pool); applications may submit their
// own tasks. Thread-safety: submit() from any thread. The destructor runs
// every task already submitted, then joins the workers. A task that throws
// is caught and counted (failed_tasks()), never ends a worker.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

namespace rill {

class ThreadPool {
 public:
  // `threads` workers; 0 means one per hardware thread.
  explicit ThreadPool(std::size_t threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Allocates: the task's std::function (when it does not fit inline) and
  // the queue's blocks, amortized.
  void submit(std::function<void()> task);
  std::size_t size() const noexcept;
  std::uint64_t failed_tasks() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rill

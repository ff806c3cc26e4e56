// Doorbell: lets threads sleep until another thread makes progress.
//
// A futex word (epoch) plus a count of sleepers. A waker that made progress
// visible rings only when someone sleeps, so the fast path of a publish or an
// ack costs one fence and one load of a line that is rarely written.
//
// Correctness (no lost wake-up): the waker does  store(progress);
// RMW(sleepers += 0)  and the sleeper does  RMW(sleepers += 1);
// check(progress); futex_wait(epoch == e). Both RMWs are acq_rel and an RMW
// reads the latest value in the counter's modification order: if the
// waker's RMW comes first, the sleeper's RMW reads from it (synchronizes-
// with) and its check sees the progress; otherwise the waker reads a non-zero
// count and rings, which changes the epoch, so the futex wait returns.
// (An RMW rather than a fence: it is what ThreadSanitizer understands, and
// it costs the same one locked instruction on x86.)
//
// Thread-safe. Allocation: none.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <ctime>

#include "common/cache.hpp"
#include "common/clock.hpp"

namespace rill::detail {

class Doorbell {
 public:
  // Call after making progress visible (a release store or stronger).
  void notify() noexcept {
    if (sleepers_.fetch_add(0, std::memory_order_acq_rel) != 0) wake_all();
  }

  // Wakes every sleeper unconditionally (close, detach).
  void wake_all() noexcept {
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&epoch_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
  }

  // Sleeps until woken or the deadline passes, unless ready() is true once
  // registered. Returns ready()'s last value. Spurious returns are possible;
  // callers loop.
  template <class Ready>
  bool sleep(Ready&& ready, Deadline deadline) noexcept {
    sleepers_.fetch_add(1, std::memory_order_acq_rel);
    const std::uint32_t e = epoch_.load(std::memory_order_seq_cst);
    bool ok = ready();
    if (!ok) {
      timespec ts{};
      timespec* tsp = nullptr;
      if (deadline != Deadline::max()) {
        const auto left = deadline - SteadyClock::now();
        if (left.count() > 0) {
          const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
          ts.tv_sec = static_cast<time_t>(ns / 1000000000);
          ts.tv_nsec = static_cast<long>(ns % 1000000000);
          tsp = &ts;
        }
      }
      if (deadline == Deadline::max() || tsp != nullptr) {
        syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&epoch_), FUTEX_WAIT_PRIVATE, e, tsp, nullptr, 0);
      }
      ok = ready();
    }
    sleepers_.fetch_sub(1, std::memory_order_acq_rel);
    return ok;
  }

 private:
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t), "futex word layout");
  alignas(kCacheLine) std::atomic<std::uint32_t> epoch_{0};
  alignas(kCacheLine) std::atomic<std::uint32_t> sleepers_{0};
};

}  // namespace rill::detail

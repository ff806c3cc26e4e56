// Doorbell: lets threads sleep until another thread makes progress.
//
// A futex word (epoch) plus a count of sleepers. A waker that made progress
// visible rings only when someone sleeps, so the fast path of a publish or an
// ack costs one fence and one load of a line that is rarely written.
//
// Correctness (no lost wake-up) without a barrier on the hot side: the
// waker does  store(progress); light_barrier(); load(sleepers)  and the
// sleeper does  sleepers += 1; heavy_barrier(); check(progress);
// futex_wait(epoch == e)  (see ring/barrier.hpp): the waker sees the sleeper
// or the sleeper sees the progress; a ring changes the epoch, so the futex
// wait returns. Where the kernel lacks membarrier, sleeps are cut into 1 ms
// slices, so a wake-up lost to store-buffer reordering costs at most 1 ms of
// latency, never a hang. A full barrier per publish instead would stall the
// publisher until its slot stores win their cache lines back from the
// consumer: measured at ~200 ns per event on a 2-core VM.
//
// Thread-safe. Allocation: none.
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>
#include <ctime>

#include "common/cache.hpp"
#include "common/clock.hpp"
#include "common/futex.hpp"
#include "ring/barrier.hpp"

namespace rill::detail {

class Doorbell {
 public:
  // Call after making progress visible (a release store or stronger).
  void notify() noexcept {
    light_barrier();
    if (sleepers_.load(std::memory_order_relaxed) != 0) wake_all();
  }

  // Wakes every sleeper unconditionally (close, detach).
  void wake_all() noexcept {
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(epoch_, INT_MAX);
  }

  // Sleeps until woken or the deadline passes, unless ready() is true once
  // registered. Returns ready()'s last value. Spurious returns are possible;
  // callers loop.
  template <class Ready>
  bool sleep(Ready&& ready, Deadline deadline) noexcept {
    sleepers_.fetch_add(1, std::memory_order_acq_rel);
    const bool exact = heavy_barrier();
    const std::uint32_t e = epoch_.load(std::memory_order_seq_cst);
    bool ok = ready();
    if (!ok) {
      if (!exact) {
        const Deadline slice = SteadyClock::now() + std::chrono::milliseconds(1);
        if (slice < deadline) deadline = slice;
      }
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
        futex_wait(epoch_, e, tsp);
      }
      ok = ready();
    }
    sleepers_.fetch_sub(1, std::memory_order_acq_rel);
    return ok;
  }

  // How many threads sleep (or are about to): notify's fast side, for a
  // caller that inlines it (PublishLane).
  const std::atomic<std::uint32_t>& sleepers() const noexcept { return sleepers_; }

 private:
  alignas(kCacheLine) std::atomic<std::uint32_t> epoch_{0};
  alignas(kCacheLine) std::atomic<std::uint32_t> sleepers_{0};
};

}  // namespace rill::detail

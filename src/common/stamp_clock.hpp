// StampClock: the millisecond wall clock behind append timestamps
// (TopicOptions::precise_timestamps = false, the default), read with one
// load instead of a clock read per publish.
//
// A process-wide ticker thread stores CLOCK_REALTIME into a shared word
// every kTick while stamps are being read; a reader loads it. The cheapest
// clock read (CLOCK_REALTIME_COARSE through the vDSO) costs ~6 ns on the
// 2-core bench VM, a quarter of a small event's publish, for the kernel
// tick's resolution (1-4 ms); the load costs a cache hit (the word changes
// once per tick) and the stamp is fresher.
//
// Freshness: a stamp is at most one tick plus the ticker's scheduling delay
// older than the read. A wall-clock step shows as it would in the clock
// itself; producers keep each partition's stamps non-decreasing whatever
// the clock does.
//
// Idle: after kIdleTicks ticks without a read, the ticker sleeps on a futex
// and costs nothing; the next read finds it asleep, reads the clock itself
// and wakes it. The thread starts on the first read and is never joined (it
// holds no resource but its stack); a forked child starts its own on its
// first read.
//
// Thread-safety: now_ns() is safe from any thread. Allocation: the first
// read in a process starts the ticker (std::thread); later reads none.
// Failure: when the ticker cannot start, every later read reads the clock
// itself.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "common/cache.hpp"
#include "common/clock.hpp"

namespace rill::detail {

class StampClock {
 public:
  static constexpr std::chrono::milliseconds kTick{1};
  static constexpr int kIdleTicks = 100;

  // Wall-clock nanoseconds since the Unix epoch, coarse (see above).
  static std::int64_t now_ns() noexcept {
    StampClock& c = instance_;
    if (c.state_.load(std::memory_order_acquire) == kTicking) [[likely]] {
      if (!c.read_.load(std::memory_order_relaxed)) c.read_.store(true, std::memory_order_relaxed);
      return c.now_.load(std::memory_order_relaxed);
    }
    return c.slow_now();
  }

  // For tests: true while the ticker thread is ticking (not asleep, not
  // yet started).
  static bool ticking() noexcept { return instance_.state_.load(std::memory_order_acquire) == kTicking; }

 private:
  // state_ (a futex word): no thread yet (or a forked child) -> starting ->
  // ticking -> asleep -> waking -> ticking; or starting -> failed (no
  // ticker: every read is a slow read).
  enum : std::uint32_t { kNoThread, kStarting, kTicking, kAsleep, kWaking, kFailed };

  constexpr StampClock() noexcept = default;
  std::int64_t slow_now() noexcept;  // reads the clock; starts or wakes the ticker
  void run() noexcept;               // the ticker thread
  static void forked_child() noexcept;

  static StampClock instance_;  // constant-initialized, trivially destroyed

  alignas(kCacheLine) std::atomic<std::uint32_t> state_{kNoThread};
  std::atomic<std::int64_t> now_{0};  // written by the ticker once per tick
  // Set by readers (at most once per tick each), cleared by the ticker.
  alignas(kCacheLine) std::atomic<bool> read_{false};
};

// An append timestamp: nanosecond resolution when `precise` (one clock
// read, ~25 ns in a VM), else the StampClock.
inline std::int64_t append_stamp_ns(bool precise) noexcept {
  return precise ? now_ns(true) : StampClock::now_ns();
}

}  // namespace rill::detail

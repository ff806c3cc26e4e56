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
#include "rill/detail/publish_lane.hpp"

namespace rill::detail {

class StampClock {
 public:
  static constexpr std::chrono::milliseconds kTick{1};
  static constexpr int kIdleTicks = 100;

  // Wall-clock nanoseconds since the Unix epoch, coarse (see above).
  static std::int64_t now_ns() noexcept {
    std::int64_t t;
    if (instance_.words_.try_read(t)) [[likely]] return t;
    return instance_.slow_now();
  }

  // The words a PublishLane reads its stamps from (instead of calling now_ns).
  static StampWords& words() noexcept { return instance_.words_; }

  // For tests: true while the ticker thread is ticking (not asleep, not
  // yet started).
  static bool ticking() noexcept { return instance_.words_.state.load(std::memory_order_acquire) == kTicking; }

 private:
  // words_.state (a futex word): no thread yet (or a forked child) -> starting ->
  // ticking -> asleep -> waking -> ticking; or starting -> failed (no
  // ticker: every read is a slow read).
  enum : std::uint32_t { kNoThread, kStarting, kTicking, kAsleep, kWaking, kFailed };
  static_assert(kTicking == StampWords::kTicking);

  constexpr StampClock() noexcept = default;
  std::int64_t slow_now() noexcept;  // reads the clock; starts or wakes the ticker
  void run() noexcept;               // the ticker thread
  static void forked_child() noexcept;

  static StampClock instance_;  // constant-initialized, trivially destroyed

  StampWords words_;
};

// An append timestamp: nanosecond resolution when `precise` (one clock
// read, ~25 ns in a VM), else the StampClock.
inline std::int64_t append_stamp_ns(bool precise) noexcept {
  return precise ? now_ns(true) : StampClock::now_ns();
}

}  // namespace rill::detail

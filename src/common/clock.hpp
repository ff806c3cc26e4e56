// Time sources.
#pragma once

#include <chrono>
#include <cstdint>
#include <ctime>

namespace rill::detail {

// Wall-clock nanoseconds since the Unix epoch (event timestamps).
// Precise: CLOCK_REALTIME, nanosecond resolution, ~25 ns per read in a VM.
// Coarse: CLOCK_REALTIME_COARSE, the kernel tick's resolution (1-4 ms),
// ~3 ns per read: what a per-event append stamp can afford.
inline std::int64_t now_ns(bool precise = true) noexcept {
  timespec ts;
  clock_gettime(precise ? CLOCK_REALTIME : CLOCK_REALTIME_COARSE, &ts);
  return std::int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Monotonic deadlines for blocking calls.
using SteadyClock = std::chrono::steady_clock;
using Deadline = SteadyClock::time_point;

inline Deadline deadline_after(std::chrono::nanoseconds timeout) noexcept {
  if (timeout == std::chrono::nanoseconds::max()) return Deadline::max();
  const auto now = SteadyClock::now();
  if (timeout >= Deadline::max() - now) return Deadline::max();
  return now + timeout;
}

// A deadline computed on first use: a call that never has to wait never
// reads the clock (a clock read costs ~25 ns in a VM; a publish, less).
class LazyDeadline {
 public:
  explicit LazyDeadline(std::chrono::nanoseconds timeout) noexcept : timeout_(timeout) {}
  bool forever() const noexcept { return timeout_ == std::chrono::nanoseconds::max(); }
  Deadline get() noexcept {
    if (!known_) {
      deadline_ = deadline_after(timeout_);
      known_ = true;
    }
    return deadline_;
  }

 private:
  std::chrono::nanoseconds timeout_;
  Deadline deadline_{};
  bool known_ = false;
};

}  // namespace rill::detail

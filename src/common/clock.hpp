// Time sources.
#pragma once

#include <chrono>
#include <cstdint>

namespace rill::detail {

// Wall-clock nanoseconds since the Unix epoch (event timestamps).
inline std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Monotonic deadlines for blocking calls.
using SteadyClock = std::chrono::steady_clock;
using Deadline = SteadyClock::time_point;

inline Deadline deadline_after(std::chrono::nanoseconds timeout) noexcept {
  const auto now = SteadyClock::now();
  if (timeout >= Deadline::max() - now) return Deadline::max();
  return now + timeout;
}

}  // namespace rill::detail

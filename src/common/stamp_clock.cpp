#include "common/stamp_clock.hpp"

#include <pthread.h>

#include <thread>

#include "common/futex.hpp"

namespace rill::detail {

constinit StampClock StampClock::instance_;

std::int64_t StampClock::slow_now() noexcept {
  const std::int64_t t = detail::now_ns(true);
  std::uint32_t s = state_.load(std::memory_order_acquire);
  if (s == kNoThread) {
    if (state_.compare_exchange_strong(s, kStarting, std::memory_order_acq_rel)) {
      // A child forked while the ticker ran has no ticker: it starts its own.
      static std::atomic<bool> fork_handler{false};
      if (!fork_handler.exchange(true)) pthread_atfork(nullptr, nullptr, &StampClock::forked_child);
      try {
        std::thread([] { instance_.run(); }).detach();
      } catch (...) {
        state_.store(kFailed, std::memory_order_release);
      }
    }
  } else if (s == kAsleep) {
    if (state_.compare_exchange_strong(s, kWaking, std::memory_order_acq_rel)) futex_wake(state_, 1);
  }
  return t;
}

void StampClock::run() noexcept {
  int idle = 0;
  for (;;) {
    now_.store(detail::now_ns(true), std::memory_order_relaxed);
    // Readers take now_ only once the state says ticking (release/acquire):
    // after a start or a wake-up they see this fresh value, never an old one.
    if (std::uint32_t s = state_.load(std::memory_order_relaxed); s == kStarting || s == kWaking) {
      state_.store(kTicking, std::memory_order_release);
    }
    if (read_.exchange(false, std::memory_order_relaxed)) {
      idle = 0;
    } else if (++idle >= kIdleTicks) {
      std::uint32_t expected = kTicking;
      if (state_.compare_exchange_strong(expected, kAsleep, std::memory_order_acq_rel)) {
        while (state_.load(std::memory_order_acquire) == kAsleep) futex_wait(state_, kAsleep);
      }
      idle = 0;
      continue;  // a fresh now_ before ticking again
    }
    std::this_thread::sleep_for(kTick);
  }
}

void StampClock::forked_child() noexcept {
  instance_.read_.store(false, std::memory_order_relaxed);
  instance_.state_.store(kNoThread, std::memory_order_release);
}

}  // namespace rill::detail

#include "common/stamp_clock.hpp"

#include <pthread.h>

#include <thread>

#include "common/futex.hpp"

namespace rill::detail {

constinit StampClock StampClock::instance_;

std::int64_t StampClock::slow_now() noexcept {
  const std::int64_t t = detail::now_ns(true);
  std::uint32_t s = words_.state.load(std::memory_order_acquire);
  if (s == kNoThread) {
    if (words_.state.compare_exchange_strong(s, kStarting, std::memory_order_acq_rel)) {
      // A child forked while the ticker ran has no ticker: it starts its own.
      static std::atomic<bool> fork_handler{false};
      if (!fork_handler.exchange(true)) pthread_atfork(nullptr, nullptr, &StampClock::forked_child);
      try {
        std::thread([] { instance_.run(); }).detach();
      } catch (...) {
        words_.state.store(kFailed, std::memory_order_release);
      }
    }
  } else if (s == kAsleep) {
    if (words_.state.compare_exchange_strong(s, kWaking, std::memory_order_acq_rel)) futex_wake(words_.state, 1);
  }
  return t;
}

void StampClock::run() noexcept {
  int idle = 0;
  for (;;) {
    words_.now.store(detail::now_ns(true), std::memory_order_relaxed);
    // Readers take `now` only once the state says ticking (release/acquire):
    // after a start or a wake-up they see this fresh value, never an old one.
    if (std::uint32_t s = words_.state.load(std::memory_order_relaxed); s == kStarting || s == kWaking) {
      words_.state.store(kTicking, std::memory_order_release);
    }
    if (words_.read.exchange(false, std::memory_order_relaxed)) {
      idle = 0;
    } else if (++idle >= kIdleTicks) {
      std::uint32_t expected = kTicking;
      if (words_.state.compare_exchange_strong(expected, kAsleep, std::memory_order_acq_rel)) {
        while (words_.state.load(std::memory_order_acquire) == kAsleep) futex_wait(words_.state, kAsleep);
      }
      idle = 0;
      continue;  // a fresh `now` before ticking again
    }
    std::this_thread::sleep_for(kTick);
  }
}

void StampClock::forked_child() noexcept {
  instance_.words_.read.store(false, std::memory_order_relaxed);
  instance_.words_.state.store(kNoThread, std::memory_order_release);
}

}  // namespace rill::detail

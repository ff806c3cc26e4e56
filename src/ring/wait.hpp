// The wait loop shared by producers (waiting for space) and consumers
// (waiting for data), shaped by the topic's WaitStrategy.
#pragma once

#include <thread>

#include "common/cache.hpp"
#include "common/clock.hpp"
#include "rill/options.hpp"
#include "ring/doorbell.hpp"

namespace rill::detail {

// Waits until ready() returns true (true) or the deadline passes (false).
// ready() must also return true when the caller should stop waiting for
// another reason (close); the caller tells which afterwards.
// kBlocking yields `yields` times between the spin and sleeping on the bell.
// Waits known to last long (a durable commit: tens of microseconds to a
// fraction of a millisecond for its fsyncs) pass 0: several threads yielding
// through such a wait on a busy machine take the CPU from the threads they
// wait for (the durable_sync bench: about a third less CPU, the same rate).
template <class Ready>
bool wait_until(WaitStrategy strategy, Doorbell& bell, Deadline deadline, Ready&& ready, int yields = 32) {
  // Short spin: most waits in a busy pipeline end within a few hundred ns.
  constexpr int kSpins = 128;
  for (int i = 0; i < kSpins; ++i) {
    if (ready()) return true;
    cpu_relax();
  }
  for (int i = 0;; ++i) {
    if (ready()) return true;
    if ((i & 63) == 0 && SteadyClock::now() >= deadline) return ready();
    switch (strategy) {
      case WaitStrategy::kBusySpin:
        cpu_relax();
        break;
      case WaitStrategy::kYield:
        std::this_thread::yield();
        break;
      case WaitStrategy::kBlocking:
        if (i < yields) {
          std::this_thread::yield();
        } else {
          if (bell.sleep(ready, deadline)) return true;
          if (SteadyClock::now() >= deadline) return ready();
        }
        break;
    }
  }
}

}  // namespace rill::detail

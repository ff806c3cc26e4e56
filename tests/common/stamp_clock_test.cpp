#include <catch2/catch.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "common/stamp_clock.hpp"

using rill::detail::StampClock;
using namespace std::chrono_literals;

namespace {

std::int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Waits up to 10 s for StampClock::ticking() to equal `want`, reading
// stamps meanwhile when `reading` (which keeps the ticker awake).
bool wait_ticking(bool want, bool reading) {
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (StampClock::ticking() != want) {
    if (std::chrono::steady_clock::now() > until) return false;
    if (reading) (void)StampClock::now_ns();
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Reads stamps for `span`; returns how far they advanced, or -1 when one
// was from the future or went back (a ticking clock's stamps come from one
// word the ticker raises; across a wake-up a slow read may be newer).
std::int64_t advance_while_reading(std::chrono::milliseconds span) {
  const std::int64_t first = StampClock::now_ns();
  std::int64_t last = first;
  const auto until = std::chrono::steady_clock::now() + span;
  while (std::chrono::steady_clock::now() < until) {
    const std::int64_t s = StampClock::now_ns();
    if (s > wall_ns() || s < last) return -1;
    last = s;
  }
  return last - first;
}

}  // namespace

TEST_CASE("stamps follow the wall clock while read: never ahead of it, never far behind", "[stamp_clock]") {
  (void)StampClock::now_ns();
  REQUIRE(wait_ticking(true, true));  // the ticked path from here on
  const std::int64_t before = wall_ns();
  const std::int64_t s = StampClock::now_ns();
  CHECK(s <= wall_ns());
  CHECK(s >= before - std::int64_t(1'000'000'000));  // a tick late at most; a second is slack
  // A frozen ticker would leave the stamps where they were.
  const std::int64_t advanced = advance_while_reading(400ms);
  CHECK(advanced >= 200'000'000);
}

TEST_CASE("the ticker sleeps when nobody reads and the next read is fresh and wakes it", "[stamp_clock]") {
  (void)StampClock::now_ns();
  REQUIRE(wait_ticking(false, false));  // asleep after kIdleTicks unread ticks
  const std::int64_t before = wall_ns();
  const std::int64_t s = StampClock::now_ns();  // the slow read: the clock itself
  CHECK(s >= before);
  CHECK(s <= wall_ns());
  CHECK(wait_ticking(true, true));
  CHECK(advance_while_reading(300ms) >= 150'000'000);
}

#if !defined(__SANITIZE_THREAD__)  // TSan does not support threads started after a fork
TEST_CASE("a forked child gets its own ticker", "[stamp_clock]") {
  (void)StampClock::now_ns();
  REQUIRE(wait_ticking(true, true));
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The parent's ticker did not come along: the child's reads start one,
    // and its stamps advance.
    if (!wait_ticking(true, true)) _exit(2);
    const std::int64_t advanced = advance_while_reading(400ms);
    _exit(advanced >= 200'000'000 ? 0 : advanced < 0 ? 3 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
#endif

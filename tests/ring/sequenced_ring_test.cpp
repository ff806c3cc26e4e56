// The sequenced ring on its own, with a payload type that counts its
// lifetimes: gating, late attach under a running producer, multi-producer
// claim order, and lossy overrun.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "common/cache.hpp"
#include "ring/sequenced_ring.hpp"

using rill::detail::SequencedRing;

namespace {

// Counts live instances: each constructed payload is destroyed exactly once.
struct Tracked {
  static std::atomic<long> live;
  std::uint64_t seq = ~0ull;
  std::uint32_t producer = 0;
  Tracked() { live.fetch_add(1); }
  Tracked(const Tracked& o) : seq(o.seq), producer(o.producer) { live.fetch_add(1); }
  Tracked& operator=(const Tracked&) = default;
  ~Tracked() { live.fetch_sub(1); }
};
std::atomic<long> Tracked::live{0};

using Ring = SequencedRing<Tracked>;

// A test thread waiting for another: yield a few times, then sleep a little.
// A thread that only yields stays runnable, so when other processes keep
// both cores busy (ctest -j2, ThreadSanitizer) the threads it waits for get
// a time slice only now and then, and a test of a few seconds took minutes.
class Backoff {
 public:
  void operator()() {
    if (n_++ < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

 private:
  int n_ = 0;
};

}  // namespace

TEST_CASE("a producer never passes the slowest attached gate", "[ring]") {
  {
    Ring ring(8, 4, false);
    std::uint64_t pos = 0;
    auto gate = ring.attach(pos);
    REQUIRE(gate);
    CHECK(pos == 0);
    // With the gate at 0, exactly `capacity` seqs may be written.
    CHECK(ring.refresh_limit(1) == 8);
    for (std::uint64_t s = 0; s < 8; ++s) ring.slot(s).seq = s;
    ring.publish(8);
    CHECK(ring.refresh_limit(9) == 8);  // still full: nothing acked
    ring.ack(*gate, 5);
    CHECK(ring.refresh_limit(9) == 13);
    // A second, slower gate attached at the floor holds the limit back.
    std::uint64_t pos2 = 0;
    auto gate2 = ring.attach(pos2);
    REQUIRE(gate2);
    CHECK(pos2 <= 5);
    CHECK(ring.refresh_limit(9) == pos2 + 8);
    ring.detach(*gate2);
    CHECK(ring.refresh_limit(9) == 13);
    ring.detach(*gate);
  }
  CHECK(Tracked::live.load() == 0);
}

TEST_CASE("attach fails cleanly when every gate is taken", "[ring]") {
  Ring ring(4, 2, false);
  std::uint64_t p = 0;
  auto a = ring.attach(p);
  auto b = ring.attach(p);
  REQUIRE(a);
  REQUIRE(b);
  CHECK_FALSE(ring.attach(p));
  ring.detach(*a);
  CHECK(ring.attach(p));
}

TEST_CASE("without consumers the ring keeps its newest events for late attachers", "[ring]") {
  Ring ring(64, 2, false);
  std::uint64_t limit = 0;
  std::uint64_t s = 0;
  for (; s < 1000; ++s) {
    if (s + 1 > limit) limit = ring.refresh_limit(s + 1);
    REQUIRE(s < limit);  // nobody reads: the producer never waits
    ring.slot(s).seq = s;
    ring.publish(s + 1);
  }
  std::uint64_t pos = 0;
  auto gate = ring.attach(pos);
  REQUIRE(gate);
  CHECK(pos >= 1000 - 64);  // at most one ring back
  CHECK(pos <= 1000 - 64 + 64 / 8 + 1);  // and at most a chunk was given up
  for (std::uint64_t q = pos; q < 1000; ++q) CHECK(ring.slot(q).seq == q);
}

// A consumer attaching at `earliest` while a producer runs must be granted
// only seqs whose slots will not be overwritten until it acks them.
TEST_CASE("late attach under a running producer reads intact slots", "[ring][concurrency]") {
  Ring ring(256, 4, false);
  std::atomic<bool> stop{false};
  std::thread producer([&] {
    std::uint64_t limit = 0;
    for (std::uint64_t s = 0; !stop.load(std::memory_order_relaxed); ++s) {
      while (s + 1 > limit) {
        limit = ring.refresh_limit(s + 1);
        if (stop.load(std::memory_order_relaxed)) return;
        if (s + 1 > limit) std::this_thread::yield();
      }
      ring.slot(s).seq = s;
      ring.publish(s + 1);
    }
  });
  long bad = 0;
  for (int round = 0; round < 2000; ++round) {
    std::uint64_t pos = 0;
    auto gate = ring.attach(pos);
    REQUIRE(gate);
    const std::uint64_t end = ring.published();
    for (std::uint64_t q = pos; q < end; ++q) bad += ring.slot(q).seq != q;
    // Still intact after the producer had time to run.
    std::this_thread::yield();
    for (std::uint64_t q = pos; q < end; ++q) bad += ring.slot(q).seq != q;
    ring.detach(*gate);
  }
  stop = true;
  producer.join();
  CHECK(bad == 0);
}

TEST_CASE("multi-producer claims publish in claim order with nothing lost", "[ring][concurrency]") {
  constexpr int kProducers = 4;
  constexpr std::uint64_t kPerProducer = 20000;
  Ring ring(128, 2, false);
  std::uint64_t start = 0;
  auto gate = ring.attach(start);
  REQUIRE(gate);
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (std::uint64_t i = 0; i < kPerProducer; ++i) {
        std::uint64_t s;
        if (i % 2 == 0) {  // fetch_add claim, then wait for room
          s = ring.claim(1);
          for (Backoff wait; !ring.mp_has_room(s + 1);) wait();
        } else {  // CAS claim only when room is there
          std::optional<std::uint64_t> c;
          for (Backoff wait; !(c = ring.try_claim(1));) wait();
          s = *c;
        }
        ring.slot(s).seq = i;
        ring.slot(s).producer = std::uint32_t(p);
        for (Backoff wait; !ring.mp_turn(s);) wait();
        ring.publish(s + 1);
      }
    });
  }
  std::vector<std::uint64_t> next(kProducers, 0);
  std::uint64_t read = 0;
  long order_errors = 0;
  Backoff idle;
  while (read < kProducers * kPerProducer) {
    const std::uint64_t end = ring.published();
    if (end <= read) idle();
    for (; read < end; ++read) {
      const Tracked& t = ring.slot(read);
      order_errors += t.seq != next[t.producer];
      next[t.producer] = t.seq + 1;
    }
    ring.ack(*gate, read);
  }
  for (auto& t : producers) t.join();
  CHECK(order_errors == 0);
  for (int p = 0; p < kProducers; ++p) CHECK(next[p] == kPerProducer);
}

TEST_CASE("a lossy ring pushes a lagging gate forward instead of waiting", "[ring]") {
  Ring ring(8, 2, true);
  std::uint64_t pos = 0;
  auto gate = ring.attach(pos);
  REQUIRE(gate);
  std::uint64_t limit = 0;
  for (std::uint64_t s = 0; s < 20; ++s) {
    if (s + 1 > limit) limit = ring.refresh_limit(s + 1);
    REQUIRE(s < limit);
    ring.slot(s).seq = s;
    ring.publish(s + 1);
  }
  // The consumer never acked: its gate was moved so that 20 - 8 seqs were
  // overwritten; pinning tells it where the intact events start.
  const std::uint64_t first = ring.pin(*gate, 0);
  CHECK(first >= 12);
  for (std::uint64_t q = first; q < 20; ++q) CHECK(ring.slot(q).seq == q);
  ring.unpin(*gate);
}

TEST_CASE("a lossy ring never overwrites a seq a consumer is copying, whichever producer pushed its gate",
          "[ring][concurrency]") {
  // Three producers overrun a tiny lossy ring while one consumer copies
  // slowly under a pin. A producer whose refresh finds the gate already
  // pushed by another must still wait for the copy in progress.
  constexpr int kProducers = 3;
  constexpr std::uint64_t kPerProducer = 20000;
  constexpr std::uint64_t kTotal = kProducers * kPerProducer;
  Ring ring(8, 2, true);
  std::uint64_t pos = 0;
  auto gate = ring.attach(pos);
  REQUIRE(gate);
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&] {
      for (std::uint64_t i = 0; i < kPerProducer; ++i) {
        const std::uint64_t s = ring.claim(1);
        for (Backoff wait; !ring.mp_has_room(s + 1);) wait();
        ring.slot(s).seq = s;
        for (Backoff wait; !ring.mp_turn(s);) wait();
        ring.publish(s + 1);
      }
    });
  }
  std::uint64_t read = 0, copied = 0;
  long torn = 0;
  Backoff idle;
  while (read < kTotal) {
    const std::uint64_t end = ring.published();
    if (end <= read) {
      idle();
      continue;
    }
    const std::uint64_t first = ring.pin(*gate, read);
    for (std::uint64_t q = first; q < end; ++q) {
      torn += ring.slot(q).seq != q;  // overwritten under the pin
      ++copied;
      // A slow copy: producers (on the other core) lap the ring meanwhile.
      // A spin, not a yield: yielding while pinned hands the core to
      // whatever else runs (other tests under ctest -j2) for a whole time
      // slice while every producer waits for the pin — minutes under TSan.
      for (int k = 0; k < 256; ++k) rill::detail::cpu_relax();
    }
    ring.unpin(*gate);
    read = std::max(first, end);
  }
  for (auto& t : producers) t.join();
  CHECK(torn == 0);
  CHECK(copied > 0);
}

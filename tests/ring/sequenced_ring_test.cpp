// The sequenced ring on its own, with a payload type that counts its
// lifetimes: gating, late attach under a running producer, multi-producer
// claim order without waiting for earlier claims, and lossy overrun.
#include <catch2/catch.hpp>

#include <atomic>
#include <optional>
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

// Records, in order, the values a ring publishes through mp_publish: it
// runs on whichever thread publishes, one at a time, so a plain vector
// checks the order (and ThreadSanitizer the hand-offs between threads).
struct Recorder {
  static inline std::vector<std::pair<std::uint32_t, std::uint64_t>>* log = nullptr;  // (producer, seq)
  void operator()(Tracked& t, std::int64_t&) const {
    if (log) log->emplace_back(t.producer, t.seq);
  }
};

using Ring = SequencedRing<Tracked, Recorder>;

// True when each producer's values appear in `log` as 0, 1, 2, ... per_producer - 1.
bool in_producer_order(const std::vector<std::pair<std::uint32_t, std::uint64_t>>& log, int producers,
                       std::uint64_t per_producer) {
  std::vector<std::uint64_t> next(std::size_t(producers), 0);
  for (const auto& [p, seq] : log) {
    if (p >= std::uint32_t(producers) || seq != next[p]) return false;
    next[p] = seq + 1;
  }
  for (std::uint64_t n : next) {
    if (n != per_producer) return false;
  }
  return true;
}

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

// A multi-producer claim as producers take one: try_claim until there is
// room, then wait until the claim lies within a ring of the published seqs.
std::uint64_t claim(Ring& ring, std::uint64_t n) {
  std::optional<std::uint64_t> c;
  for (Backoff wait; !(c = ring.try_claim(n));) wait();
  ring.mp_wait_in_window(*c, n);
  return *c;
}

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

TEST_CASE("a multi-producer claim finished before an earlier one is published with it, in seq order", "[ring]") {
  Ring ring(8, 1, false);
  std::uint64_t pos = 0;
  REQUIRE(ring.attach(pos));
  std::vector<std::pair<std::uint32_t, std::uint64_t>> log;
  Recorder::log = &log;
  const std::uint64_t a = claim(ring, 1), b = claim(ring, 1), c = claim(ring, 2);
  for (std::uint64_t q = a; q < c + 2; ++q) ring.slot(q).seq = q;
  ring.mp_publish(c, 2);  // returns at once: a and b are not written
  ring.mp_publish(b, 1);
  CHECK(ring.published() == a);  // a reader cannot publish past a either
  CHECK(log.empty());
  ring.mp_publish(a, 1);  // a's producer publishes b and c too
  CHECK(ring.published() == c + 2);
  CHECK(log == std::vector<std::pair<std::uint32_t, std::uint64_t>>{{0, 0}, {0, 1}, {0, 2}, {0, 3}});
  // The next claim, with every earlier one published, publishes itself.
  const std::uint64_t d = claim(ring, 1);
  ring.slot(d).seq = d;
  ring.mp_publish(d, 1);
  CHECK(ring.published() == d + 1);
  CHECK(log.back().second == d);
  Recorder::log = nullptr;
}

TEST_CASE("multi-producer publishers never wait for a claim that is still being written", "[ring][concurrency]") {
  // One claim is taken and left unwritten (its producer preempted, say);
  // eight more producers publish 200 events each meanwhile. Every one of
  // their calls returns; readers see nothing past the open claim until
  // it is published, then everything, in claim order.
  constexpr int kProducers = 8;
  constexpr std::uint64_t kPerProducer = 200;
  Ring ring(4096, 1, false);
  std::uint64_t pos = 0;
  REQUIRE(ring.attach(pos));
  const std::uint64_t open = claim(ring, 1);
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (std::uint64_t i = 0; i < kPerProducer; ++i) {
        const std::uint64_t s = claim(ring, 1);
        ring.slot(s).seq = i;
        ring.slot(s).producer = std::uint32_t(p);
        ring.mp_publish(s, 1);
      }
    });
  }
  for (auto& t : producers) t.join();  // hangs if a publisher waits for `open`
  CHECK(ring.published() == open);
  std::vector<std::pair<std::uint32_t, std::uint64_t>> log;
  Recorder::log = &log;
  ring.slot(open).seq = kPerProducer;  // recorded as producer 0's extra last value
  ring.mp_publish(open, 1);
  Recorder::log = nullptr;
  CHECK(ring.published() == open + 1 + kProducers * kPerProducer);
  REQUIRE(log.size() == 1 + kProducers * kPerProducer);
  log.erase(log.begin());
  CHECK(in_producer_order(log, kProducers, kPerProducer));
}

TEST_CASE("on a ring producers outrun, a claim still being written is never lapped", "[ring][concurrency]") {
  // Nobody reads this lossy ring, so its producers are never gated; one
  // claim stays open while two producers publish five rings' worth. Their
  // claims a ring ahead of it must wait for it (mp_wait_in_window) rather
  // than overwrite its slot or its mark; then every claim is published.
  constexpr std::uint64_t kCapacity = 8, kPerProducer = 20;
  Ring ring(kCapacity, 1, true);
  const std::uint64_t open = claim(ring, 1);
  std::vector<std::thread> producers;
  for (int p = 0; p < 2; ++p) {
    producers.emplace_back([&] {
      for (std::uint64_t i = 0; i < kPerProducer; ++i) {
        const std::uint64_t s = claim(ring, 1);  // waits in mp_wait_in_window a ring ahead of `open`
        ring.slot(s).seq = s;
        ring.mp_publish(s, 1);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let them run into the open claim
  CHECK(ring.published() == open);
  ring.slot(open).seq = open;
  ring.mp_publish(open, 1);
  for (auto& t : producers) t.join();
  const std::uint64_t end = open + 1 + 2 * kPerProducer;
  CHECK(ring.published() == end);
  for (std::uint64_t q = end - kCapacity; q < end; ++q) CHECK(ring.slot(q).seq == q);
}

TEST_CASE("multi-producer claims publish in claim order with nothing lost", "[ring][concurrency]") {
  constexpr int kProducers = 4;
  constexpr std::uint64_t kPerProducer = 20000;
  Ring ring(128, 2, false);
  std::vector<std::pair<std::uint32_t, std::uint64_t>> log;
  Recorder::log = &log;
  std::uint64_t start = 0;
  auto gate = ring.attach(start);
  REQUIRE(gate);
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (std::uint64_t i = 0; i < kPerProducer; ++i) {
        const std::uint64_t s = claim(ring, 1);
        ring.slot(s).seq = i;
        ring.slot(s).producer = std::uint32_t(p);
        ring.mp_publish(s, 1);
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
  Recorder::log = nullptr;
  CHECK(order_errors == 0);
  for (int p = 0; p < kProducers; ++p) CHECK(next[p] == kPerProducer);
  // Whichever thread published each (its producer, another, or the
  // consumer looking), in claim order.
  CHECK(log.size() == kProducers * kPerProducer);
  CHECK(in_producer_order(log, kProducers, kPerProducer));
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
        const std::uint64_t s = claim(ring, 1);  // producers outrun a lossy ring's gates
        ring.slot(s).seq = s;
        ring.mp_publish(s, 1);
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

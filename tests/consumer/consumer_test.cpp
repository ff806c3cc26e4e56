// Named consumers: positions, cumulative acks, resume after ack, redelivery,
// exclusivity, bad acks, lossy overrun, close and iteration.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "rill/rill.hpp"

using namespace rill;
using namespace std::chrono_literals;

namespace {

void publish_n(Producer& p, int from, int to, std::int64_t partition = kAnyPartition) {
  for (int i = from; i < to; ++i) REQUIRE(p.publish(Message{.data = std::to_string(i), .partition = partition}).ok());
}

std::vector<std::string> drain(Consumer& c) {
  std::vector<std::string> out;
  for (;;) {
    auto e = c.poll(0ms);
    if (!e.ok()) {
      REQUIRE(e.status().is_timed_out());
      return out;
    }
    out.emplace_back(e->data());
  }
}

std::vector<std::string> range(int from, int to) {
  std::vector<std::string> v;
  for (int i = from; i < to; ++i) v.push_back(std::to_string(i));
  return v;
}

}  // namespace

TEST_CASE("every named consumer sees every event", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t");
  auto a = *t.consumer({.name = "a"});
  auto b = *t.consumer({.name = "b"});
  auto p = *t.producer();
  publish_n(p, 0, 10);
  CHECK(drain(a) == range(0, 10));
  CHECK(drain(b) == range(0, 10));
}

TEST_CASE("a consumer of several partitions takes its batches from each in turn", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 3});
  auto p = *t.producer();
  auto c = *t.consumer({.name = "c"});
  for (int i = 0; i < 12; ++i) {
    for (std::int64_t part = 0; part < 3; ++part) REQUIRE(p.publish(Message{.data = "x", .partition = part}).ok());
  }
  // Every partition has events: no partition waits while another is
  // served twice.
  std::vector<std::uint32_t> order;
  for (int k = 0; k < 9; ++k) {
    auto batch = c.poll_batch(4, 1s);
    REQUIRE(batch.ok());
    REQUIRE(batch->size() == 4);
    order.push_back(batch->front().partition());
    REQUIRE(c.ack(batch->back()).ok());
  }
  for (std::size_t k = 1; k < order.size(); ++k) CHECK(order[k] == (order[k - 1] + 1) % 3);
}

TEST_CASE("poll() takes one event at a time round-robin, in order, byte-exact, mixed with poll_batch", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 3});
  auto p = *t.producer();
  for (int i = 0; i < 8; ++i) {
    for (std::int64_t part = 0; part < 3; ++part) {
      REQUIRE(p.publish(Message{.key = "k" + std::to_string(part),
                                .metadata = R"({"i":)" + std::to_string(i) + "}",
                                .data = std::to_string(part) + ":" + std::to_string(i),
                                .partition = part})
                  .ok());
    }
  }
  auto c = *t.consumer({.name = "c"});
  std::vector<std::uint64_t> next(3, 0);  // per partition: the offset expected next
  auto check = [&](const Event& e) {
    const std::uint32_t part = e.partition();
    const std::string i = std::to_string(e.offset());
    CHECK(e.offset() == next[part]);
    CHECK(e.key() == "k" + std::to_string(part));
    CHECK(e.metadata() == R"({"i":)" + i + "}");
    CHECK(e.data() == std::to_string(part) + ":" + i);
    next[part] = e.offset() + 1;
  };
  // Single polls visit the partitions in turn.
  std::vector<std::uint32_t> order;
  for (int k = 0; k < 6; ++k) {
    auto e = c.poll(1s);
    REQUIRE(e.ok());
    check(*e);
    order.push_back(e->partition());
    REQUIRE(c.ack(*e).ok());
  }
  for (std::size_t k = 1; k < order.size(); ++k) CHECK(order[k] == (order[k - 1] + 1) % 3);
  // A batch in between continues where the single polls left off.
  auto batch = c.poll_batch(3, 1s);
  REQUIRE(batch.ok());
  for (const Event& e : *batch) check(e);
  REQUIRE(c.ack(batch->back()).ok());
  while (true) {
    auto e = c.poll(0ms);
    if (!e.ok()) {
      CHECK(e.status().is_timed_out());
      break;
    }
    check(*e);
    REQUIRE(c.ack(*e).ok());
  }
  CHECK(next == std::vector<std::uint64_t>{8, 8, 8});
  // An event keeps its bytes after the consumer moved on and was closed.
  publish_n(p, 100, 101, 1);
  auto last = c.poll(1s);
  REQUIRE(last.ok());
  c.close();
  CHECK(last->data() == "100");
  CHECK(c.poll(0ms).status().is_closed());
}

TEST_CASE("single-producer topics: polls waiting for each next event get every one, in order, byte-exact",
          "[consumer][concurrency]") {
  // A consumer of a single-producer ring learns that its next event is
  // there from the slot's seq mark, not from the published cursor: small
  // rings (many laps), events inline and in blocks, single publishes and
  // batches, both wait strategies; one consumer waits in poll(), spins on
  // poll(0) and takes batches, the other spins on poll(0) only.
  auto data_of = [](std::uint64_t i) {
    return std::to_string(i) + std::string(i % 7 == 6 ? 200 : i % 80, char('a' + i % 26));
  };
  for (const WaitStrategy wait : {WaitStrategy::kBusySpin, WaitStrategy::kBlocking}) {
    Bus bus;
    auto t = *bus.create_topic(
        "t", {.partitions = 2, .capacity = 16, .wait = wait, .producers = ProducerMode::kSingle});
    auto a = *t.consumer({.name = "a", .max_batch = 4});
    auto b = *t.consumer({.name = "b"});
    auto p = *t.producer();
    // Event i goes to partition i % 2 at offset i / 2.
    constexpr std::uint64_t kEvents = 30000;
    std::atomic<int> failures{0};  // Catch2 asserts only on the main thread
    std::atomic<bool> stop{false};
    std::thread producer([&] {
      for (std::uint64_t i = 0; i < kEvents && !stop;) {
        if (i % 10 == 0 && i + 3 <= kEvents) {
          std::string d[3];
          Message m[3];
          for (std::uint64_t k = 0; k < 3; ++k) {
            d[k] = data_of(i + k);
            m[k] = Message{.data = d[k], .partition = std::int64_t((i + k) % 2)};
          }
          auto n = p.publish_batch(m, 10s);
          failures += !n.ok() || *n != 3;
          i += 3;
        } else {
          failures += !p.publish(Message{.data = data_of(i), .partition = std::int64_t(i % 2)}, 10s).ok();
          ++i;
        }
      }
    });
    std::atomic<int> b_errors{0};
    std::thread spinner([&] {  // b: poll(0) only
      std::uint64_t next[2] = {0, 0}, got = 0;
      while (got < kEvents && !stop) {
        auto e = b.poll(0ms);
        if (!e.ok()) {
          std::this_thread::yield();  // three spinning threads, two cores under a sanitizer
          continue;
        }
        const std::uint32_t q = e->partition();
        b_errors += e->offset() != next[q] || e->data() != data_of(2 * e->offset() + q);
        next[q] = e->offset() + 1;
        ++got;
        b_errors += !b.ack(*e).ok();
      }
    });
    std::uint64_t next[2] = {0, 0}, got = 0;
    int errors = 0;  // counted, not REQUIREd: the threads must be joined first
    auto check = [&](const Event& e) {
      const std::uint32_t q = e.partition();
      errors += e.offset() != next[q] || e.data() != data_of(2 * e.offset() + q);
      next[q] = e.offset() + 1;
      ++got;
    };
    for (int round = 0; got < kEvents && errors == 0; ++round) {
      if (round % 3 == 2) {
        auto batch = a.poll_batch(4, 10s);
        if (!batch.ok()) break;
        for (const Event& e : *batch) check(e);
        for (const Event& e : *batch) errors += !a.ack(e).ok();
      } else {
        auto e = a.poll(round % 3 == 0 ? Timeout(10s) : Timeout::zero());
        if (!e.ok() && e.status().is_timed_out() && round % 3 == 1) {
          std::this_thread::yield();
          continue;
        }
        if (!e.ok()) break;
        check(*e);
        errors += !a.ack(*e).ok();
      }
    }
    stop = got < kEvents || errors != 0;  // a failure here must not leave the threads waiting
    spinner.join();
    producer.join();
    CHECK(errors == 0);
    CHECK(got == kEvents);
    CHECK(next[0] + next[1] == kEvents);
    CHECK(b_errors == 0);
    CHECK(b.stats().delivered == kEvents);
    CHECK(failures == 0);
  }
}

TEST_CASE("a waiting poll() takes the event published meanwhile, or times out, or wakes on close", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 2});
  auto p = *t.producer();
  auto c = *t.consumer({.name = "c"});
  CHECK(c.poll(20ms).status().is_timed_out());
  for (int round = 0; round < 50; ++round) {  // a ping-pong's receiving side
    bool published = false;  // Catch's macros stay on this thread
    std::thread publisher([&] {
      std::this_thread::sleep_for(std::chrono::microseconds(round * 20));
      published = p.publish(Message{.key = "k", .data = "event " + std::to_string(round)}).ok();
    });
    auto e = c.poll(10s);
    publisher.join();
    REQUIRE(published);
    REQUIRE(e.ok());
    CHECK(e->data() == "event " + std::to_string(round));
    CHECK(e->offset() == std::uint64_t(round));  // one key: one partition, in order
    REQUIRE(c.ack(*e).ok());
  }
  CHECK(c.poll(0ms).status().is_timed_out());
  std::thread closer([&] {
    std::this_thread::sleep_for(20ms);
    c.close();
  });
  CHECK(c.poll(10s).status().is_closed());
  closer.join();
}

TEST_CASE("a consumer reopened under its name resumes right after its last ack", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 64});
  auto p = *t.producer();
  publish_n(p, 0, 10);
  {
    auto c = *t.consumer({.name = "worker"});
    for (int i = 0; i < 6; ++i) {
      auto e = c.poll(1s);
      REQUIRE(e.ok());
      if (i == 3) REQUIRE(c.ack(*e).ok());  // acks 0..3; 4 and 5 delivered, unacked
    }
    CHECK(c.stats().delivered == 6);
    CHECK(c.stats().acked == 4);
  }
  auto again = *t.consumer({.name = "worker"});
  CHECK(drain(again) == range(4, 10));  // at-least-once: 4 and 5 come again
  // A fresh name starts at the earliest event held.
  auto fresh = *t.consumer({.name = "fresh"});
  CHECK(drain(fresh) == range(0, 10));
}

TEST_CASE("acks are cumulative per partition and idempotent", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 2, .capacity = 64});
  auto p = *t.producer();
  publish_n(p, 0, 5, 0);
  publish_n(p, 10, 15, 1);
  {
    auto c = *t.consumer({.name = "c"});
    std::vector<Event> got;
    for (int i = 0; i < 10; ++i) got.push_back(*c.poll(1s));
    const Event* last0 = nullptr;
    const Event* first1 = nullptr;
    for (const Event& e : got) {
      if (e.partition() == 0) last0 = &e;
      if (e.partition() == 1 && !first1) first1 = &e;
    }
    REQUIRE((last0 && first1));
    REQUIRE(c.ack(*last0).ok());   // all of partition 0
    REQUIRE(c.ack(*first1).ok());  // only offset 0 of partition 1
    REQUIRE(c.ack(*first1).ok());  // again: a no-op
    CHECK(c.stats().acked == 6);
  }
  auto c = *t.consumer({.name = "c"});
  CHECK(drain(c) == range(11, 15));
}

TEST_CASE("positions: earliest, latest, offset and timestamp", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 64, .precise_timestamps = true});
  auto p = *t.producer();
  publish_n(p, 0, 5);
  std::this_thread::sleep_for(2ms);
  const auto mark = std::chrono::system_clock::now();
  std::this_thread::sleep_for(2ms);
  publish_n(p, 5, 10);

  auto earliest = *t.consumer({.name = "e", .position = Position::earliest()});
  auto latest = *t.consumer({.name = "l", .position = Position::latest()});
  auto at7 = *t.consumer({.name = "o", .position = Position::offset(7)});
  auto since = *t.consumer({.name = "ts", .position = Position::timestamp(mark)});
  publish_n(p, 10, 12);
  CHECK(drain(earliest) == range(0, 12));
  CHECK(drain(latest) == range(10, 12));
  CHECK(drain(at7) == range(7, 12));
  CHECK(drain(since) == range(5, 12));
}

TEST_CASE("an offset past the newest event starts with the next one and holds nothing back", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 8});
  auto p = *t.producer();
  publish_n(p, 0, 5);
  auto ahead = *t.consumer({.name = "ahead", .position = Position::offset(1000)});
  auto far = *t.consumer({.name = "far", .position = Position::offset(~std::uint64_t{0} - 2)});
  for (int i = 5; i < 13; ++i) REQUIRE(p.publish(Message{.data = std::to_string(i)}, 1s).ok());  // one ring's worth
  CHECK(drain(ahead) == range(5, 13));
  CHECK(drain(far) == range(5, 13));
  CHECK(ahead.stats().skipped == 0);
  auto late = *t.consumer({.name = "late", .position = Position::earliest()});
  CHECK(drain(late) == range(5, 13));  // what the ring still holds for the names
  CHECK(t.stats()[0].earliest_offset == 5);
}

TEST_CASE("a timestamp position on coarse stamps starts at the first event of that stamp", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 256});  // coarse timestamps (the default)
  auto p = *t.producer();
  auto all = *t.consumer({.name = "all"});
  for (int i = 0; i < 100; ++i) {
    REQUIRE(p.publish("", "", std::to_string(i)).ok());
    if (i % 10 == 0) std::this_thread::sleep_for(1ms);
  }
  std::vector<Event> events;
  for (int i = 0; i < 100; ++i) events.push_back(*all.poll(1s));
  const Event& pick = events[57];
  auto since = *t.consumer({.name = "since", .position = Position::timestamp(pick.timestamp())});
  auto first = since.poll(1s);
  REQUIRE(first.ok());
  // The first event whose stamp is >= the picked one: at or before offset 57,
  // and every event before it has a strictly smaller stamp.
  CHECK(first->offset() <= 57);
  CHECK(first->timestamp_ns() == pick.timestamp_ns());
  if (first->offset() > 0) CHECK(events[first->offset() - 1].timestamp_ns() < pick.timestamp_ns());
}

TEST_CASE("a start before the oldest held event skips ahead and counts the gap", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 16});
  auto p = *t.producer();
  publish_n(p, 0, 100);  // nobody reads: old events are overwritten
  auto c = *t.consumer({.name = "c", .position = Position::offset(0)});
  auto got = drain(c);
  REQUIRE(!got.empty());
  CHECK(got.back() == "99");
  const auto first = std::stoull(got.front());
  CHECK(first >= 100 - 16);
  CHECK(c.stats().skipped == first);
  CHECK(got == range(int(first), 100));
}

TEST_CASE("one live consumer per name and partition", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 4});
  auto a = t.consumer({.name = "x", .partitions = {0, 1}});
  REQUIRE(a.ok());
  auto clash = t.consumer({.name = "x", .partitions = {1, 2}});
  CHECK(clash.status().is_already_exists());
  auto other = t.consumer({.name = "x", .partitions = {2, 3}});
  CHECK(other.ok());  // disjoint partitions are fine
  a->close();
  CHECK(t.consumer({.name = "x", .partitions = {1}}).ok());
  CHECK(t.consumer({.name = "bad name"}).status().is_invalid_argument());
  CHECK(t.consumer({.name = ""}).status().is_invalid_argument());
  CHECK(t.consumer({.name = "y", .partitions = {4}}).status().is_invalid_argument());
  CHECK(t.consumer({.name = "y", .partitions = {1, 1}}).status().is_invalid_argument());
}

TEST_CASE("max_consumers is enforced with a clear error", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.max_consumers = 2});
  auto a = *t.consumer({.name = "a"});
  auto b = *t.consumer({.name = "b"});
  auto c = t.consumer({.name = "c"});
  CHECK(c.status().is_resource_exhausted());
  CHECK(c.status().message().find("remove_consumer") != std::string::npos);
  b.close();
  CHECK(t.consumer({.name = "c"}).status().is_resource_exhausted());  // "b" keeps its position
  CHECK(t.remove_consumer("a").is_already_exists());                   // live
  CHECK(t.remove_consumer("nobody").is_not_found());
  REQUIRE(t.remove_consumer("b").ok());
  CHECK(t.consumer_names() == std::vector<std::string>{"a"});
  CHECK(t.consumer({.name = "c"}).ok());
}

TEST_CASE("a closed name still protects its unacked events; removing it releases producers", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 4});
  auto p = *t.producer();
  {
    auto c = *t.consumer({.name = "c"});
    publish_n(p, 0, 4);
    auto e = c.poll(1s);
    REQUIRE(e.ok());
    REQUIRE(c.ack(*e).ok());  // acks "0"
  }
  // The name is gone but its position is not: only one slot is free.
  REQUIRE(p.try_publish(Message{.data = "4"}).ok());
  CHECK(p.try_publish(Message{.data = "5"}).status().is_full());
  {
    auto c = *t.consumer({.name = "c"});
    CHECK(drain(c) == range(1, 5));  // nothing lost while it was away
  }
  REQUIRE(t.remove_consumer("c").ok());
  publish_n(p, 5, 50);  // nobody holds the producer back any more
}

TEST_CASE("bad acks are refused and change nothing", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 2});
  auto p = *t.producer();
  publish_n(p, 0, 4);
  auto a = *t.consumer({.name = "a", .partitions = {0}});
  auto b = *t.consumer({.name = "b"});
  auto ea = a.poll(1s);
  auto eb = b.poll(1s);
  REQUIRE((ea.ok() && eb.ok()));
  CHECK(a.ack(*eb).is_invalid_argument());  // another consumer's event
  CHECK(a.ack(Event{}).is_invalid_argument());  // no consumer's event
  CHECK(a.stats().acked == 0);
  REQUIRE(a.ack(*ea).ok());
  CHECK(a.stats().acked == 1);
}

TEST_CASE("drop_oldest never blocks the producer; the lagging consumer counts what it skipped", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 8, .overflow = OverflowPolicy::kDropOldest});
  auto c = *t.consumer({.name = "slow"});
  auto p = *t.producer();
  publish_n(p, 0, 100);  // would block under kBlock
  auto got = drain(c);
  REQUIRE(!got.empty());
  CHECK(got.back() == "99");
  CHECK(got.size() + c.stats().skipped == 100);
  CHECK(c.stats().skipped >= 100 - 8);
  CHECK(got == range(100 - int(got.size()), 100));
}

TEST_CASE("drop_oldest under a running producer: what arrives is intact and in order", "[consumer][concurrency]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 32, .overflow = OverflowPolicy::kDropOldest});
  auto c = *t.consumer({.name = "c"});
  auto p = *t.producer();
  constexpr int kEvents = 50000;
  std::atomic<int> failed_publishes{0};  // Catch2 asserts only on the main thread
  std::thread producer([&] {
    for (int i = 0; i < kEvents; ++i) {
      std::string big(200, char('a' + i % 26));  // block-backed events too
      const std::string meta = std::to_string(i);
      failed_publishes += !p.publish(Message{.metadata = meta, .data = i % 3 ? std::string_view(big) : "s"}).ok();
    }
  });
  long last = -1, errors = 0;
  std::uint64_t received = 0;
  while (last < kEvents - 1) {
    auto batch = c.poll_batch(16, 5s);
    REQUIRE(batch.ok());
    for (const Event& e : *batch) {
      const long i = std::stol(std::string(e.metadata()));
      errors += i <= last;
      errors += (i % 3 ? e.data() != std::string(200, char('a' + i % 26)) : e.data() != "s");
      last = i;
      ++received;
    }
    REQUIRE(c.ack(batch->back()).ok());
  }
  producer.join();
  CHECK(failed_publishes == 0);
  CHECK(errors == 0);
  CHECK(received + c.stats().skipped == std::uint64_t(kEvents));
}

TEST_CASE("close from another thread wakes a blocked poll", "[consumer][lifecycle]") {
  Bus bus;
  auto t = *bus.create_topic("t");
  auto c = *t.consumer({.name = "c"});
  Status s;
  std::thread blocked([&] { s = c.poll().status(); });
  std::this_thread::sleep_for(20ms);
  c.close();
  blocked.join();
  CHECK(s.is_closed());
  CHECK(c.poll(0ms).status().is_closed());
  CHECK(c.ack(Event{}).is_closed());
  // The name is free again.
  CHECK(t.consumer({.name = "c"}).ok());
}

TEST_CASE("close() from another thread during polls and acks: the name is freed, acks hold", "[consumer][lifecycle]") {
  // The owner polls and acks without waiting while another thread closes
  // the consumer at a varying moment: whichever call is in flight ends,
  // later calls say Closed, and the name's next consumer starts right after
  // the last ack that succeeded.
  for (int round = 0; round < 200; ++round) {
    Bus bus;
    auto t = *bus.create_topic(
        "t", {.capacity = 64, .producers = round % 2 ? ProducerMode::kSingle : ProducerMode::kMulti});
    auto p = *t.producer();
    publish_n(p, 0, 64);
    auto c = *t.consumer({.name = "c"});
    std::int64_t last_acked = -1;
    bool closed_seen = false;
    std::thread owner([&] {
      const auto give_up = std::chrono::steady_clock::now() + 10s;  // a close never seen fails, not hangs
      while (std::chrono::steady_clock::now() < give_up) {
        auto e = c.poll(0ms);
        if (!e.ok()) {
          if (e.status().is_closed()) break;
          continue;  // TimedOut: all 64 taken; keep calling until closed
        }
        if (c.ack(*e).ok()) last_acked = std::int64_t(e->offset());
      }
      closed_seen = c.ack(Event{}).is_closed();
    });
    std::this_thread::sleep_for(std::chrono::microseconds(round % 40 * 5));
    c.close();
    owner.join();
    CHECK(closed_seen);
    auto next = t.consumer({.name = "c"});
    REQUIRE(next.ok());  // the name was freed
    auto e = next->poll(0ms);
    if (last_acked == 63) {
      CHECK(e.status().is_timed_out());
    } else {
      REQUIRE(e.ok());
      CHECK(e->offset() == std::uint64_t(last_acked + 1));
    }
  }
}

TEST_CASE("poll_batch returns what is available in one partition, up to max", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 64});
  auto p = *t.producer();
  auto c = *t.consumer({.name = "c", .max_batch = 8});
  publish_n(p, 0, 20);
  auto b1 = c.poll_batch(100, 1s);  // capped at max_batch
  REQUIRE(b1.ok());
  CHECK(b1->size() == 8);
  auto b2 = c.poll_batch(5, 1s);
  REQUIRE(b2.ok());
  REQUIRE(b2->size() == 5);
  CHECK((*b2)[0].data() == "8");
  CHECK((*b2)[4].data() == "12");
  REQUIRE(c.ack(b2->back()).ok());
  CHECK(c.stats().acked == 13);
  CHECK(c.poll_batch(100, 1s)->size() == 7);
  CHECK(c.poll_batch(100, 0ms).status().is_timed_out());
}

TEST_CASE("range-for iterates until the topic closes", "[consumer]") {
  Bus bus;
  auto t = *bus.create_topic("t");
  auto c = *t.consumer({.name = "c"});
  auto p = *t.producer();
  std::atomic<int> seen{0};
  std::atomic<int> failures{0};  // Catch2 asserts only on the main thread
  std::thread producer([&] {
    for (int i = 0; i < 25; ++i) failures += !p.publish("", "", std::to_string(i)).ok();
    while (seen.load() < 25) std::this_thread::yield();
    failures += !bus.delete_topic("t").ok();  // ends the loop below
  });
  std::vector<std::string> got;
  for (Event& e : c) {
    got.emplace_back(e.data());
    REQUIRE(c.ack(e).ok());
    seen.fetch_add(1);
  }
  producer.join();
  CHECK(failures == 0);
  CHECK(got == range(0, 25));
}

TEST_CASE("min_batch and batch_linger: polls gather batches, and a linger always ends", "[consumer][linger]") {
  Bus bus;
  constexpr auto kLong = std::chrono::hours(1);  // a linger that could only end early
  SECTION("while a producer publishes one by one, every batch holds at least min_batch events") {
    auto t = *bus.create_topic("t", {.capacity = 4096});
    auto c = *t.consumer({.name = "c", .max_batch = 512, .min_batch = 64, .batch_linger = kLong});
    constexpr int kEvents = 64 * 40;
    std::atomic<int> failed{0};
    std::thread producer([&] {  // paced: without the linger, polls would find one event at a time
      auto p = *t.producer();
      for (int i = 0; i < kEvents; ++i) {
        if (!p.publish("", "", std::to_string(i)).ok()) failed.fetch_add(1);
        std::this_thread::sleep_for(20us);
      }
    });
    int next = 0;
    int short_batches = 0;
    while (next < kEvents) {
      // The tail (fewer than 64 left) comes when the poll's own timeout ends its linger.
      const bool tail = kEvents - next < 64;
      auto batch = c.poll_batch(512, tail ? Timeout(100ms) : kForever);
      REQUIRE(batch.ok());
      if (!tail && batch->size() < 64) ++short_batches;
      for (const Event& e : *batch) CHECK(e.data() == std::to_string(next++));
      REQUIRE(c.ack(batch->back()).ok());
    }
    producer.join();
    CHECK(failed == 0);
    CHECK(short_batches == 0);
    CHECK(next == kEvents);
  }
  SECTION("a poll returns what is there once batch_linger has passed") {
    auto t = *bus.create_topic("t", {});
    auto c = *t.consumer({.name = "c", .min_batch = 100, .batch_linger = 2ms});
    auto p = *t.producer();
    publish_n(p, 0, 3);
    auto batch = c.poll_batch(256, kForever);  // would never end if the linger did not
    REQUIRE(batch.ok());
    CHECK(batch->size() == 3);
  }
  SECTION("the poll's own timeout ends a linger; a try (timeout 0) never lingers") {
    auto t = *bus.create_topic("t", {});
    auto c = *t.consumer({.name = "c", .min_batch = 100, .batch_linger = kLong});
    auto p = *t.producer();
    publish_n(p, 0, 2);
    auto tried = c.poll_batch(256, 0ms);
    REQUIRE(tried.ok());
    CHECK(tried->size() == 2);
    publish_n(p, 2, 3);
    auto timed = c.poll_batch(256, 5ms);
    REQUIRE(timed.ok());
    REQUIRE(timed->size() == 1);
    CHECK(timed->front().data() == "2");
  }
  SECTION("min_batch is capped at the batch size asked for") {
    auto t = *bus.create_topic("t", {});
    auto c = *t.consumer({.name = "c", .max_batch = 16, .min_batch = 5000, .batch_linger = kLong});
    auto p = *t.producer();
    publish_n(p, 0, 20);
    auto full = c.poll_batch(16, kForever);
    REQUIRE(full.ok());
    CHECK(full->size() == 16);
    auto four = c.poll_batch(4, kForever);  // 4 are there: enough for this call
    REQUIRE(four.ok());
    CHECK(four->size() == 4);
  }
  SECTION("closing the consumer ends a linger") {
    auto t = *bus.create_topic("t", {});
    auto c = *t.consumer({.name = "c", .min_batch = 100, .batch_linger = kLong});
    auto p = *t.producer();
    publish_n(p, 0, 1);
    std::atomic<bool> returned{false};
    std::thread poller([&] {
      (void)c.poll_batch(256, kForever);  // the event, or Closed
      returned = true;
    });
    std::this_thread::sleep_for(10ms);
    c.close();
    poller.join();
    CHECK(returned);
  }
  SECTION("a negative linger is refused") {
    auto t = *bus.create_topic("t", {});
    auto c = t.consumer({.name = "c", .min_batch = 2, .batch_linger = -1ms});
    REQUIRE_FALSE(c.ok());
    CHECK(c.status().is_invalid_argument());
    CHECK(c.status().message().find("batch_linger") != std::string_view::npos);
  }
}

// Several live instances of one consumer name: exclusive refusal and
// standby (failover) takeover from the last ack, including a takeover
// while a producer runs, chains of standbys, close, and durable topics.
#include <catch2/catch.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "rill/json.hpp"
#include "rill/rill.hpp"
#include "support/store.hpp"
#include "support/temp_dir.hpp"

using namespace rill;
using namespace std::chrono_literals;

namespace {

void publish_n(Topic& t, int from, int to) {
  auto p = t.producer();
  REQUIRE(p.ok());
  for (int i = from; i < to; ++i) REQUIRE(p->publish(Message{.data = std::to_string(i)}).ok());
}

ConsumerOptions standby(const char* name) { return {.name = name, .mode = ConsumerMode::kStandby}; }

}  // namespace

TEST_CASE("exclusive is the default: a second live instance is refused", "[modes]") {
  Bus bus;
  auto t = *bus.create_topic("t");
  auto a = *t.consumer({.name = "n"});
  CHECK(t.consumer({.name = "n"}).status().is_already_exists());
  CHECK(a.active());
}

TEST_CASE("a standby takes over from the last ack when the active instance closes", "[modes]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 64});
  publish_n(t, 0, 6);
  auto first = *t.consumer(standby("n"));
  auto second = *t.consumer(standby("n"));
  CHECK(first.active());
  CHECK_FALSE(second.active());
  CHECK(second.poll(10ms).status().is_timed_out());  // delivers nothing while standing by
  for (int i = 0; i < 5; ++i) {
    auto e = first.poll(1s);
    REQUIRE(e.ok());
    if (i == 2) REQUIRE(first.ack(*e).ok());  // 0..2 done; 3 and 4 delivered, not acked
  }
  first.close();
  auto e = second.poll(1s);
  REQUIRE(e.ok());
  CHECK(e->data() == "3");
  CHECK(second.active());
}

TEST_CASE("a standby blocked in poll wakes and takes over; nothing acked is repeated, nothing lost",
          "[modes][concurrency]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 2, .capacity = 128});
  constexpr std::size_t kEvents = 20000;
  auto active = *t.consumer(standby("n"));
  std::vector<std::string> by_standby;
  std::atomic<bool> standby_ready{false}, active_done{false}, standby_failed{false};
  std::atomic<std::size_t> active_count{0};
  std::thread standby_thread([&] {
    auto s = t.consumer(standby("n"));
    if (!s.ok() || s->active()) {
      standby_failed = true;
      standby_ready = true;
      return;
    }
    standby_ready = true;
    std::set<std::string> distinct;
    while (!active_done || distinct.size() + active_count < kEvents) {
      auto b = s->poll_batch(64, 10s);
      if (!b.ok()) {
        standby_failed = true;
        return;
      }
      for (const Event& e : *b) {
        by_standby.emplace_back(e.data());
        distinct.insert(std::string(e.data()));
      }
      if (!s->ack(b->back()).ok()) standby_failed = true;
    }
  });
  while (!standby_ready) std::this_thread::yield();
  std::atomic<int> publish_failures{0};
  std::thread producer([&] {  // Catch's macros are for the main thread only
    auto p = t.producer();
    for (std::size_t i = 0; i < kEvents; ++i) {
      if (!p.ok() || !p->publish(Message{.data = std::to_string(i)}).ok()) publish_failures++;
    }
  });
  std::set<std::string> by_active;
  while (by_active.size() < kEvents / 3) {
    auto b = active.poll_batch(64, 5s);
    REQUIRE(b.ok());
    for (const Event& e : *b) by_active.insert(std::string(e.data()));
    REQUIRE(active.ack(b->back()).ok());
  }
  active_count = by_active.size();
  active_done = true;
  active.close();  // everything it saw is acked: the standby goes on from there
  producer.join();
  standby_thread.join();
  CHECK_FALSE(standby_failed);
  CHECK(publish_failures == 0);
  std::set<std::string> all(by_active);
  std::size_t repeats = 0;
  for (const std::string& d : by_standby) repeats += !all.insert(d).second;
  CHECK(repeats == 0);
  CHECK(all.size() == kEvents);
}

TEST_CASE("standbys take over one at a time", "[modes]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 64});
  auto a = *t.consumer(standby("n"));
  auto b = *t.consumer(standby("n"));
  auto c = *t.consumer(standby("n"));
  publish_n(t, 0, 3);
  REQUIRE(a.ack(*a.poll(1s)).ok());  // "0" done
  a.close();
  auto eb = b.poll(1s);
  auto ec = c.poll(20ms);
  REQUIRE(eb.ok());
  CHECK(eb->data() == "1");
  CHECK(ec.status().is_timed_out());
  CHECK(b.active());
  CHECK_FALSE(c.active());
  REQUIRE(b.ack(*eb).ok());
  b.close();
  auto e = c.poll(1s);
  REQUIRE(e.ok());
  CHECK(e->data() == "2");
}

TEST_CASE("closing a standby ends its blocked poll", "[modes]") {
  Bus bus;
  auto t = *bus.create_topic("t");
  auto a = *t.consumer(standby("n"));
  auto s = *t.consumer(standby("n"));
  std::thread closer([&] {
    std::this_thread::sleep_for(20ms);
    s.close();
  });
  CHECK(s.poll(kForever).status().is_closed());
  closer.join();
  CHECK(a.active());
}

TEST_CASE("durable topics: a standby resumes after the last committed ack", "[modes][durable]") {
  rill::testing::TempDir dir;
  Bus bus = rill::testing::open_bus(dir.sub("store"));
  // A 16-slot ring: events beyond it are read back from disk.
  auto t = *bus.create_topic("t", rill::testing::durable(Durability::kSync, 1, 16));
  publish_n(t, 0, 40);
  auto a = *t.consumer({.name = "n", .position = Position::earliest(), .mode = ConsumerMode::kStandby});
  auto s = *t.consumer({.name = "n", .position = Position::earliest(), .mode = ConsumerMode::kStandby});
  for (int i = 0; i < 25; ++i) {
    auto e = a.poll(1s);
    REQUIRE(e.ok());
    if (i == 19) REQUIRE(a.ack(*e).ok());
  }
  a.close();
  std::vector<std::string> rest;
  for (int i = 20; i < 40; ++i) rest.emplace_back(s.poll(1s)->data());
  std::vector<std::string> expect;
  for (int i = 20; i < 40; ++i) expect.push_back(std::to_string(i));
  CHECK(rest == expect);
}

// ------------------------------------------------------------ shared mode

namespace {

ConsumerOptions shared(const char* name) { return {.name = name, .mode = ConsumerMode::kShared}; }

std::vector<std::string> take_all(Consumer& c) {
  std::vector<std::string> out;
  for (;;) {
    auto b = c.poll_batch(8, 0ms);
    if (!b.ok()) return out;
    for (const Event& e : *b) out.emplace_back(e.data());
  }
}

}  // namespace

TEST_CASE("shared instances receive disjoint events that together are all of them", "[modes][shared]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 3, .capacity = 256});
  auto a = *t.consumer(shared("n"));
  auto b = *t.consumer(shared("n"));
  publish_n(t, 0, 100);
  std::set<std::string> got_a, got_b;
  for (int round = 0; round < 100; ++round) {
    if (auto x = a.poll_batch(4, 0ms); x.ok()) {
      for (const Event& e : *x) {
        got_a.insert(std::string(e.data()));
        REQUIRE(a.ack(e).ok());
      }
    }
    if (auto y = b.poll_batch(4, 0ms); y.ok()) {
      for (const Event& e : *y) {
        got_b.insert(std::string(e.data()));
        REQUIRE(b.ack(e).ok());
      }
    }
  }
  CHECK(got_a.size() + got_b.size() == 100);
  CHECK_FALSE(got_a.empty());
  CHECK_FALSE(got_b.empty());
  for (const auto& d : got_a) CHECK(got_b.count(d) == 0);
}

TEST_CASE("individual acks: the name resumes at its first unacked event, skipping later acked ones",
          "[modes][shared]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 64});
  publish_n(t, 0, 10);
  {
    auto c = *t.consumer({.name = "n", .individual_acks = true});
    for (int i = 0; i < 8; ++i) {
      auto e = c.poll(1s);
      REQUIRE(e.ok());
      if (i != 3 && i != 5) REQUIRE(c.ack(*e).ok());  // out of order is fine
    }
  }
  auto c = *t.consumer({.name = "n", .individual_acks = true});
  CHECK(take_all(c) == std::vector<std::string>{"3", "5", "8", "9"});
}

TEST_CASE("an instance that leaves hands its unacked events to the others", "[modes][shared]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 64});
  auto a = *t.consumer(shared("n"));
  auto b = *t.consumer(shared("n"));
  publish_n(t, 0, 10);
  auto batch = a.poll_batch(10, 1s);
  REQUIRE(batch.ok());
  REQUIRE(batch->size() == 10);
  for (const Event& e : *batch) {
    if (std::stoi(std::string(e.data())) % 2 == 0) REQUIRE(a.ack(e).ok());
  }
  const Event held = (*batch)[1];
  a.close();
  CHECK(take_all(b) == std::vector<std::string>{"1", "3", "5", "7", "9"});
  // What b received is b's now: a stale copy of the old holder cannot ack it.
  CHECK(b.ack(held).is_invalid_argument());
}

TEST_CASE("a nack with a delay of kForever is never redelivered; other events flow", "[modes][shared]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 64});
  auto c = *t.consumer({.name = "n", .individual_acks = true});
  auto p = *t.producer();
  REQUIRE(p.publish(Message{.data = "parked"}).ok());
  auto e = c.poll(1s);
  REQUIRE(e.ok());
  REQUIRE(c.nack(*e, kForever).ok());  // due never (the delay saturates rather than wrapping to "now")
  CHECK(c.poll(50ms).status().is_timed_out());
  REQUIRE(p.publish(Message{.data = "next"}).ok());
  auto next = c.poll(1s);
  REQUIRE(next.ok());
  CHECK(next->data() == "next");
  CHECK(c.poll(20ms).status().is_timed_out());
}

TEST_CASE("nack redelivers; after max_redeliveries the event goes to the dead-letter topic with the reason",
          "[modes][shared]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 64});
  auto dlq = *bus.create_topic("t.dlq");
  auto dead = *dlq.consumer({.name = "inspector"});
  ConsumerOptions o{.name = "n", .individual_acks = true, .max_redeliveries = 2, .dead_letter_topic = "t.dlq"};
  auto c = *t.consumer(o);
  auto p = *t.producer();
  REQUIRE(p.publish(Message{.key = "k", .metadata = R"({"unit":"C"})", .data = "poison"}).ok());
  REQUIRE(p.publish(Message{.data = "later"}).ok());
  REQUIRE(p.publish(Message{.data = "parked"}).ok());
  int deliveries = 0;
  bool later = false, parked = false;
  while (deliveries < 3 || !later || !parked) {  // poison: the first delivery and two redeliveries
    auto e = c.poll(1s);
    REQUIRE(e.ok());
    if (e->data() == "later") {
      REQUIRE(c.ack(*e).ok());
      later = true;
    } else if (e->data() == "parked") {
      REQUIRE(c.nack(*e, std::chrono::hours(1)).ok());  // not due within this test
      parked = true;
    } else {
      ++deliveries;
      REQUIRE(c.nack(*e, 0ms, "cannot parse").ok());
    }
  }
  auto d = dead.poll(1s);
  REQUIRE(d.ok());
  CHECK(d->data() == "poison");
  CHECK(d->key() == "k");
  auto md = parse_metadata(*d);
  REQUIRE(md.ok());
  CHECK((*md)["unit"] == "C");
  CHECK((*md)["dead_letter"]["reason"] == "cannot parse");
  CHECK((*md)["dead_letter"]["deliveries"] == 3);
  CHECK((*md)["dead_letter"]["topic"] == "t");
  CHECK((*md)["dead_letter"]["offset"] == 0);
  // Dead-lettered counts as acked; the parked event is not due yet.
  CHECK(c.poll(20ms).status().is_timed_out());
}

TEST_CASE("a nacked event too large or too binary for plain dead-lettering still reaches the dead-letter topic",
          "[modes][shared]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 64, .max_event_size = 4096});
  auto dlq = *bus.create_topic("t.dlq", {.max_event_size = 1024});
  auto dead = *dlq.consumer({.name = "inspector"});
  auto c = *t.consumer({.name = "n", .individual_acks = true, .max_redeliveries = 1, .dead_letter_topic = "t.dlq"});
  auto p = *t.producer();
  const std::string binary("\xff\x00\xfe", 3), big(3000, 'x');
  REQUIRE(p.publish(Message{.key = "b", .metadata = binary, .data = "bin"}).ok());
  REQUIRE(p.publish(Message{.key = "big", .data = big}).ok());
  for (int i = 0; i < 4; ++i) {  // each is delivered, nacked, redelivered, nacked
    auto e = c.poll(1s);
    REQUIRE(e.ok());
    REQUIRE(c.nack(*e, 0ms, "no \xff reason").ok());
  }
  auto d = dead.poll(1s);
  REQUIRE(d.ok());
  CHECK(d->data() == "bin");
  auto md = parse_metadata(*d);
  REQUIRE(md.ok());
  CHECK(md->contains("original_metadata"));
  d = dead.poll(1s);
  REQUIRE(d.ok());
  CHECK(d->key() == "big");
  CHECK(d->data().empty());
  md = parse_metadata(*d);
  REQUIRE(md.ok());
  CHECK((*md)["dead_letter"]["dropped_data_bytes"] == 3000);
  CHECK(c.poll(20ms).status().is_timed_out());  // both count as acked
}

TEST_CASE("a nacked event whose metadata is at its limit still reaches the dead-letter topic", "[modes][shared]") {
  // The dead letter's metadata (the original plus the dead-letter info)
  // would pass kMaxMetadataBytes: the original metadata goes, the event
  // does not get stuck.
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 64});
  auto dlq = *bus.create_topic("t.dlq");
  auto dead = *dlq.consumer({.name = "inspector"});
  auto c = *t.consumer({.name = "n", .individual_acks = true, .max_redeliveries = 1, .dead_letter_topic = "t.dlq"});
  auto p = *t.producer();
  const std::string meta = "{\"m\":\"" + std::string(kMaxMetadataBytes - 8, 'm') + "\"}";
  REQUIRE(meta.size() == kMaxMetadataBytes);
  REQUIRE(p.publish(Message{.key = "k", .metadata = meta, .data = "d"}).ok());
  for (int i = 0; i < 2; ++i) {  // delivered, nacked, redelivered, nacked
    auto e = c.poll(1s);
    REQUIRE(e.ok());
    REQUIRE(c.nack(*e, 0ms, std::string(100000, 'r')).ok());  // a reason longer than any limit, too
  }
  auto d = dead.poll(1s);
  REQUIRE(d.ok());
  CHECK(d->key() == "k");
  CHECK(d->data() == "d");
  CHECK(d->metadata().size() <= kMaxMetadataBytes);
  auto md = parse_metadata(*d);
  REQUIRE(md.ok());
  CHECK(!md->contains("m"));  // the original metadata was dropped to fit
  CHECK((*md)["dead_letter"]["reason"].get<std::string>().size() <= kMaxMetadataBytes / 2);
  CHECK(c.poll(20ms).status().is_timed_out());  // it counts as acked
}

TEST_CASE("misuse of individual acks and shared mode gets clear errors", "[modes][shared][errors]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 2, .capacity = 64});
  REQUIRE(bus.create_topic("single", {.producers = ProducerMode::kSingle}).ok());
  auto cumulative = *t.consumer({.name = "plain"});
  publish_n(t, 0, 1);
  auto e = cumulative.poll(1s);
  REQUIRE(e.ok());
  CHECK(cumulative.nack(*e).is_invalid_argument());
  CHECK(t.consumer({.name = "x", .max_redeliveries = 1}).status().is_invalid_argument());
  CHECK(t.consumer({.name = "x", .individual_acks = true, .max_redeliveries = 1}).status().is_invalid_argument());
  CHECK(t.consumer({.name = "x", .individual_acks = true, .dead_letter_topic = "missing"}).status().is_not_found());
  CHECK(t.consumer({.name = "x", .individual_acks = true, .dead_letter_topic = "single"})
            .status()
            .is_invalid_argument());
  auto s = *t.consumer(shared("s"));
  CHECK(t.consumer({.name = "s"}).status().is_already_exists());                     // exclusive vs shared
  CHECK(t.consumer({.name = "s", .partitions = {0}, .mode = ConsumerMode::kShared})  // other partitions
            .status()
            .is_invalid_argument());
  auto s2 = t.consumer(shared("s"));
  CHECK(s2.ok());
}

TEST_CASE("shared stress: instances come and go; every event acked, none repeated after its ack",
          "[modes][shared][stress]") {
  // Memory-only, or durable with a 64-slot ring (workers that fall behind read from disk).
  const bool on_disk = GENERATE(false, true);
  rill::testing::TempDir dir;
  Bus bus = on_disk ? rill::testing::open_bus(dir.sub("store")) : Bus();
  const TopicOptions options = on_disk ? rill::testing::durable(Durability::kAsync, 4, 64)
                                       : TopicOptions{.partitions = 4, .capacity = 256};
  auto t = *bus.create_topic("t", options);
  constexpr int kEvents = 30000, kWorkers = 3;
  std::vector<std::atomic<bool>> acked(kEvents);
  std::vector<std::atomic<int>> delivered(kEvents);
  std::atomic<int> acked_total{0}, violations{0}, failures{0};
  auto keeper = *t.consumer(shared("w"));  // holds the name while workers come and go
  std::thread producer([&] {
    auto p = t.producer();
    for (int i = 0; i < kEvents; ++i) {
      if (!p.ok() || !p->publish(Message{.data = std::to_string(i)}).ok()) failures++;
    }
  });
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      std::mt19937 rng(std::uint32_t(w) + 1);
      while (acked_total < kEvents) {
        auto c = t.consumer(shared("w"));
        if (!c.ok()) {
          failures++;
          return;
        }
        const int batches = 1 + int(rng() % 20);
        for (int b = 0; b < batches && acked_total < kEvents; ++b) {
          auto batch = c->poll_batch(16, 20ms);
          if (!batch.ok()) continue;
          for (const Event& e : *batch) {
            const int i = std::stoi(std::string(e.data()));
            delivered[std::size_t(i)]++;
            if (acked[std::size_t(i)]) violations++;  // delivered again after an ack
            if (rng() % 20 == 0) continue;             // left unacked: goes to another instance later
            if (c->ack(e).ok()) {
              acked[std::size_t(i)] = true;
              acked_total++;
            }
          }
        }
      }  // closes: the unacked events go back
    });
  }
  // The keeper closes after a while, leaving the workers alone.
  std::this_thread::sleep_for(10ms);
  keeper.close();
  producer.join();
  for (auto& w : workers) w.join();
  CHECK(failures == 0);
  CHECK(violations == 0);
  CHECK(acked_total == kEvents);
  int never = 0;
  for (auto& d : delivered) never += d == 0;
  CHECK(never == 0);
}

// ------------------------------------------------------------ key_shared

TEST_CASE("key_shared: every key goes to one instance, in order", "[modes][key_shared]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 2, .capacity = 512});
  auto a = *t.consumer({.name = "n", .mode = ConsumerMode::kKeyShared});
  auto b = *t.consumer({.name = "n", .mode = ConsumerMode::kKeyShared});
  auto p = *t.producer();
  constexpr int kKeys = 20, kEvents = 400;
  for (int i = 0; i < kEvents; ++i) {
    REQUIRE(p.publish(Message{.key = "k" + std::to_string(i % kKeys), .data = std::to_string(i)}).ok());
  }
  std::map<std::string, std::set<int>> who;       // key -> instances that got it
  std::map<std::string, int> last;                // key -> last value seen
  int got = 0, order_errors = 0;
  Consumer* instances[2] = {&a, &b};
  for (int round = 0; got < kEvents && round < 10000; ++round) {
    Consumer& c = *instances[round % 2];
    auto batch = c.poll_batch(7, 0ms);
    if (!batch.ok()) continue;
    for (const Event& e : *batch) {
      const std::string key(e.key());
      const int v = std::stoi(std::string(e.data()));
      who[key].insert(round % 2);
      if (last.count(key) && v != last[key] + kKeys) ++order_errors;
      last[key] = v;
      REQUIRE(c.ack(e).ok());
      ++got;
    }
  }
  CHECK(got == kEvents);
  CHECK(order_errors == 0);
  std::set<int> used;
  for (const auto& [key, instances_of_key] : who) {
    CHECK(instances_of_key.size() == 1);
    used.insert(*instances_of_key.begin());
  }
  CHECK(used.size() == 2);  // the keys are spread over both
  CHECK(t.consumer({.name = "n", .mode = ConsumerMode::kShared}).status().is_invalid_argument());  // mixed modes
}

TEST_CASE("key_shared stress: instances crash and join; per-key acks stay in publish order, none lost",
          "[modes][key_shared][stress]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 3, .capacity = 256});
  constexpr int kKeys = 32, kEvents = 30000, kWorkers = 3;
  std::mutex mu;  // guards the checker
  std::vector<int> next_ack(kKeys);
  for (int k = 0; k < kKeys; ++k) next_ack[std::size_t(k)] = k;
  int order_errors = 0;
  std::atomic<int> acked_total{0}, failures{0};
  auto keeper = *t.consumer({.name = "w", .mode = ConsumerMode::kKeyShared});
  std::thread producer([&] {
    auto p = t.producer();
    for (int i = 0; i < kEvents; ++i) {
      const std::string key = std::to_string(i % kKeys), data = std::to_string(i);
      if (!p.ok() || !p->publish(Message{.key = key, .data = data}).ok()) failures++;
    }
  });
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      std::mt19937 rng(std::uint32_t(w) + 7);
      while (acked_total < kEvents) {
        auto c = t.consumer({.name = "w", .mode = ConsumerMode::kKeyShared});
        if (!c.ok()) {
          failures++;
          return;
        }
        const int batches = 1 + int(rng() % 30);
        bool crashed = false;  // from the crash on, nothing is acked: it all goes back at close
        for (int b = 0; b < batches && acked_total < kEvents; ++b) {
          auto batch = c->poll_batch(16, 20ms);
          if (!batch.ok()) continue;
          for (const Event& e : *batch) {
            if (!crashed && rng() % 50 == 0) crashed = true;
            if (crashed) continue;
            const int k = std::stoi(std::string(e.key()));
            const int v = std::stoi(std::string(e.data()));
            {
              std::lock_guard<std::mutex> lock(mu);
              if (v != next_ack[std::size_t(k)]) order_errors++;
              next_ack[std::size_t(k)] = v + kKeys;
            }
            if (!c->ack(e).ok()) failures++;
            acked_total++;
          }
        }
      }
    });
  }
  std::this_thread::sleep_for(10ms);
  keeper.close();
  producer.join();
  for (auto& w : workers) w.join();
  CHECK(failures == 0);
  CHECK(order_errors == 0);
  CHECK(acked_total == kEvents);
}

// ------------------------------------------- shared mode on durable and lossy topics

namespace {

// Polls every instance in turn until `total` events were seen or nothing
// came for a while; acks each event unless `ack` says no. Returns the data
// of every delivery (duplicates kept).
std::vector<std::string> drain_shared(std::vector<Consumer*> instances, std::size_t total,
                                      const std::function<bool(const Event&)>& ack = {}) {
  std::vector<std::string> seen;
  int idle = 0;
  while (seen.size() < total && idle < 200) {
    bool any = false;
    for (Consumer* c : instances) {
      auto b = c->poll_batch(16, 1ms);
      if (!b.ok()) continue;
      any = true;
      for (const Event& e : *b) {
        seen.emplace_back(e.data());
        if (!ack || ack(e)) REQUIRE(c->ack(e).ok());
      }
    }
    idle = any ? 0 : idle + 1;
  }
  return seen;
}

std::string payload(int i) { return "event-" + std::to_string(i) + std::string(std::size_t(i % 97), char('a' + i % 26)); }

}  // namespace

TEST_CASE("durable topics: shared instances far behind read from disk; all once, byte for byte",
          "[modes][shared][durable]") {
  rill::testing::TempDir dir;
  Bus bus = rill::testing::open_bus(dir.sub("store"));
  // A 32-slot ring and 3000 events: almost everything comes back from disk.
  auto t = *bus.create_topic("t", rill::testing::durable(Durability::kAsync, 2, 32));
  auto a = *t.consumer({.name = "n", .position = Position::earliest(), .mode = ConsumerMode::kShared});
  auto b = *t.consumer({.name = "n", .position = Position::earliest(), .mode = ConsumerMode::kShared});
  constexpr int kEvents = 3000;
  {
    auto p = *t.producer();
    for (int i = 0; i < kEvents; ++i) REQUIRE(p.publish(Message{.key = "k" + std::to_string(i % 7), .data = payload(i)}).ok());
  }
  const std::vector<std::string> seen = drain_shared({&a, &b}, kEvents);
  std::multiset<std::string> got(seen.begin(), seen.end());
  std::multiset<std::string> want;
  for (int i = 0; i < kEvents; ++i) want.insert(payload(i));
  CHECK(got == want);  // nothing lost, nothing twice, every byte right
  CHECK(a.stats().from_disk + b.stats().from_disk > 0);
  CHECK(a.stats().delivered > 0);
  CHECK(b.stats().delivered > 0);
}

TEST_CASE("durable topics: individually acked events are not repeated after a restart", "[modes][shared][durable]") {
  rill::testing::TempDir dir;
  const std::string path = dir.sub("store");
  std::set<int> unacked{3, 7, 40, 41};
  {
    Bus bus = rill::testing::open_bus(path);
    auto t = *bus.create_topic("t", rill::testing::durable(Durability::kAsync, 1, 16));
    publish_n(t, 0, 60);
    auto c = *t.consumer({.name = "n", .position = Position::earliest(), .individual_acks = true});
    for (int i = 0; i < 50; ++i) {  // 50 of 60 delivered; all but four of them acked, out of order
      auto e = c.poll(1s);
      INFO(i << ": " << e.status().to_string());
      REQUIRE(e.ok());
      REQUIRE(e->data() == std::to_string(i));
      if (!unacked.count(i)) REQUIRE(c.ack(*e).ok());
    }
  }  // the bus closes: the last acks are committed
  Bus bus = rill::testing::open_bus(path);
  auto t = *bus.topic("t");
  SECTION("individual acks resume with exactly the unacked events, in order") {
    auto c = *t.consumer({.name = "n", .individual_acks = true});
    std::vector<std::string> want{"3", "7", "40", "41"};
    for (int i = 50; i < 60; ++i) want.push_back(std::to_string(i));
    CHECK(take_all(c) == want);
  }
  SECTION("key_shared instances resume the same way (keys read back from disk)") {
    auto a = *t.consumer({.name = "n", .mode = ConsumerMode::kKeyShared});
    auto b = *t.consumer({.name = "n", .mode = ConsumerMode::kKeyShared});
    const std::vector<std::string> seen = drain_shared({&a, &b}, 14);
    std::set<std::string> got(seen.begin(), seen.end());
    std::set<std::string> want{"3", "7", "40", "41"};
    for (int i = 50; i < 60; ++i) want.insert(std::to_string(i));
    CHECK(seen.size() == 14);
    CHECK(got == want);
  }
  SECTION("a cumulative consumer of the name starts at the first unacked event") {
    auto c = *t.consumer({.name = "n"});
    auto e = c.poll(1s);
    REQUIRE(e.ok());
    CHECK(e->data() == "3");
  }
}

TEST_CASE("durable topics: positions survive instances leaving and a restart, with nacks", "[modes][shared][durable]") {
  rill::testing::TempDir dir;
  const std::string path = dir.sub("store");
  std::set<std::string> acked;
  {
    Bus bus = rill::testing::open_bus(path);
    auto t = *bus.create_topic("t", rill::testing::durable(Durability::kSync, 2, 16));
    publish_n(t, 0, 200);
    auto a = *t.consumer({.name = "n", .position = Position::earliest(), .mode = ConsumerMode::kShared});
    auto b = *t.consumer({.name = "n", .position = Position::earliest(), .mode = ConsumerMode::kShared});
    std::mt19937 rng(7);
    // Ack about two thirds, nack a few (redelivered later), leave the rest.
    for (int round = 0; round < 30; ++round) {
      for (Consumer* c : {&a, &b}) {
        auto batch = c->poll_batch(4, 10ms);
        if (!batch.ok()) continue;
        for (const Event& e : *batch) {
          const unsigned r = rng() % 6;
          if (r < 4) {
            REQUIRE(c->ack(e).ok());
            acked.insert(std::string(e.data()));
          } else if (r == 4) {
            REQUIRE(c->nack(e).ok());
          }
        }
      }
    }
    b.close();  // its unacked events go to a
  }
  Bus bus = rill::testing::open_bus(path);
  auto t = *bus.topic("t");
  auto a = *t.consumer({.name = "n", .mode = ConsumerMode::kShared});
  auto b = *t.consumer({.name = "n", .mode = ConsumerMode::kShared});
  const std::vector<std::string> seen = drain_shared({&a, &b}, 200 - acked.size());
  std::set<std::string> rest(seen.begin(), seen.end());
  CHECK(rest.size() == seen.size());  // once each
  for (const std::string& s : seen) CHECK(acked.count(s) == 0);  // nothing acked comes back
  CHECK(rest.size() + acked.size() == 200);                        // and nothing is lost
}

TEST_CASE("lossy topics: shared instances skip what the ring dropped, and account for every event",
          "[modes][shared][lossy]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 2, .capacity = 16, .overflow = OverflowPolicy::kDropOldest});
  auto a = *t.consumer(shared("n"));
  auto b = *t.consumer(shared("n"));
  constexpr int kEvents = 5000;
  std::atomic<bool> done{false};
  std::thread producer([&] {
    auto p = *t.producer();
    for (int i = 0; i < kEvents; ++i) {
      if (!p.publish(Message{.data = std::to_string(i), .partition = i % 2}).ok()) break;
    }
    done = true;
  });
  std::vector<std::string> seen;
  std::map<std::string, int> per_instance_last;  // per (instance, partition): offsets rise
  int order_errors = 0;
  std::map<std::pair<int, std::uint32_t>, std::int64_t> last;
  auto poll_into = [&](Consumer& c, int who) {
    auto batch = c.poll_batch(8, 1ms);
    if (!batch.ok()) return false;
    for (const Event& e : *batch) {
      seen.emplace_back(e.data());
      std::int64_t& l = last.try_emplace({who, e.partition()}, -1).first->second;
      order_errors += std::int64_t(e.offset()) <= l;
      l = std::int64_t(e.offset());
      REQUIRE(c.ack(e).ok());
      if (seen.size() % 64 == 0) std::this_thread::sleep_for(100us);  // fall behind now and then
    }
    return true;
  };
  while (!done) {
    poll_into(a, 0);
    poll_into(b, 1);
  }
  producer.join();
  for (int idle = 0; idle < 50;) idle = (poll_into(a, 0) | poll_into(b, 1)) ? 0 : idle + 1;
  std::set<std::string> unique(seen.begin(), seen.end());
  CHECK(unique.size() == seen.size());  // no duplicates
  CHECK(order_errors == 0);             // each instance sees a partition's events in order
  CHECK(a.stats().delivered + b.stats().delivered + a.stats().skipped + b.stats().skipped == kEvents);
  CHECK(a.stats().delivered + b.stats().delivered == seen.size());
}

TEST_CASE("a write batch refuses to ack for an individual-ack consumer", "[modes][shared][durable][errors]") {
  rill::testing::TempDir dir;
  Bus bus = rill::testing::open_bus(dir.sub("store"));
  auto t = *bus.create_topic("t", rill::testing::durable(Durability::kAsync, 1, 64));
  publish_n(t, 0, 1);
  auto c = *t.consumer({.name = "n", .position = Position::earliest(), .mode = ConsumerMode::kShared});
  auto e = c.poll(1s);
  REQUIRE(e.ok());
  WriteBatch batch;
  const Status s = batch.ack(c, *e);
  CHECK(s.is_invalid_argument());
  CHECK(s.message().find("individually") != std::string_view::npos);
  CHECK(c.ack(*e).ok());  // the consumer keeps working
}

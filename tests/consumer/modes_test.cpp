// Several live instances of one consumer name: exclusive refusal and
// standby (failover) takeover from the last ack, including a takeover
// while a producer runs, chains of standbys, close, and durable topics.
#include <catch2/catch.hpp>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "rill/rill.hpp"
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
  BusOptions bo;
  bo.path = dir.sub("store");
  bo.commit_interval = 2ms;
  auto bus = Bus::open(bo);
  REQUIRE(bus.ok());
  TopicOptions to;
  to.capacity = 16;  // events beyond it are read back from disk
  to.durability = Durability::kSync;
  auto t = *bus->create_topic("t", to);
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

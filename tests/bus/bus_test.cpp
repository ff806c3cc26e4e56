// Topic administration and lifecycle: create, open, list, delete; bad input
// leaves the bus working; closing wakes every blocked call.
#include <catch2/catch.hpp>

#include <thread>

#include "rill/rill.hpp"

using namespace rill;
using namespace std::chrono_literals;

TEST_CASE("topics are created, opened, listed and deleted", "[bus]") {
  Bus bus;
  auto a = bus.create_topic("beta", {.partitions = 3, .capacity = 16});
  REQUIRE(a.ok());
  CHECK(a->name() == "beta");
  CHECK(a->partitions() == 3);
  CHECK(a->options().capacity == 16);
  REQUIRE(bus.create_topic("alpha").ok());
  CHECK(bus.list_topics() == std::vector<std::string>{"alpha", "beta"});

  auto again = bus.create_topic("beta");
  CHECK(again.status().is_already_exists());

  auto opened = bus.topic("beta");
  REQUIRE(opened.ok());
  CHECK(opened->partitions() == 3);

  auto ensured = bus.ensure_topic("gamma", {.partitions = 2});
  REQUIRE(ensured.ok());
  CHECK(ensured->partitions() == 2);
  auto ensured_again = bus.ensure_topic("gamma");
  REQUIRE(ensured_again.ok());
  CHECK(ensured_again->partitions() == 2);  // the existing topic, unchanged

  REQUIRE(bus.delete_topic("beta").ok());
  CHECK(bus.topic("beta").status().is_not_found());
  CHECK(bus.delete_topic("beta").is_not_found());
  CHECK(bus.list_topics() == std::vector<std::string>{"alpha", "gamma"});
  CHECK(opened->closed());
  CHECK(opened->producer().status().is_closed());
}

TEST_CASE("bad names and options are refused and the bus keeps working", "[bus]") {
  Bus bus;
  CHECK(bus.create_topic("").status().is_invalid_argument());
  CHECK(bus.create_topic("has space").status().is_invalid_argument());
  CHECK(bus.create_topic(std::string(250, 'a')).status().is_invalid_argument());
  CHECK(bus.create_topic("t", {.partitions = 0}).status().is_invalid_argument());
  CHECK(bus.create_topic("t", {.partitions = 2000}).status().is_invalid_argument());
  CHECK(bus.create_topic("t", {.capacity = 1000}).status().is_invalid_argument());
  CHECK(bus.create_topic("t", {.capacity = 1}).status().is_invalid_argument());
  CHECK(bus.create_topic("t", {.max_event_size = 0}).status().is_invalid_argument());
  CHECK(bus.create_topic("t", {.max_consumers = 0}).status().is_invalid_argument());
  CHECK(bus.topic("nope").status().is_not_found());
  CHECK(bus.topic("bad/name").status().is_invalid_argument());
  CHECK(bus.producer("nope").status().is_not_found());
  CHECK(bus.consumer("nope", {.name = "c"}).status().is_not_found());
  CHECK(bus.list_topics().empty());

  // Still fully usable.
  REQUIRE(bus.create_topic("t").ok());
  auto p = bus.producer("t");
  auto c = bus.consumer("t", {.name = "c"});
  REQUIRE(p.ok());
  REQUIRE(c.ok());
  REQUIRE(p->publish("", "", "ok").ok());
  auto e = c->poll(1s);
  REQUIRE(e.ok());
  CHECK(e->data() == "ok");
}

TEST_CASE("closing the bus wakes blocked consumers and producers", "[bus][lifecycle]") {
  Bus bus;
  REQUIRE(bus.create_topic("t", {.capacity = 2}).ok());
  auto c = bus.consumer("t", {.name = "c"});
  auto slow = bus.consumer("t", {.name = "slow"});  // never acks: the ring fills
  auto p = bus.producer("t");
  REQUIRE((c.ok() && slow.ok() && p.ok()));
  Status consumer_status, producer_status;
  std::thread consumer([&] {
    for (;;) {
      auto e = c->poll();  // forever
      if (!e.ok()) {
        consumer_status = e.status();
        return;
      }
      (void)c->ack(*e);
    }
  });
  std::thread producer([&] {
    for (;;) {
      auto r = p->publish("", "", "x");  // blocks once `slow` lags 2 behind
      if (!r.ok()) {
        producer_status = r.status();
        return;
      }
    }
  });
  std::this_thread::sleep_for(50ms);
  CHECK(bus.close().ok());
  consumer.join();
  producer.join();
  CHECK(consumer_status.is_closed());
  CHECK(producer_status.is_closed());
  // Handles outlive the bus and keep answering Closed.
  CHECK(p->publish("", "", "x").status().is_closed());
  CHECK(c->poll(0ms).status().is_closed());
  CHECK(bus.create_topic("u").status().is_closed());
}

TEST_CASE("deleting a topic wakes its blocked calls; other topics run on", "[bus][lifecycle]") {
  Bus bus;
  REQUIRE(bus.create_topic("doomed").ok());
  REQUIRE(bus.create_topic("kept").ok());
  auto c = bus.consumer("doomed", {.name = "c"});
  REQUIRE(c.ok());
  Status s;
  std::thread t([&] { s = c->poll().status(); });
  std::this_thread::sleep_for(20ms);
  REQUIRE(bus.delete_topic("doomed").ok());
  t.join();
  CHECK(s.is_closed());
  auto p = bus.producer("kept");
  auto k = bus.consumer("kept", {.name = "c"});
  REQUIRE((p.ok() && k.ok()));
  REQUIRE(p->publish("", "", "alive").ok());
  CHECK(k->poll(1s)->data() == "alive");
  // The name can be reused for a new topic.
  REQUIRE(bus.create_topic("doomed").ok());
}

TEST_CASE("a moved-from Bus answers Closed; the bus it moved to works", "[bus][lifecycle]") {
  Bus bus;
  REQUIRE(bus.create_topic("t").ok());
  Bus moved = std::move(bus);
  CHECK(bus.close().ok());  // a no-op
  CHECK(bus.create_topic("u").status().is_closed());
  CHECK(bus.topic("t").status().is_closed());
  CHECK(bus.ensure_topic("t").status().is_closed());
  CHECK(bus.ensure_topic("t", {}).status().is_closed());
  CHECK(bus.delete_topic("t").is_closed());
  CHECK(bus.list_topics().empty());
  CHECK(bus.producer("t").status().is_closed());
  CHECK(bus.consumer("t", {.name = "c"}).status().is_closed());
  CHECK(bus.multi_consumer({.name = "m", .topics = {"t"}}).status().is_closed());
  WriteBatch batch;
  CHECK(bus.commit(batch).is_closed());
  CHECK(moved.list_topics() == std::vector<std::string>{"t"});
  auto c = moved.consumer("t", {.name = "c"});
  REQUIRE(moved.producer("t")->publish("", "", "alive").ok());
  CHECK(c->poll(1s)->data() == "alive");
}

TEST_CASE("events not yet polled when the topic or bus closes are not handed out", "[bus][lifecycle]") {
  for (bool whole_bus : {false, true}) {
    Bus bus;
    auto t = *bus.create_topic("t", {.partitions = 2});
    auto one = *t.consumer({.name = "one"});
    auto batch = *t.consumer({.name = "batch"});
    auto p = *t.producer();
    for (int i = 0; i < 10; ++i) REQUIRE(p.publish("", "", std::to_string(i)).ok());
    REQUIRE(one.poll(1s).ok());
    if (whole_bus) {
      CHECK(bus.close().ok());
    } else {
      REQUIRE(bus.delete_topic("t").ok());
    }
    CHECK(one.poll(0ms).status().is_closed());
    CHECK(one.poll(1s).status().is_closed());
    CHECK(batch.poll_batch(10, 0ms).status().is_closed());
    CHECK(batch.poll_batch(10, 1s).status().is_closed());
    int looped = 0;
    for (Event& e : batch) looped += !e.data().empty();
    CHECK(looped == 0);
  }
}

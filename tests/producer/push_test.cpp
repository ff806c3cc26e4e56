// Producer::push and flush: futures of ids, fixed and adaptive batches, the
// max_batches bound, strict and loose ordering, refusals, close, durable.
#include <catch2/catch.hpp>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "rill/rill.hpp"
#include "support/store.hpp"
#include "support/temp_dir.hpp"

using namespace rill;
using namespace std::chrono_literals;

namespace {

ProducerOptions pushing(std::size_t batch_size, std::size_t max_batches = 4, Ordering o = Ordering::kStrict) {
  ProducerOptions po;
  po.push = {.batch_size = batch_size, .max_batches = max_batches, .ordering = o};
  return po;
}

std::vector<std::string> drain(Consumer& c, std::size_t n) {
  std::vector<std::string> out;
  while (out.size() < n) {
    auto e = c.poll(2s);
    if (!e.ok()) break;
    out.emplace_back(e->data());
    REQUIRE(c.ack(*e).ok());
  }
  return out;
}

}  // namespace

TEST_CASE("push returns futures of ids; strict order reaches the topic in push order", "[push]") {
  for (std::size_t batch : {std::size_t{0}, std::size_t{1}, std::size_t{7}}) {
    Bus bus;
    auto t = *bus.create_topic("t", {.capacity = 1024});
    auto c = *t.consumer({.name = "c"});
    auto p = *t.producer(pushing(batch));
    std::vector<PushFuture> futures;
    std::vector<std::string> sent;
    for (int i = 0; i < 500; ++i) {
      sent.push_back("e" + std::to_string(i));
      futures.push_back(p.push(Message{.data = sent.back()}));
    }
    REQUIRE(p.flush().wait(5s).ok());
    for (std::size_t i = 0; i < futures.size(); ++i) {
      REQUIRE(futures[i].completed());
      auto id = futures[i].wait(0ms);
      REQUIRE(id.ok());
      CHECK(id->offset == i);
    }
    CHECK(drain(c, sent.size()) == sent);
  }
}

TEST_CASE("push(metadata, data, partition_hint) honours the hint", "[push]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 3});
  auto p = *t.producer(pushing(0));
  auto id = p.push(R"({"energy":3})", "frame", 2).wait(2s);
  REQUIRE(id.ok());
  CHECK(id->partition == 2);
  CHECK(p.push("{}", "x", 9).wait(2s).status().is_invalid_argument());  // out of range
}

TEST_CASE("waiting on a future of a batch still being filled sends it", "[push]") {
  Bus bus;
  auto t = *bus.create_topic("t");
  auto c = *t.consumer({.name = "c"});
  auto p = *t.producer(pushing(100));
  auto f = p.push(Message{.data = "alone"});
  CHECK_FALSE(f.completed());
  auto id = f.wait(2s);
  REQUIRE(id.ok());
  CHECK(c.poll(1s)->data() == "alone");
}

TEST_CASE("max_batches bounds what is pending: a try_push fails, nothing accepted is lost", "[push]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 8});
  auto c = *t.consumer({.name = "c"});  // holds the ring: nothing acked yet
  auto p = *t.producer(pushing(4, 2));
  std::vector<PushFuture> accepted;
  std::vector<std::string> sent;
  int refused = 0;
  for (int i = 0; i < 200 && refused == 0; ++i) {
    const std::string d = std::to_string(i);
    PushFuture f = p.try_push(Message{.data = d});
    if (f.completed() && f.wait(0ms).status().is_timed_out()) {
      ++refused;
      continue;
    }
    accepted.push_back(std::move(f));
    sent.push_back(d);
  }
  CHECK(refused == 1);  // the ring (8) and two pending batches (8) filled up
  auto flushed = p.flush();
  CHECK(drain(c, sent.size()) == sent);  // consuming frees the ring; the senders go on
  REQUIRE(flushed.wait(5s).ok());
  for (auto& f : accepted) CHECK(f.wait(0ms).ok());
}

TEST_CASE("push refusals: validator, size; a pushing handle refuses publish", "[push][errors]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.max_event_size = 16});
  ProducerOptions po = pushing(0);
  std::atomic<int> validated{0};  // the validator runs once per push, on the pushing thread
  po.validator = [&](const Message& m) {
    validated++;
    return m.data == "bad" ? Status::InvalidArgument("no") : Status::Ok();
  };
  auto p = *t.producer(po);
  auto bad = p.push(Message{.data = "bad"});
  CHECK(bad.completed());
  CHECK(bad.wait(0ms).status().is_invalid_argument());
  CHECK(p.push(Message{.data = std::string(17, 'x')}).wait(0ms).status().is_invalid_argument());
  REQUIRE(p.push(Message{.data = "fine"}).wait(2s).ok());
  CHECK(validated == 3);  // bad, oversize (validated before its size check), fine: never again by the sender
  CHECK(p.publish(Message{.data = "direct"}).status().is_invalid_argument());
  CHECK(p.try_publish(Message{.data = "direct"}).status().is_invalid_argument());
  CHECK(PushFuture{}.wait(0ms).status().is_invalid_argument());
  CHECK(FlushFuture{}.wait(0ms).ok());
}

TEST_CASE("loose ordering publishes everything once, from two senders", "[push]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 2, .capacity = 4096});
  auto c = *t.consumer({.name = "c"});
  auto p = *t.producer(pushing(16, 8, Ordering::kLoose));
  std::vector<PushFuture> futures;
  for (int i = 0; i < 3000; ++i) futures.push_back(p.push(Message{.data = std::to_string(i)}));
  REQUIRE(p.flush().wait(5s).ok());
  std::set<std::pair<std::uint32_t, std::uint64_t>> ids;
  for (auto& f : futures) {
    auto id = f.wait(0ms);
    REQUIRE(id.ok());
    ids.insert({id->partition, id->offset});
  }
  CHECK(ids.size() == 3000);
  auto got = drain(c, 3000);
  CHECK(std::set<std::string>(got.begin(), got.end()).size() == 3000);
}

TEST_CASE("closing a pushing producer fails what is still pending with Closed", "[push][lifecycle]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 4});
  auto c = *t.consumer({.name = "c"});  // never acks: the senders block on a full ring
  std::vector<PushFuture> futures;
  {
    auto p = *t.producer(pushing(2, 8));
    for (int i = 0; i < 12; ++i) futures.push_back(p.push(Message{.data = std::to_string(i)}));
    (void)p.flush();
    while (t.stats()[0].next_offset < 4) std::this_thread::yield();  // the ring is full: the senders wait
  }  // destroyed: closes, the senders stop
  int ok = 0, closed = 0;
  for (auto& f : futures) {
    auto id = f.wait(1s);
    if (id.ok()) ++ok;
    else if (id.status().is_closed()) ++closed;
  }
  CHECK(ok == 4);  // what the ring took
  CHECK(closed == 8);
}

TEST_CASE("replacing a pushing producer by move-assignment does not hang on a full ring", "[push][lifecycle]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 4});
  auto c = *t.consumer({.name = "c"});  // never acks
  auto p = *t.producer(pushing(1));
  std::vector<PushFuture> futures;
  for (int i = 0; i < 8; ++i) futures.push_back(p.push(Message{.data = std::to_string(i)}));
  (void)p.flush();
  while (t.stats()[0].next_offset < 4) std::this_thread::yield();  // a sender now waits for room
  p = *t.producer();  // the old handle goes without close(); its senders must stop
  int closed = 0;
  for (auto& f : futures) closed += f.wait(1s).status().is_closed();
  CHECK(closed == 4);
  CHECK(p.publish(Message{.data = "direct"}, 0ms).status().is_timed_out());  // the new handle works (ring full)
}

TEST_CASE("push on a sync durable topic completes once the events are committed", "[push][durable]") {
  rill::testing::TempDir dir;
  Bus bus = rill::testing::open_bus(dir.sub("store"));
  auto t = *bus.create_topic("t", rill::testing::durable(Durability::kSync));
  auto p = *t.producer(pushing(32));
  std::vector<PushFuture> futures;
  for (int i = 0; i < 100; ++i) futures.push_back(p.push(Message{.data = std::to_string(i)}));
  REQUIRE(p.flush().wait(10s).ok());
  std::uint64_t last = 0;
  for (auto& f : futures) last = std::max(last, f.wait(0ms)->offset);
  CHECK(t.stats()[0].committed_offset > last);
}

TEST_CASE("push runs the metadata serializer on the pushing thread; a refusal fails that future only",
          "[push][serializer]") {
  Bus bus;
  auto t = *bus.create_topic("t");
  ProducerOptions po = pushing(0);
  const auto pusher = std::this_thread::get_id();
  std::atomic<int> off_thread{0};
  po.metadata_serializer = [&](std::string_view in, std::string& out) -> Status {
    off_thread += std::this_thread::get_id() != pusher;
    if (in.empty()) return Status::InvalidArgument("metadata is required");
    out = "{\"tag\":\"" + std::string(in) + "\"}";
    return Status::Ok();
  };
  auto p = *t.producer(po);
  auto c = *t.consumer({.name = "c"});
  auto ok1 = p.push("a", "one");
  auto bad = p.push("", "two");
  auto ok2 = p.push("b", "three");
  CHECK(bad.wait(0ms).status().is_invalid_argument());
  REQUIRE(p.flush().wait(2s).ok());
  REQUIRE(ok1.wait(2s).ok());
  REQUIRE(ok2.wait(2s).ok());
  auto e1 = c.poll(2s);
  auto e2 = c.poll(2s);
  REQUIRE((e1.ok() && e2.ok()));
  CHECK(e1->metadata() == "{\"tag\":\"a\"}");
  CHECK(e1->data() == "one");
  CHECK(e2->metadata() == "{\"tag\":\"b\"}");
  CHECK(e2->data() == "three");
  CHECK(c.poll(0ms).status().is_timed_out());
  CHECK(off_thread == 0);
}

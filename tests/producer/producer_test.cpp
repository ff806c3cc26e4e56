// Partition choice, overflow policies, timeouts, size limits, batches and
// the single-producer right.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "common/stamp_clock.hpp"
#include "rill/json.hpp"
#include "rill/rill.hpp"

using namespace rill;
using namespace std::chrono_literals;

TEST_CASE("events with the same key land in the same partition", "[producer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 8, .capacity = 256});
  auto p = *t.producer();
  std::map<std::string, std::set<std::uint32_t>> seen;
  std::set<std::uint32_t> used;
  for (int round = 0; round < 3; ++round) {
    for (int k = 0; k < 40; ++k) {
      const std::string key = "sensor-" + std::to_string(k);
      auto id = p.publish(key, "", "v");
      REQUIRE(id.ok());
      seen[key].insert(id->partition);
      used.insert(id->partition);
    }
  }
  for (auto& [key, parts] : seen) CHECK(parts.size() == 1);
  CHECK(used.size() > 4);  // 40 keys spread over the 8 partitions
}

TEST_CASE("explicit partitions are honoured and checked", "[producer]") {
  const ProducerMode mode = GENERATE(ProducerMode::kSingle, ProducerMode::kMulti);
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 3, .producers = mode});
  auto p = *t.producer();
  auto id = p.publish(Message{.data = "x", .partition = 2});
  REQUIRE(id.ok());
  CHECK(id->partition == 2);
  CHECK(id->offset == 0);
  // Again once the producer has room cached (its fast path), then refusals.
  id = p.publish(Message{.key = "k", .data = "y", .partition = 2});
  REQUIRE(id.ok());
  CHECK(id->partition == 2);
  CHECK(id->offset == 1);
  CHECK(p.publish(Message{.data = "x", .partition = 3}).status().is_invalid_argument());
  CHECK(p.publish(Message{.data = "x", .partition = -5}).status().is_invalid_argument());
  CHECK(p.try_publish(Message{.data = "x", .partition = 3}).status().is_invalid_argument());
  // Nothing was published by the refused calls.
  CHECK(t.stats()[2].next_offset == 2);
}

TEST_CASE("keyless events go round-robin; offsets count from 0 per partition", "[producer]") {
  const ProducerMode mode = GENERATE(ProducerMode::kSingle, ProducerMode::kMulti);
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 4, .producers = mode});
  auto p = *t.producer();
  std::vector<std::uint64_t> next(4, 0);
  for (int i = 0; i < 40; ++i) {
    auto id = p.publish("", "", "x");
    REQUIRE(id.ok());
    CHECK(id->partition == std::uint32_t(i % 4));
    CHECK(id->offset == next[id->partition]++);
    // Events for a chosen partition leave the rotation alone.
    if (i % 3 == 0) {
      auto chosen = p.publish(Message{.data = "x", .partition = 1});
      REQUIRE(chosen.ok());
      CHECK(chosen->partition == 1);
      CHECK(chosen->offset == next[1]++);
    }
  }
}

TEST_CASE("an oversize event is refused and publishes nothing", "[producer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.max_event_size = 100});
  auto p = *t.producer();
  auto c = *t.consumer({.name = "c"});
  CHECK(p.publish("k", "m", std::string(99, 'x')).status().is_invalid_argument());
  auto s = p.publish("", "", std::string(101, 'x')).status();
  CHECK(s.is_invalid_argument());
  CHECK(s.message().find("max_event_size") != std::string::npos);
  REQUIRE(p.publish("", "", std::string(100, 'x')).ok());
  auto e = c.poll(1s);
  REQUIRE(e.ok());
  CHECK(e->offset() == 0);
  CHECK(e->data().size() == 100);
}

TEST_CASE("a full ring: try_publish and the fail policy return Full, timed publish times out", "[producer]") {
  Bus bus;
  for (ProducerMode mode : {ProducerMode::kSingle, ProducerMode::kMulti}) {
    const std::string name = mode == ProducerMode::kSingle ? "single" : "multi";
    auto t = *bus.create_topic(name, {.capacity = 4, .producers = mode});
    auto lagging = *t.consumer({.name = "lagging"});
    auto p = *t.producer();
    for (int i = 0; i < 4; ++i) REQUIRE(p.try_publish(Message{.data = "x"}).ok());
    CHECK(p.try_publish(Message{.data = "y"}).status().is_full());
    CHECK(p.publish(Message{.data = "y"}, 10ms).status().is_timed_out());
    // Acking makes room again.
    auto e = lagging.poll(1s);
    REQUIRE(e.ok());
    REQUIRE(lagging.ack(*e).ok());
    REQUIRE(p.try_publish(Message{.data = "z"}).ok());
    CHECK(p.try_publish(Message{.data = "w"}).status().is_full());

    auto failing = *bus.create_topic(name + "-fail", {.capacity = 2, .overflow = OverflowPolicy::kFail,
                                                      .producers = mode});
    auto c = *failing.consumer({.name = "c"});
    auto fp = *failing.producer();
    REQUIRE(fp.publish("", "", "1").ok());
    REQUIRE(fp.publish("", "", "2").ok());
    CHECK(fp.publish("", "", "3").status().is_full());  // policy: no waiting
    CHECK(c.poll(1s)->data() == "1");
    CHECK(c.poll(1s)->data() == "2");
    CHECK(c.poll(0ms).status().is_timed_out());  // "3" was never published
  }
}

TEST_CASE("a blocked publish resumes when the consumer acks", "[producer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.capacity = 2});
  auto c = *t.consumer({.name = "c"});
  auto p = *t.producer();
  std::atomic<int> failed_publishes{0};  // Catch2 asserts only on the main thread
  std::thread producer([&] {
    for (int i = 0; i < 100; ++i) failed_publishes += !p.publish("", "", std::to_string(i)).ok();
  });
  for (int i = 0; i < 100; ++i) {
    auto e = c.poll(5s);
    REQUIRE(e.ok());
    CHECK(e->data() == std::to_string(i));
    REQUIRE(c.ack(*e).ok());
  }
  producer.join();
  CHECK(failed_publishes == 0);
}

TEST_CASE("publish_batch publishes in order, validates first and returns counts", "[producer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 2, .capacity = 64});
  auto p = *t.producer();
  auto c = *t.consumer({.name = "c"});
  std::vector<std::string> data;
  for (int i = 0; i < 150; ++i) data.push_back("e" + std::to_string(i));
  std::vector<Message> batch;
  for (auto& d : data) batch.push_back(Message{.key = "same-key", .data = d});
  // An invalid message anywhere refuses the whole batch.
  std::vector<Message> bad = batch;
  bad[70].partition = 9;
  CHECK(p.publish_batch(bad).status().is_invalid_argument());
  CHECK(t.stats()[0].next_offset + t.stats()[1].next_offset == 0);

  std::vector<std::string> received;
  std::thread consumer([&] {  // Catch2 asserts only on the main thread
    for (int i = 0; i < 150; ++i) {
      auto e = c.poll(5s);
      if (!e.ok()) return;
      received.emplace_back(e->data());
      if (!c.ack(*e).ok()) return;
    }
  });
  auto n = p.publish_batch(batch);
  consumer.join();
  REQUIRE(n.ok());
  CHECK(*n == 150);
  CHECK(received == data);

  // Under the fail policy a batch that does not fit publishes what fits.
  auto small = *bus.create_topic("small", {.capacity = 8, .overflow = OverflowPolicy::kFail});
  auto sc = *small.consumer({.name = "c"});
  auto sp = *small.producer();
  std::vector<Message> ten(10, Message{.data = "x"});
  auto partial = sp.publish_batch(ten);
  REQUIRE(partial.ok());
  CHECK(*partial == 8);
  CHECK(sp.publish_batch(ten).status().is_full());
}

TEST_CASE("a key or metadata over its limit is refused by every publish call and publishes nothing", "[producer]") {
  const std::string key(kMaxKeyBytes, 'k'), meta = "{\"m\":\"" + std::string(kMaxMetadataBytes - 8, 'm') + "\"}";
  REQUIRE(meta.size() == kMaxMetadataBytes);
  const std::string long_key = key + "k", long_meta = meta + " ";
  for (const ProducerMode mode : {ProducerMode::kSingle, ProducerMode::kMulti}) {
    Bus bus;
    auto t = *bus.create_topic("t", {.producers = mode});
    auto c = *t.consumer({.name = "c"});
    auto p = *t.producer();
    auto refused = [](const Status& s, const char* limit) {
      return s.is_invalid_argument() && s.message().find(limit) != std::string::npos;
    };
    CHECK(refused(p.publish(Message{.key = long_key, .data = "x"}).status(), "kMaxKeyBytes"));
    CHECK(refused(p.publish(long_key, "", "").status(), "kMaxKeyBytes"));
    CHECK(refused(p.publish(Message{.metadata = long_meta, .data = "x"}).status(), "kMaxMetadataBytes"));
    const Message batch[] = {Message{.data = "fine"}, Message{.key = "k", .metadata = long_meta}};
    CHECK(refused(p.publish_batch(batch).status(), "kMaxMetadataBytes"));
    CHECK(c.poll(0ms).status().is_timed_out());  // nothing of the above was published
    // At the limits: published, and byte-exact.
    REQUIRE(p.publish(Message{.key = key, .metadata = meta, .data = "d"}, 10s).ok());
    auto e = c.poll(1s);
    REQUIRE(e.ok());
    CHECK(e->offset() == 0);
    CHECK(e->key() == key);
    CHECK(e->metadata() == meta);
    CHECK(e->data() == "d");
    // Last: a handle that pushes publishes only through its senders.
    CHECK(refused(p.push(Message{.key = long_key}).wait(10s).status(), "kMaxKeyBytes"));
    CHECK(refused(p.push(Message{.metadata = long_meta}).wait(10s).status(), "kMaxMetadataBytes"));
    REQUIRE(p.push(Message{.data = "after"}).wait(10s).ok());
    auto after = c.poll(10s);
    REQUIRE(after.ok());
    CHECK(after->data() == "after");
    CHECK(after->offset() == 1);
  }
}

TEST_CASE("a key too long for the slot goes into a block with empty metadata, byte-exact", "[producer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.max_event_size = 4096});
  auto c = *t.consumer({.name = "c"});
  auto p = *t.producer();
  const std::string key(2000, 'k');
  REQUIRE(p.publish(Message{.key = key, .data = "x"}).ok());  // metadata: an empty view (null data)
  REQUIRE(p.publish(Message{.key = key, .data = {}}).ok());
  auto a = c.poll(1s);
  auto b = c.poll(1s);
  REQUIRE((a.ok() && b.ok()));
  CHECK(a->key() == key);
  CHECK(a->metadata().empty());
  CHECK(a->data() == "x");
  CHECK(b->key() == key);
  CHECK(b->data().empty());
}

TEST_CASE("a single-producer topic admits one live producer", "[producer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.producers = ProducerMode::kSingle});
  {
    auto p = t.producer();
    REQUIRE(p.ok());
    CHECK(t.producer().status().is_already_exists());
    p->close();  // keeps the right: another thread's publish may still be writing
    CHECK(t.producer().status().is_already_exists());
    CHECK(p->publish("", "", "x").status().is_closed());
  }
  auto again = t.producer();
  REQUIRE(again.ok());
  auto id = again->publish("", "", "x");
  REQUIRE(id.ok());
  // Memory-only: a published event is as durable as it gets; a made-up id is refused.
  CHECK(again->wait_durable(*id).ok());
  CHECK(again->wait_durable(EventId{0, id->offset + 1}).is_invalid_argument());
}

TEST_CASE("closing a producer from another thread ends its blocked publish", "[producer][lifecycle]") {
  Bus bus;
  for (ProducerMode mode : {ProducerMode::kSingle, ProducerMode::kMulti}) {
    auto t = *bus.create_topic(mode == ProducerMode::kSingle ? "s" : "m", {.capacity = 2, .producers = mode});
    auto c = *t.consumer({.name = "c"});
    auto p = *t.producer();
    REQUIRE(p.publish("", "", "1").ok());
    REQUIRE(p.publish("", "", "2").ok());
    Status s;
    std::thread blocked([&] { s = p.publish("", "", "3").status(); });
    std::this_thread::sleep_for(20ms);
    p.close();
    blocked.join();
    CHECK(s.is_closed());
    CHECK(c.poll(1s).ok());
    CHECK(c.poll(1s).ok());
    CHECK(c.poll(0ms).status().is_timed_out());
  }
}

TEST_CASE("closing multi-producer handles ends publishes that race for the same freed slot", "[producer][lifecycle]") {
  // Four untimed publishes into a 2-slot ring: two land, two wait. One ack
  // frees one slot; one waiter takes it, the other must still be
  // interruptible by its handle's close (it never holds a claim it cannot
  // fill).
  Bus bus;
  for (int round = 0; round < 5; ++round) {
    const std::string name = "m" + std::to_string(round);
    auto t = *bus.create_topic(name, {.capacity = 2, .producers = ProducerMode::kMulti});
    auto c = *t.consumer({.name = "c"});
    std::vector<Producer> producers;
    for (int i = 0; i < 4; ++i) producers.push_back(*t.producer());
    std::vector<Status> results(4);
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&, i] { results[i] = producers[i].publish("", "", std::to_string(i)).status(); });
    }
    auto first = c.poll(1s);
    REQUIRE(first.ok());
    while (t.stats()[0].next_offset < 2) std::this_thread::yield();
    std::this_thread::sleep_for(10ms);  // the other two wait for room
    REQUIRE(c.ack(*first).ok());
    while (t.stats()[0].next_offset < 3) std::this_thread::yield();
    std::this_thread::sleep_for(10ms);
    for (Producer& p : producers) p.close();
    for (std::thread& th : threads) th.join();
    CHECK(std::count_if(results.begin(), results.end(), [](const Status& s) { return s.ok(); }) == 3);
    CHECK(std::count_if(results.begin(), results.end(), [](const Status& s) { return s.is_closed(); }) == 1);
    CHECK(t.stats()[0].next_offset == 3);
    CHECK(c.poll(1s).ok());
    CHECK(c.poll(1s).ok());
    CHECK(c.poll(10ms).status().is_timed_out());
  }
}

TEST_CASE("a validator refuses events with its reason, and a refused batch publishes nothing", "[producer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 2, .capacity = 64});
  auto c = *t.consumer({.name = "c"});
  ProducerOptions o;
  o.validator = [](const Message& m) {
    if (m.data.empty()) return Status::InvalidArgument("empty data");
    if (m.data == "throw") throw std::runtime_error("validator exploded");
    if (m.metadata.empty()) return Status::NotFound("no metadata");
    return Status::Ok();
  };
  auto p = *t.producer(o);
  auto empty = p.publish(Message{.metadata = "{}"});
  CHECK(empty.status().is_invalid_argument());
  CHECK(empty.status().message().find("empty data") != std::string_view::npos);
  auto no_md = p.publish(Message{.data = "x"});
  CHECK(no_md.status().is_invalid_argument());  // every refusal is InvalidArgument, with the reason
  CHECK(no_md.status().message().find("no metadata") != std::string_view::npos);
  auto thrown = p.try_publish(Message{.metadata = "{}", .data = "throw"});
  CHECK(thrown.status().is_invalid_argument());
  CHECK(thrown.status().message().find("validator exploded") != std::string_view::npos);
  const std::vector<Message> batch{Message{.metadata = "{}", .data = "a"}, Message{.metadata = "{}"}};
  CHECK(p.publish_batch(batch).status().is_invalid_argument());
  CHECK(c.poll(0ms).status().is_timed_out());  // nothing of it was published
  REQUIRE(p.publish(Message{.metadata = "{}", .data = "fine"}).ok());
  CHECK(c.poll(1s)->data() == "fine");
}

TEST_CASE("partition selectors: round-robin ignores keys, user choices are checked", "[producer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 3, .capacity = 64});
  ProducerOptions rr;
  rr.partition_selector = round_robin_partitions();
  auto p = *t.producer(rr);
  for (std::uint32_t i = 0; i < 6; ++i) CHECK(p.publish("same-key", "", "v")->partition == i % 3);
  // A batch asks once per message: runs split where the answer changes.
  const std::vector<Message> batch(6, Message{.key = "k", .data = "b"});
  REQUIRE(*p.publish_batch(batch) == 6);
  std::vector<std::size_t> per_partition(3, 0);
  const auto stats = t.stats();
  for (std::size_t i = 0; i < 3; ++i) per_partition[i] = stats[i].next_offset;
  CHECK(per_partition == std::vector<std::size_t>{4, 4, 4});
  // An explicit partition still wins.
  CHECK(p.publish(Message{.data = "x", .partition = 2})->partition == 2);
  p.close();

  ProducerOptions hashed;
  hashed.partition_selector = key_hash_partitions();
  auto h = *t.producer(hashed);
  auto plain = *t.producer();
  for (int k = 0; k < 20; ++k) {
    const std::string key = "sensor-" + std::to_string(k);
    const std::uint32_t expect = key_partition(key, 3);
    CHECK(h.publish(key, "", "v")->partition == expect);
    CHECK(plain.publish(key, "", "v")->partition == expect);  // the default rule for keyed events
  }

  ProducerOptions bad;
  bad.partition_selector = [](const Message& m, std::uint32_t parts) -> std::uint32_t {
    if (m.key == "throw") throw std::runtime_error("selector exploded");
    return parts;  // one past the last
  };
  auto b = *t.producer(bad);
  auto out_of_range = b.publish("k", "", "v");
  CHECK(out_of_range.status().is_invalid_argument());
  CHECK(out_of_range.status().message().find("chose partition 3") != std::string_view::npos);
  CHECK(b.publish("throw", "", "v").status().message().find("selector exploded") != std::string_view::npos);
}

namespace {
// A serializer from the application's `k=v;k=v` form to a JSON object;
// an entry without '=' is refused, "boom" throws.
Status kv_to_json(std::string_view in, std::string& out) {
  if (in == "boom") throw std::runtime_error("serializer exploded");
  out = "{";
  while (!in.empty()) {
    const std::size_t end = std::min(in.find(';'), in.size());
    const std::string_view pair = in.substr(0, end);
    const std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos) return Status::InvalidArgument("'" + std::string(pair) + "' is not k=v");
    if (out.size() > 1) out += ',';
    out += "\"" + std::string(pair.substr(0, eq)) + "\":\"" + std::string(pair.substr(eq + 1)) + "\"";
    in.remove_prefix(std::min(end + 1, in.size()));
  }
  out += "}";
  return Status::Ok();
}
}  // namespace

TEST_CASE("a metadata serializer shapes what publish and publish_batch store; refusals publish nothing",
          "[producer][serializer]") {
  Bus bus;
  auto t = *bus.create_topic("t", {.partitions = 2, .capacity = 64});
  ProducerOptions po;
  po.metadata_serializer = kv_to_json;
  std::atomic<int> validated_json{0};
  po.validator = [&](const Message& m) {  // sees the serializer's output
    validated_json += !m.metadata.empty() && m.metadata.front() == '{';
    return Status::Ok();
  };
  auto p = *t.producer(po);
  auto c = *t.consumer({.name = "c"});
  REQUIRE(p.publish(Message{.key = "k", .metadata = "energy=25;unit=keV", .data = "img"}).ok());
  auto refused = p.publish(Message{.metadata = "energy"});
  REQUIRE(refused.status().is_invalid_argument());
  CHECK(refused.status().message().find("not k=v") != std::string_view::npos);
  auto thrown = p.try_publish(Message{.metadata = "boom"});
  REQUIRE(thrown.status().is_invalid_argument());
  CHECK(thrown.status().message().find("serializer exploded") != std::string_view::npos);
  // A batch with one refused message publishes none of them.
  std::vector<Message> batch{{.metadata = "a=1"}, {.metadata = "b"}, {.metadata = "c=3"}};
  CHECK(p.publish_batch(batch).status().is_invalid_argument());
  batch[1].metadata = "b=2";
  auto n = p.publish_batch(batch);
  REQUIRE(n.ok());
  CHECK(*n == 3);
  std::vector<std::string> seen;
  for (int i = 0; i < 4; ++i) {
    auto e = c.poll(2s);
    REQUIRE(e.ok());
    seen.emplace_back(e->metadata());
    auto j = parse_metadata(*e);
    REQUIRE(j.ok());  // every stored metadata is a JSON object
  }
  CHECK(c.poll(0ms).status().is_timed_out());  // nothing of the refused calls was published
  std::sort(seen.begin(), seen.end());
  CHECK(seen == std::vector<std::string>{"{\"a\":\"1\"}", "{\"b\":\"2\"}", "{\"c\":\"3\"}",
                                         "{\"energy\":\"25\",\"unit\":\"keV\"}"});
  CHECK(validated_json == 4);
}

TEST_CASE("the JSON serializer compacts objects and refuses anything else", "[producer][serializer]") {
  Bus bus;
  auto t = *bus.create_topic("t");
  auto p = *t.producer({.metadata_serializer = json_object_metadata()});
  auto c = *t.consumer({.name = "c"});
  REQUIRE(p.publish(Message{.metadata = "{ \"energy\" :  21.5 }", .data = "x"}).ok());
  REQUIRE(p.publish(Message{.data = "no metadata"}).ok());
  CHECK(p.publish(Message{.metadata = "[1, 2]"}).status().is_invalid_argument());
  CHECK(p.publish(Message{.metadata = "{oops"}).status().is_invalid_argument());
  auto a = c.poll(2s);
  REQUIRE(a.ok());
  CHECK(a->metadata() == "{\"energy\":21.5}");
  auto b = c.poll(2s);
  REQUIRE(b.ok());
  CHECK(b->metadata().empty());
  CHECK(b->data() == "no metadata");
  CHECK(c.poll(0ms).status().is_timed_out());
}

// publish() takes a hot path for small keyless-or-keyed events with the
// default partition rule, and the general path for everything else (large
// events, Buffers, explicit partitions, a full ring). Mixed on one topic,
// the two must keep one order, one offset sequence and the same bytes.
TEST_CASE("events with their data in a block: the limit holds on every publish call, bytes arrive exact",
          "[producer]") {
  // A single producer takes its fast path for these too (key and metadata
  // inline, data in a block of its own).
  const ProducerMode mode = GENERATE(ProducerMode::kSingle, ProducerMode::kMulti);
  Bus bus;
  auto t = *bus.create_topic("t", {.producers = mode, .max_event_size = 1000});
  auto p = *t.producer();
  auto c = *t.consumer({.name = "c"});
  const std::string fits(998, 'f'), over(999, 'o');
  // The first publish refreshes the producer's view of the ring: the
  // refusals below meet the fast path.
  REQUIRE(p.publish("k", "m", fits).ok());
  CHECK(p.publish("k", "m", over).status().is_invalid_argument());
  CHECK(p.publish(Message{.key = "k", .metadata = "m", .data = over}).status().is_invalid_argument());
  CHECK(p.try_publish(Message{.key = "k", .metadata = "m", .data = over}).status().is_invalid_argument());
  std::string pattern(1000, '\0');
  for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = char(i * 37 % 251);
  REQUIRE(p.publish("", "", pattern).ok());
  REQUIRE(p.publish(std::string(60, 'K'), std::string(40, 'M'), pattern.substr(0, 900)).ok());
  auto batch = c.poll_batch(8, 1s);
  REQUIRE(batch.ok());
  REQUIRE(batch->size() == 3);
  CHECK((*batch)[0].offset() == 0);
  CHECK((*batch)[0].key() == "k");
  CHECK((*batch)[0].metadata() == "m");
  CHECK((*batch)[0].data() == fits);
  CHECK((*batch)[1].data() == pattern);
  CHECK((*batch)[2].key() == std::string(60, 'K'));
  CHECK((*batch)[2].metadata() == std::string(40, 'M'));
  CHECK((*batch)[2].data() == pattern.substr(0, 900));
}

TEST_CASE("small and large, keyed, explicit and Buffer events interleave: every event once, in order, byte-exact",
          "[producer]") {
  const ProducerMode mode = GENERATE(ProducerMode::kSingle, ProducerMode::kMulti);
  const int threads = mode == ProducerMode::kSingle ? 1 : 3;
  constexpr int kPerThread = 3000;
  Bus bus;
  // A small ring: publishers often find it full and take the waiting path.
  auto t = *bus.create_topic("t", {.partitions = 3, .capacity = 16, .producers = mode});
  auto c = *t.consumer({.name = "c"});
  // Event i of thread w: its bytes follow from (w, i), so the checker can
  // rebuild them; every fourth is larger than an inline event.
  auto body = [](int w, int i) {
    std::string s = std::to_string(w) + ":" + std::to_string(i) + ":";
    s.resize(i % 4 == 3 ? kInlineEventBytes + 1 + i % 50 : std::size_t(i % 40) + s.size(), char('a' + i % 26));
    return s;
  };
  auto key_of = [](int w, int i) { return i % 3 == 0 ? "k" + std::to_string(w * 7 + i % 5) : std::string(); };
  std::vector<std::thread> producers;
  std::atomic<int> failures{0};
  for (int w = 0; w < threads; ++w) {
    producers.emplace_back([&, w] {
      auto p = *t.producer();
      for (int i = 0; i < kPerThread; ++i) {
        const std::string data = body(w, i);
        const std::string key = key_of(w, i);
        Message m{.key = key, .data = data};
        if (i % 7 == 5) m.partition = i % 3;
        if (i % 11 == 4) m.buffer = Buffer::copy_of(data);
        if (!p.publish(m).ok()) failures.fetch_add(1);
      }
    });
  }
  // Per producer, the events it published appear in its order within each
  // partition; offsets are contiguous; timestamps never go back.
  std::vector<std::vector<int>> last(std::size_t(threads), std::vector<int>(3, -1));
  std::vector<std::uint64_t> next_offset(3, 0);
  std::vector<std::int64_t> last_ts(3, 0);
  int received = 0;
  int mismatches = 0;
  while (received < threads * kPerThread) {
    auto batch = c.poll_batch(64, 5s);
    REQUIRE(batch.ok());
    for (const Event& e : *batch) {
      const std::string data(e.data());
      const int w = std::stoi(data);
      const int i = std::stoi(data.substr(data.find(':') + 1));
      const std::uint32_t part = e.partition();
      if (data != body(w, i) || std::string(e.key()) != key_of(w, i)) ++mismatches;
      const std::uint32_t expected_part = i % 7 == 5 ? std::uint32_t(i % 3)
                                          : !e.key().empty() ? key_partition(e.key(), 3)
                                                             : part;  // keyless: any
      if (part != expected_part) ++mismatches;
      if (i <= last[std::size_t(w)][part]) ++mismatches;
      last[std::size_t(w)][part] = i;
      if (e.offset() != next_offset[part]++) ++mismatches;
      if (e.timestamp_ns() < last_ts[part]) ++mismatches;
      last_ts[part] = e.timestamp_ns();
      ++received;
    }
    REQUIRE(c.ack(batch->back()).ok());
  }
  for (auto& th : producers) th.join();
  CHECK(failures == 0);
  CHECK(mismatches == 0);
  CHECK(received == threads * kPerThread);
  CHECK(c.poll(0ms).status().is_timed_out());
}

// A single-producer, one-partition, memory-only topic publishes small events
// inline in the caller (the publish lane); anything else takes the
// out-of-line path. The two share the ring's cursor and must interleave.
TEST_CASE("the inline publish lane and the general path interleave: every event once, in order, byte-exact",
          "[producer]") {
  const WaitStrategy wait = GENERATE(WaitStrategy::kBlocking, WaitStrategy::kBusySpin);
  constexpr int kEvents = 20000;
  Bus bus;
  // A small ring: the lane often finds it full and the general path waits.
  auto t = *bus.create_topic(
      "t", {.partitions = 1, .capacity = 16, .wait = wait, .producers = ProducerMode::kSingle, .max_event_size = 4096});
  auto c = *t.consumer({.name = "c"});
  auto body = [](int i) {
    std::string s = std::to_string(i) + ":";
    s.resize(i % 5 == 4 ? kInlineEventBytes + 1 + i % 300 : s.size() + std::size_t(i % 60), char('a' + i % 26));
    return s;
  };
  auto key_of = [](int i) { return i % 3 == 0 ? "k" + std::to_string(i % 7) : std::string(); };
  auto meta_of = [](int i) { return i % 4 == 1 ? std::string(R"({"i":)") + std::to_string(i) + "}" : std::string(); };
  std::atomic<int> failures{0};
  std::thread producer([&] {
    auto p = *t.producer();
    for (int i = 0; i < kEvents; ++i) {
      const std::string data = body(i), key = key_of(i), meta = meta_of(i);
      Result<EventId> id = [&] {
        switch (i % 6) {
          case 0: return p.publish(key, meta, data);
          case 1: return p.publish(Message{.key = key, .metadata = meta, .data = data, .partition = 0});
          case 2: return p.publish(Message{.key = key, .metadata = meta, .buffer = Buffer::copy_of(data)});
          case 3: {
            Result<EventId> r = p.try_publish(Message{.key = key, .metadata = meta, .data = data});
            if (r.ok() || !r.status().is_full()) return r;
            return p.publish(Message{.key = key, .metadata = meta, .data = data});
          }
          default: return p.publish(Message{.key = key, .metadata = meta, .data = data});
        }
      }();
      if (!id.ok() || id->partition != 0 || id->offset != std::uint64_t(i)) failures.fetch_add(1);
      // Refused: nothing published, the next event still gets the next offset.
      if (i % 1000 == 7) {
        if (!p.publish(Message{.data = "x", .partition = 1}).status().is_invalid_argument()) failures.fetch_add(1);
        if (!p.publish("", "", std::string(4097, 'x')).status().is_invalid_argument()) failures.fetch_add(1);
      }
    }
  });
  int received = 0, mismatches = 0;
  std::int64_t last_ts = 0;
  while (received < kEvents) {
    auto batch = c.poll_batch(64, 5s);
    REQUIRE(batch.ok());
    for (const Event& e : *batch) {
      const int i = received++;
      if (e.offset() != std::uint64_t(i) || e.data() != body(i) || e.key() != key_of(i) ||
          e.metadata() != meta_of(i) || e.timestamp_ns() < last_ts) {
        ++mismatches;
      }
      last_ts = e.timestamp_ns();
    }
    REQUIRE(c.ack(batch->back()).ok());
  }
  producer.join();
  CHECK(failures == 0);
  CHECK(mismatches == 0);
  CHECK(c.poll(0ms).status().is_timed_out());
}

// Reads the stamp clock until its ticker ticks (up to 10 s): a publish lane
// then takes the next publish.
bool stamp_clock_ticking() {
  for (int i = 0; i < 10000 && !detail::StampClock::ticking(); ++i) {
    (void)detail::StampClock::now_ns();
    std::this_thread::sleep_for(1ms);
  }
  return detail::StampClock::ticking();
}

TEST_CASE("a lane-publishing handle: moves, close, a deleted topic, push, sleeping consumers", "[producer][lifecycle]") {
  Bus bus;
  const TopicOptions single{.partitions = 1, .producers = ProducerMode::kSingle};
  auto t = *bus.create_topic("t", single);
  auto other = *bus.create_topic("other", single);
  auto c = *t.consumer({.name = "c"});
  auto multi = *bus.multi_consumer({.name = "m", .topics = {"t", "other"}});

  // A consumer asleep in poll (kBlocking) and a multi-topic consumer asleep
  // on the bus's bell are woken by an inline publish: a lost wake-up would
  // leave them asleep until their timeout, which then finds the event: the
  // check is that they return in half of it (not a speed check: a woken
  // poll returns within milliseconds, a lost wake-up after 120 s; where the
  // kernel lacks membarrier, sleeps are 1 ms slices and this cannot
  // fail). The lane declines a producer's first publish (it has yet to find
  // the room) and any publish while the stamp clock sleeps: warm up, and
  // wake the clock right before each publish.
  auto p = *t.producer();
  auto po = *other.producer();
  REQUIRE(p.publish("", "", "warm").ok());
  REQUIRE(po.publish("", "", "warm").ok());
  auto warm = c.poll(5s);
  REQUIRE(warm.ok());
  REQUIRE(c.ack(*warm).ok());
  std::size_t multi_seen = 0;
  while (multi_seen < 2) {
    auto b = multi.poll_batch(16, 5s);
    REQUIRE(b.ok());
    multi_seen += b->events.size();
  }
  // Runs poll(120 s) on another thread, publishes `data` with `producer`
  // while it sleeps, and returns what the poll returned. Every check runs
  // after the join (a failed REQUIRE beside a joinable thread would abort).
  auto woken_by = [](auto&& poll, Producer& producer, std::string_view data) {
    std::optional<decltype(poll(120s))> result;
    bool in_time = false;
    std::thread sleeper([&] {
      const auto start = std::chrono::steady_clock::now();
      result.emplace(poll(120s));
      in_time = std::chrono::steady_clock::now() - start < 60s;
    });
    std::this_thread::sleep_for(20ms);
    const bool ticking = stamp_clock_ticking();
    const bool published = producer.publish("", "", data).ok();
    sleeper.join();
    REQUIRE(ticking);
    REQUIRE(published);
    INFO("woken by the publish of '" << data << "'");
    CHECK(in_time);
    return std::move(*result);
  };
  Result<Event> woken = woken_by([&](Timeout timeout) { return c.poll(timeout); }, p, "wake");
  REQUIRE(woken.ok());
  CHECK(woken->data() == "wake");
  REQUIRE(c.ack(*woken).ok());
  auto seen = multi.poll_batch(16, 5s);  // the event on "t" above
  REQUIRE(seen.ok());
  CHECK(seen->events.front().data() == "wake");
  Result<TopicBatch> woken_multi =
      woken_by([&](Timeout timeout) { return multi.poll_batch(16, timeout); }, po, "wake too");
  REQUIRE(woken_multi.ok());
  CHECK(woken_multi->topic == "other");
  CHECK(woken_multi->events.front().data() == "wake too");

  // Moves carry the lane; a moved-from handle publishes nothing.
  Producer q = std::move(p);
  CHECK_FALSE(p.valid());
  REQUIRE(q.publish("", "", "moved").ok());
  Producer r;
  r = std::move(q);
  CHECK_FALSE(q.valid());
  auto id = r.publish(Message{.data = "assigned"});
  REQUIRE(id.ok());
  CHECK(id->offset == 3);
  auto got = c.poll_batch(8, 5s);
  REQUIRE(got.ok());
  REQUIRE(got->size() == 2);
  CHECK((*got)[0].data() == "moved");
  CHECK((*got)[1].data() == "assigned");

  // Once a handle pushes, its publishes fail (its sender threads publish).
  auto f = r.push(Message{.data = "pushed"});
  REQUIRE(f.wait(5s).ok());
  CHECK(r.publish("", "", "direct").status().is_invalid_argument());
  CHECK(r.publish(Message{.data = "direct"}).status().is_invalid_argument());

  // close() from any thread, and a deleted topic, end the lane's publishes.
  po.close();
  CHECK(po.publish("", "", "after close").status().is_closed());
  CHECK(po.publish(Message{.data = "after close"}).status().is_closed());
  auto gone = *bus.create_topic("gone", single);
  auto pg = *gone.producer();
  REQUIRE(pg.publish("", "", "before").ok());
  REQUIRE(bus.delete_topic("gone").ok());
  CHECK(pg.publish("", "", "after delete").status().is_closed());
  CHECK(pg.publish(Message{.data = "after delete"}).status().is_closed());
}

// What settles whether a producer has a lane is checked where a lane would
// otherwise publish: after a warm-up publish, on single-producer,
// one-partition topics.
TEST_CASE("no lane where a publish needs more: size limit, validator, serializer, precise stamps",
          "[producer]") {
  Bus bus;
  auto warm = [](Producer& p) { REQUIRE(p.publish(Message{.data = "{}"}).ok()); };
  const TopicOptions single{.partitions = 1, .producers = ProducerMode::kSingle};

  // max_event_size below the inline size: refused, nothing published.
  TopicOptions small = single;
  small.max_event_size = 10;
  auto ts = *bus.create_topic("small", small);
  auto cs = *ts.consumer({.name = "c"});
  auto ps = *ts.producer();
  warm(ps);
  REQUIRE(stamp_clock_ticking());
  CHECK(ps.publish("", "", "eleven byte").status().is_invalid_argument());
  CHECK(ps.publish(Message{.data = "eleven byte"}).status().is_invalid_argument());
  REQUIRE(ps.publish("", "", "ten bytes!").ok());
  auto got = cs.poll_batch(8, 5s);
  REQUIRE(got.ok());
  REQUIRE(got->size() == 2);
  CHECK((*got)[1].data() == "ten bytes!");

  // A validator sees every publish.
  auto tv = *bus.create_topic("validated", single);
  std::atomic<int> seen{0};
  auto pv = *tv.producer({.validator = [&](const Message& m) {
    ++seen;
    return m.data == "bad" ? Status::InvalidArgument("no") : Status::Ok();
  }});
  warm(pv);
  REQUIRE(stamp_clock_ticking());
  CHECK(pv.publish("", "", "bad").status().is_invalid_argument());
  CHECK(pv.publish("", "", "good").ok());
  CHECK(seen == 3);

  // A metadata serializer shapes every publish.
  auto tz = *bus.create_topic("serialized", single);
  auto cz = *tz.consumer({.name = "c"});
  ProducerOptions zo;
  zo.metadata_serializer = [](std::string_view, std::string& out) {
    out = R"({"by":"serializer"})";
    return Status::Ok();
  };
  auto pz = *tz.producer(zo);
  warm(pz);
  REQUIRE(stamp_clock_ticking());
  REQUIRE(pz.publish("", R"({"raw":1})", "x").ok());
  auto zs = cz.poll_batch(8, 5s);
  REQUIRE(zs.ok());
  REQUIRE(zs->size() == 2);
  CHECK((*zs)[1].metadata() == R"({"by":"serializer"})");

  // Precise stamps: nanoseconds, not the millisecond tick (a lane would
  // give a burst of publishes one or two stamps).
  TopicOptions precise = single;
  precise.precise_timestamps = true;
  auto tp = *bus.create_topic("precise", precise);
  auto cp = *tp.consumer({.name = "c", .max_batch = 256});
  auto pp = *tp.producer();
  warm(pp);
  REQUIRE(stamp_clock_ticking());
  for (int i = 0; i < 100; ++i) REQUIRE(pp.publish("", "", "t").ok());
  std::set<std::int64_t> stamps;
  std::size_t read = 0;
  while (read < 101) {
    auto b = cp.poll_batch(256, 5s);
    REQUIRE(b.ok());
    for (const Event& e : *b) stamps.insert(e.timestamp_ns());
    read += b->size();
  }
  CHECK(stamps.size() >= 10);
}

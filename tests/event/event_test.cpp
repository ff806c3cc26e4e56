// Event layouts are byte-exact, small events stay inline, large ones share
// one block, and metadata parses lazily.
#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <optional>
#include <thread>
#include <string>
#include <vector>

#include "rill/json.hpp"
#include "rill/rill.hpp"

using namespace rill;
using namespace std::chrono_literals;

namespace {

std::string pattern(std::size_t n, int seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = char((i * 131 + std::size_t(seed) * 7) & 0xff);
  return s;
}

struct Fixture {
  Bus bus;
  Topic topic = *bus.create_topic("events", TopicOptions{.capacity = 64});
  Producer producer = *topic.producer();
  Consumer consumer = *topic.consumer({.name = "reader"});
};

}  // namespace

TEST_CASE("key, metadata and data arrive byte-exact in every layout", "[event]") {
  Fixture f;
  struct Case {
    std::size_t key, meta, data;
  };
  // Inline (<= kInlineEventBytes), head inline with data in a block, all in
  // a block, and the edges of each.
  constexpr std::size_t kIn = rill::kInlineEventBytes;
  const Case cases[] = {{0, 0, 0},          {0, 0, 8},          {3, 10, kIn - 13},   {3, 10, kIn - 12},
                        {0, 0, kIn},        {0, 0, kIn + 1},    {40, kIn - 40, 500}, {40, kIn - 39, 500},
                        {200, 300, 5000},   {1, 0, 100000}};
  int seed = 0;
  for (const Case& c : cases) {
    const std::string key = pattern(c.key, seed++), meta = pattern(c.meta, seed++), data = pattern(c.data, seed++);
    auto id = f.producer.publish(key, meta, data);
    REQUIRE(id.ok());
    auto e = f.consumer.poll(1s);
    REQUIRE(e.ok());
    CHECK(e->id() == *id);
    CHECK(e->key() == key);
    CHECK(e->metadata() == meta);
    CHECK(e->data() == data);
  }
}

TEST_CASE("inline events of every size split every way arrive byte-exact, by every publish call", "[event]") {
  // The small-event copy takes a different route per length (1, 2-3, 4-7,
  // 8-16, 17-32, longer) and per part; slots are reused, so a short event
  // lands where a longer one was.
  Fixture f;
  const std::size_t edges[] = {0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 50, 64};
  std::vector<std::array<std::string, 3>> sent;
  int seed = 0;
  for (std::size_t k : edges) {
    for (std::size_t m : edges) {
      for (std::size_t d = 0; k + m + d <= kInlineEventBytes; d += (d < 40 ? 1 : 7)) {
        sent.push_back({pattern(k, seed), pattern(m, seed + 1), pattern(d, seed + 2)});
        ++seed;
      }
    }
  }
  std::size_t i = 0;
  for (const auto& [key, meta, data] : sent) {
    Result<EventId> id = (i % 3 == 0)   ? f.producer.publish(key, meta, data)
                         : (i % 3 == 1) ? f.producer.publish(Message{.key = key, .metadata = meta, .data = data})
                                        : f.producer.try_publish(Message{.key = key, .metadata = meta, .data = data});
    REQUIRE(id.ok());
    auto e = f.consumer.poll(1s);
    REQUIRE(e.ok());
    const Event copy = *e;  // an Event's copy carries the bytes too
    for (const Event* got : {static_cast<const Event*>(&*e), &copy}) {
      if (got->key() != key || got->metadata() != meta || got->data() != data) {
        FAIL_CHECK("event " << i << " (key " << key.size() << ", metadata " << meta.size() << ", data "
                            << data.size() << " bytes) arrived changed");
      }
    }
    REQUIRE(f.consumer.ack(*e).ok());
    ++i;
  }
  CHECK(i > 2000);
}

TEST_CASE("an Event stays valid after ack, close and further publishing", "[event]") {
  Fixture f;
  const std::string big = pattern(4000, 1);
  REQUIRE(f.producer.publish("k", "{}", big).ok());
  REQUIRE(f.producer.publish("k", "{}", "small").ok());
  auto a = f.consumer.poll(1s);
  auto b = f.consumer.poll(1s);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(f.consumer.ack(*b).ok());
  f.consumer.close();
  REQUIRE(f.topic.remove_consumer("reader").ok());
  // Overwrite every slot of the ring.
  for (int i = 0; i < 200; ++i) REQUIRE(f.producer.publish("", "", pattern(300, i)).ok());
  CHECK(a->data() == big);
  CHECK(b->data() == "small");
  Event copy = *a;
  CHECK(copy.data() == big);
}

TEST_CASE("a single producer reuses the blocks of events nobody holds, never of events still held", "[event]") {
  // A single producer hands the block of the slot it overwrites to the new
  // event when no Event or Buffer shares it. Events kept across many laps of
  // a 16-slot ring, an Event's copy and a data Buffer keep their bytes;
  // sizes cross block classes, and inline events land in between.
  Bus bus;
  Topic topic = *bus.create_topic("reuse", TopicOptions{.capacity = 16, .producers = ProducerMode::kSingle});
  Producer producer = *topic.producer();
  Consumer consumer = *topic.consumer({.name = "reader"});
  std::vector<std::pair<Event, std::string>> kept;
  std::vector<std::pair<Buffer, std::string>> buffers;
  for (int i = 0; i < 2000; ++i) {
    const std::size_t size = i % 5 == 4 ? std::size_t(i % 90) : std::size_t(101 + (i * 37) % 3000);
    const std::string data = pattern(size, i);
    REQUIRE(producer.publish("key", "", data).ok());
    auto e = consumer.poll(1s);
    REQUIRE(e.ok());
    if (e->data() != data) FAIL("event " << i << " (" << size << " bytes) arrived changed");
    if (i % 7 == 0) kept.emplace_back(*e, data);
    if (i % 11 == 0) buffers.emplace_back(e->data_buffer(), data);
    REQUIRE(consumer.ack(*e).ok());
  }
  REQUIRE(kept.size() > 200);
  for (std::size_t k = 0; k < kept.size(); ++k) {
    if (kept[k].first.data() != kept[k].second || kept[k].first.key() != "key") {
      FAIL_CHECK("kept event " << kept[k].first.offset() << " changed after later events reused blocks");
    }
  }
  for (const auto& [buffer, data] : buffers) CHECK(buffer.view() == data);
}

TEST_CASE("an unshared block goes to the next event in its slot; a held one never does", "[event]") {
  // Without reuse a new event's block is never its slot's old one (the new
  // block is taken while the slot still holds the old), so equal data
  // pointers show the reuse. The first event after each refresh of the
  // producer's room takes the general path and a new block: most, not all,
  // events reuse.
  Bus bus;
  Topic topic = *bus.create_topic("reuse3", TopicOptions{.capacity = 16, .producers = ProducerMode::kSingle});
  Producer producer = *topic.producer();
  Consumer consumer = *topic.consumer({.name = "reader"});
  std::vector<const char*> bytes_at(16, nullptr);  // per slot: the last event's data pointer
  std::vector<bool> held(16, false);
  std::vector<Event> kept;
  int reused = 0, reused_held = 0, laps_events = 0;
  for (int i = 0; i < 16 * 12; ++i) {
    const std::string data = pattern(600 + std::size_t(i % 400), i);  // one size class (513-1024)
    REQUIRE(producer.publish("", "", data).ok());
    auto e = consumer.poll(1s);
    REQUIRE(e.ok());
    REQUIRE(e->data() == data);
    const std::size_t slot = std::size_t(i % 16);
    if (i >= 16) {
      ++laps_events;
      if (e->data().data() == bytes_at[slot]) (held[slot] ? reused_held : reused) += 1;
    }
    bytes_at[slot] = e->data().data();
    held[slot] = i % 5 == 0;
    if (held[slot]) kept.push_back(*e);
    REQUIRE(consumer.ack(*e).ok());
  }
  CHECK(reused_held == 0);
  CHECK(reused > laps_events / 2);
  for (const Event& e : kept) CHECK(e.data() == pattern(600 + std::size_t(e.offset() % 400), int(e.offset())));
}

TEST_CASE("a consumer thread dropping large events while the producer reuses their blocks", "[event]") {
  // Run under TSan/ASan: the consumer reads each event, keeps the last few
  // a while and releases them on its own thread; the producer rewrites a
  // block only after that release. The ring (16) is larger than a batch (4)
  // plus the window (4), so most overwritten blocks are free to reuse.
  Bus bus;
  Topic topic = *bus.create_topic("reuse2", TopicOptions{.capacity = 16, .producers = ProducerMode::kSingle});
  Producer producer = *topic.producer();
  Consumer consumer = *topic.consumer({.name = "reader", .max_batch = 4});
  constexpr int kEvents = 20000;
  auto data_of = [](std::uint64_t offset) { return pattern(600 + std::size_t(offset % 400), int(offset)); };
  std::atomic<std::int64_t> bad{-1};
  std::atomic<int> received{0};
  std::thread reader([&] {
    std::vector<Event> window;  // the last few events, checked again as they leave
    int next = 0;
    while (next < kEvents) {
      auto batch = consumer.poll_batch(4, 10s);
      if (!batch.ok()) break;
      for (const Event& e : *batch) {
        if (e.offset() != std::uint64_t(next) || e.data() != data_of(e.offset())) bad.store(next);
        window.push_back(e);
        if (window.size() > 4) {
          if (window.front().data() != data_of(window.front().offset())) bad.store(std::int64_t(window.front().offset()));
          window.erase(window.begin());
        }
        ++next;
      }
      if (!consumer.ack(batch->back()).ok()) break;
    }
    received.store(next);
  });
  // With a timeout: a reader that stopped early fails the test, not hangs it.
  int published = 0;
  for (; published < kEvents; ++published) {
    const std::string data = data_of(std::uint64_t(published));
    if (!producer.publish(Message{.data = data}, 10s).ok()) break;
  }
  reader.join();
  CHECK(published == kEvents);
  CHECK(received.load() == kEvents);
  CHECK(bad.load() == -1);
}

TEST_CASE("an Event outlives its producer, its topic and its bus; its block is freed once", "[event]") {
  // Large events' blocks come from the producer's pool, which must stay
  // until its last block is released (ASan reports a leak or a use after
  // free otherwise).
  std::optional<Event> kept;
  std::vector<Event> later;
  {
    Fixture f;
    for (int i = 0; i < 60; ++i) REQUIRE(f.producer.publish("k", "", pattern(1000 + std::size_t(i), i)).ok());
    auto batch = f.consumer.poll_batch(60, 1s);  // the ring holds 64
    REQUIRE(batch.ok());
    REQUIRE(batch->size() == 60);
    kept = (*batch)[7];
    later.assign(batch->begin() + 30, batch->end());
    f.producer.close();
  }
  CHECK(kept->data() == pattern(1007, 7));
  for (std::size_t i = 0; i < later.size(); ++i) CHECK(later[i].data() == pattern(1030 + i, int(30 + i)));
  std::thread other([moved = std::move(later)]() mutable { moved.clear(); });  // the last releases elsewhere
  other.join();
  kept.reset();
}

TEST_CASE("a published Buffer reaches consumers without a copy", "[event]") {
  Fixture f;
  Consumer second = *f.topic.consumer({.name = "second"});
  Buffer buf = Buffer::copy_of(pattern(10000, 3));
  const char* bytes = buf.data();
  REQUIRE(f.producer.publish(Message{.key = "k", .metadata = "{}", .buffer = buf}).ok());
  auto e1 = f.consumer.poll(1s);
  auto e2 = second.poll(1s);
  REQUIRE(e1.ok());
  REQUIRE(e2.ok());
  CHECK(e1->data().data() == bytes);  // the producer's bytes, shared
  CHECK(e2->data().data() == bytes);
  CHECK(e1->data_buffer().data() == bytes);
  CHECK(e1->data() == buf.view());
}

TEST_CASE("an adopted owner is destroyed exactly once, after the last reader", "[event]") {
  static int destroyed = 0;
  struct Owner {
    std::string bytes;
    bool moved_from = false;
    Owner(std::string b) : bytes(std::move(b)) {}
    Owner(Owner&& o) noexcept : bytes(std::move(o.bytes)) { o.moved_from = true; }
    ~Owner() {
      if (!moved_from) ++destroyed;
    }
    const char* data() const { return bytes.data(); }
    std::size_t size() const { return bytes.size(); }
  };
  destroyed = 0;
  {
    Fixture f;
    REQUIRE(f.producer.publish(Message{.buffer = Buffer::adopt(Owner(pattern(500, 9)))}).ok());
    auto e = f.consumer.poll(1s);
    REQUIRE(e.ok());
    CHECK(e->data() == pattern(500, 9));
    CHECK(destroyed == 0);
  }
  CHECK(destroyed == 1);
}

TEST_CASE("metadata is parsed only when asked, as a JSON object", "[event][json]") {
  Fixture f;
  REQUIRE(f.producer.publish("", R"({"temp": 10, "unit": "C"})", "").ok());
  REQUIRE(f.producer.publish("", "", "").ok());
  REQUIRE(f.producer.publish("", "[1,2]", "").ok());
  REQUIRE(f.producer.publish("", "{not json", "").ok());
  auto a = f.consumer.poll(1s);
  auto b = f.consumer.poll(1s);
  auto c = f.consumer.poll(1s);
  auto d = f.consumer.poll(1s);
  REQUIRE((a.ok() && b.ok() && c.ok() && d.ok()));
  auto ja = parse_metadata(*a);
  REQUIRE(ja.ok());
  CHECK((*ja)["temp"] == 10);
  CHECK((*ja)["unit"] == "C");
  auto jb = parse_metadata(*b);
  REQUIRE(jb.ok());
  CHECK(jb->empty());
  CHECK(parse_metadata(*c).status().is_invalid_argument());
  CHECK(parse_metadata(*d).status().is_invalid_argument());
}

TEST_CASE("timestamps are append times, non-decreasing within a partition", "[event]") {
  Fixture f;
  const auto before = std::chrono::system_clock::now();
  for (int i = 0; i < 50; ++i) REQUIRE(f.producer.publish("", "", "x").ok());
  const auto after = std::chrono::system_clock::now();
  std::int64_t last = 0;
  for (int i = 0; i < 50; ++i) {
    auto e = f.consumer.poll(1s);
    REQUIRE(e.ok());
    CHECK(e->timestamp_ns() >= last);
    last = e->timestamp_ns();
    CHECK(e->timestamp() >= before - 1s);
    CHECK(e->timestamp() <= after + 1s);
  }
}

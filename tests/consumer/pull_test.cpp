// The pull model: data descriptors (sub, strided, unstructured views and
// their composition) checked byte for byte against a reference selection;
// gathering into non-contiguous memory; futures completed in pull order;
// selectors and allocators on live and durable topics; process(); misuse.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <cstring>
#include <random>
#include <stdexcept>
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

// The reference: a selection is the list of selected byte indices.
using Indices = std::vector<std::size_t>;

Indices ref_all(std::size_t n) {
  Indices v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = i;
  return v;
}
Indices ref_sub(const Indices& in, std::size_t off, std::size_t size) {
  return Indices(in.begin() + std::ptrdiff_t(off), in.begin() + std::ptrdiff_t(off + size));
}
Indices ref_strided(const Indices& in, std::size_t off, std::size_t blocks, std::size_t bs, std::size_t gap) {
  Indices out;
  for (std::size_t b = 0; b < blocks; ++b) {
    for (std::size_t k = 0; k < bs; ++k) out.push_back(in[off + b * (bs + gap) + k]);
  }
  return out;
}
Indices ref_unstructured(const Indices& in, const std::vector<DataSegment>& parts) {
  Indices out;
  for (const DataSegment& p : parts) {
    for (std::size_t k = 0; k < p.size; ++k) out.push_back(in[p.offset + k]);
  }
  return out;
}

Indices indices_of(const DataDescriptor& d) {
  Indices out;
  for (const DataSegment& s : d.segments()) {
    for (std::size_t k = 0; k < s.size; ++k) out.push_back(s.offset + k);
  }
  return out;
}

std::string bytes_of(const std::string& data, const Indices& idx) {
  std::string out;
  for (std::size_t i : idx) out += data[i];
  return out;
}

std::string random_bytes(std::mt19937& rng, std::size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = char(rng() & 0xff);
  return s;
}

// Gathers `d` from `data` into three destination segments of uneven sizes.
std::string gather_split(const std::string& data, const DataDescriptor& d) {
  std::string out(d.size() + 3, '#');
  const std::size_t a = d.size() / 3, b = d.size() / 2;
  std::vector<MemorySegment> segs{{out.data(), a}, {out.data() + a, 0}, {out.data() + a, b}, {out.data() + a + b, 3 + d.size() - a - b}};
  REQUIRE(gather(data, d, DataView(segs)).ok());
  return out.substr(0, d.size());
}

Topic make_topic(Bus& bus, TopicOptions o = {}) {
  auto t = bus.create_topic("t", o);
  REQUIRE(t.ok());
  return std::move(*t);
}

}  // namespace

TEST_CASE("views compose and select exactly the reference bytes", "[pull][views]") {
  std::mt19937 rng(12345);
  for (int round = 0; round < 2000; ++round) {
    const std::size_t n = rng() % 300;
    const std::string data = random_bytes(rng, n);
    DataDescriptor d = DataDescriptor::all(n);
    Indices ref = ref_all(n);
    const int depth = 1 + int(rng() % 4);
    for (int step = 0; step < depth; ++step) {
      const std::size_t size = d.size();
      switch (rng() % 3) {
        case 0: {
          const std::size_t off = size ? rng() % (size + 1) : 0;
          const std::size_t len = (size - off) ? rng() % (size - off + 1) : 0;
          auto v = d.sub_view(off, len);
          REQUIRE(v.ok());
          d = *v;
          ref = ref_sub(ref, off, len);
          break;
        }
        case 1: {
          if (size == 0) break;
          const std::size_t off = rng() % size;
          const std::size_t bs = 1 + rng() % std::max<std::size_t>(1, (size - off) / 2);
          const std::size_t gap = rng() % 4;
          const std::size_t blocks = 1 + (size - off - bs) / (bs + gap);  // as many as fit
          auto v = d.strided_view(off, blocks, bs, gap);
          REQUIRE(v.ok());
          d = *v;
          ref = ref_strided(ref, off, blocks, bs, gap);
          break;
        }
        default: {
          std::vector<DataSegment> parts;
          std::size_t pos = 0;
          while (pos < size && parts.size() < 6) {
            const std::size_t off = pos + rng() % (size - pos);
            const std::size_t len = rng() % (size - off + 1);
            parts.push_back({off, len});
            pos = off + len;
            if (len == 0) ++pos;
          }
          auto v = d.unstructured_view(parts);
          REQUIRE(v.ok());
          d = *v;
          ref = ref_unstructured(ref, parts);
        }
      }
      REQUIRE(d.size() == ref.size());
      REQUIRE(indices_of(d) == ref);
    }
    // Runs are merged and never empty.
    const auto segs = d.segments();
    for (std::size_t i = 0; i < segs.size(); ++i) {
      REQUIRE(segs[i].size > 0);
      if (i) REQUIRE(segs[i].offset > segs[i - 1].offset + segs[i - 1].size);
    }
    REQUIRE(gather_split(data, d) == bytes_of(data, ref));
  }
}

TEST_CASE("the seed's image rectangle: a sub view then a strided view", "[pull][views]") {
  constexpr std::size_t W = 16, H = 8, x = 3, y = 2, w = 5, h = 4;
  std::string image(W * H, '\0');
  for (std::size_t i = 0; i < image.size(); ++i) image[i] = char(i);
  const DataDescriptor all = DataDescriptor::all(W * H);
  auto rows = all.sub_view(y * W + x, W * h);
  REQUIRE(rows.ok());
  auto rect = rows->strided_view(0, h, w, W - w);
  REQUIRE(rect.ok());
  auto direct = all.strided_view(y * W + x, h, w, W - w);
  REQUIRE(direct.ok());
  CHECK(*rect == *direct);
  CHECK(rect->size() == w * h);
  std::string expect;
  for (std::size_t r = 0; r < h; ++r) expect += image.substr((y + r) * W + x, w);
  CHECK(gather_split(image, *rect) == expect);
}

TEST_CASE("views past the end, out of order or overlapping are clear errors", "[pull][views]") {
  const DataDescriptor all = DataDescriptor::all(100);
  CHECK(all.sub_view(90, 11).status().is_invalid_argument());
  CHECK(all.sub_view(101, 0).status().is_invalid_argument());
  CHECK(all.sub_view(~std::size_t{0}, 2).status().is_invalid_argument());  // wraps
  CHECK(all.strided_view(0, 10, 10, 1).status().is_invalid_argument());   // 10 blocks + 9 gaps = 109
  CHECK(all.strided_view(1, 2, 50, 0).status().is_invalid_argument());
  CHECK(all.strided_view(0, ~std::size_t{0}, 2, 2).status().is_invalid_argument());
  const std::vector<DataSegment> overlap{{0, 10}, {5, 10}};
  const std::vector<DataSegment> unordered{{50, 10}, {0, 10}};
  const std::vector<DataSegment> past{{95, 10}};
  auto e = all.unstructured_view(overlap);
  CHECK(e.status().is_invalid_argument());
  CHECK(e.status().message().find("ordered and not overlap") != std::string_view::npos);
  CHECK(all.unstructured_view(unordered).status().is_invalid_argument());
  CHECK(all.unstructured_view(past).status().is_invalid_argument());
  // Zero sizes are fine and select nothing.
  CHECK(all.sub_view(100, 0)->empty());
  CHECK(all.strided_view(7, 0, 3, 1)->empty());
  CHECK(DataDescriptor{}.sub_view(0, 0)->empty());
  const std::vector<DataSegment> touching{{0, 10}, {10, 5}};
  auto merged = all.unstructured_view(touching);
  REQUIRE(merged.ok());
  CHECK(merged->segments().size() == 1);
  CHECK(merged->size() == 15);
  // The error left the descriptor as it was.
  CHECK(all.size() == 100);
}

TEST_CASE("gather refuses a too-small view and a foreign selection, writing nothing", "[pull][views]") {
  const std::string data = "0123456789";
  const DataDescriptor d = *DataDescriptor::all(10).sub_view(2, 6);
  std::string small(5, '#');
  Status s = gather(data, d, DataView(small.data(), small.size()));
  CHECK(s.is_invalid_argument());
  CHECK(small == "#####");
  CHECK(gather("short", d, DataView(small.data(), small.size())).is_invalid_argument());
  std::string ok(6, '#');
  REQUIRE(gather(data, d, DataView(ok.data(), ok.size())).ok());
  CHECK(ok == "234567");
}

TEST_CASE("futures complete in pull order, whichever is waited first", "[pull]") {
  Bus bus;
  auto t = make_topic(bus);
  auto c = *t.consumer({.name = "c"});
  PullFuture f1 = c.pull(), f2 = c.pull(), f3 = c.pull();
  CHECK_FALSE(f1.completed());
  CHECK(f3.wait(0ms).status().is_timed_out());
  auto p = *t.producer();
  for (int i = 0; i < 3; ++i) REQUIRE(p.publish(Message{.data = "e" + std::to_string(i)}).ok());
  auto r3 = f3.wait(1s);
  REQUIRE(r3.ok());
  REQUIRE(*r3);
  CHECK((*r3)->data().to_string() == "e2");
  CHECK(f1.completed());
  CHECK(f2.completed());
  CHECK((*f1.wait(0))->data().to_string() == "e0");
  CHECK((*f2.wait(-1))->data().to_string() == "e1");
  CHECK((*f2.wait(-1))->data().to_string() == "e1");  // a completed future keeps its value
  CHECK((*r3)->id().offset == 2);
}

TEST_CASE("a dropped future gives its event to the next one", "[pull]") {
  Bus bus;
  auto t = make_topic(bus);
  auto c = *t.consumer({.name = "c"});
  auto p = *t.producer();
  { PullFuture dropped = c.pull(); }
  PullFuture f = c.pull();
  REQUIRE(p.publish(Message{.data = "only"}).ok());
  auto r = f.wait(1s);
  REQUIRE((r.ok() && *r));
  CHECK((*r)->data().to_string() == "only");
}

TEST_CASE("a selector reads the metadata and takes a rectangle; an allocator scatters it", "[pull]") {
  constexpr std::size_t W = 32, H = 16, w = 4, h = 3;
  Bus bus;
  auto t = make_topic(bus);
  std::vector<std::string> storage;  // the allocator's memory, two pieces per event
  ConsumerOptions o{.name = "selective"};
  o.selector = [&](const EventHeader& hd, const DataDescriptor& all) -> DataDescriptor {
    auto md = parse_metadata(hd.metadata);
    if (!md.ok() || (*md)["energy"].get<int>() <= 20) return {};
    return *all.strided_view(W + 1, h, w, W - w);
  };
  o.allocator = [&](const EventHeader&, const DataDescriptor& d) {
    storage.emplace_back(d.size() / 2, '\0');
    storage.emplace_back(d.size() - d.size() / 2, '\0');
    std::string& a = storage[storage.size() - 2];
    std::string& b = storage.back();
    return DataView(std::vector<MemorySegment>{{a.data(), a.size()}, {b.data(), b.size()}});
  };
  storage.reserve(100);
  auto c = *t.consumer(o);
  auto p = *t.producer();
  std::vector<std::string> images;
  for (int i = 0; i < 10; ++i) {
    std::string img(W * H, '\0');
    for (std::size_t k = 0; k < img.size(); ++k) img[k] = char(k * 7 + std::size_t(i));
    images.push_back(img);
    const std::string md = "{\"energy\":" + std::to_string(i * 5) + "}";
    REQUIRE(p.publish(Message{.metadata = md, .data = img}).ok());
  }
  int taken = 0;
  for (int i = 0; i < 10; ++i) {
    auto r = c.pull().wait(1s);
    REQUIRE((r.ok() && *r));
    const PulledEvent& e = **r;
    CHECK(e.id().offset == std::uint64_t(i));
    if (i * 5 <= 20) {
      CHECK(e.data().empty());
      CHECK(e.selection().empty());
      continue;
    }
    ++taken;
    std::string expect;
    for (std::size_t r2 = 0; r2 < h; ++r2) expect += images[std::size_t(i)].substr((1 + r2) * W + 1, w);
    CHECK(e.data().segments().size() == 2);
    CHECK(e.data().to_string() == expect);
    CHECK(e.event().data() == images[std::size_t(i)]);  // the event itself is untouched
  }
  CHECK(taken == 5);
}

TEST_CASE("without an allocator rill places the selection in a buffer it owns", "[pull]") {
  Bus bus;
  auto t = make_topic(bus);
  ConsumerOptions o{.name = "c"};
  o.selector = [](const EventHeader&, const DataDescriptor& all) { return *all.sub_view(2, 3); };
  auto c = *t.consumer(o);
  REQUIRE(t.producer()->publish(Message{.data = "abcdefgh"}).ok());
  DataView kept;
  {
    auto r = c.pull().wait(1s);
    REQUIRE((r.ok() && *r));
    kept = (*r)->data();
  }
  CHECK(kept.owner() != nullptr);
  CHECK(kept.to_string() == "cde");  // outlives the PulledEvent
}

TEST_CASE("a failing selector or allocator fails that pull only, and loses nothing", "[pull][errors]") {
  Bus bus;
  auto t = make_topic(bus, {.capacity = 64});
  auto p = *t.producer();
  for (int i = 0; i < 4; ++i) REQUIRE(p.publish(Message{.key = std::to_string(i), .data = "0123456789"}).ok());
  {
    ConsumerOptions o{.name = "c"};
    o.selector = [](const EventHeader& h, const DataDescriptor& all) -> DataDescriptor {
      if (h.key == "1") throw std::runtime_error("no thanks");
      if (h.key == "2") return DataDescriptor::all(3);  // made for another size
      return all;
    };
    o.allocator = [](const EventHeader& h, const DataDescriptor& d) {
      static thread_local std::string mem;
      mem.assign(h.key == "3" ? d.size() - 1 : d.size(), '\0');  // too small for event 3
      return DataView(mem.data(), mem.size());
    };
    auto c = *t.consumer(o);
    auto r0 = c.pull().wait(1s);
    REQUIRE((r0.ok() && *r0));
    CHECK((*r0)->data().to_string() == "0123456789");
    REQUIRE((*r0)->acknowledge().ok());
    auto r1 = c.pull().wait(1s);
    CHECK(r1.status().is_invalid_argument());
    CHECK(r1.status().message().find("no thanks") != std::string_view::npos);
    CHECK(r1.status().message().find("offset 1") != std::string_view::npos);
    auto r2 = c.pull().wait(1s);
    CHECK(r2.status().is_invalid_argument());
    auto r3 = c.pull().wait(1s);
    CHECK(r3.status().is_invalid_argument());
    CHECK(r3.status().message().find("allocator's view holds 9 bytes") != std::string_view::npos);
  }
  // Nothing after the last ack was lost: a plain consumer of the name gets it.
  auto again = *t.consumer({.name = "c"});
  std::vector<std::string> keys;
  for (int i = 0; i < 3; ++i) keys.emplace_back(again.poll(1s)->key());
  CHECK(keys == std::vector<std::string>{"1", "2", "3"});
}

TEST_CASE("acknowledge resumes the name after the pulled event", "[pull]") {
  Bus bus;
  auto t = make_topic(bus, {.capacity = 64});
  auto p = *t.producer();
  for (int i = 0; i < 6; ++i) REQUIRE(p.publish(Message{.data = std::to_string(i)}).ok());
  {
    auto c = *t.consumer({.name = "c"});
    for (int i = 0; i < 4; ++i) {
      auto r = c.pull().wait(1s);
      REQUIRE((r.ok() && *r));
      if (i == 2) REQUIRE((*r)->acknowledge().ok());
    }
  }
  auto c = *t.consumer({.name = "c"});
  CHECK(c.poll(1s)->data() == "3");
}

TEST_CASE("process runs a handler per event until it stops, runs dry or reaches the maximum", "[pull]") {
  Bus bus;
  auto t = make_topic(bus, {.capacity = 64});
  auto p = *t.producer();
  for (int i = 0; i < 10; ++i) REQUIRE(p.publish(Message{.data = std::to_string(i)}).ok());
  auto c = *t.consumer({.name = "c"});
  std::vector<std::string> seen;
  auto n = c.process([&](const PulledEvent& e) {
    seen.push_back(e.data().to_string());
    return e.data().to_string() != "3";
  });
  REQUIRE(n.ok());
  CHECK(*n == 4);
  n = c.process([&](const PulledEvent& e) { return seen.push_back(e.data().to_string()), true; }, 0ms, 2);
  CHECK(*n == 2);
  n = c.process(
      [&](const PulledEvent& e) {
        seen.push_back(e.data().to_string());
        (void)e.acknowledge();
        return true;
      },
      20ms);
  CHECK(*n == 4);  // ran dry
  CHECK(seen.size() == 10);
  for (int i = 0; i < 10; ++i) CHECK(seen[std::size_t(i)] == std::to_string(i));
  REQUIRE(p.publish(Message{.data = "boom"}).ok());
  auto thrown = c.process([](const PulledEvent&) -> bool { throw std::runtime_error("handler failed"); }, 1s);
  CHECK(thrown.status().is_invalid_argument());
  CHECK(thrown.status().message().find("handler failed") != std::string_view::npos);
}

TEST_CASE("pull after close ends the stream; a future outliving its consumer is Closed", "[pull][errors]") {
  Bus bus;
  auto t = make_topic(bus);
  PullFuture orphan;
  {
    auto c = *t.consumer({.name = "c"});
    PullFuture f = c.pull();
    std::thread closer([&] {
      std::this_thread::sleep_for(20ms);
      c.close();
    });
    auto r = f.wait(-1);
    closer.join();
    REQUIRE(r.ok());
    CHECK_FALSE(r->has_value());
    orphan = c.pull();
  }
  CHECK(orphan.wait(0ms).status().is_closed());
  CHECK(PullFuture{}.wait(0ms).status().is_invalid_argument());
}

TEST_CASE("poll refuses while pulled events are buffered, then works again", "[pull][errors]") {
  Bus bus;
  auto t = make_topic(bus);
  auto p = *t.producer();
  for (int i = 0; i < 3; ++i) REQUIRE(p.publish(Message{.data = std::to_string(i)}).ok());
  auto c = *t.consumer({.name = "c"});
  REQUIRE(c.pull().wait(1s).ok());  // takes a batch of 3, hands out 1
  CHECK(c.poll(0ms).status().is_invalid_argument());
  CHECK(c.poll_batch(8, 0ms).status().is_invalid_argument());
  CHECK((*c.pull().wait(1s))->data().to_string() == "1");
  CHECK((*c.pull().wait(1s))->data().to_string() == "2");
  REQUIRE(p.publish(Message{.data = "3"}).ok());
  CHECK(c.poll(1s)->data() == "3");
}

TEST_CASE("durable topics: a selective pull reads old events from disk byte for byte", "[pull][durable]") {
  rill::testing::TempDir dir;
  Bus bus = rill::testing::open_bus(dir.sub("store"));
  auto t = bus.create_topic("t", rill::testing::durable(Durability::kSync, 1, 16));
  REQUIRE(t.ok());
  auto p = *t->producer();
  std::mt19937 rng(7);
  std::vector<std::string> datas;
  for (int i = 0; i < 100; ++i) {  // far more than the ring holds
    datas.push_back(random_bytes(rng, 40 + rng() % 400));
    REQUIRE(p.publish(Message{.data = datas.back()}).ok());
  }
  ConsumerOptions o{.name = "late", .position = Position::earliest()};
  o.selector = [](const EventHeader& h, const DataDescriptor& all) -> DataDescriptor {
    if (h.id.offset % 3 == 0) return {};
    return *all.strided_view(1, 4, 5, 3);
  };
  auto c = *t->consumer(o);
  for (int i = 0; i < 100; ++i) {
    auto r = c.pull().wait(2s);
    REQUIRE((r.ok() && *r));
    const PulledEvent& e = **r;
    REQUIRE(e.id().offset == std::uint64_t(i));
    if (i % 3 == 0) {
      CHECK(e.data().empty());
      continue;
    }
    std::string expect;
    for (int b = 0; b < 4; ++b) expect += datas[std::size_t(i)].substr(std::size_t(1 + b * 8), 5);
    CHECK(e.data().to_string() == expect);
  }
  CHECK(c.stats().from_disk > 0);
}

TEST_CASE("range iteration over pulled events ends when the topic runs dry and says why", "[pull]") {
  Bus bus;
  auto t = make_topic(bus, {.capacity = 64});
  auto p = *t.producer();
  for (int i = 0; i < 5; ++i) REQUIRE(p.publish(Message{.data = std::to_string(i)}).ok());
  auto c = *t.consumer({.name = "c"});
  std::vector<std::string> seen;
  auto range = c.pulled(20ms);
  for (const PulledEvent& e : range) seen.push_back(e.data().to_string());
  CHECK(seen == std::vector<std::string>{"0", "1", "2", "3", "4"});
  CHECK(range.status().is_timed_out());
  c.close();
  auto after_close = c.pulled(1s);
  for (const PulledEvent& e : after_close) FAIL("no event after close: " << e.data().to_string());
  CHECK(after_close.status().ok());
}

TEST_CASE("a thread pool runs every task, survives throwing ones, and drains on destruction", "[pull][pool]") {
  std::atomic<int> ran{0};
  std::uint64_t failed = 0;
  {
    ThreadPool pool(3);
    CHECK(pool.size() == 3);
    for (int i = 0; i < 1000; ++i) pool.submit([&] { ran++; });
    pool.submit([] { throw std::runtime_error("task failed"); });
    for (int i = 0; i < 1000; ++i) pool.submit([&] { ran++; });
    // The throwing task may still be unwinding on one worker when the others
    // have run the last counting task: wait for both (bounded).
    const auto give_up = std::chrono::steady_clock::now() + 30s;
    while ((ran < 2000 || pool.failed_tasks() == 0) && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::yield();
    }
    failed = pool.failed_tasks();
  }
  CHECK(ran == 2000);
  CHECK(failed == 1);
}

TEST_CASE("a thread pool's destructor runs the tasks other threads submitted", "[pull][pool]") {
  // The queue is FIFO per submitting thread only: the destructor's stop
  // markers must not overtake tasks another thread submitted before it.
  std::atomic<int> ran{0};
  for (int round = 0; round < 200; ++round) {
    ThreadPool pool(2);
    std::thread other([&] {
      for (int i = 0; i < 50; ++i) pool.submit([&] { ran++; });
    });
    other.join();
  }
  CHECK(ran == 200 * 50);
}

TEST_CASE("a pooled consumer destroyed with prefetched events frees them and its hooks", "[pull][pool]") {
  Bus bus;
  auto t = make_topic(bus, {.capacity = 64});
  auto token = std::make_shared<int>(0);  // held by the selector: alive while the pull queue is
  {
    ConsumerOptions o{.name = "c", .max_batch = 4};
    o.thread_pool = std::make_shared<ThreadPool>(2);
    o.prefetch_batches = 3;
    o.selector = [token](const EventHeader&, const DataDescriptor& all) { return all; };
    auto c = *t.consumer(o);
    auto p = *t.producer();
    for (int i = 0; i < 10; ++i) REQUIRE(p.publish(Message{.data = std::to_string(i)}).ok());
    for (int i = 0; i < 5; ++i) {
      auto r = c.pull().wait(2s);
      REQUIRE(r.ok());
      REQUIRE(*r);
    }
    o.thread_pool.reset();
  }  // the consumer, then the pool (its destructor runs the tasks still queued)
  CHECK(token.use_count() == 1);  // no cycle through the prefetched events kept the queue alive
}

TEST_CASE("with a thread pool, selection runs on the pool and events still come in order", "[pull][pool]") {
  Bus bus;
  auto t = make_topic(bus, {.partitions = 2, .capacity = 1024});
  std::mutex mu;
  std::set<std::thread::id> selector_threads;
  ConsumerOptions o{.name = "c", .max_batch = 32};
  o.thread_pool = std::make_shared<ThreadPool>(2);
  o.prefetch_batches = 3;
  o.selector = [&](const EventHeader& h, const DataDescriptor& all) -> DataDescriptor {
    {
      std::lock_guard<std::mutex> lock(mu);
      selector_threads.insert(std::this_thread::get_id());
    }
    if (h.key == "throw") throw std::runtime_error("bad event");
    return *all.sub_view(1, all.size() - 1);
  };
  auto c = *t.consumer(o);
  auto p = *t.producer();
  constexpr int kEvents = 600;
  for (int i = 0; i < kEvents; ++i) {
    const std::string key = i == 300 ? "throw" : "k" + std::to_string(i % 5);
    REQUIRE(p.publish(Message{.key = key, .data = "#" + std::to_string(i)}).ok());
  }
  std::vector<std::int64_t> last(2, -1);
  int got = 0, failed = 0, order_errors = 0;
  while (got + failed < kEvents) {
    auto r = c.pull().wait(2s);
    if (!r.ok()) {
      REQUIRE(r.status().is_invalid_argument());
      CHECK(r.status().message().find("bad event") != std::string_view::npos);
      ++failed;
      continue;
    }
    REQUIRE(*r);
    const PulledEvent& e = **r;
    std::int64_t& l = last[e.id().partition];
    order_errors += std::int64_t(e.id().offset) <= l;
    l = std::int64_t(e.id().offset);
    CHECK(e.data().to_string() == std::string(e.event().data().substr(1)));
    ++got;
  }
  CHECK(failed == 1);
  CHECK(order_errors == 0);
  std::lock_guard<std::mutex> lock(mu);
  CHECK(selector_threads.count(std::this_thread::get_id()) == 0);  // never on the pulling thread
  CHECK_FALSE(selector_threads.empty());
}

TEST_CASE("a fixed pull batch waits for n events over partitions; it goes short only at the timeout",
          "[pull][batch]") {
  Bus bus;
  auto t = make_topic(bus, {.partitions = 2, .capacity = 64});
  ConsumerOptions o{.name = "c", .max_batch = 2};  // a batch needs polls of several partitions
  o.pull_batch_size = 5;
  auto c = *t.consumer(o);
  auto p = *t.producer();
  // A pull that may wait forever gets its event only once 5 are there,
  // whenever the producer (another thread) gets to them.
  std::thread producer([&] {
    for (int i = 0; i < 5; ++i) {
      if (!p.publish(Message{.data = "e" + std::to_string(i), .partition = i % 2}).ok()) return;
      std::this_thread::sleep_for(2ms);
    }
  });
  auto first = c.pull().wait(-1);
  producer.join();
  REQUIRE(first.ok());
  REQUIRE(*first);
  CHECK(c.stats().delivered == 5);  // the whole batch was fetched before the first event went out
  std::set<std::string> got{(*first)->data().to_string()};
  for (int i = 0; i < 4; ++i) {
    auto r = c.pull().wait(0ms);  // buffered: no wait
    REQUIRE(r.ok());
    REQUIRE(*r);
    got.insert((*r)->data().to_string());
  }
  CHECK(got == std::set<std::string>{"e0", "e1", "e2", "e3", "e4"});
  // The tail: three events, a pull with a timeout delivers them short.
  for (int i = 0; i < 3; ++i) REQUIRE(p.publish(Message{.data = "t" + std::to_string(i), .partition = 0}).ok());
  auto tail = c.pull().wait(20ms);
  REQUIRE(tail.ok());
  REQUIRE(*tail);
  CHECK((*tail)->data().to_string() == "t0");
  CHECK(c.stats().delivered == 8);
  CHECK((*c.pull().wait(0ms))->data().to_string() == "t1");
  CHECK((*c.pull().wait(0ms))->data().to_string() == "t2");
  CHECK(c.pull().wait(10ms).status().is_timed_out());
  // Closing ends the stream; what was not pulled stays unacked for the name.
  REQUIRE(p.publish(Message{.data = "last", .partition = 1}).ok());
  auto f = c.pull();
  c.close();
  auto end = f.wait(1s);
  REQUIRE(end.ok());
  CHECK_FALSE(*end);
}

TEST_CASE("a fixed pull batch that could never fill is refused", "[pull][batch][errors]") {
  Bus bus;
  auto t = make_topic(bus, {.capacity = 8});
  ConsumerOptions o{.name = "c"};
  for (std::uint32_t n : {9u, 0xffffffffu}) {
    o.pull_batch_size = n;
    CHECK(t.consumer(o).status().is_invalid_argument());  // could never fill: the ring waits for it
  }
  // Where producers do not wait for readers only memory bounds it.
  auto lossy = *bus.create_topic("lossy", {.capacity = 8, .overflow = OverflowPolicy::kDropOldest});
  o.pull_batch_size = 16;
  CHECK(lossy.consumer(o).ok());
  o.pull_batch_size = kMaxPullBatch + 1;
  CHECK(lossy.consumer(o).status().is_invalid_argument());
  o.pull_batch_size = 8;  // the whole ring: fills
  auto c = *t.consumer(o);
  auto p = *t.producer();
  for (int i = 0; i < 8; ++i) REQUIRE(p.publish(Message{.data = std::to_string(i)}).ok());
  auto first = c.pull().wait(-1);
  REQUIRE(first.ok());
  REQUIRE(*first);
  CHECK((*first)->data().to_string() == "0");
  CHECK(c.stats().delivered == 8);
}

TEST_CASE("process on a thread pool: per-partition order, all once, acks applied, handlers off the caller",
          "[pull][pool][process]") {
  Bus bus;
  auto t = make_topic(bus, {.partitions = 3, .capacity = 1024});
  auto p = *t.producer();
  constexpr int kEvents = 900;
  for (int i = 0; i < kEvents; ++i) REQUIRE(p.publish(Message{.data = std::to_string(i), .partition = i % 3}).ok());
  auto pool = std::make_shared<ThreadPool>(3);
  const auto caller = std::this_thread::get_id();
  std::mutex mu;
  std::map<std::uint32_t, std::vector<std::uint64_t>> order;
  std::set<std::string> seen;
  int on_caller = 0, ack_failures = 0;
  {
    auto c = *t.consumer({.name = "c"});
    auto n = c.process(
        [&](const PulledEvent& e) {
          std::lock_guard<std::mutex> lock(mu);
          on_caller += std::this_thread::get_id() == caller;
          order[e.id().partition].push_back(e.id().offset);
          seen.insert(e.data().to_string());
          ack_failures += !e.acknowledge().ok();
          return true;
        },
        50ms, ~std::size_t{0}, pool);
    REQUIRE(n.ok());
    CHECK(*n == kEvents);
  }
  CHECK(on_caller == 0);
  CHECK(ack_failures == 0);
  CHECK(seen.size() == std::size_t(kEvents));
  for (auto& [partition, offsets] : order) {
    CHECK(offsets.size() == std::size_t(kEvents / 3));
    CHECK(std::is_sorted(offsets.begin(), offsets.end()));
    CHECK(std::adjacent_find(offsets.begin(), offsets.end()) == offsets.end());
  }
  // Every ack was applied: the name resumes with nothing left.
  auto again = *t.consumer({.name = "c"});
  CHECK(again.poll(10ms).status().is_timed_out());
}

TEST_CASE("process on a thread pool: a stop or a throw ends it; events not handed out come next", "[pull][pool][process]") {
  Bus bus;
  auto t = make_topic(bus, {.partitions = 2, .capacity = 1024});
  auto p = *t.producer();
  constexpr int kEvents = 400;
  for (int i = 0; i < kEvents; ++i) REQUIRE(p.publish(Message{.data = std::to_string(i), .partition = i % 2}).ok());
  auto pool = std::make_shared<ThreadPool>(2);
  auto c = *t.consumer({.name = "c"});
  std::mutex mu;
  std::multiset<int> handled;
  const bool throwing = GENERATE(false, true);
  auto first = c.process(
      [&](const PulledEvent& e) {
        const int v = std::stoi(e.data().to_string());
        std::lock_guard<std::mutex> lock(mu);
        handled.insert(v);
        if (v == 101) {
          if (throwing) throw std::runtime_error("handler failed on 101");
          return false;
        }
        return true;
      },
      50ms, ~std::size_t{0}, pool);
  if (throwing) {
    REQUIRE(first.status().is_invalid_argument());
    CHECK(first.status().message().find("handler failed on 101") != std::string_view::npos);
  } else {
    REQUIRE(first.ok());
    CHECK(*first == handled.size());
  }
  CHECK(handled.size() < std::size_t(kEvents));  // it stopped early
  // The rest, sequentially: together exactly every event once.
  auto rest = c.process([&](const PulledEvent& e) {
    handled.insert(std::stoi(e.data().to_string()));
    return true;
  }, 50ms);
  REQUIRE(rest.ok());
  CHECK(handled.size() == std::size_t(kEvents));
  CHECK(std::set<int>(handled.begin(), handled.end()).size() == std::size_t(kEvents));
}

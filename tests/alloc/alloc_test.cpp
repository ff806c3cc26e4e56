// After warm-up, publishing and consuming 1,000,000 events of <= 64 bytes
// performs zero heap allocations — on the blocking path too (full ring,
// empty ring, timeouts); large events reuse their producer's pooled blocks.
// Counts every global operator new in the process.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#include "rill/rill.hpp"

namespace {
std::atomic<long> allocations{0};

void* counted(std::size_t n, std::size_t align) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  void* p = align > alignof(std::max_align_t) ? std::aligned_alloc(align, (n + align - 1) / align * align)
                                              : std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t n) { return counted(n, 0); }
void* operator new[](std::size_t n) { return counted(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) { return counted(n, std::size_t(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return counted(n, std::size_t(a)); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

using namespace rill;
using namespace std::chrono_literals;

namespace {

struct Counted {
  long publish_errors = 0;
  long poll_errors = 0;
  long allocations = 0;  // during the counted phase
};

// How the reader takes events: batches of up to 64 (an ack per batch), or
// one poll() and one ack() per event.
enum class Reading { kBatches, kSingle };

// On a two-partition topic with a 256-slot ring: publishes `warmup` events
// with publish(producer, i), waits until a reader thread (1 ms timeouts)
// has them all, then counts the allocations of `events` more, published
// and consumed the same way.
template <class Publish>
Counted count_allocations(ProducerMode mode, long warmup, long events, Publish publish,
                          Reading reading = Reading::kBatches) {
  Bus bus;
  auto topic = *bus.create_topic("t", {.partitions = 2, .capacity = 256, .producers = mode});
  auto consumer = *topic.consumer({.name = "c", .max_batch = 64});
  auto producer = *topic.producer();
  Counted out;
  std::atomic<long> consumed{0};
  std::thread reader([&] {
    long n = 0;
    while (n < warmup + events) {
      if (reading == Reading::kSingle) {
        auto e = consumer.poll(1ms);  // timeouts happen: they must not allocate either
        if (!e.ok()) {
          out.poll_errors += !e.status().is_timed_out();
          continue;
        }
        ++n;
        if (!consumer.ack(*e).ok()) ++out.poll_errors;
        consumed.store(n, std::memory_order_release);
        continue;
      }
      auto batch = consumer.poll_batch(64, 1ms);
      if (!batch.ok()) {
        out.poll_errors += !batch.status().is_timed_out();
        continue;
      }
      n += long(batch->size());
      if (!consumer.ack(batch->back()).ok()) ++out.poll_errors;
      consumed.store(n, std::memory_order_release);
    }
  });
  for (long i = 0; i < warmup; ++i) out.publish_errors += !publish(producer, i).ok();
  while (consumed.load(std::memory_order_acquire) < warmup) std::this_thread::yield();
  const long before = allocations.load();
  for (long i = 0; i < events; ++i) out.publish_errors += !publish(producer, i).ok();
  while (consumed.load(std::memory_order_acquire) < warmup + events) std::this_thread::yield();
  out.allocations = allocations.load() - before;
  reader.join();
  return out;
}

}  // namespace

TEST_CASE("a million small events, published and consumed, allocate nothing", "[alloc]") {
  for (ProducerMode mode : {ProducerMode::kSingle, ProducerMode::kMulti}) {
    for (Reading reading : {Reading::kBatches, Reading::kSingle}) {
      INFO((mode == ProducerMode::kSingle ? "single producer" : "multi producer"));
      INFO((reading == Reading::kBatches ? "poll_batch" : "poll"));
      const char payload[64] = {};
      const Counted c = count_allocations(
          mode, 10000, 1000000,
          [&](Producer& p, long i) {
            // Key + metadata + data = 8 + 16 + 40 bytes; keyless every 4th event.
            const std::string_view key = i % 4 ? std::string_view("sensor-7") : std::string_view();
            return p.publish(Message{.key = key, .metadata = R"({"unit": "C"}  )", .data = {payload, 40}});
          },
          reading);
      CHECK(c.publish_errors == 0);
      CHECK(c.poll_errors == 0);
      CHECK(c.allocations == 0);
    }
  }
}

TEST_CASE("large events take their blocks from the producer's pool, not one allocation each", "[alloc]") {
  // A pool grows to the most blocks ever in flight (ring slots, plus the
  // consumer's batch still holding references), which timing decides, so
  // the bound is that count, not zero: without the pool every one of the
  // events would allocate.
  for (ProducerMode mode : {ProducerMode::kSingle, ProducerMode::kMulti}) {
    INFO((mode == ProducerMode::kSingle ? "single producer" : "multi producer"));
    static const char payload[2000] = {};
    const Counted c = count_allocations(mode, 10000, 100000, [&](Producer& p, long i) {
      // 1 KiB and 1.9 KiB of data (two block classes), keyed or not.
      const std::string_view key = i % 3 ? std::string_view("k") : std::string_view();
      return p.publish(Message{.key = key, .data = {payload, i % 2 ? 1000u : 1900u}});
    });
    CHECK(c.publish_errors == 0);
    CHECK(c.poll_errors == 0);
    const long in_flight_bound = 2 * 256 + 64 + 2;
    CHECK(c.allocations <= in_flight_bound);
  }
}

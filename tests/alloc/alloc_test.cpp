// After warm-up, publishing and consuming 1,000,000 events of <= 64 bytes
// performs zero heap allocations — on the blocking path too (full ring,
// empty ring, timeouts). Counts every global operator new in the process.
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

TEST_CASE("a million small events, published and consumed, allocate nothing", "[alloc]") {
  for (ProducerMode mode : {ProducerMode::kSingle, ProducerMode::kMulti}) {
    INFO((mode == ProducerMode::kSingle ? "single producer" : "multi producer"));
    Bus bus;
    auto topic = *bus.create_topic("t", {.partitions = 2, .capacity = 256, .producers = mode});
    auto consumer = *topic.consumer({.name = "c", .max_batch = 64});
    auto producer = *topic.producer();
    constexpr long kWarmup = 10000;
    constexpr long kEvents = 1000000;
    std::atomic<int> phase{0};  // 0 warm-up, 1 counting, 2 done
    std::atomic<long> consumed{0};
    long poll_errors = 0;
    std::thread reader([&] {
      long n = 0;
      while (n < kWarmup + kEvents) {
        auto batch = consumer.poll_batch(64, 1ms);  // timeouts happen: they must not allocate either
        if (!batch.ok()) {
          poll_errors += !batch.status().is_timed_out();
          continue;
        }
        n += long(batch->size());
        if (!consumer.ack(batch->back()).ok()) ++poll_errors;
        consumed.store(n, std::memory_order_release);
      }
    });
    const char payload[64] = {};
    auto publish = [&](long i) {
      // Key + metadata + data = 8 + 16 + 40 bytes; keyless every 4th event.
      const std::string_view key = i % 4 ? std::string_view("sensor-7") : std::string_view();
      return producer.publish(Message{.key = key, .metadata = R"({"unit": "C"}  )", .data = {payload, 40}});
    };
    long publish_errors = 0;
    for (long i = 0; i < kWarmup; ++i) publish_errors += !publish(i).ok();
    while (consumed.load(std::memory_order_acquire) < kWarmup) std::this_thread::yield();
    const long before = allocations.load();
    for (long i = 0; i < kEvents; ++i) publish_errors += !publish(i).ok();
    while (consumed.load(std::memory_order_acquire) < kWarmup + kEvents) std::this_thread::yield();
    const long during = allocations.load() - before;
    reader.join();
    CHECK(publish_errors == 0);
    CHECK(poll_errors == 0);
    CHECK(during == 0);
  }
}

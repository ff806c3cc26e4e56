// shared2_throughput/rill/64: one producer, two instances of one consumer
// name in ConsumerMode::kShared, each taking batches and acking every event
// on its own. Three threads on this machine's cores: informational.
#include <vector>

#include "harness.hpp"
#include "rill/rill.hpp"

namespace {

using namespace rill_bench;
using namespace std::chrono_literals;

void shared2_rill(benchmark::State& state) {
  rill::Bus bus;
  auto topic = bus.create_topic("work", {.partitions = 2, .capacity = 4096, .producers = rill::ProducerMode::kSingle});
  std::vector<rill::Consumer> instances;
  for (int i = 0; i < 2; ++i) {
    instances.push_back(*topic->consumer({.name = "workers", .mode = rill::ConsumerMode::kShared, .max_batch = 256}));
  }
  auto producer = topic->producer();
  Payload<64> payload;
  const std::string_view data(payload.bytes.data(), 64);
  std::atomic<std::uint64_t> received{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (auto& c : instances) {
    threads.emplace_back([&] {
      while (!done.load(std::memory_order_acquire)) {
        auto b = c.poll_batch(256, 1ms);
        if (!b.ok()) continue;
        for (const rill::Event& e : *b) (void)c.ack(e);
        received.fetch_add(b->size(), std::memory_order_release);
      }
    });
  }
  std::uint64_t total = 0;
  for (auto _ : state) {
    for (std::uint64_t i = 0; i < kEventsPerIteration; ++i) (void)producer->publish("", "", data);
    total += kEventsPerIteration;
    while (received.load(std::memory_order_acquire) < total) std::this_thread::yield();
  }
  done.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  state.SetItemsProcessed(std::int64_t(total));
}

const bool registered = [] {
  add("shared2_throughput/rill/64", shared2_rill);
  return true;
}();

}  // namespace

// fanout3_throughput/rill/64: one producer, three named consumers, each
// receiving every event. Four threads on this machine's cores: informational.
#include <vector>

#include "harness.hpp"
#include "rill/rill.hpp"

namespace {

using namespace rill_bench;
using namespace std::chrono_literals;

void fanout3_rill(benchmark::State& state) {
  rill::Bus bus;
  auto topic = bus.create_topic("fanout", {.partitions = 1, .capacity = 4096, .producers = rill::ProducerMode::kSingle});
  std::vector<rill::Consumer> consumers;
  for (const char* name : {"c0", "c1", "c2"}) consumers.push_back(*topic->consumer(throughput_consumer(name)));
  auto producer = topic->producer();
  Payload<64> payload;
  const std::string_view data(payload.bytes.data(), 64);
  std::atomic<std::uint64_t> received[3] = {0, 0, 0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int c = 0; c < 3; ++c) {
    threads.emplace_back([&, c] {
      while (!done.load(std::memory_order_acquire)) {
        auto b = consumers[std::size_t(c)].poll_batch(1024, 1ms);
        if (!b.ok()) continue;
        (void)consumers[std::size_t(c)].ack(b->back());
        received[c].fetch_add(b->size(), std::memory_order_release);
      }
    });
  }
  std::uint64_t total = 0;
  for (auto _ : state) {
    for (std::uint64_t i = 0; i < kEventsPerIteration; ++i) (void)producer->publish("", "", data);
    total += kEventsPerIteration;
    for (auto& r : received) {
      while (r.load(std::memory_order_acquire) < total) std::this_thread::yield();
    }
  }
  done.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  state.SetItemsProcessed(std::int64_t(total));  // events published, each delivered 3 times
}

const bool registered = [] {
  add("fanout3_throughput/rill/64", fanout3_rill);
  return true;
}();

}  // namespace

// spsc_throughput: one producer thread, one consumer thread, small payloads.
// rill: a single-partition, single-producer topic; one named consumer that
// takes every available event as a batch and acks once per batch.
#include <boost/lockfree/spsc_queue.hpp>

#include "harness.hpp"
#include "rill/rill.hpp"

namespace {

using namespace rill_bench;
using namespace std::chrono_literals;

template <std::size_t N>
void spsc_rill(benchmark::State& state, rill::WaitStrategy wait) {
  rill::Bus bus;
  auto topic = bus.create_topic("spsc", {.partitions = 1,
                                         .capacity = 4096,
                                         .wait = wait,
                                         .producers = rill::ProducerMode::kSingle});
  auto producer = topic->producer();
  auto consumer = topic->consumer({.name = "bench", .max_batch = 1024});
  Payload<N> payload;
  const std::string_view data(payload.bytes.data(), N);
  run_pair(
      state,
      [&](std::uint64_t n) {
        for (std::uint64_t i = 0; i < n; ++i) {
          if (!producer->publish("", "", data).ok()) state.SkipWithError("publish failed");
        }
      },
      [&](std::atomic<std::uint64_t>& received, std::atomic<bool>& done) {
        while (!done.load(std::memory_order_acquire)) {
          auto batch = consumer->poll_batch(1024, 1ms);
          if (!batch.ok()) continue;
          benchmark::DoNotOptimize(batch->back().data().data());
          (void)consumer->ack(batch->back());
          received.fetch_add(batch->size(), std::memory_order_release);
        }
      });
}

template <std::size_t N>
void spsc_boost(benchmark::State& state) {
  boost::lockfree::spsc_queue<Payload<N>, boost::lockfree::capacity<4096>> queue;
  Payload<N> payload;
  run_pair(
      state,
      [&](std::uint64_t n) {
        for (std::uint64_t i = 0; i < n; ++i) {
          while (!queue.push(payload)) {
          }
        }
      },
      [&](std::atomic<std::uint64_t>& received, std::atomic<bool>& done) {
        Payload<N> out[1024];
        while (!done.load(std::memory_order_acquire)) {
          const std::size_t got = queue.pop(out, 1024);
          if (got == 0) continue;
          benchmark::DoNotOptimize(out[got - 1].bytes.data());
          received.fetch_add(got, std::memory_order_release);
        }
      });
}

void configure(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->MinTime(0.2)->Repetitions(5)->ReportAggregatesOnly(true)->Unit(benchmark::kMillisecond);
}

}  // namespace

const bool registered = [] {
  using rill::WaitStrategy;
  benchmark::RegisterBenchmark("spsc_throughput/rill/8", [](benchmark::State& s) {
    spsc_rill<8>(s, WaitStrategy::kBlocking);
  })->Apply(configure);
  benchmark::RegisterBenchmark("spsc_throughput/rill_spin/8", [](benchmark::State& s) {
    spsc_rill<8>(s, WaitStrategy::kBusySpin);
  })->Apply(configure);
  benchmark::RegisterBenchmark("spsc_throughput/boost_spsc/8", spsc_boost<8>)->Apply(configure);
  return true;
}();

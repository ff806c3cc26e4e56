// Shared pieces of rill's benchmark binary: payloads, thread pinning, the
// two-thread transfer loop, and registration.
//
// Naming: every benchmark is registered as <scenario>/<implementation>/
// <payload_bytes> and reports items_per_second as events (or round trips)
// per second. Method: 5 repetitions of >= 0.2 s each; the median is what
// scripts/bench and the README compare.
#pragma once

#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "rill/rill.hpp"

namespace rill_bench {

template <std::size_t N>
struct Payload {
  std::array<char, N> bytes{};
};

// Pins the calling thread to `cpu` when the machine has more than `cpu`
// cores; returns whether it did.
inline bool pin_to(unsigned cpu) {
  if (std::thread::hardware_concurrency() <= cpu) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

// Restores the calling thread's affinity to every core.
inline void unpin() {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (unsigned c = 0; c < std::thread::hardware_concurrency(); ++c) CPU_SET(c, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// Events moved per benchmark iteration: long enough that the drain at the
// end of an iteration is noise.
inline constexpr std::uint64_t kEventsPerIteration = 1 << 16;

// Runs producers on the benchmark thread (core 0) plus `extra_producers`
// threads, and one consumer thread (core 1). produce(n) hands over n events
// from the calling thread; consume(received, done) counts what it takes
// into `received` until `done`.
template <class Produce, class Consume>
void run_pair(benchmark::State& state, Produce&& produce, Consume&& consume) {
  std::atomic<std::uint64_t> received{0};
  std::atomic<bool> done{false};
  std::thread consumer([&] {
    pin_to(1);
    consume(received, done);
  });
  pin_to(0);
  std::uint64_t total = 0;
  for (auto _ : state) {
    produce(kEventsPerIteration);
    total += kEventsPerIteration;
    while (received.load(std::memory_order_acquire) < total) {
    }
  }
  done.store(true, std::memory_order_release);
  consumer.join();
  unpin();
  state.SetItemsProcessed(std::int64_t(total));
}

// How rill's throughput scenarios configure a consumer: batches of up to
// 1024 events, and a poll that finds fewer than 256 lingers up to 5 us for
// more (ConsumerOptions::min_batch, batch_linger): what a user tuning for
// throughput sets, as the peers are driven with their bulk calls. The
// `rill_no_linger` rows show the defaults (no linger, lowest latency).
inline rill::ConsumerOptions throughput_consumer(std::string name, bool linger = true) {
  rill::ConsumerOptions o{.name = std::move(name), .max_batch = 1024};
  if (linger) {
    o.min_batch = 256;
    o.batch_linger = std::chrono::microseconds(5);
  }
  return o;
}

// RILL_BENCH_QUICK=1 (scripts/bench --quick): one short repetition, a smoke
// run that proves every benchmark still works.
// The consumer side of every rill throughput scenario: take each available
// batch (up to 1024 events of one partition) and ack it once.
inline auto rill_batch_consumer(rill::Consumer& consumer) {
  return [&consumer](std::atomic<std::uint64_t>& received, std::atomic<bool>& done) {
    while (!done.load(std::memory_order_acquire)) {
      auto batch = consumer.poll_batch(1024, std::chrono::milliseconds(1));
      if (!batch.ok()) continue;
      benchmark::DoNotOptimize(batch->back().data().data());
      (void)consumer.ack(batch->back());
      received.fetch_add(batch->size(), std::memory_order_release);
    }
  };
}

// The consumer side for a queue with a bulk pop: pop(out, max) -> count.
template <class T, class Pop>
auto bulk_consumer(Pop pop) {
  return [pop](std::atomic<std::uint64_t>& received, std::atomic<bool>& done) mutable {
    auto out = std::make_unique<T[]>(1024);
    while (!done.load(std::memory_order_acquire)) {
      const std::size_t got = pop(out.get(), 1024);
      if (got == 0) continue;
      benchmark::DoNotOptimize(&out[got - 1]);
      received.fetch_add(got, std::memory_order_release);
    }
  };
}

inline void configure(benchmark::internal::Benchmark* b) {
  const char* quick = std::getenv("RILL_BENCH_QUICK");
  if (quick && std::string(quick) == "1") {
    b->UseRealTime()->MinTime(0.02)->Repetitions(1)->Unit(benchmark::kMillisecond);
  } else {
    b->UseRealTime()->MinTime(0.2)->Repetitions(5)->ReportAggregatesOnly(true)->Unit(benchmark::kMillisecond);
  }
}

inline void add(const std::string& name, std::function<void(benchmark::State&)> fn) {
  benchmark::RegisterBenchmark(name.c_str(), [fn](benchmark::State& s) { fn(s); })->Apply(configure);
}

}  // namespace rill_bench

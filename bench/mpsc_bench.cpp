// mpsc_throughput/<impl>/64: two producer threads, one consumer thread.
// rill: a single-partition, multi-producer topic; each producer publishes
// in batches of 16 (claims 16 slots with one fetch_add), the consumer takes
// every available event as a batch. Peers use their bulk operations too.
#include <memory>
#include <vector>

#include "harness.hpp"
#include "rill/rill.hpp"

#if RILL_HAVE_ATOMIC_QUEUE
#include <atomic_queue/atomic_queue.h>
#endif
#if RILL_HAVE_MOODYCAMEL
#include <concurrentqueue/concurrentqueue.h>
#endif
// GCC 12 at -O3 reports a false -Wstringop-overflow inside moodycamel's
// enqueue_bulk once it is inlined into mpsc_moodycamel (a peer's code).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif

namespace {

using namespace rill_bench;
using namespace std::chrono_literals;

constexpr int kProducers = 2;
constexpr std::uint64_t kBatch = 16;

// Producer i runs on core i % cores; the consumer takes what is left.
template <class MakeProducer, class Consume>
void run_mpsc(benchmark::State& state, MakeProducer&& make_producer, Consume&& consume) {
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> goal{0};
  std::atomic<bool> done{false};
  std::thread consumer([&] { consume(received, done); });
  std::vector<std::thread> helpers;
  // Helper producers publish their share of each iteration when `goal` moves.
  for (int p = 1; p < kProducers; ++p) {
    helpers.emplace_back([&, p] {
      auto produce = make_producer(p);
      std::uint64_t sent = 0;
      while (!done.load(std::memory_order_acquire)) {
        const std::uint64_t g = goal.load(std::memory_order_acquire);
        if (sent < g) {
          produce(g - sent);
          sent = g;
        } else {
          std::this_thread::yield();  // between iterations: leave the core to the others
        }
      }
    });
  }
  auto produce = make_producer(0);
  std::uint64_t total = 0;
  const std::uint64_t share = kEventsPerIteration / kProducers;
  std::uint64_t per_producer = 0;
  for (auto _ : state) {
    per_producer += share;
    goal.store(per_producer, std::memory_order_release);
    produce(share);
    total += share * kProducers;
    while (received.load(std::memory_order_acquire) < total) {
    }
  }
  done.store(true, std::memory_order_release);
  for (auto& t : helpers) t.join();
  consumer.join();
  state.SetItemsProcessed(std::int64_t(total));
}

void mpsc_rill(benchmark::State& state) {
  rill::Bus bus;
  auto topic = bus.create_topic("mpsc", {.partitions = 1, .capacity = 4096});
  auto consumer = topic->consumer(throughput_consumer("bench"));
  Payload<64> payload;
  const std::string_view data(payload.bytes.data(), 64);
  run_mpsc(
      state,
      [&](int) {
        auto producer = std::make_shared<rill::Producer>(*topic->producer());
        auto batch = std::make_shared<std::vector<rill::Message>>(kBatch, rill::Message{.data = data});
        return [producer, batch](std::uint64_t n) {
          for (std::uint64_t i = 0; i < n; i += kBatch) {
            (void)producer->publish_batch(std::span(batch->data(), std::min(kBatch, n - i)));
          }
        };
      },
      rill_batch_consumer(*consumer));
}

#if RILL_HAVE_MOODYCAMEL
void mpsc_moodycamel(benchmark::State& state) {
  moodycamel::ConcurrentQueue<Payload<64>> queue(4096);
  run_mpsc(
      state,
      [&](int) {
        auto token = std::make_shared<moodycamel::ProducerToken>(queue);
        auto batch = std::make_shared<std::vector<Payload<64>>>(kBatch);
        return [&queue, token, batch](std::uint64_t n) {
          for (std::uint64_t i = 0; i < n; i += kBatch) {
            const std::size_t k = std::min(kBatch, n - i);
            // enqueue (not try_enqueue): with two explicit producers the
            // preallocated block pool can be held by one of them; moodycamel
            // then allocates a block, as its users' code does.
            queue.enqueue_bulk(*token, batch->begin(), k);
          }
        };
      },
      bulk_consumer<Payload<64>>([&queue, ctok = std::make_shared<moodycamel::ConsumerToken>(queue)](
                                     Payload<64>* out, std::size_t max) { return queue.try_dequeue_bulk(*ctok, out, max); }));
}
#endif

#if RILL_HAVE_ATOMIC_QUEUE
void mpsc_atomic_queue(benchmark::State& state) {
  using Q = atomic_queue::AtomicQueue2<Payload<64>, 4096, true, true, false, false>;
  auto queue = std::make_unique<Q>();
  run_mpsc(
      state,
      [&](int) {
        return [&queue](std::uint64_t n) {
          Payload<64> payload;
          for (std::uint64_t i = 0; i < n; ++i) queue->push(Payload<64>(payload));
        };
      },
      [&](std::atomic<std::uint64_t>& received, std::atomic<bool>& done) {
        Payload<64> out;
        while (!done.load(std::memory_order_acquire)) {
          std::uint64_t got = 0;
          while (queue->try_pop(out)) ++got;
          if (got == 0) continue;
          benchmark::DoNotOptimize(out.bytes.data());
          received.fetch_add(got, std::memory_order_release);
        }
      });
}
#endif

const bool registered = [] {
  add("mpsc_throughput/rill/64", mpsc_rill);
#if RILL_HAVE_MOODYCAMEL
  add("mpsc_throughput/moodycamel/64", mpsc_moodycamel);
#endif
#if RILL_HAVE_ATOMIC_QUEUE
  add("mpsc_throughput/atomic_queue/64", mpsc_atomic_queue);
#endif
  return true;
}();

}  // namespace

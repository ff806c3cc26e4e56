// spsc_throughput/<impl>/<8|64|1024>: one producer thread, one consumer
// thread. rill: a single-partition, single-producer topic with one named
// consumer that takes every available event as a batch and acks per batch
// (configured for throughput: harness.hpp's throughput_consumer).
// Peers are used as their authors intend for this job: bulk dequeue where
// the queue offers it.
#include <boost/lockfree/spsc_queue.hpp>
#include <memory>
#include <vector>

#include "harness.hpp"
#include "rill/rill.hpp"

#if RILL_HAVE_ATOMIC_QUEUE
#include <atomic_queue/atomic_queue.h>
#endif
#if RILL_HAVE_RWQUEUE
#include <readerwriterqueue/readerwriterqueue.h>
#endif
#if RILL_HAVE_MOODYCAMEL
#include <concurrentqueue/concurrentqueue.h>
#endif
#if RILL_HAVE_ZMQ
#include <zmq.h>
#endif

namespace {

using namespace rill_bench;
using namespace std::chrono_literals;

constexpr std::size_t kQueueCapacity = 4096;

template <std::size_t N>
void spsc_rill(benchmark::State& state, rill::WaitStrategy wait, bool linger) {
  rill::Bus bus;
  auto topic = bus.create_topic("spsc", {.partitions = 1,
                                         .capacity = kQueueCapacity,
                                         .wait = wait,
                                         .producers = rill::ProducerMode::kSingle});
  auto producer = topic->producer();
  auto consumer = topic->consumer(throughput_consumer("bench", linger));
  Payload<N> payload;
  const std::string_view data(payload.bytes.data(), N);
  run_pair(
      state,
      [&](std::uint64_t n) {
        for (std::uint64_t i = 0; i < n; ++i) {
          if (!producer->publish("", "", data).ok()) state.SkipWithError("publish failed");
        }
      },
      rill_batch_consumer(*consumer));
}

// spsc_batch64_throughput: the same hand-off with the producer publishing
// 64 events per call (rill: publish_batch claims 64 slots at once; boost:
// bulk push). Where the physics rewards batching, both sides batch.
template <std::size_t N>
void spsc_batch_rill(benchmark::State& state) {
  rill::Bus bus;
  auto topic = bus.create_topic("spsc", {.partitions = 1,
                                         .capacity = kQueueCapacity,
                                         .producers = rill::ProducerMode::kSingle});
  auto producer = topic->producer();
  auto consumer = topic->consumer(throughput_consumer("bench"));
  Payload<N> payload;
  std::vector<rill::Message> batch(64, rill::Message{.data = std::string_view(payload.bytes.data(), N)});
  run_pair(
      state,
      [&](std::uint64_t n) {
        for (std::uint64_t i = 0; i < n; i += 64) {
          if (!producer->publish_batch(batch).ok()) state.SkipWithError("publish failed");
        }
      },
      rill_batch_consumer(*consumer));
}

template <std::size_t N>
void spsc_batch_boost(benchmark::State& state) {
  auto queue = std::make_unique<boost::lockfree::spsc_queue<Payload<N>, boost::lockfree::capacity<kQueueCapacity>>>();
  std::vector<Payload<N>> batch(64);
  run_pair(
      state,
      [&](std::uint64_t n) {
        for (std::uint64_t i = 0; i < n; i += 64) {
          std::size_t pushed = 0;
          while (pushed < 64) pushed += queue->push(batch.data() + pushed, 64 - pushed);
        }
      },
      bulk_consumer<Payload<N>>([&](Payload<N>* out, std::size_t max) { return queue->pop(out, max); }));
}

template <std::size_t N>
void spsc_boost(benchmark::State& state) {
  auto queue = std::make_unique<boost::lockfree::spsc_queue<Payload<N>, boost::lockfree::capacity<kQueueCapacity>>>();
  Payload<N> payload;
  run_pair(
      state,
      [&](std::uint64_t n) {
        for (std::uint64_t i = 0; i < n; ++i) {
          while (!queue->push(payload)) {
          }
        }
      },
      bulk_consumer<Payload<N>>([&](Payload<N>* out, std::size_t max) { return queue->pop(out, max); }));
}

#if RILL_HAVE_ATOMIC_QUEUE
// AtomicQueue2 (non-atomic elements) in its SPSC, maximize-throughput form.
template <std::size_t N>
void spsc_atomic_queue(benchmark::State& state) {
  using Q = atomic_queue::AtomicQueue2<Payload<N>, kQueueCapacity, true, true, false, true>;
  auto queue = std::make_unique<Q>();
  Payload<N> payload;
  run_pair(
      state,
      [&](std::uint64_t n) {
        for (std::uint64_t i = 0; i < n; ++i) queue->push(Payload<N>(payload));
      },
      [&](std::atomic<std::uint64_t>& received, std::atomic<bool>& done) {
        Payload<N> out;
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

#if RILL_HAVE_RWQUEUE
template <std::size_t N>
void spsc_rwqueue(benchmark::State& state) {
  moodycamel::ReaderWriterQueue<Payload<N>> queue(kQueueCapacity);
  Payload<N> payload;
  run_pair(
      state,
      [&](std::uint64_t n) {
        for (std::uint64_t i = 0; i < n; ++i) {
          while (!queue.try_enqueue(payload)) {
          }
        }
      },
      [&](std::atomic<std::uint64_t>& received, std::atomic<bool>& done) {
        Payload<N> out;
        while (!done.load(std::memory_order_acquire)) {
          std::uint64_t got = 0;
          while (queue.try_dequeue(out)) ++got;
          if (got == 0) continue;
          benchmark::DoNotOptimize(out.bytes.data());
          received.fetch_add(got, std::memory_order_release);
        }
      });
}
#endif

#if RILL_HAVE_MOODYCAMEL
template <std::size_t N>
void spsc_moodycamel(benchmark::State& state) {
  moodycamel::ConcurrentQueue<Payload<N>> queue(kQueueCapacity);
  moodycamel::ProducerToken ptok(queue);
  Payload<N> payload;
  run_pair(
      state,
      [&](std::uint64_t n) {
        for (std::uint64_t i = 0; i < n; ++i) {
          while (!queue.try_enqueue(ptok, payload)) {
          }
        }
      },
      bulk_consumer<Payload<N>>([&queue, ctok = std::make_shared<moodycamel::ConsumerToken>(queue)](
                                     Payload<N>* out, std::size_t max) { return queue.try_dequeue_bulk(*ctok, out, max); }));
}
#endif

#if RILL_HAVE_ZMQ
template <std::size_t N>
void spsc_zmq(benchmark::State& state) {
  void* ctx = zmq_ctx_new();
  void* push = zmq_socket(ctx, ZMQ_PUSH);
  void* pull = zmq_socket(ctx, ZMQ_PULL);
  const int hwm = int(kQueueCapacity);
  zmq_setsockopt(push, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(pull, ZMQ_RCVHWM, &hwm, sizeof hwm);
  zmq_bind(pull, "inproc://rill-bench");
  zmq_connect(push, "inproc://rill-bench");
  Payload<N> payload;
  run_pair(
      state,
      [&](std::uint64_t n) {
        for (std::uint64_t i = 0; i < n; ++i) zmq_send(push, payload.bytes.data(), N, 0);
      },
      [&](std::atomic<std::uint64_t>& received, std::atomic<bool>& done) {
        Payload<N> out;
        while (!done.load(std::memory_order_acquire)) {
          if (zmq_recv(pull, out.bytes.data(), N, ZMQ_DONTWAIT) < 0) continue;
          received.fetch_add(1, std::memory_order_release);
        }
      });
  zmq_close(push);
  zmq_close(pull);
  zmq_ctx_term(ctx);
}
#endif

template <std::size_t N>
void register_spsc() {
  const std::string n = "/" + std::to_string(N);
  add("spsc_throughput/rill" + n, [](benchmark::State& s) { spsc_rill<N>(s, rill::WaitStrategy::kBlocking, true); });
  add("spsc_throughput/boost_spsc" + n, spsc_boost<N>);
#if RILL_HAVE_ATOMIC_QUEUE
  add("spsc_throughput/atomic_queue" + n, spsc_atomic_queue<N>);
#endif
#if RILL_HAVE_RWQUEUE
  add("spsc_throughput/rwqueue" + n, spsc_rwqueue<N>);
#endif
#if RILL_HAVE_MOODYCAMEL
  add("spsc_throughput/moodycamel" + n, spsc_moodycamel<N>);
#endif
#if RILL_HAVE_ZMQ
  add("spsc_throughput/zmq_inproc" + n, spsc_zmq<N>);
#endif
}

const bool registered = [] {
  register_spsc<8>();
  register_spsc<64>();
  register_spsc<1024>();
  add("spsc_batch64_throughput/rill/8", spsc_batch_rill<8>);
  add("spsc_batch64_throughput/boost_spsc/8", spsc_batch_boost<8>);
  add("spsc_batch64_throughput/rill/64", spsc_batch_rill<64>);
  add("spsc_batch64_throughput/boost_spsc/64", spsc_batch_boost<64>);
  // Informational: the consumer with default options (no linger), and the
  // same with a busy-spinning wait strategy.
  add("spsc_throughput/rill_no_linger/8", [](benchmark::State& s) { spsc_rill<8>(s, rill::WaitStrategy::kBlocking, false); });
  add("spsc_throughput/rill_no_linger/64", [](benchmark::State& s) { spsc_rill<64>(s, rill::WaitStrategy::kBlocking, false); });
  add("spsc_throughput/rill_busy_spin/8", [](benchmark::State& s) { spsc_rill<8>(s, rill::WaitStrategy::kBusySpin, false); });
  return true;
}();

}  // namespace

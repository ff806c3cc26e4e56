// pingpong_rtt/<impl>/8: two threads bounce one 8-byte event over two
// queues (topics); items_per_second counts round trips. The peers' threads
// spin on their queues; rill's topics wait the same way (WaitStrategy::
// kBusySpin, what a user tuning for latency picks). rill_blocking: the
// default strategy (spin, yield, then sleep on the topic's bell), which
// falls asleep whenever a reply takes longer than its spin.
#include <boost/lockfree/spsc_queue.hpp>
#include <memory>

#include "harness.hpp"
#include "rill/rill.hpp"

#if RILL_HAVE_ATOMIC_QUEUE
#include <atomic_queue/atomic_queue.h>
#endif

namespace {

using namespace rill_bench;
using namespace std::chrono_literals;

constexpr std::uint64_t kRoundTripsPerIteration = 1 << 12;

// Thread B echoes every event back; the benchmark thread (A) sends one and
// waits for the echo, kRoundTripsPerIteration times per iteration.
template <class Send, class Receive, class Echo>
void run_pingpong(benchmark::State& state, Send&& send, Receive&& receive, Echo&& echo) {
  // B reads `done` between events: on a line of its own, away from A's
  // stack (a shared line costs each round trip a transfer).
  struct alignas(128) Flag {
    std::atomic<bool> value{false};
  };
  Flag stop;
  std::atomic<bool>& done = stop.value;
  std::thread b([&] {
    pin_to(1);
    echo(done);
  });
  pin_to(0);
  std::uint64_t total = 0;
  for (auto _ : state) {
    for (std::uint64_t i = 0; i < kRoundTripsPerIteration; ++i) {
      send();
      receive();
    }
    total += kRoundTripsPerIteration;
  }
  done.store(true, std::memory_order_release);
  b.join();
  unpin();
  state.SetItemsProcessed(std::int64_t(total));
}

void pingpong_rill(benchmark::State& state, rill::WaitStrategy wait) {
  rill::Bus bus;
  const rill::TopicOptions opts{
      .partitions = 1, .capacity = 1024, .wait = wait, .producers = rill::ProducerMode::kSingle};
  auto ping = bus.create_topic("ping", opts);
  auto pong = bus.create_topic("pong", opts);
  auto ping_in = ping->consumer({.name = "b"});
  auto pong_in = pong->consumer({.name = "a"});
  auto ping_out = ping->producer();
  auto pong_out = pong->producer();
  Payload<8> payload;
  const std::string_view data(payload.bytes.data(), 8);
  run_pingpong(
      state, [&] { (void)ping_out->publish("", "", data); },
      [&] {
        for (;;) {
          auto e = pong_in->poll(1s);
          if (e.ok()) {
            (void)pong_in->ack(*e);
            return;
          }
        }
      },
      [&](std::atomic<bool>& done) {
        while (!done.load(std::memory_order_acquire)) {
          auto e = ping_in->poll(1ms);
          if (!e.ok()) continue;
          (void)ping_in->ack(*e);
          (void)pong_out->publish("", "", e->data());
        }
      });
}

template <class Q>
void pingpong_queue(benchmark::State& state, Q& ping, Q& pong) {
  Payload<8> payload;
  run_pingpong(
      state,
      [&] {
        while (!ping.push(payload)) {
        }
      },
      [&] {
        Payload<8> out;
        while (!pong.pop(out)) {
        }
      },
      [&](std::atomic<bool>& done) {
        Payload<8> out;
        while (!done.load(std::memory_order_acquire)) {
          if (!ping.pop(out)) continue;
          while (!pong.push(out)) {
          }
        }
      });
}

void pingpong_boost(benchmark::State& state) {
  using Q = boost::lockfree::spsc_queue<Payload<8>, boost::lockfree::capacity<1024>>;
  auto ping = std::make_unique<Q>();
  auto pong = std::make_unique<Q>();
  pingpong_queue(state, *ping, *pong);
}

#if RILL_HAVE_ATOMIC_QUEUE
// Adapts AtomicQueue2's try_push/try_pop to push/pop returning bool.
struct AtomicQueueSpsc {
  atomic_queue::AtomicQueue2<Payload<8>, 1024, true, true, false, true> q;
  bool push(const Payload<8>& p) { return q.try_push(Payload<8>(p)); }
  bool pop(Payload<8>& p) { return q.try_pop(p); }
};
void pingpong_atomic_queue(benchmark::State& state) {
  auto ping = std::make_unique<AtomicQueueSpsc>();
  auto pong = std::make_unique<AtomicQueueSpsc>();
  pingpong_queue(state, *ping, *pong);
}
#endif

const bool registered = [] {
  add("pingpong_rtt/rill/8", [](benchmark::State& s) { pingpong_rill(s, rill::WaitStrategy::kBusySpin); });
  add("pingpong_rtt/rill_blocking/8", [](benchmark::State& s) { pingpong_rill(s, rill::WaitStrategy::kBlocking); });
  add("pingpong_rtt/boost_spsc/8", pingpong_boost);
#if RILL_HAVE_ATOMIC_QUEUE
  add("pingpong_rtt/atomic_queue/8", pingpong_atomic_queue);
#endif
  return true;
}();

}  // namespace

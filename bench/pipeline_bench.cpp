// pipeline3/<impl>/64: source -> map -> map -> sink, four threads, three
// hand-offs of 64-byte events; each map copies the event and changes a
// byte. rill: a Pipeline on in-memory single-producer topics (capacity
// 4096, batches of up to 256 per hand-off, acked after publishing).
// boost_spsc_chain: the same three hand-offs over boost::lockfree::
// spsc_queue, each thread yielding when its queue is empty or full.
// Four threads on this machine's cores: both sides are oversubscribed.
#include <boost/lockfree/spsc_queue.hpp>

#include <array>
#include <vector>

#include "harness.hpp"
#include "rill/rill.hpp"

namespace {

using namespace rill_bench;

constexpr std::size_t kPayload = 64;

// Drives a pipeline-shaped run: the benchmark thread raises `allowed` by
// one iteration's worth and waits for the sink to count them.
struct Feed {
  std::atomic<std::uint64_t> allowed{0};
  std::atomic<std::uint64_t> sunk{0};
};

template <class Body>
void drive(benchmark::State& state, Feed& feed, Body&& stop) {
  std::uint64_t total = 0;
  for (auto _ : state) {
    total += kEventsPerIteration;
    feed.allowed.store(total, std::memory_order_release);
    while (feed.sunk.load(std::memory_order_acquire) < total) std::this_thread::yield();
  }
  stop();
  state.SetItemsProcessed(std::int64_t(total));
}

void pipeline3_rill(benchmark::State& state) {
  rill::Bus bus({.default_topic = {.partitions = 1, .capacity = 4096, .producers = rill::ProducerMode::kSingle}});
  rill::Pipeline pipeline(bus);
  Feed feed;
  std::uint64_t emitted = 0;
  Payload<kPayload> payload;
  std::atomic<bool> done{false};
  auto source = [&](rill::Emitter& out) {
    const std::uint64_t allowed = feed.allowed.load(std::memory_order_acquire);
    if (emitted == allowed) {
      std::this_thread::yield();
      return !done.load(std::memory_order_acquire);
    }
    const std::uint64_t n = std::min<std::uint64_t>(256, allowed - emitted);
    for (std::uint64_t i = 0; i < n; ++i) out.emit({}, {}, std::string_view(payload.bytes.data(), kPayload));
    emitted += n;
    return true;
  };
  auto step = [] {
    return rill::map([buffer = std::array<char, kPayload>{}](const rill::Event& e) mutable {
      std::memcpy(buffer.data(), e.data().data(), std::min(e.data().size(), kPayload));
      ++buffer[0];
      return rill::Message{{}, {}, std::string_view(buffer.data(), kPayload)};
    });
  };
  bool ok = pipeline.source("source", source, {.output = "a"}).ok();
  ok = ok && pipeline.transform("map1", step(), {.input = "a", .output = "b"}).ok();
  ok = ok && pipeline.transform("map2", step(), {.input = "b", .output = "c"}).ok();
  ok = ok && pipeline
                 .sink("sink",
                       [&](const rill::Event& e) {
                         benchmark::DoNotOptimize(e.data().data());
                         feed.sunk.fetch_add(1, std::memory_order_release);
                       },
                       {.input = "c"})
                 .ok();
  if (!ok || !pipeline.start().ok()) {
    state.SkipWithError("pipeline setup failed");
    return;
  }
  drive(state, feed, [&] {
    done.store(true, std::memory_order_release);
    pipeline.stop();
  });
}

void pipeline3_boost(benchmark::State& state) {
  using Queue = boost::lockfree::spsc_queue<Payload<kPayload>, boost::lockfree::capacity<4096>>;
  std::array<std::unique_ptr<Queue>, 3> queues;
  for (auto& q : queues) q = std::make_unique<Queue>();
  Feed feed;
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  threads.emplace_back([&] {  // source
    Payload<kPayload> payload;
    std::uint64_t emitted = 0;
    while (!done.load(std::memory_order_acquire)) {
      const std::uint64_t allowed = feed.allowed.load(std::memory_order_acquire);
      if (emitted == allowed || !queues[0]->push(payload)) {
        std::this_thread::yield();
        continue;
      }
      ++emitted;
    }
  });
  for (int m = 0; m < 2; ++m) {
    threads.emplace_back([&, m] {  // map
      Payload<kPayload> in;
      while (!done.load(std::memory_order_acquire)) {
        if (!queues[m]->pop(in)) {
          std::this_thread::yield();
          continue;
        }
        Payload<kPayload> out = in;
        ++out.bytes[0];
        while (!queues[m + 1]->push(out)) {
          if (done.load(std::memory_order_acquire)) return;
          std::this_thread::yield();
        }
      }
    });
  }
  threads.emplace_back([&] {  // sink
    Payload<kPayload> in;
    while (!done.load(std::memory_order_acquire)) {
      if (!queues[2]->pop(in)) {
        std::this_thread::yield();
        continue;
      }
      benchmark::DoNotOptimize(in.bytes.data());
      feed.sunk.fetch_add(1, std::memory_order_release);
    }
  });
  drive(state, feed, [&] {
    done.store(true, std::memory_order_release);
    for (auto& t : threads) t.join();
  });
}

const bool registered = [] {
  add("pipeline3/rill/64", pipeline3_rill);
  add("pipeline3/boost_spsc_chain/64", pipeline3_boost);
  return true;
}();

}  // namespace

// join2/<impl>/64: two inputs, 1,000,000 keys, each key once per input,
// each input in its own random order, 64-byte payloads; items are matches
// (joined pairs) per second. rill: a key-matching join stage with two
// threads over two-partition memory-only topics (keys hash to partitions,
// so each thread owns its keys' table), fed by two publishing threads, its
// output counted by a sink stage. tbb_key_matching: oneTBB's flow graph join_node
// with key_matching<std::string>, fed by two threads calling try_put, its
// output counted by a function_node.
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "harness.hpp"
#include "rill/rill.hpp"

#if RILL_HAVE_TBB
#include <oneapi/tbb/flow_graph.h>
#endif

namespace {

using namespace rill_bench;

constexpr std::size_t kKeys = 1000000;
constexpr std::size_t kPayload = 64;

struct Workload {
  std::vector<std::string> keys;
  std::vector<std::uint32_t> order[2];
  Workload() {
    keys.reserve(kKeys);
    for (std::size_t i = 0; i < kKeys; ++i) keys.push_back("thing-" + std::to_string(i));
    std::mt19937 rng(42);
    for (auto& o : order) {
      o.resize(kKeys);
      for (std::uint32_t i = 0; i < kKeys; ++i) o[i] = i;
      std::shuffle(o.begin(), o.end(), rng);
    }
  }
};

const Workload& workload() {
  static const Workload w;
  return w;
}

void join2_rill(benchmark::State& state) {
  const Workload& w = workload();
  rill::Bus bus({.default_topic = {.partitions = 2, .capacity = 8192}});
  rill::Pipeline pipeline(bus);
  std::atomic<std::uint64_t> joined{0};
  bool ok = pipeline.key_match_join("join", {}, {.output = "joined", .inputs = {"a", "b"}, .threads = 2, .max_batch = 1024}).ok();
  ok = ok && pipeline.sink("count", [&](const rill::Event&) { joined.fetch_add(1, std::memory_order_relaxed); },
                           {.input = "joined", .max_batch = 1024})
                 .ok();
  auto a = bus.producer("a");
  auto b = bus.producer("b");
  if (!ok || !a.ok() || !b.ok() || !pipeline.start().ok()) {
    state.SkipWithError("pipeline setup failed");
    return;
  }
  Payload<kPayload> payload;
  const std::string_view data(payload.bytes.data(), kPayload);
  std::uint64_t total = 0;
  for (auto _ : state) {
    auto feed = [&](rill::Producer& p, const std::vector<std::uint32_t>& order) {
      std::vector<rill::Message> batch(64);
      for (std::size_t i = 0; i < order.size(); i += 64) {
        const std::size_t n = std::min<std::size_t>(64, order.size() - i);
        for (std::size_t j = 0; j < n; ++j) batch[j] = rill::Message{w.keys[order[i + j]], {}, data};
        (void)p.publish_batch(std::span<const rill::Message>(batch.data(), n));
      }
    };
    std::thread second([&] { feed(*b, w.order[1]); });
    feed(*a, w.order[0]);
    second.join();
    total += kKeys;
    while (joined.load(std::memory_order_relaxed) < total) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  pipeline.stop();
  state.SetItemsProcessed(std::int64_t(total));
}

#if RILL_HAVE_TBB
struct Msg {
  std::string key;
  Payload<kPayload> payload;
};

void join2_tbb(benchmark::State& state) {
  namespace flow = oneapi::tbb::flow;
  const Workload& w = workload();
  Payload<kPayload> payload;
  std::uint64_t total = 0;
  std::atomic<std::uint64_t> joined{0};
  for (auto _ : state) {
    flow::graph g;
    auto key_of = [](const Msg& m) -> std::string { return m.key; };
    flow::join_node<std::tuple<Msg, Msg>, flow::key_matching<std::string>> join(g, key_of, key_of);
    flow::function_node<std::tuple<Msg, Msg>> count(g, flow::serial, [&](const std::tuple<Msg, Msg>& t) {
      benchmark::DoNotOptimize(std::get<0>(t).payload.bytes.data());
      joined.fetch_add(1, std::memory_order_relaxed);
    });
    flow::make_edge(join, count);
    auto feed = [&](auto& port, const std::vector<std::uint32_t>& order) {
      for (std::uint32_t k : order) port.try_put(Msg{w.keys[k], payload});
    };
    std::thread second([&] { feed(flow::input_port<1>(join), w.order[1]); });
    feed(flow::input_port<0>(join), w.order[0]);
    second.join();
    g.wait_for_all();
    total += kKeys;
  }
  if (joined.load() != total) state.SkipWithError("tbb join lost matches");
  state.SetItemsProcessed(std::int64_t(total));
}
#endif

const bool registered = [] {
  add("join2/rill/64", join2_rill);
#if RILL_HAVE_TBB
  add("join2/tbb_key_matching/64", join2_tbb);
#endif
  return true;
}();

}  // namespace

// selective_pull/rill/4096: 4096-byte events; the consumer's selector takes
// one event in ten (by key) and of it a 256-byte sub view, gathered into
// memory the consumer owns; Consumer::process runs the handler. Beside it, selective_pull/poll_filter/4096 does
// the same by hand with poll_batch, a key test and a memcpy: the ratio of
// the two is what the pull model's selector and allocator calls cost.
#include <array>
#include <cstring>

#include "harness.hpp"
#include "rill/rill.hpp"

namespace {

using namespace rill_bench;
using namespace std::chrono_literals;

constexpr std::size_t kEventBytes = 4096, kTaken = 256, kTakenOffset = 1024;

rill::Buffer event_bytes() {
  std::string bytes(kEventBytes, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = char(i * 31);
  return rill::Buffer::copy_of(bytes);
}

// Keys "0".."9" in turn: the selector takes key "0".
const std::array<std::string, 10> kKeys = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};

auto publisher(rill::Producer& producer, const rill::Buffer& data) {
  return [&producer, &data](std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i) (void)producer.publish(rill::Message{.key = kKeys[i % 10], .buffer = data});
  };
}

rill::TopicOptions topic_options() {
  return {.partitions = 1, .capacity = 4096, .producers = rill::ProducerMode::kSingle};
}

void selective_pull_rill(benchmark::State& state) {
  rill::Bus bus;
  auto topic = bus.create_topic("images", topic_options());
  std::array<char, kTaken> sink{};
  rill::ConsumerOptions o{.name = "selective", .max_batch = 1024};
  o.selector = [](const rill::EventHeader& h, const rill::DataDescriptor& all) -> rill::DataDescriptor {
    if (h.key != "0") return {};
    return *all.sub_view(kTakenOffset, kTaken);
  };
  o.allocator = [&sink](const rill::EventHeader&, const rill::DataDescriptor& d) {
    return rill::DataView(sink.data(), d.size());
  };
  auto consumer = topic->consumer(o);
  auto producer = topic->producer();
  const rill::Buffer data = event_bytes();
  run_pair(state, publisher(*producer, data), [&](std::atomic<std::uint64_t>& received, std::atomic<bool>& done) {
    std::uint64_t n = 0;
    while (!done.load(std::memory_order_acquire)) {
      (void)consumer->process(
          [&](const rill::PulledEvent& e) {
            benchmark::DoNotOptimize(sink.data());
            if (++n % 1024 == 0) {
              (void)e.acknowledge();
              received.fetch_add(1024, std::memory_order_release);
            }
            return !done.load(std::memory_order_relaxed);
          },
          1ms);
    }
  });
}

void selective_pull_poll_filter(benchmark::State& state) {
  rill::Bus bus;
  auto topic = bus.create_topic("images", topic_options());
  auto consumer = topic->consumer({.name = "filter", .max_batch = 1024});
  auto producer = topic->producer();
  const rill::Buffer data = event_bytes();
  std::array<char, kTaken> sink{};
  run_pair(state, publisher(*producer, data), [&](std::atomic<std::uint64_t>& received, std::atomic<bool>& done) {
    while (!done.load(std::memory_order_acquire)) {
      auto batch = consumer->poll_batch(1024, 1ms);
      if (!batch.ok()) continue;
      for (const rill::Event& e : *batch) {
        if (e.key() == "0") std::memcpy(sink.data(), e.data().data() + kTakenOffset, kTaken);
      }
      benchmark::DoNotOptimize(sink.data());
      (void)consumer->ack(batch->back());
      received.fetch_add(batch->size(), std::memory_order_release);
    }
  });
}

const bool registered = [] {
  add("selective_pull/rill/4096", selective_pull_rill);
  add("selective_pull/poll_filter/4096", selective_pull_poll_filter);
  return true;
}();

}  // namespace

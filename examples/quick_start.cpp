// The README's usage example, built in CI so it never rots.
#include <rill/rill.hpp>

#include <cstdio>
#include <thread>

int main() {
  rill::Bus bus;
  auto topic = bus.create_topic("readings", {.partitions = 4, .capacity = 1024});
  auto consumer = topic->consumer({.name = "printer"});  // subscribe before producing
  std::thread producer_thread([&] {
    auto producer = topic->producer();
    for (int i = 0; i < 10; ++i) {
      // key picks the partition; metadata is a JSON object's text; data is bytes
      auto id = producer->publish("sensor-" + std::to_string(i % 3), R"({"unit":"C"})", std::to_string(20 + i));
      if (!id.ok()) std::fprintf(stderr, "publish: %s\n", id.status().to_string().c_str());
    }
  });
  for (int seen = 0; seen < 10;) {
    auto batch = consumer->poll_batch(64, std::chrono::seconds(1));  // one partition's available events
    if (!batch.ok()) break;                                           // TimedOut or Closed
    for (const rill::Event& e : *batch) {
      std::printf("p%u@%llu %.*s = %.*s\n", e.partition(), (unsigned long long)e.offset(), int(e.key().size()),
                  e.key().data(), int(e.data().size()), e.data().data());
    }
    (void)consumer->ack(batch->back());  // cumulative: everything up to here in this partition is done
    seen += int(batch->size());
  }
  producer_thread.join();
}

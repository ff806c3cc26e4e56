// A second process for durable_test: opens the store at argv[1] for writing
// (with a 1 MiB initial map, so that it grows), publishes argv[2] events of
// argv[3] bytes to topic "t" (kSync), and exits 0; 2 on any failure.
#include <cstdio>
#include <string>

#include "rill/rill.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: store_writer STORE_PATH COUNT BYTES\n");
    return 1;
  }
  rill::BusOptions options;
  options.path = argv[1];
  options.initial_map_size = 1 << 20;
  auto bus = rill::Bus::open(options);
  if (!bus.ok()) {
    std::fprintf(stderr, "store_writer: open: %s\n", bus.status().to_string().c_str());
    return 2;
  }
  auto topic = bus->ensure_topic("t", {.durability = rill::Durability::kSync});
  if (!topic.ok()) return 2;
  auto producer = topic->producer();
  if (!producer.ok()) return 2;
  const std::string data(std::stoul(argv[3]), 'w');
  for (int i = 0, n = std::stoi(argv[2]); i < n; ++i) {
    if (!producer->publish(rill::Message{.data = data}).ok()) return 2;
  }
  return 0;
}

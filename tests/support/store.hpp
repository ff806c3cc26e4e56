// Durable buses for tests: a real LMDB store in a directory (usually a
// TempDir's), committing every 2 ms so tests do not wait on the default.
#pragma once

#include <catch2/catch.hpp>

#include <chrono>
#include <string>

#include "rill/rill.hpp"

namespace rill::testing {

inline BusOptions store_at(const std::string& path) {
  BusOptions o;
  o.path = path;
  o.commit_interval = std::chrono::milliseconds(2);
  return o;
}

inline TopicOptions durable(Durability d, std::uint32_t partitions = 1, std::uint32_t capacity = 1024) {
  TopicOptions t;
  t.partitions = partitions;
  t.capacity = capacity;
  t.durability = d;
  return t;
}

// Opens (creating) the store at `path`; the test fails if it cannot.
inline Bus open_bus(const std::string& path) {
  Result<Bus> bus = Bus::open(store_at(path));
  INFO(bus.status().to_string());
  REQUIRE(bus.ok());
  return std::move(*bus);
}

}  // namespace rill::testing

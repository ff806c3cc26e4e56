// rill/topic.hpp — a handle to one topic: its shape and its factories.
//
// A Topic handle is cheap to copy and thread-safe. It stays usable after the
// topic is deleted or the bus closed; its factories then return Closed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "rill/consumer.hpp"
#include "rill/options.hpp"
#include "rill/producer.hpp"
#include "rill/status.hpp"

namespace rill {

namespace detail {
class TopicCore;
}

struct PartitionStats {
  std::uint64_t next_offset = 0;      // offset the next event will get
  std::uint64_t earliest_offset = 0;  // oldest event still readable
  // Durable topics: every offset below is committed to disk (equal to
  // next_offset on memory-only topics).
  std::uint64_t committed_offset = 0;
};

class Topic {
 public:
  const std::string& name() const noexcept;
  const TopicOptions& options() const noexcept;
  std::uint32_t partitions() const noexcept { return options().partitions; }

  Result<Producer> producer(ProducerOptions options = {}) const;
  // Fails: InvalidArgument (bad name or partition list), AlreadyExists (a
  // live consumer of that name reads one of those partitions),
  // ResourceExhausted (max_consumers reached), Closed.
  Result<Consumer> consumer(ConsumerOptions options) const;

  // Forgets a consumer name: its acked positions are dropped and it no
  // longer holds producers back. Fails: NotFound, AlreadyExists (a consumer
  // of that name is live; close it first), InvalidArgument.
  Status remove_consumer(std::string_view name) const;
  // Names that hold a position on this topic, sorted.
  std::vector<std::string> consumer_names() const;

  std::vector<PartitionStats> stats() const;
  // Per partition, the next offset consumer `name` has not acked (its
  // resume point), or kNotRead where it never read. Fails: NotFound (no
  // such name), InvalidArgument (bad name).
  static constexpr std::uint64_t kNotRead = ~std::uint64_t{0};
  Result<std::vector<std::uint64_t>> positions(std::string_view name) const;
  // How far `name` is behind: over the partitions it has read, the events
  // it has not acked yet (delivered but unacked ones included). Fails: as
  // positions().
  Result<std::uint64_t> lag(std::string_view name) const;
  bool closed() const noexcept;

 private:
  friend class Bus;
  friend class WriteBatch;
  explicit Topic(std::shared_ptr<detail::TopicCore> core) : core_(std::move(core)) {}
  std::shared_ptr<detail::TopicCore> core_;
};

}  // namespace rill

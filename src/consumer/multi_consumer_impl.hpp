// The state behind a MultiConsumer: one single-topic Consumer per topic
// read, all under one name, and the bus's bell to sleep on.
//
// Thread-safety: the owner's thread uses everything; close() may come from
// any thread, so it and the member-changing calls (update_topics, assign)
// take mu_. Lifetime: the bell is shared with the bus (it may outlive it);
// topics are opened through `open_topic`, which fails Closed once the bus
// is gone.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "consumer/consumer_impl.hpp"
#include "rill/multi_consumer.hpp"
#include "rill/topic.hpp"
#include "ring/doorbell.hpp"

namespace rill {

struct MultiConsumer::Impl {
  using TopicOpener = std::function<Result<Topic>(std::string_view)>;

  Impl(MultiConsumerOptions o, TopicOpener opener, std::shared_ptr<detail::Doorbell> b)
      : options(std::move(o)), open_topic(std::move(opener)), bell(std::move(b)) {}

  // What to read: topic -> partitions (empty: all of them).
  using Target = std::map<std::string, std::vector<std::uint32_t>, std::less<>>;
  // Makes the members match `target`, all or nothing (see assign()).
  Status apply(const Target& target);

  struct Member {
    std::string_view topic;                // interned in names
    std::vector<std::uint32_t> partitions;  // as asked (empty: all), sorted
    Consumer consumer;
    bool dead = false;  // its topic was closed: skipped from then on
  };
  Member* find(std::string_view topic) noexcept;
  // InvalidArgument for `call` (ack, nack) on a topic not read now.
  Status not_read(const char* call, std::string_view topic) const;
  Result<Member> open_member(std::string_view topic, const std::vector<std::uint32_t>& partitions);

  MultiConsumerOptions options;
  TopicOpener open_topic;
  std::shared_ptr<detail::Doorbell> bell;
  std::set<std::string, std::less<>> names;  // every topic name ever read: TopicEvent views them
  std::vector<Member> members;              // sorted by topic
  std::size_t next = 0;                     // the member the next poll tries first
  std::atomic<bool> closed{false};
  std::mutex mu;  // members' membership, against close() from other threads
};

}  // namespace rill

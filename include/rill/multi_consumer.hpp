// rill/multi_consumer.hpp — one consumer over several topics of a bus.
//
//   rill::MultiConsumer c = *bus.multi_consumer({.name = "ingest", .topics = {"a", "b"}});
//   for (;;) {
//     auto e = c.poll(1s);                      // Result<TopicEvent>
//     if (!e.ok()) break;                       // TimedOut, Closed, ...
//     handle(e->topic, e->event);
//     (void)c.ack(*e);
//   }
//
// Under one consumer name it reads every topic it subscribes to (or the
// (topic, partition) pairs it is assigned), yielding events that carry
// their topic's name. Each topic keeps the name's acked positions exactly as
// a single-topic Consumer of that name would: order within a partition,
// resume after the last ack, at-least-once. update_topics() and assign()
// change the set while running; topics and partitions kept stay exactly
// where they were (nothing lost, nothing repeated), dropped ones keep their
// acked positions for a later subscription, new ones start at
// options.position.
//
// Polling is fair: each poll starts at the topic after the one the previous
// poll served. A blocked poll sleeps on the bus's bell, rung by any publish
// on the bus. Thread-safety: as Consumer (one thread at a time; close() from
// any thread). A MultiConsumer may outlive its Bus; calls then return Closed.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "rill/consumer.hpp"
#include "rill/event.hpp"
#include "rill/options.hpp"
#include "rill/status.hpp"

namespace rill {

namespace detail {
class BusCore;
}

// One partition of one topic.
struct TopicPartition {
  std::string topic;
  std::uint32_t partition = 0;
  friend bool operator==(const TopicPartition&, const TopicPartition&) = default;
};

struct MultiConsumerOptions {
  // The consumer name, on every topic (see ConsumerOptions::name).
  std::string name{};
  // Topics to read, every partition of each. Ignored when `assignment` is
  // not empty.
  std::vector<std::string> topics{};
  // Explicit (topic, partition) pairs instead of whole topics.
  std::vector<TopicPartition> assignment{};
  // Where a topic newly read starts (see ConsumerOptions::position).
  Position position = Position::unread();
  // Most events one poll_batch returns (see ConsumerOptions::max_batch).
  std::uint32_t max_batch = 256;
  // How live instances of the name share each topic, as for a single-topic
  // consumer (ConsumerOptions::mode): kExclusive, kShared or kKeyShared
  // (kStandby is refused with InvalidArgument: use a single-topic consumer
  // per topic). Shared modes ack individually and enable nack().
  ConsumerMode mode = ConsumerMode::kExclusive;
  // Individual acks for an exclusive name; redelivery limit and dead-letter
  // topic (see ConsumerOptions), applied on every topic.
  bool individual_acks = false;
  std::uint32_t max_redeliveries = 0;
  std::string dead_letter_topic{};
};

// An event and the topic it came from. `topic` views a name the
// MultiConsumer keeps for its whole life.
struct TopicEvent {
  std::string_view topic;
  Event event;
};

// A batch of one partition of one topic; the span is valid until the next
// poll on the same MultiConsumer.
struct TopicBatch {
  std::string_view topic;
  std::span<const Event> events;
};

class MultiConsumer {
 public:
  MultiConsumer() noexcept;
  MultiConsumer(MultiConsumer&&) noexcept;
  MultiConsumer& operator=(MultiConsumer&&) noexcept;
  MultiConsumer(const MultiConsumer&) = delete;
  MultiConsumer& operator=(const MultiConsumer&) = delete;
  ~MultiConsumer();  // closes

  // The next event of any topic. Fails: TimedOut, Closed (the consumer, or
  // every topic it reads was closed), and the errors of Consumer::poll.
  Result<TopicEvent> poll(Timeout timeout = kForever);
  // Every available event of one partition of one topic, up to `max`.
  Result<TopicBatch> poll_batch(std::size_t max, Timeout timeout = kForever);

  // Cumulative ack in the event's topic and partition. Fails:
  // InvalidArgument (not delivered by this consumer, or its topic was
  // dropped since), Closed.
  Status ack(const TopicEvent& e);
  Status ack(std::string_view topic, const Event& e);
  // Individual acks only: gives the event back for redelivery after
  // `delay` (see Consumer::nack). Fails: as ack(), and InvalidArgument for
  // a cumulative name.
  Status nack(const TopicEvent& e, Timeout delay = Timeout::zero(), std::string_view reason = {});
  Status nack(std::string_view topic, const Event& e, Timeout delay = Timeout::zero(), std::string_view reason = {});

  // Reads exactly these topics from now on (every partition). All or
  // nothing: Fails with NotFound (a topic does not exist), InvalidArgument
  // (a bad or repeated name), AlreadyExists (the name is live elsewhere on
  // a new topic), Closed; the set is then unchanged.
  Status update_topics(std::span<const std::string> topics);
  Status update_topics(std::initializer_list<std::string> topics) {
    return update_topics(std::span<const std::string>(topics.begin(), topics.size()));
  }
  // Reads exactly these (topic, partition) pairs from now on; as
  // update_topics, partition by partition. A topic whose partition set
  // changes is reopened under the name: its unacked events are delivered
  // again (at-least-once); its acked positions stay.
  Status assign(std::span<const TopicPartition> pairs);

  // The topics read now, sorted; the pairs read now, sorted.
  std::vector<std::string> topics() const;
  std::vector<TopicPartition> assignment() const;

  // Thread-safe; idempotent. Wakes a blocked poll (it returns Closed).
  void close() noexcept;
  bool valid() const noexcept { return impl_ != nullptr; }
  const std::string& name() const noexcept;

 private:
  friend class WriteBatch;
  friend class Bus;
  struct Impl;
  explicit MultiConsumer(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rill

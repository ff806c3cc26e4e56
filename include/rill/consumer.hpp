// rill/consumer.hpp — reading a topic under a name, with acked positions.
//
// Every named consumer sees every event of the partitions it reads. Acks are
// cumulative per partition: ack(e) says "everything up to and including e is
// done". A name keeps its acked position from its first open until
// Topic::remove_consumer(name), whether or not a consumer of that name is
// live: producers never overwrite an event the name has not acked (under
// OverflowPolicy::kBlock they wait; kDropOldest pushes the name forward).
// A consumer reopened under the same name (while the bus lives) resumes
// right after its last ack; what was delivered but not acked is delivered
// again (at-least-once). Order is kept within a partition, not across.
//
// Durable topics (TopicOptions::durability): producers never wait for
// consumers; a consumer that falls out of the ring window reads the events
// it missed from disk, in order, then returns to the ring. Acks are
// committed with the writer's groups, and a name resumes after its last
// committed ack across restarts. poll may then also fail with OutOfRange
// (retention deleted the position; see ConsumerOptions::jump_to_earliest)
// or with a storage error (IOError, Corruption).
//
// Several live instances of one name: ConsumerOptions::mode. kExclusive
// (default) refuses a second; kStandby keeps it waiting and lets it take
// over, from the last ack, when the active instance closes.
//
// A Consumer is a move-only handle used by one thread at a time; close() may
// also be called from another thread to wake a blocked poll. A Consumer may
// outlive its Bus or topic; its calls then return Closed (events published
// but not yet polled are not handed out).
#pragma once

#include <cstdint>
#include <iterator>
#include <memory>
#include <span>
#include <string>

#include "rill/event.hpp"
#include "rill/options.hpp"
#include "rill/pull.hpp"
#include "rill/status.hpp"

namespace rill {

namespace detail {
class ConsumerImpl;
}

struct ConsumerStats {
  std::uint64_t delivered = 0;  // events handed out by poll/poll_batch
  std::uint64_t acked = 0;      // events covered by acks
  // Events this consumer never saw: a start position older than the oldest
  // event held, a lossy (kDropOldest) topic that overran this consumer, or
  // (durable topics) events deleted by retention before it read them.
  std::uint64_t skipped = 0;
  // Durable topics: delivered events that were read back from disk because
  // the consumer was behind the ring window (included in `delivered`).
  std::uint64_t from_disk = 0;
};

class Consumer {
 public:
  Consumer() noexcept;  // an empty handle
  Consumer(Consumer&&) noexcept;
  Consumer& operator=(Consumer&&) noexcept;
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;
  ~Consumer();  // closes

  // The next event of any of this consumer's partitions.
  // Allocates: no (durable topics: reading from disk allocates for events
  // larger than kInlineEventBytes). Fails: TimedOut, Closed; durable
  // topics also OutOfRange, IOError, Corruption.
  Result<Event> poll(Timeout timeout = kForever);

  // Every event available in one partition, up to `max` (at most
  // ConsumerOptions::max_batch; 0 counts as 1), as one batch; waits at most
  // `timeout` for the first. The span is valid until the next poll call on
  // this handle.
  // Allocates: no. Fails: TimedOut, Closed.
  Result<std::span<const Event>> poll_batch(std::size_t max, Timeout timeout = kForever);

  // Cumulative ack in the event's partition (individual, for this event
  // alone, in kShared mode or with individual_acks). Acking an event at or
  // before an earlier ack is a no-op. Allocates: no. Fails: InvalidArgument (the
  // event came from another consumer, or was not delivered yet), Closed.
  Status ack(const Event& e);

  // The pull model (rill/pull.hpp): a future of the next event, with the
  // data ConsumerOptions::selector chose, placed where ::allocator said.
  // Never blocks. Use pull() or poll(), not both at once: poll fails with
  // InvalidArgument while pulled events are buffered. Allocates: one small
  // state per pull.
  PullFuture pull();

  // Pulls events and calls `handler` on each, in order, until it returns
  // false, `max_events` were handled, no event came for `idle_timeout`, or
  // the consumer was closed. Returns the number handled. The handler acks
  // (PulledEvent::acknowledge) what it wants acked. Fails: as a future's
  // wait; an exception from the handler ends the call with InvalidArgument
  // carrying its message (its event is not acked).
  Result<std::size_t> process(const EventHandler& handler, Timeout idle_timeout = kForever,
                              std::size_t max_events = ~std::size_t{0});
  // The same with the handler run on `pool`'s threads: the events of one
  // partition go to the handler one at a time, in order; partitions run in
  // parallel (so the handler must be thread-safe). Acks the handler makes
  // (PulledEvent::acknowledge, which then returns Ok at once) are applied
  // by the calling thread, in order, before this returns; the first that
  // fails is returned. Once a handler returns false or throws, no further
  // event is handed out; those pulled but not handed out go back to this
  // consumer and come next from pull() or process(). A null pool: as above.
  Result<std::size_t> process(const EventHandler& handler, Timeout idle_timeout, std::size_t max_events,
                              const std::shared_ptr<ThreadPool>& pool);

  // for (const PulledEvent& e : consumer.pulled(100ms)) { ... }: pulls until
  // no event comes within `idle_timeout`, the consumer closes, or a pull
  // fails (the range's status() says which).
  PullRange pulled(Timeout idle_timeout = kForever) { return PullRange(*this, idle_timeout); }

  // Individual acks only (ConsumerMode::kShared, ConsumerOptions::
  // individual_acks): gives the event back for redelivery, to any instance
  // of the name, after `delay`. An event already redelivered
  // max_redeliveries times goes to the dead-letter topic instead, with
  // `reason` in its metadata (under "dead_letter"), and counts as acked.
  // Fails: InvalidArgument (cumulative acks; an event this instance does
  // not hold), Closed; the dead-letter publish's failure (the event is
  // then still held: nack or ack it again).
  Status nack(const Event& e, Timeout delay = Timeout::zero(), std::string_view reason = {});

  // Thread-safe; idempotent. Wakes a blocked poll (it returns Closed) and
  // frees the name for the next consumer; the name's acked positions stay.
  void close() noexcept;

  bool valid() const noexcept { return impl_ != nullptr; }
  const std::string& name() const noexcept;
  const std::string& topic() const noexcept;
  ConsumerStats stats() const noexcept;
  // False while this instance is a standby (ConsumerMode::kStandby) waiting
  // for the active instance of its name to close; its polls then wait for
  // the takeover (TimedOut if it does not come in time).
  bool active() const noexcept;

  // Range-for over events, blocking until one arrives; the loop ends when
  // the consumer, its topic or the bus is closed.
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Event;
    using difference_type = std::ptrdiff_t;
    using pointer = Event*;
    using reference = Event&;
    iterator() = default;
    explicit iterator(Consumer* c) : c_(c) { ++*this; }
    Event& operator*() { return current_; }
    Event* operator->() { return &current_; }
    iterator& operator++();
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& a, const iterator& b) { return a.c_ == b.c_; }

   private:
    Consumer* c_ = nullptr;
    Event current_;
  };
  iterator begin() { return iterator(this); }
  iterator end() { return iterator(); }

 private:
  friend class Topic;
  friend class WriteBatch;
  friend class MultiConsumer;
  explicit Consumer(std::unique_ptr<detail::ConsumerImpl> impl) noexcept;
  // Shared only so that a WriteBatch can tell whether the consumer it acks
  // for still exists (it keeps a weak_ptr); this handle is the one owner.
  std::shared_ptr<detail::ConsumerImpl> impl_;
};

}  // namespace rill

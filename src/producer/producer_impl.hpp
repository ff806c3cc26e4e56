// ProducerImpl: the state behind a Producer handle; the publish path.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "common/clock.hpp"
#include "common/hash.hpp"
#include "event/record_writer.hpp"
#include "producer/pusher.hpp"
#include "rill/producer.hpp"
#include "topic/topic_core.hpp"

namespace rill::detail {

// Where a message goes: its explicit partition (validated), else its key's
// hash, else `keyless`. Fails: InvalidArgument (partition out of range).
inline Result<std::uint32_t> choose_partition(const TopicCore& topic, const Message& m, std::uint32_t keyless) {
  const std::uint32_t parts = topic.partitions();
  if (m.partition != kAnyPartition) {
    if (m.partition < 0 || m.partition >= std::int64_t(parts)) {
      return Status::InvalidArgument("partition " + std::to_string(m.partition) + " is out of range; topic '" +
                                     topic.name() + "' has " + std::to_string(parts));
    }
    return std::uint32_t(m.partition);
  }
  if (!m.key.empty()) return std::uint32_t(hash_key(m.key) % parts);
  return keyless;
}

class ProducerImpl {
 public:
  ProducerImpl(std::shared_ptr<TopicCore> topic, bool single, ProducerOptions options = {})
      : topic_(std::move(topic)),
        options_(std::move(options)),
        single_(single),
        log_(topic_->durable() ? topic_->durable()->log.get() : nullptr) {}
  ~ProducerImpl() {
    if (pusher_) {
      // Its senders use this (and loose_sender_): stop them without letting
      // a publish wait for room that may never come (a handle replaced by
      // move-assignment is destroyed without close()).
      closed_.store(true, std::memory_order_relaxed);
      if (loose_sender_) loose_sender_->closed_.store(true, std::memory_order_relaxed);
      topic_->space_bell().wake_all();
      pusher_->stop();
    }
    if (pool_) pool_->release_owner();  // after the senders stopped: they allocate from it
    if (single_) topic_->release_single_producer();
  }

  // Publishes messages[0..n) to one partition as one claim. REQUIRES: n <=
  // kMaxRun, every message prepared in `prepared`.
  Status publish_run(std::uint32_t partition, PreparedEvent* prepared, std::size_t n, LazyDeadline& deadline,
                     bool may_wait, std::uint64_t& first);

  // The hot path out of line, tried first by publish_message and by
  // publish when the producer has no lane or the lane declined: a message
  // with no Buffer, for an explicit partition in range or by the default
  // partition rule, from a producer with no user hook; on a partition whose
  // cached limit already grants the room (single producer), or where one
  // non-waiting claim gets it (multi-producer). True: published at `id`.
  // False: nothing was done, take the general path (which refreshes, waits,
  // and reports errors).
  // Inline-size events: no Status is built, nothing is allocated, the bytes
  // go straight from the views into the slot (single producer, no consumer,
  // 8-byte events on the 2-core bench VM: ~17 ns per publish, the append
  // stamp one load from the StampClock). Single producer only: an event
  // whose data needs a block (key and metadata inline) gets it once the
  // room is granted (1 KiB events: ~96 -> ~64 ns per publish). A
  // multi-producer claim could not be given back if that allocation threw,
  // so those take the general path. `parts`: key, metadata, data.
  // Throws: std::bad_alloc (the block).
  bool try_publish_inline(const std::string_view* parts, std::int64_t explicit_partition, EventId& id);
  // The lane Producer::publish tries first; null when this producer has
  // none (then every publish goes out of line).
  PublishLane* lane() noexcept { return has_lane_ ? &lane_ : nullptr; }
  PublishLane make_lane() noexcept {
    if (!has_lane_) return {};
    PublishLane l{sole_ring_->sp_writer(), &closed_, &topic_->closed_flag(), &StampClock::words(), inline_limit_,
                  {nullptr, nullptr}, &TopicCore::ring_bells, topic_.get()};
    topic_->lane_bells(l.sleepers);
    return l;
  }
  // True when Producer::publish may try the hot path before anything else:
  // no pusher owns the publishing and a publish need not wait for a commit.
  bool direct() const noexcept { return !pusher_ && !sync_; }
  Status closed_topic() const { return Status::Closed("topic '" + topic_->name() + "' is closed"); }
  // Write n events into granted room and publish them.
  // Single producer: at sp().next, by SpWriter::commit (`write(slot, i,
  // timestamp)` writes event i; `wide` is its prefetch hint), then the
  // bells and the durable writer's nudge.
  template <class Write>
  void sp_commit(EventRing& ring, std::size_t n, bool wide, Write&& write) noexcept;
  // Multi-producer: writes prepared[0..n) at the claim `s` and publishes
  // them in claim order (SequencedRing::mp_publish: without waiting for
  // earlier claims).
  void mp_commit(EventRing& ring, std::uint64_t s, PreparedEvent* prepared, std::size_t n) noexcept;

  // One message: validator, partition, size, ring. Durable topics: returns
  // at append (the caller waits for durability if it must).
  Result<EventId> publish_message(const Message& m, LazyDeadline& deadline, bool may_wait);
  // publish_message past its hot path (the caller tried it, or the message
  // has a Buffer): serializer, validator, the general path.
  Result<EventId> publish_checked(const Message& m, LazyDeadline& deadline, bool may_wait);
  // The same for a message the validator already accepted (Producer::push
  // runs it at push time, on the pushing thread).
  Result<EventId> publish_validated(const Message& m, LazyDeadline& deadline, bool may_wait);

  // Validates a message's partition; returns the partition to use. With a
  // partition selector, call it once per message (the selector may count).
  Result<std::uint32_t> pick_partition(const Message& m) {
    if (m.partition != kAnyPartition || !options_.partition_selector) return choose_partition(*topic_, m, sticky_);
    return select_partition(m);
  }
  // True when pick_partition follows the default rule, which is pure.
  bool default_partitioning() const noexcept { return !options_.partition_selector; }
  // The default rule for a message whose explicit partition (if any) was
  // validated: the per-message path of publish_batch and the hot path,
  // with no Status.
  std::uint32_t default_partition(std::string_view key, std::int64_t partition) const noexcept {
    if (partition != kAnyPartition) return std::uint32_t(partition);
    const std::uint32_t parts = topic_->partitions();
    if (parts == 1) return 0;
    return key.empty() ? sticky_ : std::uint32_t(hash_key(key) % parts);
  }
  bool has_serializer() const noexcept { return bool(options_.metadata_serializer); }
  // The message with its metadata run through the serializer, into `text`
  // (which the returned Message views). REQUIRES: has_serializer().
  Result<Message> serialize(const Message& m, std::string& text) const;
  bool has_validator() const noexcept { return bool(options_.validator); }
  // The validator's verdict (Ok without one).
  Status validate(const Message& m) const {
    if (!options_.validator) return Status::Ok();
    return run_validator(m);
  }
  // Keyless events go to one partition per publish call (a batch stays one
  // run) and the next call moves on: round-robin without splitting batches.
  void advance_sticky() noexcept {
    if (++sticky_ == topic_->partitions()) sticky_ = 0;
  }

  bool stopped() const noexcept {
    return closed_.load(std::memory_order_relaxed) || topic_->closed() || (log_ && log_->failed());
  }
  // Why a stopped producer stopped: Closed, or the storage failure (also
  // when a full map's retry has just cleared it: it stopped this call).
  Status stop_status() const {
    if (closed_.load(std::memory_order_relaxed) || topic_->closed() || !log_) {
      return Status::Closed("producer or topic '" + topic_->name() + "' is closed");
    }
    return log_->failure();
  }

  // Durable topics: a publish that crosses a multiple of the writer's group
  // size wakes the writer, so a full group is committed at once rather than
  // at the writer's next 1 ms check. One branch per publish otherwise.
  void ring_writer(std::uint64_t first, std::uint64_t end) noexcept {
    if ((first & ~group_mask_) != (end & ~group_mask_)) log_->nudge();
  }

  // Sync topics: waits until the event is committed and fsynced.
  Status wait_durable(EventId id, Deadline deadline) {
    if (!log_) return Status::Ok();
    return log_->wait_committed(*topic_, id.partition, id.offset, deadline, &closed_);
  }

  // Out of line: the user hooks, their exceptions and range check.
  Result<std::uint32_t> select_partition(const Message& m);
  Status run_validator(const Message& m) const;

  std::shared_ptr<TopicCore> topic_;
  const ProducerOptions options_;
  const bool single_;
  // A validator, partition selector or metadata serializer: not the hot path.
  const bool hooked_ = options_.validator || options_.partition_selector || options_.metadata_serializer;
  DurableLog* const log_;  // null for memory-only topics
  const bool sync_ = log_ && topic_->durable()->sync;
  // The hot path's size bound: inline, and within the topic's limit.
  const std::size_t inline_limit_ = std::min<std::size_t>(kInlineEventBytes, topic_->options().max_event_size);
  const std::uint64_t group_mask_ = log_ ? log_->group_mask() : 0;
  // A one-partition topic's ring, for the hot path: one load instead of
  // three dependent ones (topic, ring table, ring). Null otherwise.
  EventRing* const sole_ring_ = topic_->partitions() == 1 ? &topic_->ring(0) : nullptr;
  std::atomic<bool> closed_{false};
  // Producer::publish's inline path (rill/detail/publish_lane.hpp), for a
  // producer whose inline-size events could all take it: what
  // try_publish_inline and the general path check per call (hooks, a
  // durable log, a sync commit, the pusher: Producer::push drops the lane)
  // are settled here once; what can change (closed flags, room, the stamp
  // clock) the lane checks per call. Keep the two in step.
  const bool has_lane_ = single_ && sole_ring_ && !hooked_ && !log_ && !topic_->options().precise_timestamps;
  PublishLane lane_ = make_lane();
  std::uint32_t sticky_ = 0;
  // Producer::push: made on the first push; from then on its sender
  // threads publish through this ProducerImpl (and, for Ordering::kLoose on
  // a multi-producer topic, through loose_sender_ too).
  std::unique_ptr<ProducerImpl> loose_sender_;
  std::shared_ptr<Pusher> pusher_;
  // The pool this producer's large events take their blocks from (its
  // owner's reference), made on the first (new_block).
  BlockPool* pool_ = nullptr;

  static constexpr std::size_t kMaxRun = 64;  // prepared events held on the stack
};

template <class Write>
[[gnu::always_inline]] inline void ProducerImpl::sp_commit(EventRing& ring, std::size_t n, bool wide, Write&& write) noexcept {
  const std::uint64_t s = ring.sp().next;
  ring.sp_writer().commit(n, wide, append_stamp_ns(topic_->options().precise_timestamps), write);
  topic_->after_publish();
  if (log_) ring_writer(s, s + n);
}

// Producer::publish_batch after serialization: validates every message,
// then publishes them in runs of one partition.
Result<std::size_t> publish_messages(ProducerImpl& p, std::span<const Message> messages, Timeout timeout);

}  // namespace rill::detail

// rill/producer.hpp — publishing events to a topic.
//
// A Producer is a move-only handle used by one thread at a time. close() is
// the exception: any thread may call it to make a blocked publish return
// Closed. A Producer may outlive its Bus or topic; its calls then return
// Closed.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "rill/buffer.hpp"
#include "rill/detail/publish_lane.hpp"
#include "rill/event.hpp"
#include "rill/options.hpp"
#include "rill/push.hpp"
#include "rill/status.hpp"

namespace rill {

namespace detail {
class ProducerImpl;
}

// Pick the partition by key hash (keyed events) or round-robin (keyless).
inline constexpr std::int64_t kAnyPartition = -1;

// One event to publish. The views are read during the call only.
struct Message {
  std::string_view key{};
  std::string_view metadata{};  // a JSON object's text, or empty
  std::string_view data{};
  // When non-empty, the event's data is this Buffer, shared without a copy
  // (as long as key + metadata fit inline); `data` is then ignored.
  Buffer buffer{};
  // An explicit partition, or kAnyPartition.
  std::int64_t partition = kAnyPartition;
};

// The partition rill's default rule gives a keyed message: a stable hash
// of the key (FNV-1a, the same in every process and build) modulo
// `partitions`. REQUIRES: partitions >= 1.
std::uint32_t key_partition(std::string_view key, std::uint32_t partitions) noexcept;

// Built-in partition selectors (ProducerOptions::partition_selector).
// Every message to the next partition in turn, keyed or not.
PartitionSelector round_robin_partitions();
// The key's hash (key_partition); keyless messages to partition 0.
PartitionSelector key_hash_partitions();

class Producer {
 public:
  Producer() noexcept;  // an empty handle; every call on it is a contract violation
  Producer(Producer&&) noexcept;
  Producer& operator=(Producer&&) noexcept;
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;
  ~Producer();  // closes

  // Publishes one event; under OverflowPolicy::kBlock waits for space at
  // most `timeout`. Returns where the event landed. On a kSync topic it
  // returns once the event is committed and fsynced (see publish_async).
  // Multi-producer topics: no publish waits for another producer's; an
  // event is visible to consumers once every earlier event of its
  // partition is — at return, unless another thread is still copying an
  // earlier one (then when that copy ends, microseconds later).
  // Allocates: only for events larger than kInlineEventBytes (one block).
  // Fails: InvalidArgument (too large, bad partition: nothing published),
  //   Full (policy kFail), TimedOut, Closed; durable topics: the storage
  //   failure that stopped the writer (IOError; ResourceExhausted while the
  //   map is full, see BusOptions::max_map_size). A sync publish that fails
  //   after the append (TimedOut, Closed, or a storage failure whose
  //   message says the event was appended) may still be committed.
  // Inline-size events of a single-producer, one-partition, memory-only
  // topic, from a producer with no validator, partition selector or
  // metadata serializer, with millisecond stamps and not pushing, are
  // published in the caller's code (detail/publish_lane.hpp).
  Result<EventId> publish(const Message& m, Timeout timeout = kForever) {
    EventId id;
    if (lane_ && m.buffer.empty() && (m.partition == kAnyPartition || m.partition == 0) &&
        lane_->try_publish(m.key, m.metadata, m.data, id)) [[likely]] {
      return id;
    }
    return publish_message(m, timeout);
  }
  // The same for a message of views (no partition, no Buffer), untimed.
  Result<EventId> publish(std::string_view key, std::string_view metadata, std::string_view data) {
    EventId id;
    if (lane_ && lane_->try_publish(key, metadata, data, id)) [[likely]] return id;
    const std::string_view parts[3] = {key, metadata, data};
    return publish_parts(parts);
  }

  // Durable topics: appends and returns without waiting for the commit, so
  // one thread can keep many publishes in flight; wait_durable(id) later.
  // Elsewhere the same as publish().
  Result<EventId> publish_async(const Message& m, Timeout timeout = kForever);
  // Waits until the event `id` (returned by a publish on this topic) is
  // committed (kSync: and fsynced). Ok at once on memory-only topics (for
  // an event that was published). Fails: InvalidArgument (never
  // published), TimedOut, Closed, the storage failure.
  Status wait_durable(EventId id, Timeout timeout = kForever);

  // Never blocks: Full when the ring has no room right now.
  Result<EventId> try_publish(const Message& m);

  // Publishes the messages in order, claiming ring space for runs that go to
  // the same partition at once. Returns how many were published: all of
  // them, or fewer when the timeout expired, the ring was full under kFail,
  // or the topic closed (then the Status says why only if none was published).
  // On a kSync topic it returns once all of them are committed; when that
  // wait fails (TimedOut, Closed, the storage failure) it returns the
  // Status although the events were published (as publish(): they may
  // still be committed).
  // A message that is invalid stops the batch before anything is published.
  Result<std::size_t> publish_batch(std::span<const Message> messages, Timeout timeout = kForever);

  // The Diaspora producer model (rill/push.hpp): copies the message into
  // the batch being filled and returns a future of its EventId at once;
  // sender threads publish whole batches (ProducerOptions::push). Waits
  // at most `timeout` while max_batches batches are pending (then the
  // future fails with TimedOut, nothing pushed). The validator runs here:
  // a refusal fails the future at once. Once a handle pushes, its publish
  // calls fail with InvalidArgument (the senders own the publishing).
  // Allocates: the copies of the message's bytes, a batch per batch.
  PushFuture push(const Message& m, Timeout timeout = kForever);
  PushFuture try_push(const Message& m) { return push(m, Timeout::zero()); }
  // The Diaspora spelling: metadata (a JSON object's text), data, and a
  // partition hint (kAnyPartition: the producer's partition rule).
  PushFuture push(std::string_view metadata, std::string_view data, std::int64_t partition_hint = kAnyPartition) {
    return push(Message{{}, metadata, data, {}, partition_hint});
  }
  // Hands over the batch being filled; the future completes once
  // everything pushed before it is published. Closing the producer fails
  // what is still pending with Closed: flush().wait() first to publish all.
  FlushFuture flush();

  // Thread-safe. Wakes a publish blocked on this handle; later calls return
  // Closed. On a single-producer topic the right to publish is released when
  // the handle is destroyed, not by close() (which may come from another
  // thread while a publish on the owning thread is still writing).
  void close() noexcept;

  bool valid() const noexcept { return impl_ != nullptr; }
  const std::string& topic() const noexcept;

 private:
  friend class Topic;
  explicit Producer(std::unique_ptr<detail::ProducerImpl> impl) noexcept;
  // publish(key, metadata, data) hands its views over as one array: by
  // value, the third view travels on the stack and is copied on from there
  // (spsc_throughput/rill/8: ~8% more events per second this way).
  Result<EventId> publish_parts(const std::string_view (&parts)[3]);
  // publish(Message) past its lane.
  Result<EventId> publish_message(const Message& m, Timeout timeout);
  std::unique_ptr<detail::ProducerImpl> impl_;
  // impl_'s lane, or null (none, or this handle pushes: push() drops it).
  detail::PublishLane* lane_ = nullptr;
};

}  // namespace rill

// TopicCore: one topic's shared state — its partition rings, doorbells,
// consumer-name registry and close flag. Producer, Consumer and Topic
// handles share it (std::shared_ptr), so it outlives the Bus if they do.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "rill/event.hpp"
#include "rill/options.hpp"
#include "rill/topic.hpp"
#include "ring/doorbell.hpp"
#include "ring/sequenced_ring.hpp"
#include "storage/durable_log.hpp"

namespace rill::detail {

// Multi-producer events are stamped as they are written and published in
// claim order: each stamp is raised to the one published before it, so a
// partition's stamps never go back.
struct RaiseStamp {
  void operator()(EventRecord& r, std::int64_t& last) const noexcept {
    if (r.timestamp_ns < last) {
      r.timestamp_ns = last;
    } else {
      last = r.timestamp_ns;
    }
  }
};
using EventRing = SequencedRing<EventRecord, RaiseStamp>;

// Ok when the options describe a valid topic; otherwise why not.
Status validate_topic_options(const TopicOptions& o);

class SharedGroup;  // consumer/shared_group.hpp

class TopicCore {
 public:
  // `durable` is null for Durability::kNone; otherwise each ring starts at
  // its partition's stored next offset, with the writer's hard gate.
  TopicCore(std::string name, const TopicOptions& options, std::unique_ptr<DurableTopic> durable = nullptr);
  ~TopicCore();  // releases the blocks still referenced by slots

  const std::string& name() const noexcept { return name_; }
  const TopicOptions& options() const noexcept { return options_; }
  EventRing& ring(std::uint32_t partition) noexcept { return *rings_[partition]; }
  std::uint32_t partitions() const noexcept { return options_.partitions; }

  // Null for memory-only topics.
  DurableTopic* durable() const noexcept { return durable_.get(); }
  // Consumers of sync topics see only committed events.
  std::uint64_t visible(std::uint32_t partition) const noexcept { return visible(*rings_[partition], partition); }
  // The same for a caller that holds the partition's ring (a consumer's
  // cursor): no walk through the ring table on its hot path.
  std::uint64_t visible(EventRing& ring, std::uint32_t partition) const noexcept {
    const std::uint64_t published = ring.published();
    if (!durable_ || !durable_->sync) return published;
    return std::min(published, durable_->parts[partition].committed.load(std::memory_order_acquire));
  }

  Doorbell& data_bell() noexcept { return data_bell_; }    // consumers sleep here
  Doorbell& space_bell() noexcept { return space_bell_; }  // producers sleep here

  // After publishing: wakes sleeping consumers (blocking strategy only),
  // and multi-topic consumers sleeping on the bus's bell.
  void after_publish() noexcept {
    if (blocking_) {
      data_bell_.notify();
      if (bus_bell_) bus_bell_->notify();
    }
  }
  // A PublishLane's view of after_publish (keep the two in step): the
  // sleeper counts it checks (none when the topic does not block) and the
  // call that rings the bells.
  void lane_bells(const std::atomic<std::uint32_t>* (&sleepers)[2]) const noexcept {
    sleepers[0] = blocking_ ? &data_bell_.sleepers() : nullptr;
    sleepers[1] = blocking_ && bus_bell_ ? &bus_bell_->sleepers() : nullptr;
  }
  static void ring_bells(void* topic) noexcept { static_cast<TopicCore*>(topic)->after_publish(); }
  const std::atomic<bool>& closed_flag() const noexcept { return closed_; }
  // The bell of the bus that owns this topic, rung with every publish (and
  // on close), and a way to find the bus's other topics (dead letters).
  // REQUIRES: set before the topic is shared.
  using TopicLookup = std::function<std::shared_ptr<TopicCore>(std::string_view)>;
  void set_bus(std::shared_ptr<Doorbell> bell, TopicLookup lookup) noexcept {
    bus_bell_ = std::move(bell);
    lookup_ = std::move(lookup);
  }
  // A sibling topic of the same bus; null when unknown or the bus is gone.
  std::shared_ptr<TopicCore> sibling(std::string_view name) const { return lookup_ ? lookup_(name) : nullptr; }
  // Bumped (and consumers woken) each time a live consumer lets its name
  // go: standby instances wait for it to change.
  std::uint64_t release_epoch() const noexcept { return release_epoch_.load(std::memory_order_acquire); }
  void name_released() noexcept {
    release_epoch_.fetch_add(1, std::memory_order_acq_rel);
    wake_consumers();
  }
  // Wakes every consumer waiting on this topic, single- or multi-topic.
  void wake_consumers() noexcept {
    data_bell_.wake_all();
    if (bus_bell_) bus_bell_->wake_all();
  }
  // After acking (freeing ring space): wakes sleeping producers.
  void after_ack() noexcept {
    if (blocking_) space_bell_.notify();
  }

  bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }
  // Idempotent: every blocked call on this topic wakes and returns Closed.
  void close() noexcept;

  // ---- consumer names (control plane, under the mutex)

  // A consumer name owns one gate per partition it has read, from its
  // first open until remove_consumer(): its acked position survives closing
  // and keeps protecting unacked events from being overwritten.
  static constexpr std::uint32_t kNoGate = ~std::uint32_t{0};
  struct NameState {
    std::vector<std::uint32_t> gate;  // per partition; kNoGate when never read
    std::vector<bool> live;           // per partition: a live consumer reads it
    // Durable topics: per partition, the next unacked offset (kNoPosition
    // until the name first reads the partition), raised by acks and write
    // batches; and what the writer last committed of it (writer only).
    std::unique_ptr<std::atomic<std::uint64_t>[]> acked;
    std::vector<std::uint64_t> persisted;
    // Durable topics with individual acks: per partition, the restored
    // bitmap of offsets acked above `acked` (StoredCursor::acked_above),
    // until the name's SharedGroup takes it over.
    std::vector<std::string> acked_above;
    // Individual acks (shared mode): the name's dispatch and ack state; it
    // outlives its instances, so a name that comes back repeats nothing it
    // acked. Null for cumulative names.
    std::shared_ptr<SharedGroup> group;
  };
  std::mutex& registry_mutex() noexcept { return registry_mu_; }
  // REQUIRES: registry_mutex held.
  NameState& name_state(const std::string& name);
  // Forgets a name and frees its gates. Fails: NotFound, AlreadyExists
  // (a live consumer uses it).
  Status remove_name(const std::string& name);
  std::vector<std::string> names() const;
  // Per partition, the next offset `name` has not acked (kNoPosition where
  // it never read). Fails: NotFound.
  Result<std::vector<std::uint64_t>> positions(const std::string& name) const;
  // Drops a name that holds no gate and is not live (a failed first open).
  // REQUIRES: registry_mutex held.
  void forget_if_unused(const std::string& name);
  // Durable topics: a cursor read back from the store at restart.
  void restore_cursor(const std::string& name, std::uint32_t partition, std::uint64_t acked_next,
                      std::string acked_above);
  // Durable topics, writer only. REQUIRES: registry_mutex held.
  std::map<std::string, NameState, std::less<>>& names_locked() noexcept { return names_; }
  std::vector<std::string>& removed_names_locked() noexcept { return removed_names_; }

  // ---- single-producer right
  bool take_single_producer() noexcept { return !single_taken_.exchange(true, std::memory_order_acq_rel); }
  void release_single_producer() noexcept { single_taken_.store(false, std::memory_order_release); }

  std::vector<PartitionStats> stats() const;

 private:
  const std::string name_;
  const TopicOptions options_;
  const bool blocking_;
  std::vector<std::unique_ptr<EventRing>> rings_;
  Doorbell data_bell_;
  std::shared_ptr<Doorbell> bus_bell_;  // null for a topic without a bus
  TopicLookup lookup_;
  std::atomic<std::uint64_t> release_epoch_{0};
  Doorbell space_bell_;
  std::atomic<bool> closed_{false};
  std::atomic<bool> single_taken_{false};
  mutable std::mutex registry_mu_;
  std::map<std::string, NameState, std::less<>> names_;
  std::vector<std::string> removed_names_;  // durable cursors to delete
  std::unique_ptr<DurableTopic> durable_;
};

}  // namespace rill::detail

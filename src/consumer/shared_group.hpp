// SharedGroup: the state of one consumer name read by several instances at
// once (ConsumerMode::kShared), or by one instance that acks events one by
// one (ConsumerOptions::individual_acks).
//
// Per partition the group keeps the name's ring gate at `base`, the lowest
// offset not yet acked, and one entry per offset in [base, dispatch): who
// holds it, whether it is acked, how often it was delivered. Instances take
// batches: first events due for redelivery (returned by an instance that
// left, or nacked and past their delay), then new ones from the ring. An
// ack marks one entry; the gate moves over the acked prefix, so producers
// wait only for what is really unprocessed, and the name resumes there.
//
// Lossy rings (kDropOldest, and every durable topic's ring) do not hold
// events back for the group's gate: producers push it forward. There the
// group hands out at most a ring's capacity past `base`; copies pin the
// ring under pin_mutex(); what the ring dropped is read from disk (durable)
// or is lost (memory-only: acked as skipped). Durable groups raise the
// name's durable position with `base` and give the writer a bitmap of the
// offsets acked above it (acks_snapshot), so a restart repeats no acked
// event; a group built from a restored cursor starts from that bitmap.
//
// Thread-safety: every method locks the group's mutex, once per batch, ack
// or nack (never per event of a batch). has_work() reads atomics only.
// Lock order: a topic's registry mutex, then mu_, then pin_mu_.
// Allocation: entries live in per-partition deques bounded by the ring's
// capacity; redelivery bookkeeping allocates per returned or nacked event.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "rill/status.hpp"
#include "topic/topic_core.hpp"

namespace rill::detail {

class SharedGroup {
 public:
  struct PartitionInit {
    std::uint32_t partition;
    std::uint32_t gate;
    std::uint64_t start;  // the gate's position: the name's first unacked offset
    // Durable topics: the name's durable position, raised with the base,
    // and the restored bitmap of offsets acked above `start`.
    std::atomic<std::uint64_t>* durable_acked = nullptr;
    std::string acked_above{};
  };
  // keyed: ConsumerMode::kKeyShared — every key has one owning instance
  // (rendezvous hashing of 256 key slots over the joined instances); an
  // event goes only to its key's owner, and only once no other instance
  // holds an unacked event of that key, so per-key order survives
  // rebalancing. Keyless events go to anyone.
  SharedGroup(TopicCore& topic, const std::vector<PartitionInit>& parts, bool keyed);

  std::vector<std::uint32_t> partitions() const;
  bool reads(std::uint32_t partition) const noexcept;
  bool keyed() const noexcept { return keyed_; }
  // Lossy rings: copies of handed-out events pin the partition's gate
  // (gate()) under this mutex; events below the pinned offset are gone
  // from the ring.
  bool lossy() const noexcept { return lossy_; }
  std::mutex& pin_mutex() noexcept { return pin_mu_; }
  std::uint32_t gate(std::uint32_t partition) const noexcept;

  // Instances joining and leaving. leave() hands the instance's unacked
  // events to the others (due at once) and returns how many remain joined.
  void join(std::uint64_t instance);
  std::size_t leave(std::uint64_t instance);
  std::size_t instances() const noexcept { return instances_.load(std::memory_order_acquire); }

  // Hands up to `max` events of one partition to `instance`: their offsets,
  // ascending, into `offsets`, the partition into `partition`. Returns how
  // many; 0 when none is due. `next_due_ns` is lowered to when the earliest
  // delayed redelivery becomes due (unchanged when none waits). `skipped`
  // grows by the events a memory-only lossy ring dropped before anyone
  // took them.
  std::size_t take(std::uint64_t instance, std::size_t max, std::int64_t now_ns, std::uint32_t& partition,
                   std::uint64_t* offsets, std::int64_t& next_due_ns, std::uint64_t& skipped);

  // Changes whenever work may have appeared for some instance (acks, nacks,
  // joins, leaves, events deferred to their key's owner).
  std::uint64_t epoch() const noexcept { return epoch_.load(std::memory_order_acquire); }
  // True when take() may hand something out: new events, redeliveries due,
  // or (keyed) a change since `seen_epoch`, the epoch read before the last
  // take that found nothing.
  bool has_work(std::uint64_t seen_epoch) const noexcept;

  // The event was processed. Ok also when already acked. Fails:
  // InvalidArgument when `instance` does not hold it.
  Status ack(std::uint64_t instance, std::uint32_t partition, std::uint64_t offset);

  // Gives the event back for redelivery after `delay_ns`. Returns the
  // number of deliveries so far; with `max_deliveries` > 0 and that many
  // reached, the event stays with `instance` for dead-lettering (the caller
  // publishes it, then acks it) and `dead` is set. Fails: as ack.
  Result<std::uint32_t> nack(std::uint64_t instance, std::uint32_t partition, std::uint64_t offset,
                             std::int64_t delay_ns, std::int64_t now_ns, std::uint32_t max_deliveries, bool& dead);

  // Durable topics, the writer: the partition's base and the bitmap of
  // offsets acked above it (StoredCursor::acked_above), and the version
  // they reflect. False when nothing changed since the last one saved.
  // Allocates: the bitmap.
  bool acks_snapshot(std::uint32_t partition, std::uint64_t& base, std::string& acked_above,
                     std::uint64_t& version);
  // The snapshot of `version` is committed (a failed commit does not call
  // this, so the next group takes the acks again).
  void acks_saved(std::uint32_t partition, std::uint64_t version);

 private:
  static constexpr std::size_t kSlots = 256;
  static constexpr std::uint16_t kAnySlot = 0xffff;  // keyless, or not keyed
  struct Entry {
    std::uint64_t holder = 0;  // the instance it was delivered to; 0: nobody
    std::uint32_t deliveries = 0;
    std::uint16_t slot = kAnySlot;
    bool acked = false;
    bool queued = false;  // waiting in due/delayed for (re)delivery
  };
  struct KeySlot {
    std::uint64_t owner = 0;   // the instance its events go to
    std::uint64_t holder = 0;  // the instance holding its unacked events
    std::uint32_t held = 0;    // how many
  };
  struct Part {
    std::uint32_t partition = 0;
    std::uint32_t gate = 0;
    EventRing* ring = nullptr;
    std::uint64_t base = 0;                    // == gate position: first unacked offset
    std::atomic<std::uint64_t> dispatch{0};    // next offset never handed out
    // Lossy rings: dispatch stays below base + window().
    std::atomic<std::uint64_t> window_end{~std::uint64_t{0}};
    std::deque<Entry> entries;                 // offsets [base, dispatch)
    std::set<std::uint64_t> due;               // offsets ready for redelivery, in order
    std::atomic<std::uint64_t>* durable_acked = nullptr;
    std::uint64_t version = 0;        // acks so far (durable: what the writer saves)
    std::uint64_t saved_version = 0;  // version of the last snapshot committed (acks_saved)
  };

  // Lossy rings: how far past the first unacked event the group hands
  // events out. Memory-only: the ring's capacity (older ones are dropped
  // anyway). Durable: at least kDurableWindow, read from disk beyond the
  // ring; it bounds the entries (16 bytes each) and the acked bitmap.
  static constexpr std::uint64_t kDurableWindow = 65536;
  std::uint64_t window(const Part& p) const noexcept {
    const std::uint64_t ring = p.ring->capacity();
    return topic_.durable() ? std::max(ring, kDurableWindow) : ring;
  }
  Entry* find(Part& p, std::uint64_t offset) noexcept;
  bool may_take(std::uint64_t instance, std::uint16_t slot) const noexcept;
  void hand(Entry& e, std::uint64_t instance) noexcept;  // delivers e to instance
  void unhold(Entry& e) noexcept;                        // e is no longer held (acked or given back)
  // The key slots of offsets [from, to) into out (kAnySlot when not keyed,
  // keyless, or dropped from a memory-only lossy ring). Durable events the
  // ring dropped are read from disk. REQUIRES: mu_ held.
  void slots_of(Part& p, std::uint64_t from, std::uint64_t to, std::uint16_t* out);
  std::uint16_t ring_slot(const Part& p, std::uint64_t offset) const noexcept;
  void reassign_slots();                                 // after a join or leave
  void bump() noexcept;                                  // epoch_ + wake sleeping instances
  const Part* part_of(std::uint32_t partition) const noexcept;  // null when not read
  Part* part_of(std::uint32_t partition) noexcept {
    return const_cast<Part*>(std::as_const(*this).part_of(partition));
  }
  void make_due(std::int64_t now_ns);  // moves delayed redeliveries whose time came into `due`
  void settle(Part& p);                // advances base and the gate over the acked prefix
  void restore(Part& p, const std::string& acked_above);  // a restored cursor's individually acked set

  TopicCore& topic_;
  const bool keyed_;
  const bool lossy_;
  mutable std::mutex mu_;
  std::mutex pin_mu_;
  std::vector<std::uint16_t> scan_slots_;  // take()'s key slots; reused
  std::vector<std::uint64_t> members_;  // joined instances
  std::vector<KeySlot> slots_;          // keyed: kSlots of them
  std::atomic<std::uint64_t> epoch_{0};
  std::vector<std::unique_ptr<Part>> parts_;
  std::multimap<std::int64_t, std::pair<Part*, std::uint64_t>> delayed_;  // due time -> event
  std::size_t next_part_ = 0;  // round-robin start for take()
  std::atomic<std::size_t> due_count_{0};
  std::atomic<std::int64_t> earliest_delayed_{INT64_MAX};
  std::atomic<std::size_t> instances_{0};
};

}  // namespace rill::detail

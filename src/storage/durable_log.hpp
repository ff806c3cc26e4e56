// DurableLog: a bus's durable side — its Store and the background writer
// that commits durable topics' events and consumers' acks in groups.
//
// The writer holds a "hard" gate in every durable partition's ring: a slot
// is overwritten only after the writer committed it, so everything below
// the writer's gate is on disk, and a consumer pushed out of the ring window
// reads it back from the Store. Consumer gates on durable rings are "soft"
// (producers push them forward): a slow consumer never blocks producers.
//
// A group: under the registry mutexes, snapshot the changed consumer cursors;
// then snapshot each partition's published bound (cursors first, so an
// acked event is always in the same or an earlier group); append the events
// between the last group and the bound, the partition states and the
// cursors in one LMDB transaction; commit; fsync when a sync topic or a
// write batch needs it (one fsync for every publisher waiting: group commit);
// then advance each partition's `committed` offset and the writer's gates.
//
// Write batches run on the writer thread: it claims ring space and publishes
// the batch's events itself, holding every group below the batch's first
// claim in each partition until all its events are published and its acks
// applied, so a batch commits whole in one group or not at all.
//
// Failures (disk full past max_map_size, I/O errors) are sticky: the group
// is not committed, durable publishes and waits return the Status, and
// memory-only topics keep working. Reopening the bus recovers everything
// committed before.
//
// Thread-safety: all public methods are thread-safe.
#pragma once

#include <atomic>
#include <bit>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/cache.hpp"
#include "common/clock.hpp"
#include "rill/event.hpp"
#include "rill/options.hpp"
#include "rill/producer.hpp"
#include "rill/status.hpp"
#include "ring/doorbell.hpp"
#include "storage/store.hpp"

namespace rill::detail {

class TopicCore;
class DurableLog;

inline constexpr std::uint64_t kNoPosition = ~std::uint64_t{0};

// Raises a durable position (kNoPosition counts as lowest) to v.
inline void raise_position(std::atomic<std::uint64_t>& a, std::uint64_t v) noexcept {
  std::uint64_t cur = a.load(std::memory_order_relaxed);
  while ((cur == kNoPosition || cur < v) && !a.compare_exchange_weak(cur, v, std::memory_order_acq_rel)) {
  }
}

// One durable partition's shared state.
struct alignas(kCacheLine) DurablePartition {
  std::atomic<std::uint64_t> committed{0};  // every offset below is committed
  std::atomic<std::uint64_t> earliest{0};   // oldest offset kept on disk
  // Writer thread only:
  std::uint32_t writer_gate = 0;
  std::uint64_t hold = kNoPosition;  // a write batch's first claim: groups stop below it
  PartitionState state;              // as last committed
  Deadline next_age_check{};
};

// The durable side of one topic (TopicCore::durable()).
struct DurableTopic {
  std::shared_ptr<DurableLog> log;
  StoredTopic stored;  // id, options, databases
  bool sync = false;
  std::unique_ptr<DurablePartition[]> parts;
};

// A write batch as the writer runs it.
struct BatchRequest {
  struct Item {
    std::shared_ptr<TopicCore> topic;
    std::uint32_t partition = 0;
    std::string key, metadata, data;
    std::size_t index = 0;  // position among the batch's publish calls
  };
  struct Ack {
    std::shared_ptr<TopicCore> topic;
    std::atomic<std::uint64_t>* acked = nullptr;  // the name's durable position
    std::uint64_t next = 0;
  };
  std::vector<Item> items;  // grouped by (topic, partition), in order
  std::vector<Ack> acks;
  std::vector<EventId> ids;  // filled by the writer, in publish-call order
  // Set by the writer, read by the submitter (under DurableLog::batch_mu_).
  bool started = false;
  bool done = false;
  Status status;
};

class DurableLog {
 public:
  // Opens the store; starts the writer unless read-only.
  static Result<std::shared_ptr<DurableLog>> open(const BusOptions& options);
  ~DurableLog();

  Store& store() noexcept { return *store_; }
  bool read_only() const noexcept { return store_->read_only(); }

  // Registers a durable topic with the writer (after restore or creation).
  void add_topic(std::shared_ptr<TopicCore> topic);
  // Stops writing a topic (delete_topic). Waits for a group in progress.
  void remove_topic(const TopicCore* topic);
  // Commits what is pending, fsyncs, stops the writer. Idempotent.
  void stop() noexcept;

  // Producers of sync topics (and waiters) ring this so the writer starts
  // a group now rather than at the next interval.
  void nudge() noexcept { writer_bell_.notify(); }
  // The largest power of two <= commit_events, minus one: producers wake
  // the writer when their offsets cross a multiple of it.
  std::uint64_t group_mask() const noexcept { return std::bit_floor(std::uint64_t{options_.commit_events}) - 1; }
  // Consumers' acks on durable topics mark the cursors dirty.
  void mark_acks_dirty() noexcept {
    if (!acks_dirty_.load(std::memory_order_relaxed)) acks_dirty_.store(true, std::memory_order_relaxed);
  }

  // Waits until offset `offset` of the partition is committed (sync topics:
  // and fsynced). Fails: the sticky storage failure, TimedOut, Closed.
  Status wait_committed(TopicCore& topic, std::uint32_t partition, std::uint64_t offset, Deadline deadline,
                        const std::atomic<bool>* cancelled);

  // Runs a write batch on the writer thread. Fails: the storage failure,
  // Closed, TimedOut (only while the writer had not started it: then
  // nothing of it was published).
  Status run_batch(BatchRequest& request, Deadline deadline);

  // The failure that stopped the writer (when failed()). Sticky, except a
  // full map (ResourceExhausted at BusOptions::max_map_size) in a regular
  // group: the writer retries that group every kFullRetry and resumes once
  // it commits (delete_topic freed room). After a recovery failure() still
  // returns the last failure (for callers that saw failed() just before).
  Status failure() const;
  bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }
  static constexpr std::chrono::milliseconds kFullRetry{100};

 private:
  explicit DurableLog(std::unique_ptr<Store> store, const BusOptions& options);
  void run() noexcept;
  // Commits one group: each partition up to its published bound, below a
  // write batch's hold, and (capped) at most commit_events past the last
  // group. REQUIRES: topics_mu_ held (the writer).
  Status commit_group(bool force_sync, bool capped);
  Status execute_batch(BatchRequest& r);
  // Stops durable publishing with `s`; `retry`: a full map, which the
  // writer retries (see failure()).
  void fail(Status s, bool retry = false) noexcept;
  void recover() noexcept;
  // Events published but not yet committed, over the durable partitions.
  // REQUIRES: topics_mu_ held.
  struct Pending {
    std::uint64_t total = 0;  // over all partitions
    std::uint64_t most = 0;   // in one partition
    bool sync = false;        // some are on a sync topic
    bool near_full = false;   // some ring is half full of them
  };
  Pending pending() const noexcept;
  // Hands a batch's outcome to the thread waiting in run_batch.
  void finish_batch(BatchRequest& request, Status status);

  std::unique_ptr<Store> store_;
  const BusOptions options_;

  std::mutex topics_mu_;  // held by the writer for a whole group
  std::vector<std::shared_ptr<TopicCore>> topics_;

  std::thread writer_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> acks_dirty_{false};
  // Threads in wait_committed register here, so that a lingering writer
  // can tell how many wait for events not yet committed: a thread the last
  // group released may still be asleep, and must not count.
  struct alignas(kCacheLine) WaitSlot {
    std::atomic<bool> busy{false};
    std::atomic<const std::atomic<std::uint64_t>*> committed{nullptr};  // the partition's
    std::atomic<std::uint64_t> offset{0};                                // the awaited offset
  };
  static constexpr std::size_t kWaitSlots = 64;  // more waiters go uncounted
  WaitSlot* register_waiter(const std::atomic<std::uint64_t>& committed, std::uint64_t offset) noexcept;
  // Returns once the writer no longer reads the slot's partition (whose
  // topic the caller may destroy next).
  void unregister_waiter(WaitSlot* slot) noexcept;
  // Registered waiters whose event is not committed yet. Writer only.
  int waiting_for_commit() noexcept;
  std::unique_ptr<WaitSlot[]> wait_slots_{new WaitSlot[kWaitSlots]};
  std::atomic<int> scanning_{0};  // the writer is in waiting_for_commit
  int waiters_at_last_commit_ = 0;  // waiting_for_commit() as the last group committed. Writer only.
  Doorbell writer_bell_;   // the writer sleeps here
  Doorbell durable_bell_;  // waiters for commits sleep here
  Deadline last_fsync_{};

  std::mutex batch_mu_;
  std::condition_variable batch_cv_;
  std::deque<BatchRequest*> batches_;
  std::atomic<std::size_t> batches_queued_{0};

  mutable std::mutex failure_mu_;
  Status failure_;
  std::atomic<bool> failed_{false};
  bool retrying_ = false;  // failed_ by a full map (writer thread only)
};

}  // namespace rill::detail

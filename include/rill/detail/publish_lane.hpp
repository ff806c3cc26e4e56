// rill/detail/publish_lane.hpp — internal, not API: the single-producer
// write of small events into a ring slot, inline in the caller.
//
// Producer::publish(key, metadata, data) and publish(Message) try a
// PublishLane first, in the caller's code. A producer has a lane when every
// publish of an inline-size event could take it: a single-producer,
// one-partition, memory-only topic, no user hooks (validator, partition
// selector, metadata serializer), millisecond stamps, and not pushing
// (ProducerImpl::lane() says which; Producer::push() drops the lane). Out of
// line, the same publish cost ~3x the instructions (two calls, the checks
// that cover every other case, the Result built through memory): one thread
// publishing 8-byte events on the 2-core bench VM took ~20 ns out of line
// and ~5-8 ns in the lane.
//
// Contract: try_publish either publishes the event (true, `id` set) or
// changes nothing and returns false; the caller then takes the out-of-line
// path, which handles every case (a full ring's refresh and wait, a closed
// producer or topic, a large event, a sleeping stamp clock). The lane
// holds raw pointers into state its ProducerImpl keeps alive (the topic by
// shared_ptr, the ring, the process-wide stamp words).
// Thread-safety: one publishing thread, as for the Producer handle.
// Allocation: none.
//
// SpWriter, the slot writer both the lane and the out-of-line
// single-producer path use (ProducerImpl::sp_commit), and StampWords, the
// words StampClock ticks, are here so that the lane can be inline.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "rill/event.hpp"

namespace rill::detail {

// Asks for the cache line at p in exclusive state ahead of a write, so the
// ownership transfer from another core overlaps with other work.
inline void prefetch_for_write(const void* p) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetchw %0" ::"m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

// Asks for a slot's first line (and its second when `wide`) in exclusive
// state ahead of writing it, so the transfers from the consumer's cache
// overlap with other work. (A wide event without the second prefetch:
// 64-byte spsc_throughput fell from ~17 M/s to ~4 M/s.)
inline void prefetch_slot(const EventRecord& slot, bool wide) noexcept {
  prefetch_for_write(&slot);
  if (wide) prefetch_for_write(reinterpret_cast<const char*>(&slot) + 64);  // the second cache line
}

// Writes an event whose key, metadata and data all fit inline
// (EventRecord::kAllInline) into a slot, releasing what the slot held
// before. Allocates: no.
[[gnu::always_inline]] inline void write_inline_record(EventRecord& slot, std::string_view key,
                                                       std::string_view metadata, std::string_view data,
                                                       std::int64_t timestamp_ns) noexcept {
  slot.reset();
  slot.timestamp_ns = timestamp_ns;
  slot.key_size = std::uint16_t(key.size());  // REQUIRES: fits inline, so within the 16 bits
  slot.meta_size = std::uint16_t(metadata.size());
  slot.data_size = std::uint32_t(data.size());
  char* dst = slot.inline_bytes;
  if ((key.size() | metadata.size()) == 0) {
    copy_short(dst, data.data(), data.size());  // data alone: the common event
    return;
  }
  copy_short(dst, key.data(), key.size());
  copy_short(dst + key.size(), metadata.data(), metadata.size());
  copy_short(dst + key.size() + metadata.size(), data.data(), data.size());
}

// A ring's single-producer bookkeeping (SequencedRing owns it), touched
// only by the one producer thread.
struct SingleProducerCursor {
  std::uint64_t next = 0;    // next seq to write
  std::uint64_t limit = 0;   // cached refresh_limit result: seqs below it may be written
  std::int64_t last_ts = 0;  // last timestamp written (multi-producer: OnPublish's state)
};

// A single producer's view of one ring (SequencedRing::sp_writer()): where
// seq s's slot is, the producer's cursor, and the published cursor.
template <class T>
struct SpWriter {
  // How far ahead of the write position commit() prefetches a slot. Each
  // request takes a line from the consumer's core; what is in flight at once
  // bounds the publish rate (perf put a third of the producer's samples on a
  // waiting prefetchw at 8: spsc_throughput/rill/8 65-107 -> 89-107 M/s and
  // /64 51-65 -> 70-89 M/s at 16; 24 no better; 12 between).
  static constexpr std::uint64_t kPrefetchSlots = 16;

  T* slots;  // slot s is slots[s & mask]
  std::uint64_t mask;
  SingleProducerCursor* cursor;
  std::atomic<std::uint64_t>* published;

  T& slot(std::uint64_t seq) const noexcept { return slots[seq & mask]; }

  // Writes n events at cursor->next and publishes them: the published
  // cursor, then each slot's seq mark (EventRecord::mark; a consumer that
  // saw a mark sees the cursor past it). REQUIRES: the room is granted
  // (cursor->next + n <= cursor->limit). `write(slot, i, ts)` writes event
  // i; every event gets max(now, the last stamp) so that stamps never go
  // back; `wide` says whether they fill both lines of their slots (a
  // prefetch hint: the next events are likely as wide as these).
  template <class Write>
  [[gnu::always_inline]] void commit(std::size_t n, bool wide, std::int64_t now, Write&& write) const noexcept {
    SingleProducerCursor& c = *cursor;
    const std::uint64_t s = c.next;
    const std::uint64_t end = s + n;
    const std::int64_t ts = std::max(now, c.last_ts);
    // Request the slots a few events ahead: their lines are usually in the
    // consumer's cache, and overlapping those transfers is what sets the
    // publish rate. Within the granted limit only (never an unacked slot's
    // contents, and prefetching does not change them anyway).
    if (end + kPrefetchSlots <= c.limit) prefetch_slot(slot(end + kPrefetchSlots), wide);
    for (std::size_t i = 1; i < n; ++i) prefetch_slot(slot(s + i), wide);  // a batch: all at once
    for (std::size_t i = 0; i < n; ++i) write(slot(s + i), i, ts);
    c.last_ts = ts;
    c.next = end;
    published->store(end, std::memory_order_release);
    for (std::size_t i = 0; i < n; ++i) slot(s + i).mark(s + i);
  }
};

// The words behind millisecond append stamps (StampClock in
// src/common/stamp_clock.hpp owns them and ticks `now`): a reader loads
// `now` while `state` says ticking, and sets `read` so the ticker keeps
// ticking.
struct StampWords {
  static constexpr std::uint32_t kTicking = 2;  // StampClock's state while it ticks

  alignas(64) std::atomic<std::uint32_t> state{0};  // a futex word (StampClock)
  std::atomic<std::int64_t> now{0};                 // written once per tick
  alignas(64) std::atomic<bool> read{false};        // set by readers, cleared by the ticker

  // The stamp; false (nothing read) when the ticker is not ticking: then
  // StampClock::now_ns reads the clock and starts or wakes it.
  [[gnu::always_inline]] bool try_read(std::int64_t& out) noexcept {
    if (state.load(std::memory_order_acquire) != kTicking) [[unlikely]] return false;
    if (!read.load(std::memory_order_relaxed)) read.store(true, std::memory_order_relaxed);
    out = now.load(std::memory_order_relaxed);
    return true;
  }
};

struct PublishLane {
  SpWriter<EventRecord> writer;
  const std::atomic<bool>* producer_closed;
  const std::atomic<bool>* topic_closed;
  StampWords* stamps;
  std::size_t inline_limit;  // min(kInlineEventBytes, max_event_size)
  // Blocking topics: the sleeper counts of the bells a publish rings (the
  // topic's data bell, the bus's; null when absent). When one is non-zero
  // ring(topic) rings them (out of line, as TopicCore::after_publish).
  const std::atomic<std::uint32_t>* sleepers[2];
  void (*ring)(void* topic) noexcept;
  void* topic;

  // Publishes an inline event to partition 0 (see the contract above).
  [[gnu::always_inline]] bool try_publish(std::string_view key, std::string_view metadata, std::string_view data,
                                          EventId& id) noexcept {
    const std::size_t total = key.size() + metadata.size() + data.size();
    if (total > inline_limit) return false;
    if (producer_closed->load(std::memory_order_relaxed) || topic_closed->load(std::memory_order_acquire)) {
      return false;
    }
    const std::uint64_t s = writer.cursor->next;
    if (s + 1 > writer.cursor->limit) return false;  // a refresh, perhaps a wait
    std::int64_t now;
    if (!stamps->try_read(now)) return false;
    // (Without the attribute g++ 12 kept this lambda out of line.)
    writer.commit(1, EventRecord::inline_wide(total), now,
                  [&](EventRecord& slot, std::size_t, std::int64_t ts) __attribute__((always_inline)) {
                    write_inline_record(slot, key, metadata, data, ts);
                  });
    if (sleepers[0]) {
      // Doorbell::notify's fast side: a compiler barrier, then the loads.
      std::atomic_signal_fence(std::memory_order_seq_cst);
      if (sleepers[0]->load(std::memory_order_relaxed) != 0 ||
          (sleepers[1] && sleepers[1]->load(std::memory_order_relaxed) != 0)) {
        ring(topic);
      }
    }
    id = EventId{0, s};
    return true;
  }
};

}  // namespace rill::detail

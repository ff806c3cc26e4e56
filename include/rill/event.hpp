// rill/event.hpp — what a consumer receives.
//
// An event has an optional key, metadata (a small JSON object kept as its
// serialized text; parse it with rill/json.hpp only when needed), data bytes,
// an append timestamp (non-decreasing within a partition) and an EventId.
//
// Ownership: an Event owns what it shows. Small events (key + metadata +
// data <= kInlineEventBytes) are copied into the Event itself with no heap
// allocation; larger ones share the producer's block (reference counted), so
// the data is never copied on its way to any number of consumers. An Event
// stays valid after it is acked and after its consumer is closed.
//
// Thread-safety: an Event is a value; distinct Events (even of the same
// block) may be used on different threads.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "rill/buffer.hpp"

namespace rill {

// Events whose key + metadata + data fit in this many bytes live inline in
// the ring slot and in the Event: no allocation on publish or consume.
inline constexpr std::size_t kInlineEventBytes = 100;

// The largest key and the largest metadata an event may have (each; the
// whole event is bounded by TopicOptions::max_event_size). Keys pick
// partitions and join partners and metadata is a small JSON object: 16-bit
// sizes keep 100 bytes inline in a slot. A publish of more is refused
// (InvalidArgument) and publishes nothing.
inline constexpr std::size_t kMaxKeyBytes = 0xFFFF;
inline constexpr std::size_t kMaxMetadataBytes = 0xFFFF;

// Where an event sits: partition and offset. Offsets start at 0, grow by 1
// per event and are never reused within a partition.
struct EventId {
  std::uint32_t partition = 0;
  std::uint64_t offset = 0;
  friend bool operator==(const EventId&, const EventId&) = default;
};

namespace detail {

// Copies n bytes, n small (an inline record's part): up to 32 bytes with
// two overlapping moves of one width and no call; longer, memcpy. Reads and
// writes only [src, src+n) and [dst, dst+n).
[[gnu::always_inline]] inline void copy_short(char* dst, const char* src, std::size_t n) noexcept {
  auto pair = [&](auto word) {
    decltype(word) head, tail;
    std::memcpy(&head, src, sizeof head);
    std::memcpy(&tail, src + n - sizeof tail, sizeof tail);
    std::memcpy(dst, &head, sizeof head);
    std::memcpy(dst + n - sizeof tail, &tail, sizeof tail);
  };
  struct Bytes16 {
    std::uint64_t lo, hi;
  };
  if (n <= 16) {
    if (n >= 8) {
      pair(std::uint64_t{});
    } else if (n >= 4) {
      pair(std::uint32_t{});
    } else if (n >= 2) {
      pair(std::uint16_t{});
    } else if (n == 1) {
      *dst = *src;
    }
  } else if (n <= 32) {
    pair(Bytes16{});
  } else {
    std::memcpy(dst, src, n);
  }
}

// The bytes of one event as stored in a ring slot and in an Event. 128
// bytes: a 28-byte header and 100 inline bytes, so an event of up to 36
// bytes touches a single cache line. Where the bytes live follows from the
// sizes and the block (no layout field, to keep 100 bytes inline):
//   no block                         key|metadata|data in inline_bytes
//   block, key+metadata <= inline    key|metadata inline; data is the block
//   block, key+metadata >  inline    key|metadata|data contiguous in the block
struct EventRecord {
  enum Layout : std::uint32_t { kAllInline, kHeadInline, kAllInBlock };
  std::int64_t timestamp_ns = 0;
  BufferRep* block = nullptr;  // one counted reference when non-null
  std::uint16_t key_size = 0;   // <= kMaxKeyBytes
  std::uint16_t meta_size = 0;  // <= kMaxMetadataBytes
  std::uint32_t data_size = 0;
  // Single-producer rings only: mark_of(seq) once the slot holds event seq.
  // SpWriter::commit stores it last, after the published cursor, so that a
  // consumer waiting for the next event reads the line the event is in (one
  // transfer from the producer's core) instead of the published cursor and
  // then the slot (two, one after the other). Not part of the event's value:
  // copy_from leaves it out (an Event's stays 0), so a slot's mark is only
  // ever one its ring's producer stored.
  std::uint32_t seq_mark = 0;
  char inline_bytes[kInlineEventBytes];

  // A mark tells laps apart: a slot not yet holding seq holds the event a
  // lap earlier, seq - capacity (capacity < 2^32: a different mark), or,
  // never written, 0: the mark of no seq below 2^32 - 1, and a ring that
  // starts at 0 has written every slot long before that seq.
  static constexpr std::uint32_t mark_of(std::uint64_t seq) noexcept { return std::uint32_t(seq + 1); }
  // The producer, after the event's bytes and the published cursor (release).
  void mark(std::uint64_t seq) noexcept { __atomic_store_n(&seq_mark, mark_of(seq), __ATOMIC_RELEASE); }
  // True when the slot holds event seq, its bytes visible (acquire).
  bool marked(std::uint64_t seq) const noexcept { return __atomic_load_n(&seq_mark, __ATOMIC_ACQUIRE) == mark_of(seq); }

  Layout layout() const noexcept {
    if (!block) return kAllInline;
    return std::size_t(key_size) + meta_size <= kInlineEventBytes ? kHeadInline : kAllInBlock;
  }
  const char* head() const noexcept { return layout() == kAllInBlock ? block->data : inline_bytes; }
  const char* data_ptr() const noexcept {
    switch (layout()) {
      case kAllInline: return inline_bytes + key_size + meta_size;
      case kHeadInline: return block->data;
      default: return block->data + key_size + meta_size;
    }
  }
  // Bytes of inline_bytes a record of this layout and these sizes uses.
  static std::size_t inline_size(Layout layout, std::uint32_t key, std::uint32_t meta, std::uint32_t data) noexcept {
    switch (layout) {
      case kAllInline: return std::size_t(key) + meta + data;
      case kHeadInline: return std::size_t(key) + meta;
      default: return 0;
    }
  }
  // True when a record using `inline_bytes` bytes inline spills past its
  // slot's first cache line (a 64-byte event: 28 + 64 bytes).
  static constexpr bool inline_wide(std::size_t inline_bytes) noexcept {
    return offsetof(EventRecord, inline_bytes) + inline_bytes > 64;
  }
  // Bytes of inline_bytes in use (what a copy must carry).
  std::size_t inline_used() const noexcept { return inline_size(layout(), key_size, meta_size, data_size); }
  // Copies `o` but its seq_mark into this record (which holds no block).
  // Retains o's block.
  void copy_from(const EventRecord& o) noexcept {
    // The block read from `o`, not back from this record: a load from bytes
    // the header copy has just stored (in overlapping moves) waits for those
    // stores (perf: two thirds of a batch consumer's samples at 8 bytes).
    std::memcpy(static_cast<void*>(this), &o, offsetof(EventRecord, seq_mark));
    copy_short(inline_bytes, o.inline_bytes, o.inline_used());
    if (BufferRep* b = o.block) b->retain();
  }
  void reset() noexcept {
    if (block) block->release();
    block = nullptr;
  }
};
static_assert(sizeof(EventRecord) == 128, "EventRecord is two cache lines");

}  // namespace detail

class Event {
 public:
  // User-provided, so that value-initialization (Result<Event>'s) leaves the
  // inline bytes alone; the record's members start empty.
  Event() noexcept {}
  Event(const Event& o) noexcept : id_(o.id_), origin_(o.origin_) { rec_.copy_from(o.rec_); }
  Event(Event&& o) noexcept : id_(o.id_), origin_(o.origin_) {
    rec_.copy_from(o.rec_);
    o.rec_.reset();
  }
  Event& operator=(const Event& o) noexcept {
    if (this != &o) {
      rec_.reset();
      rec_.copy_from(o.rec_);
      id_ = o.id_;
      origin_ = o.origin_;
    }
    return *this;
  }
  Event& operator=(Event&& o) noexcept {
    if (this != &o) {
      rec_.reset();
      rec_.copy_from(o.rec_);
      o.rec_.reset();
      id_ = o.id_;
      origin_ = o.origin_;
    }
    return *this;
  }
  ~Event() { rec_.reset(); }

  EventId id() const noexcept { return id_; }
  std::uint32_t partition() const noexcept { return id_.partition; }
  std::uint64_t offset() const noexcept { return id_.offset; }

  // Views valid while this Event lives. Empty when absent.
  std::string_view key() const noexcept { return {rec_.head(), rec_.key_size}; }
  std::string_view metadata() const noexcept { return {rec_.head() + rec_.key_size, rec_.meta_size}; }
  std::string_view data() const noexcept { return {rec_.data_ptr(), rec_.data_size}; }

  // Append time, nanoseconds since the Unix epoch; non-decreasing within a
  // partition.
  std::int64_t timestamp_ns() const noexcept { return rec_.timestamp_ns; }
  std::chrono::system_clock::time_point timestamp() const noexcept {
    return std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(rec_.timestamp_ns)));
  }

  // The data with shared ownership, to keep beyond this Event. Shares the
  // producer's block when the data lives in one (no copy); otherwise copies
  // the (small) inline bytes into a new Buffer (allocates).
  Buffer data_buffer() const;

  // Internal: the consumer fills Events straight from ring slots.
  detail::EventRecord& record() noexcept { return rec_; }
  const detail::EventRecord& record() const noexcept { return rec_; }
  void set_origin(EventId id, std::uint64_t origin) noexcept {
    id_ = id;
    origin_ = origin;
  }
  std::uint64_t origin() const noexcept { return origin_; }

 private:
  detail::EventRecord rec_;
  EventId id_;
  std::uint64_t origin_ = 0;  // the consumer instance that received it (0 = none)
};

}  // namespace rill

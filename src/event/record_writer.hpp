// Turning a Message into the bytes of a ring slot, in two steps so that a
// producer allocates (large events only) before it claims ring space and
// holds a claimed slot only for a copy.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/cache.hpp"
#include "common/clock.hpp"
#include "common/stamp_clock.hpp"
#include "event/block_pool.hpp"
#include "rill/detail/publish_lane.hpp"
#include "rill/event.hpp"
#include "rill/producer.hpp"
#include "rill/status.hpp"

namespace rill::detail {

struct PreparedEvent {
  // The bytes to copy (read by write_record; they must outlive it).
  const char* key = nullptr;
  const char* meta = nullptr;
  const char* data = nullptr;
  std::uint16_t key_size = 0;   // <= kMaxKeyBytes (prepare_event checks)
  std::uint16_t meta_size = 0;  // <= kMaxMetadataBytes
  std::uint32_t data_size = 0;
  std::uint32_t layout = EventRecord::kAllInline;
  BufferRep* block = nullptr;  // one reference, handed to the slot by write_record

  // True when write_record stores past its slot's first cache line (header
  // and inline part): a 64-byte event (28 + 64 bytes) needs both lines.
  bool wide() const noexcept {
    const auto l = static_cast<EventRecord::Layout>(layout);
    return EventRecord::inline_wide(EventRecord::inline_size(l, key_size, meta_size, data_size));
  }

  // An event of these parts in `layout`, holding `block` (one reference).
  // REQUIRES: key and metadata within their limits.
  static PreparedEvent of(std::string_view key, std::string_view metadata, std::string_view data,
                          EventRecord::Layout layout, BufferRep* block) noexcept {
    return {key.data(),
            metadata.data(),
            data.data(),
            std::uint16_t(key.size()),
            std::uint16_t(metadata.size()),
            std::uint32_t(data.size()),
            layout,
            block};
  }

  // Drops the block if the event was never written (publish failed).
  void discard() noexcept {
    if (block) block->release();
    block = nullptr;
  }
};

// The bytes a message publishes as its data: its Buffer when it has one.
inline std::string_view message_data(const Message& m) noexcept { return m.buffer.empty() ? m.data : m.buffer.view(); }

// Ok when the key and the metadata are within their limits (kMaxKeyBytes,
// kMaxMetadataBytes) and key + metadata + data fit max_event_size;
// otherwise InvalidArgument (the caller publishes nothing).
inline Status check_event_size(const Message& m, std::uint32_t max_event_size) {
  if (m.key.size() > kMaxKeyBytes) {
    return Status::InvalidArgument("key of " + std::to_string(m.key.size()) + " bytes exceeds kMaxKeyBytes (" +
                                   std::to_string(kMaxKeyBytes) + "); nothing was published");
  }
  if (m.metadata.size() > kMaxMetadataBytes) {
    return Status::InvalidArgument("metadata of " + std::to_string(m.metadata.size()) +
                                   " bytes exceeds kMaxMetadataBytes (" + std::to_string(kMaxMetadataBytes) +
                                   "); nothing was published");
  }
  const std::size_t total = m.key.size() + m.metadata.size() + message_data(m).size();
  if (total <= max_event_size) return Status::Ok();
  return Status::InvalidArgument("event of " + std::to_string(total) + " bytes (key + metadata + data) exceeds " +
                                 "the topic's max_event_size of " + std::to_string(max_event_size) +
                                 "; nothing was published");
}

// A new block of `size` bytes: with `pool` (a producer's pool slot), from
// the pool there, made on first use (a producer of small events never makes
// one); without, from the heap. Throws std::bad_alloc.
inline BufferRep* new_block(std::size_t size, BlockPool** pool) {
  if (!pool) return BufferRep::allocate(size);
  if (!*pool) *pool = BlockPool::create();
  return (*pool)->allocate(size);
}

// Checks the size limit and picks the layout; copies large events into one
// new block (see new_block for `pool`), or shares message.buffer. Allocates:
// only above kInlineEventBytes. Fails: InvalidArgument when larger than
// max_event_size. Inline: it is on the per-event path.
inline Status prepare_event(const Message& m, std::uint32_t max_event_size, PreparedEvent& out,
                            BlockPool** pool = nullptr) {
  const std::string_view data = message_data(m);
  const std::size_t head = m.key.size() + m.metadata.size();
  const std::size_t total = head + data.size();
  if (total > max_event_size || m.key.size() > kMaxKeyBytes || m.metadata.size() > kMaxMetadataBytes) {
    return check_event_size(m, max_event_size);
  }
  out.key = m.key.data();
  out.meta = m.metadata.data();
  out.data = data.data();
  out.key_size = static_cast<std::uint16_t>(m.key.size());
  out.meta_size = static_cast<std::uint16_t>(m.metadata.size());
  out.data_size = static_cast<std::uint32_t>(data.size());
  out.block = nullptr;
  if (total <= kInlineEventBytes) {
    out.layout = EventRecord::kAllInline;
  } else if (head <= kInlineEventBytes) {
    out.layout = EventRecord::kHeadInline;
    if (!m.buffer.empty()) {
      out.block = m.buffer.rep();
      out.block->retain();  // zero-copy: the event shares the producer's block
    } else {
      out.block = new_block(data.size(), pool);
      std::memcpy(out.block->bytes(), data.data(), data.size());
    }
  } else {
    out.layout = EventRecord::kAllInBlock;
    out.block = new_block(total, pool);
    char* p = out.block->bytes();
    // An empty view may hold a null pointer: memcpy's arguments must not be null.
    if (!m.key.empty()) std::memcpy(p, m.key.data(), m.key.size());
    if (!m.metadata.empty()) std::memcpy(p + m.key.size(), m.metadata.data(), m.metadata.size());
    if (!data.empty()) std::memcpy(p + head, data.data(), data.size());
  }
  return Status::Ok();
}

// Writes a prepared event into a slot, releasing what the slot held before.
// Transfers the prepared block reference to the slot. Allocates: no.
[[gnu::always_inline]] inline void write_record(EventRecord& slot, PreparedEvent& p, std::int64_t timestamp_ns) noexcept {
  if (p.layout == EventRecord::kAllInline) {
    write_inline_record(slot, {p.key, p.key_size}, {p.meta, p.meta_size}, {p.data, p.data_size}, timestamp_ns);
    return;
  }
  slot.reset();
  slot.timestamp_ns = timestamp_ns;
  slot.key_size = p.key_size;
  slot.meta_size = p.meta_size;
  slot.data_size = p.data_size;
  slot.block = p.block;
  p.block = nullptr;
  if (p.layout == EventRecord::kHeadInline) {
    copy_short(slot.inline_bytes, p.key, p.key_size);
    copy_short(slot.inline_bytes + p.key_size, p.meta, p.meta_size);
  }
}

}  // namespace rill::detail

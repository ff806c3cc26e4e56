// Turning a Message into the bytes of a ring slot, in two steps so that a
// producer allocates (large events only) before it claims ring space and
// holds a claimed slot only for a copy.
#pragma once

#include <cstdint>

#include "rill/event.hpp"
#include "rill/producer.hpp"
#include "rill/status.hpp"

namespace rill::detail {

struct PreparedEvent {
  const Message* message = nullptr;
  std::uint32_t key_size = 0;
  std::uint32_t meta_size = 0;
  std::uint32_t data_size = 0;
  std::uint32_t layout = EventRecord::kAllInline;
  BufferRep* block = nullptr;  // one reference, handed to the slot by write_record

  // Drops the block if the event was never written (publish failed).
  void discard() noexcept {
    if (block) block->release();
    block = nullptr;
  }
};

// Checks the size limit and picks the layout; copies large events into one
// new block (or shares message.buffer). Allocates: only above
// kInlineEventBytes. Fails: InvalidArgument when larger than max_event_size.
Status prepare_event(const Message& m, std::uint32_t max_event_size, PreparedEvent& out);

// Writes a prepared event into a slot, releasing what the slot held before.
// Transfers the prepared block reference to the slot. Allocates: no.
void write_record(EventRecord& slot, PreparedEvent& p, std::int64_t timestamp_ns) noexcept;

}  // namespace rill::detail

#include "event/record_writer.hpp"

#include <cstring>
#include <string>

namespace rill::detail {

Status prepare_event(const Message& m, std::uint32_t max_event_size, PreparedEvent& out) {
  const std::string_view data = m.buffer.empty() ? m.data : m.buffer.view();
  const std::size_t head = m.key.size() + m.metadata.size();
  const std::size_t total = head + data.size();
  if (total > max_event_size) {
    return Status::InvalidArgument("event of " + std::to_string(total) + " bytes (key + metadata + data) exceeds " +
                                   "the topic's max_event_size of " + std::to_string(max_event_size));
  }
  out.message = &m;
  out.key_size = static_cast<std::uint32_t>(m.key.size());
  out.meta_size = static_cast<std::uint32_t>(m.metadata.size());
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
      out.block = BufferRep::allocate(data.size());
      std::memcpy(out.block->storage(), data.data(), data.size());
    }
  } else {
    out.layout = EventRecord::kAllInBlock;
    out.block = BufferRep::allocate(total);
    char* p = out.block->storage();
    std::memcpy(p, m.key.data(), m.key.size());
    std::memcpy(p + m.key.size(), m.metadata.data(), m.metadata.size());
    if (!data.empty()) std::memcpy(p + head, data.data(), data.size());
  }
  return Status::Ok();
}

void write_record(EventRecord& slot, PreparedEvent& p, std::int64_t timestamp_ns) noexcept {
  slot.reset();
  slot.timestamp_ns = timestamp_ns;
  slot.key_size = p.key_size;
  slot.meta_size = p.meta_size;
  slot.data_size = p.data_size;
  slot.layout = p.layout;
  slot.block = p.block;
  p.block = nullptr;
  const Message& m = *p.message;
  if (p.layout != EventRecord::kAllInBlock) {
    char* dst = slot.inline_bytes;
    if (p.key_size) std::memcpy(dst, m.key.data(), p.key_size);
    if (p.meta_size) std::memcpy(dst + p.key_size, m.metadata.data(), p.meta_size);
    if (p.layout == EventRecord::kAllInline && p.data_size) {
      const char* src = m.buffer.empty() ? m.data.data() : m.buffer.data();
      std::memcpy(dst + p.key_size + p.meta_size, src, p.data_size);
    }
  }
}

}  // namespace rill::detail

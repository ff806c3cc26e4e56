// Emitter: output events copied into one reused byte arena.
#include "rill/pipeline.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

namespace rill {

void Emitter::emit(const Message& m) {
  // Offsets, not pointers: the arena may move as it grows. A Buffer's bytes
  // are copied like any data (a stage's outputs are republished anyway).
  const std::string_view data = m.buffer.empty() ? m.data : std::string_view(m.buffer.data(), m.buffer.size());
  const std::size_t size = m.key.size() + m.metadata.size() + data.size();
  if (used_ + size > capacity_) {
    const std::size_t grown = std::max<std::size_t>({4096, capacity_ * 2, used_ + size});
    auto bigger = std::make_unique_for_overwrite<char[]>(grown);
    if (used_) std::memcpy(bigger.get(), bytes_.get(), used_);
    bytes_ = std::move(bigger);
    capacity_ = grown;
  }
  records_.push_back(Record{used_, std::uint32_t(m.key.size()), std::uint32_t(m.metadata.size()),
                            std::uint32_t(data.size()), m.partition});
  if (!fits(records_.back())) unfit_end_ = records_.size();
  char* p = bytes_.get() + used_;
  if (!m.key.empty()) std::memcpy(p, m.key.data(), m.key.size());
  p += m.key.size();
  if (!m.metadata.empty()) std::memcpy(p, m.metadata.data(), m.metadata.size());
  p += m.metadata.size();
  if (!data.empty()) std::memcpy(p, data.data(), data.size());
  used_ += size;
}

std::span<const Message> Emitter::messages() {
  views_.clear();
  for (const Record& r : records_) {
    const char* p = bytes_.get() + r.offset;
    views_.push_back(Message{{p, r.key_size}, {p + r.key_size, r.meta_size}, {p + r.key_size + r.meta_size, r.data_size},
                             {}, r.partition});
  }
  return views_;
}

void Emitter::rollback(std::size_t mark) noexcept {
  if (mark >= records_.size()) return;
  used_ = records_[mark].offset;
  records_.resize(mark);
  if (unfit_end_ > mark) recount_unfit();
}

void Emitter::set_target(std::uint32_t max_event_size, std::uint32_t partitions) noexcept {
  max_event_size_ = max_event_size;
  partitions_ = partitions;
  recount_unfit();
}

void Emitter::recount_unfit() noexcept {
  unfit_end_ = 0;
  for (std::size_t i = 0; i < records_.size(); ++i) {
    if (!fits(records_[i])) unfit_end_ = i + 1;
  }
}

Status Emitter::check_since(std::size_t mark) const {
  for (std::size_t i = mark; i < records_.size(); ++i) {
    const Record& r = records_[i];
    if (fits(r)) continue;
    const std::uint64_t size = std::uint64_t(r.key_size) + r.meta_size + r.data_size;
    if (size > max_event_size_) {
      return Status::InvalidArgument("emitted event of " + std::to_string(size) + " bytes exceeds the output topic's " +
                                     "max_event_size of " + std::to_string(max_event_size_));
    }
    return Status::InvalidArgument("emitted event for partition " + std::to_string(r.partition) +
                                   " of an output topic with " + std::to_string(partitions_) + " partitions");
  }
  return Status::Ok();
}

void Emitter::clear() noexcept {
  used_ = 0;
  unfit_end_ = 0;
  records_.clear();
  views_.clear();
}

}  // namespace rill

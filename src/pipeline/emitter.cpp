// Emitter: output events copied into one reused byte arena.
#include "rill/pipeline.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "event/record_writer.hpp"

namespace rill {

void Emitter::emit(const Message& m) {
  // A Buffer's bytes are copied like any data (a stage's outputs are
  // republished anyway).
  const std::string_view data = m.buffer.empty() ? m.data : std::string_view(m.buffer.data(), m.buffer.size());
  const std::size_t size = m.key.size() + m.metadata.size() + data.size();
  // Kept until the copy below: `m` may view this emitter's own bytes (a
  // stage re-emitting one of messages()).
  std::unique_ptr<char[]> old;
  if (used_ + size > capacity_) old = grow(size);
  char* const key = bytes_.get() + used_;
  char* const meta = key + m.key.size();
  char* const bytes = meta + m.metadata.size();
  if (!m.key.empty()) std::memcpy(key, m.key.data(), m.key.size());
  if (!m.metadata.empty()) std::memcpy(meta, m.metadata.data(), m.metadata.size());
  if (!data.empty()) std::memcpy(bytes, data.data(), data.size());
  used_ += size;
  views_.push_back(Message{{key, m.key.size()}, {meta, m.metadata.size()}, {bytes, data.size()}, {}, m.partition});
  if (!fits(views_.back())) unfit_end_ = views_.size();
}

std::unique_ptr<char[]> Emitter::grow(std::size_t more) {
  const std::size_t grown = std::max<std::size_t>({4096, capacity_ * 2, used_ + more});
  auto bigger = std::make_unique_for_overwrite<char[]>(grown);
  if (used_) std::memcpy(bigger.get(), bytes_.get(), used_);
  const char* const old = bytes_.get();
  auto moved = [&](std::string_view v) { return std::string_view(bigger.get() + (v.data() - old), v.size()); };
  for (Message& v : views_) {
    v.key = moved(v.key);
    v.metadata = moved(v.metadata);
    v.data = moved(v.data);
  }
  std::swap(bytes_, bigger);
  capacity_ = grown;
  return bigger;
}

void Emitter::rollback(std::size_t mark) noexcept {
  if (mark >= views_.size()) return;
  used_ = std::size_t(views_[mark].key.data() - bytes_.get());
  views_.resize(mark);
  if (unfit_end_ > mark) recount_unfit();
}

void Emitter::set_target(std::uint32_t max_event_size, std::uint32_t partitions) noexcept {
  max_event_size_ = max_event_size;
  partitions_ = partitions;
  recount_unfit();
}

void Emitter::recount_unfit() noexcept {
  unfit_end_ = 0;
  for (std::size_t i = 0; i < views_.size(); ++i) {
    if (!fits(views_[i])) unfit_end_ = i + 1;
  }
}

Status Emitter::check_since(std::size_t mark) const {
  for (std::size_t i = mark; i < views_.size(); ++i) {
    const Message& m = views_[i];
    if (fits(m)) continue;
    const std::uint64_t size = std::uint64_t(m.key.size()) + m.metadata.size() + m.data.size();
    if (size > max_event_size_) {
      return Status::InvalidArgument("emitted event of " + std::to_string(size) + " bytes exceeds the output topic's " +
                                     "max_event_size of " + std::to_string(max_event_size_));
    }
    if (Status s = detail::check_event_size(m, max_event_size_); !s.ok()) return s;  // the key or metadata limit
    return Status::InvalidArgument("emitted event for partition " + std::to_string(m.partition) +
                                   " of an output topic with " + std::to_string(partitions_) + " partitions");
  }
  return Status::Ok();
}

void Emitter::clear() noexcept {
  used_ = 0;
  unfit_end_ = 0;
  views_.clear();
}

}  // namespace rill

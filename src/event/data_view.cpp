// DataDescriptor views and the gather that copies selected bytes. Views
// never allocate for a single run; for several, one vector.
#include "rill/data_view.hpp"

#include <algorithm>
#include <cstring>

namespace rill {

// Collects data-coordinate runs in increasing order, merging touching ones.
class DescriptorBuilder {
 public:
  explicit DescriptorBuilder(std::size_t data_size) noexcept { d_.data_size_ = data_size; }

  void add(std::size_t offset, std::size_t size) {
    if (size == 0) return;
    if (count_ > 0) {
      DataSegment& last = back();
      if (last.offset + last.size == offset) {
        last.size += size;
        d_.size_ += size;
        return;
      }
    }
    if (count_ == 0) {
      d_.one_ = {offset, size};
    } else {
      if (count_ == 1) d_.many_.push_back(d_.one_);
      d_.many_.push_back({offset, size});
    }
    ++count_;
    d_.size_ += size;
  }

  DataDescriptor finish() && { return std::move(d_); }

 private:
  DataSegment& back() noexcept { return count_ == 1 ? d_.one_ : d_.many_.back(); }
  DataDescriptor d_;
  std::size_t count_ = 0;
};

namespace {

// Maps ranges of a descriptor's selected bytes (its "view coordinates") to
// data coordinates. Ranges must come in increasing order: the cursor only
// moves forward, so a strided view of n blocks costs O(n + runs).
class ViewMapper {
 public:
  explicit ViewMapper(std::span<const DataSegment> runs) noexcept : runs_(runs) {}

  void map(std::size_t offset, std::size_t size, DescriptorBuilder& out) {
    while (size > 0) {
      while (offset >= run_start_ + runs_[i_].size) {  // the range starts past this run
        run_start_ += runs_[i_].size;
        ++i_;
      }
      const DataSegment& run = runs_[i_];
      const std::size_t within = offset - run_start_;
      const std::size_t take = std::min(size, run.size - within);
      out.add(run.offset + within, take);
      offset += take;
      size -= take;
    }
  }

 private:
  std::span<const DataSegment> runs_;
  std::size_t i_ = 0;          // current run
  std::size_t run_start_ = 0;  // view coordinate of the current run's first byte
};

constexpr std::size_t kWrapped = ~std::size_t{0};  // an end past what size_t holds

Status past_end(const char* view, std::size_t end, std::size_t selected) {
  return Status::InvalidArgument(std::string(view) + " reaches selected byte " + std::to_string(end) +
                                 ", past the " + std::to_string(selected) + " bytes the descriptor selects");
}

// a * b + c without wrapping, or false.
bool checked_mul_add(std::size_t a, std::size_t b, std::size_t c, std::size_t& out) noexcept {
  std::size_t m;
  return !__builtin_mul_overflow(a, b, &m) && !__builtin_add_overflow(m, c, &out);
}

}  // namespace

DataDescriptor DataDescriptor::all(std::size_t data_size) noexcept {
  DataDescriptor d;
  d.data_size_ = data_size;
  d.size_ = data_size;
  if (data_size) d.one_ = {0, data_size};
  return d;
}

std::span<const DataSegment> DataDescriptor::segments() const noexcept {
  if (!many_.empty()) return many_;
  if (size_ == 0) return {};
  return {&one_, 1};
}

Result<DataDescriptor> DataDescriptor::sub_view(std::size_t offset, std::size_t size) const {
  std::size_t end;
  if (__builtin_add_overflow(offset, size, &end)) end = kWrapped;
  if (end > size_) return past_end("sub_view(offset, size)", end, size_);
  DescriptorBuilder b(data_size_);
  ViewMapper(segments()).map(offset, size, b);
  return std::move(b).finish();
}

Result<DataDescriptor> DataDescriptor::strided_view(std::size_t offset, std::size_t blocks, std::size_t block_size,
                                                    std::size_t gap) const {
  DescriptorBuilder b(data_size_);
  if (blocks == 0 || block_size == 0) {
    if (offset > size_) return past_end("strided_view(offset, ...)", offset, size_);
    return std::move(b).finish();
  }
  // The last block ends at offset + blocks * block_size + (blocks - 1) * gap.
  std::size_t stride = 0, span_end = 0;
  if (__builtin_add_overflow(block_size, gap, &stride) || !checked_mul_add(blocks - 1, stride, offset, span_end) ||
      __builtin_add_overflow(span_end, block_size, &span_end)) {
    span_end = kWrapped;
  }
  if (span_end > size_) return past_end("strided_view(offset, blocks, block_size, gap)", span_end, size_);
  ViewMapper mapper(segments());
  for (std::size_t i = 0; i < blocks; ++i) mapper.map(offset + i * stride, block_size, b);
  return std::move(b).finish();
}

Result<DataDescriptor> DataDescriptor::unstructured_view(std::span<const DataSegment> parts) const {
  std::size_t prev_end = 0;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const DataSegment& p = parts[i];
    std::size_t end;
    if (__builtin_add_overflow(p.offset, p.size, &end)) end = kWrapped;
    if (end > size_) {
      return past_end(("unstructured_view part " + std::to_string(i) + " (offset, size)").c_str(), end, size_);
    }
    if (p.offset < prev_end) {
      return Status::InvalidArgument("unstructured_view part " + std::to_string(i) + " starts at " +
                                     std::to_string(p.offset) + ", before the end (" + std::to_string(prev_end) +
                                     ") of the part before it: parts must be ordered and not overlap");
    }
    if (p.size) prev_end = end;
  }
  DescriptorBuilder b(data_size_);
  ViewMapper mapper(segments());
  for (const DataSegment& p : parts) mapper.map(p.offset, p.size, b);
  return std::move(b).finish();
}

bool operator==(const DataDescriptor& a, const DataDescriptor& b) noexcept {
  if (a.data_size_ != b.data_size_ || a.size_ != b.size_) return false;
  const auto sa = a.segments(), sb = b.segments();
  return std::equal(sa.begin(), sa.end(), sb.begin(), sb.end());
}

DataView::DataView(std::vector<MemorySegment> segments, std::shared_ptr<void> owner) : owner_(std::move(owner)) {
  for (const MemorySegment& s : segments) size_ += s.size;
  if (segments.size() == 1) {
    one_ = segments[0];
  } else {
    many_ = std::move(segments);
  }
}

std::span<const MemorySegment> DataView::segments() const noexcept {
  if (!many_.empty()) return many_;
  if (one_.ptr == nullptr && one_.size == 0) return {};
  return {&one_, 1};
}

std::string DataView::to_string(std::size_t n) const {
  n = std::min(n, size_);
  std::string out;
  out.reserve(n);
  for (const MemorySegment& s : segments()) {
    if (out.size() == n) break;
    out.append(static_cast<const char*>(s.ptr), std::min(s.size, n - out.size()));
  }
  return out;
}

Status gather(std::string_view data, const DataDescriptor& selection, const DataView& into) {
  if (selection.empty()) return Status::Ok();
  if (selection.data_size() != data.size()) {
    return Status::InvalidArgument("the selection was made for data of " + std::to_string(selection.data_size()) +
                                   " bytes; this event's data has " + std::to_string(data.size()));
  }
  if (into.size() < selection.size()) {
    return Status::InvalidArgument("the allocator's view holds " + std::to_string(into.size()) +
                                   " bytes; the selection needs " + std::to_string(selection.size()));
  }
  const std::span<const MemorySegment> dst = into.segments();
  std::size_t di = 0, dpos = 0;  // destination segment and the bytes used in it
  for (const DataSegment& run : selection.segments()) {
    std::size_t done = 0;
    while (done < run.size) {
      while (dpos == dst[di].size) {  // skip full (or empty) destination segments
        ++di;
        dpos = 0;
      }
      const std::size_t n = std::min(run.size - done, dst[di].size - dpos);
      std::memcpy(static_cast<char*>(dst[di].ptr) + dpos, data.data() + run.offset + done, n);
      done += n;
      dpos += n;
    }
  }
  return Status::Ok();
}

}  // namespace rill

// rill/data_view.hpp — choosing which bytes of an event's data to take, and
// where to put them (the pull model of rill/pull.hpp).
//
// A consumer first sees an event's header (key, metadata, id, size of the
// data). Its DataSelector answers with a DataDescriptor: which bytes of the
// data it wants — all, none, or a view (sub, strided, unstructured; views of
// views compose). Its DataAllocator then answers with a DataView: the
// writable memory (one or more segments) the selected bytes go to. rill
// gathers exactly the selected bytes there, in order.
//
// Thread-safety: DataDescriptor and DataView are plain values. A DataView
// does not own its memory unless it was given an owner.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "rill/event.hpp"
#include "rill/status.hpp"

namespace rill {

// A run of bytes: `size` bytes from `offset`.
struct DataSegment {
  std::size_t offset = 0;
  std::size_t size = 0;
  friend bool operator==(const DataSegment&, const DataSegment&) = default;
};

// A selection of the bytes of one event's data. The default descriptor
// selects nothing (the data is declined); DataDescriptor::all(n) selects
// every byte of n.
//
// View coordinates count the bytes this descriptor selects as if they were
// contiguous, so `d.sub_view(...)` of a strided `d` picks within the strided
// bytes. Every view fails with InvalidArgument, and changes nothing, when it
// reaches past the bytes selected or its parts are out of order.
// Allocates: only for selections of more than one run.
class DataDescriptor {
 public:
  DataDescriptor() noexcept = default;
  static DataDescriptor all(std::size_t data_size) noexcept;

  // Bytes selected.
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  // Size of the data this descriptor selects from (0 for the default).
  std::size_t data_size() const noexcept { return data_size_; }
  // The selected runs in data coordinates: ordered, not overlapping, not
  // touching (adjacent runs are merged), none empty.
  std::span<const DataSegment> segments() const noexcept;

  // `size` selected bytes from the selected byte `offset`.
  Result<DataDescriptor> sub_view(std::size_t offset, std::size_t size) const;
  // `blocks` runs of `block_size` bytes, the first at `offset`, each next
  // one `gap` bytes after the end of the previous: a w x h rectangle of a
  // row-major W-wide image is strided_view(y * W + x, h, w, W - w).
  Result<DataDescriptor> strided_view(std::size_t offset, std::size_t blocks, std::size_t block_size,
                                      std::size_t gap) const;
  // Arbitrary runs, in increasing order and not overlapping.
  Result<DataDescriptor> unstructured_view(std::span<const DataSegment> parts) const;

  friend bool operator==(const DataDescriptor& a, const DataDescriptor& b) noexcept;

 private:
  friend class DescriptorBuilder;
  std::size_t data_size_ = 0;
  std::size_t size_ = 0;
  DataSegment one_{};                // the run, when there is exactly one
  std::vector<DataSegment> many_{};  // the runs, when there are several
};

// One writable run of memory.
struct MemorySegment {
  void* ptr = nullptr;
  std::size_t size = 0;
};

// Where selected bytes go, or are: one or more memory runs read or filled in
// order. An optional owner keeps the memory alive as long as any copy of the
// view. Allocates: only for more than one segment.
class DataView {
 public:
  DataView() noexcept = default;
  DataView(void* ptr, std::size_t size, std::shared_ptr<void> owner = {}) noexcept
      : one_{ptr, size}, size_(size), owner_(std::move(owner)) {}
  explicit DataView(std::vector<MemorySegment> segments, std::shared_ptr<void> owner = {});

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  std::span<const MemorySegment> segments() const noexcept;
  const std::shared_ptr<void>& owner() const noexcept { return owner_; }

  // The first `n` bytes of the view, concatenated (n is capped at size()).
  // Allocates: the string.
  std::string to_string(std::size_t n = ~std::size_t{0}) const;

 private:
  MemorySegment one_{};
  std::vector<MemorySegment> many_{};
  std::size_t size_ = 0;
  std::shared_ptr<void> owner_{};
};

// What a selector and an allocator see of an event before its data is read.
struct EventHeader {
  EventId id{};
  std::string_view key{};
  std::string_view metadata{};  // serialized JSON; parse with rill/json.hpp
  std::int64_t timestamp_ns = 0;
  std::size_t data_size = 0;
};

// Given the header and DataDescriptor::all(data_size), returns the bytes to
// take: `all` itself, a view of it, or DataDescriptor{} to decline the data.
// Runs on the thread that pulls. An exception it throws fails that pull.
using DataSelector = std::function<DataDescriptor(const EventHeader&, const DataDescriptor&)>;

// Given the header and the selector's (non-empty) answer, returns memory of
// at least descriptor.size() bytes; rill fills exactly the selected bytes,
// in order, from the view's start. A smaller view fails the pull with
// InvalidArgument. Runs on the thread that pulls.
using DataAllocator = std::function<DataView(const EventHeader&, const DataDescriptor&)>;

// Copies the bytes `selection` picks out of `data` into `into`, in order.
// Fails: InvalidArgument when the selection was made for another data size
// or `into` is smaller than the selection; nothing is written then.
Status gather(std::string_view data, const DataDescriptor& selection, const DataView& into);

}  // namespace rill

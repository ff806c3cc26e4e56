// rill/buffer.hpp — immutable bytes with shared ownership.
//
// A Buffer is how large event data travels without copies: a producer may
// publish a Buffer it built (or adopted from its own object), and every
// consumer's Event refers to the same bytes. The bytes are freed (or the
// adopted owner destroyed) exactly once, when the last reference goes.
//
// Thread-safety: a Buffer handle is a value used by one thread at a time;
// different handles to the same bytes may be used and destroyed on any
// threads concurrently (the reference count is atomic). The bytes never
// change after construction.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstring>
#include <new>
#include <string_view>
#include <type_traits>
#include <utility>

namespace rill {

namespace detail {

// The shared block behind a Buffer. Either owns trailing storage (copy) or
// holds an adopted owner object that keeps the bytes alive.
struct BufferRep {
  std::atomic<std::uint32_t> refs{1};
  std::uint32_t reserved = 0;
  const char* data = nullptr;
  std::size_t size = 0;
  void (*destroy)(BufferRep*) noexcept = nullptr;  // frees this rep and what it owns

  void retain() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy(this);
  }

  // A rep with `size` bytes of trailing storage (uninitialized). Allocates.
  static BufferRep* allocate(std::size_t size);
  // The writable trailing storage of a rep made by allocate().
  char* storage() noexcept { return reinterpret_cast<char*>(this + 1); }
  // The bytes of a rep made by allocate() or a producer's block pool, to
  // fill before the rep is shared.
  char* bytes() noexcept { return const_cast<char*>(data); }
};

}  // namespace detail

class Buffer {
 public:
  Buffer() noexcept = default;
  Buffer(const Buffer& o) noexcept : rep_(o.rep_) {
    if (rep_) rep_->retain();
  }
  Buffer(Buffer&& o) noexcept : rep_(std::exchange(o.rep_, nullptr)) {}
  Buffer& operator=(Buffer o) noexcept {
    std::swap(rep_, o.rep_);
    return *this;
  }
  ~Buffer() {
    if (rep_) rep_->release();
  }

  // A new Buffer holding a copy of `bytes`. Allocates once.
  static Buffer copy_of(std::string_view bytes);

  // Zero-copy: moves `owner` into the Buffer's block and exposes the bytes
  // `owner.data()`/`owner.size()` of the moved object (a std::string,
  // std::vector<char>, or any type with those members). The owner is
  // destroyed exactly once, when the last reference goes; it must not change
  // its bytes meanwhile. Allocates once (the block; the bytes are not copied).
  template <class Owner>
  static Buffer adopt(Owner&& owner);

  std::string_view view() const noexcept {
    return rep_ ? std::string_view(rep_->data, rep_->size) : std::string_view();
  }
  const char* data() const noexcept { return rep_ ? rep_->data : nullptr; }
  std::size_t size() const noexcept { return rep_ ? rep_->size : 0; }
  bool empty() const noexcept { return size() == 0; }

  // Internal: used by the ring to share the block without re-counting.
  detail::BufferRep* rep() const noexcept { return rep_; }
  static Buffer from_rep(detail::BufferRep* rep) noexcept {  // takes one reference
    Buffer b;
    b.rep_ = rep;
    return b;
  }
  detail::BufferRep* release_rep() noexcept { return std::exchange(rep_, nullptr); }

 private:
  detail::BufferRep* rep_ = nullptr;
};

template <class Owner>
Buffer Buffer::adopt(Owner&& owner) {
  using O = std::decay_t<Owner>;
  struct Rep : detail::BufferRep {
    explicit Rep(Owner&& o) : owner(std::forward<Owner>(o)) {}
    O owner;
  };
  auto* rep = new Rep(std::forward<Owner>(owner));
  rep->data = reinterpret_cast<const char*>(rep->owner.data());
  rep->size = rep->owner.size() * sizeof(*rep->owner.data());
  rep->destroy = [](detail::BufferRep* r) noexcept { delete static_cast<Rep*>(r); };
  return from_rep(rep);
}

}  // namespace rill

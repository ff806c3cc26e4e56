#include "rill/buffer.hpp"

#include <cstdlib>
#include <new>

#include "rill/event.hpp"

namespace rill {

namespace detail {

BufferRep* BufferRep::allocate(std::size_t size) {
  void* mem = ::operator new(sizeof(BufferRep) + size);
  auto* rep = new (mem) BufferRep();
  rep->data = rep->storage();
  rep->size = size;
  rep->destroy = [](BufferRep* r) noexcept {
    r->~BufferRep();
    ::operator delete(static_cast<void*>(r));
  };
  return rep;
}

}  // namespace detail

Buffer Buffer::copy_of(std::string_view bytes) {
  detail::BufferRep* rep = detail::BufferRep::allocate(bytes.size());
  if (!bytes.empty()) std::memcpy(rep->storage(), bytes.data(), bytes.size());
  return from_rep(rep);
}

Buffer Event::data_buffer() const {
  if (rec_.layout() == detail::EventRecord::kHeadInline) {
    rec_.block->retain();
    return Buffer::from_rep(rec_.block);
  }
  return Buffer::copy_of(data());
}

}  // namespace rill

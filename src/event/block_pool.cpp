#include "event/block_pool.hpp"

#include <bit>
#include <new>

namespace rill::detail {

std::size_t BlockPool::class_of(std::size_t size) noexcept {
  if (size <= kMinBlock) return 0;
  return std::size_t(std::bit_width(size - 1)) - std::size_t(std::bit_width(kMinBlock - 1));
}

BlockPool::Block* BlockPool::make_block(BlockPool* pool, std::size_t c) {
  void* mem = ::operator new(sizeof(Block) + class_size(c), std::align_val_t{alignof(Block)});
  auto* b = new (mem) Block();
  b->data = reinterpret_cast<const char*>(b + 1);
  b->pool = pool;
  b->size_class = std::uint32_t(c);
  return b;
}

void BlockPool::free_list(Block* b) noexcept {
  while (b) {
    Block* next = b->next;
    b->~Block();
    ::operator delete(static_cast<void*>(b), std::align_val_t{alignof(Block)});
    b = next;
  }
}

BufferRep* BlockPool::allocate(std::size_t size) {
  if (size > kMaxBlock) return BufferRep::allocate(size);
  const std::size_t c = class_of(size);
  if (!free_[c]) free_[c] = returned_[c].exchange(nullptr, std::memory_order_acquire);
  Block* b = free_[c];
  if (b) {
    free_[c] = b->next;
  } else {
    if (made_in_[c] * class_size(c) >= kClassBytes) return BufferRep::allocate(size);  // at the cap
    b = make_block(this, c);
    ++made_in_[c];
  }
  b->next = nullptr;
  b->refs.store(1, std::memory_order_relaxed);
  b->size = size;
  b->destroy = &BlockPool::give_back;
  refs_.fetch_add(1, std::memory_order_relaxed);  // the owner holds one: never from 0
  return b;
}

void BlockPool::give_back(BufferRep* rep) noexcept {
  Block* b = static_cast<Block*>(rep);
  BlockPool* pool = b->pool;
  std::atomic<Block*>& head = pool->returned_[b->size_class];
  Block* h = head.load(std::memory_order_relaxed);
  do {
    b->next = h;
  } while (!head.compare_exchange_weak(h, b, std::memory_order_release, std::memory_order_relaxed));
  pool->unref();
}

void BlockPool::release_owner() noexcept {
  for (Block*& list : free_) {
    free_list(list);
    list = nullptr;
  }
  unref();
}

void BlockPool::unref() noexcept {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

BlockPool::~BlockPool() {
  for (std::atomic<Block*>& list : returned_) free_list(list.exchange(nullptr, std::memory_order_acquire));
}

}  // namespace rill::detail

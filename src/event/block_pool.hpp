// BlockPool: recycles the blocks one producer copies large events into.
//
// An event too large to live inline in its ring slot gets its data copied
// into a block (a BufferRep with trailing storage) shared by every consumer.
// A block is freed when its last reference goes: usually on the producer's
// thread, when it overwrites the slot a lap later; sometimes on a consumer's
// thread, when an Event outlives the slot. With malloc/free that was ~40% of
// a 1 KiB publish (perf, spsc_throughput/rill/1024); a pool reuses them.
// A single producer goes one step further: when the slot it overwrites
// holds the only reference to a block of the class it needs, the new event
// takes that block over (reuse()) with no release, no free list and no
// locked operation.
//
// Blocks come in power-of-two size classes from 128 bytes to 16 KiB
// (larger data is allocated and freed as before). A released block goes
// back to its pool's class: pushed onto a lock-free list by whichever thread
// released it (push-only, so no ABA); the owner takes the whole list with
// one exchange when its private list runs dry. The pool keeps at most
// kClassBytes of blocks per class; beyond that a block is allocated and
// freed unpooled.
//
// Lifetime: blocks may outlive the producer (an Event a user keeps). The
// pool counts one reference for its owner and one per block handed out;
// the last to go (the owner's release or a late block's return) frees the
// pool and every block on its lists.
//
// Thread-safety: allocate() and release_owner() on the owner's thread (one
// thread at a time); a block's release on any thread. Allocation: a new
// block only while its class has none to reuse and is under its cap.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "rill/buffer.hpp"

namespace rill::detail {

class BlockPool {
 public:
  static constexpr std::size_t kMinBlock = 128;
  static constexpr std::size_t kMaxBlock = 16 * 1024;
  static constexpr std::size_t kClasses = 8;  // 128, 256, ..., 16 KiB
  static constexpr std::size_t kClassBytes = 16 * 1024 * 1024;

  // A pool with its owner's reference. Allocates.
  static BlockPool* create() { return new BlockPool(); }

  // A block of `size` data bytes (uninitialized) with one reference, as
  // BufferRep::allocate gives. Owner's thread only. Throws std::bad_alloc.
  BufferRep* allocate(std::size_t size);

  // A block for `size` bytes without a release and a new allocation: `held`
  // itself when it is a block of this pool in the size class `size` needs
  // and its one reference is the caller's (no Event or Buffer shares it).
  // The caller then owns it with that one reference, for new bytes; else
  // nullptr and nothing changes. A producer passes the block of the slot it
  // is about to overwrite: the slot's reference goes to the new event, and
  // the block's lines are the ones the old event used. Owner's thread only.
  // REQUIRES: nobody can take a new reference to `held` meanwhile (the
  // slot's readers are all past it). Allocation: none.
  BufferRep* reuse(BufferRep* held, std::size_t size) noexcept {
    if (!held || held->destroy != &BlockPool::give_back || size > kMaxBlock) return nullptr;
    Block* b = static_cast<Block*>(held);
    if (b->pool != this || b->size_class != class_of(size)) return nullptr;
    // Acquire: the last reader's release (Event, Buffer) happened before the
    // bytes are overwritten.
    if (b->refs.load(std::memory_order_acquire) != 1) return nullptr;
    b->size = size;
    return b;
  }

  // The owner is done: frees what it holds unused; the pool frees itself
  // once every block handed out has come back. Owner's thread only.
  void release_owner() noexcept;

  // Blocks this pool has made and not freed (owner's thread; tests).
  std::size_t blocks() const noexcept {
    std::size_t n = 0;
    for (std::size_t made : made_in_) n += made;
    return n;
  }

 private:
  // A header line of its own: the counts consumers change do not share a
  // line with the bytes, and the bytes start on a line.
  struct alignas(64) Block : BufferRep {
    BlockPool* pool = nullptr;
    Block* next = nullptr;  // on a free list
    std::uint32_t size_class = 0;
  };

  BlockPool() = default;
  ~BlockPool();

  static std::size_t class_of(std::size_t size) noexcept;
  static std::size_t class_size(std::size_t c) noexcept { return kMinBlock << c; }
  static Block* make_block(BlockPool* pool, std::size_t c);
  static void free_list(Block* b) noexcept;
  // BufferRep::destroy of a pooled block: back onto its pool's list.
  static void give_back(BufferRep* rep) noexcept;
  void unref() noexcept;

  Block* free_[kClasses] = {};                  // the owner's, private
  std::size_t made_in_[kClasses] = {};          // blocks alive per class, owner's count
  std::atomic<Block*> returned_[kClasses] = {};  // pushed by any thread
  std::atomic<std::size_t> refs_{1};            // the owner + blocks handed out
};

}  // namespace rill::detail

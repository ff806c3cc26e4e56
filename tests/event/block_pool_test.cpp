// BlockPool: blocks come back to their pool and are reused; classes fit
// their sizes; a pool outlives its owner until its last block returns;
// blocks released on other threads return safely (run under TSan/ASan).
#include <catch2/catch.hpp>

#include <cstring>
#include <thread>
#include <vector>

#include "event/block_pool.hpp"

using rill::detail::BlockPool;
using rill::detail::BufferRep;

namespace {

// Fills a block's bytes and checks them back (ASan: stays inside the block).
bool fill_and_check(BufferRep* b, std::size_t size, char seed) {
  for (std::size_t i = 0; i < size; ++i) b->bytes()[i] = char(seed + char(i));
  if (b->size != size) return false;
  for (std::size_t i = 0; i < size; ++i) {
    if (b->data[i] != char(seed + char(i))) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("released blocks are reused: a steady stream makes no new blocks", "[block_pool]") {
  BlockPool* pool = BlockPool::create();
  std::vector<BufferRep*> live;
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < 10; ++i) {
      BufferRep* b = pool->allocate(1000);
      REQUIRE(fill_and_check(b, 1000, char(round)));
      live.push_back(b);
    }
    for (BufferRep* b : live) b->release();
    live.clear();
  }
  CHECK(pool->blocks() == 10);
  pool->release_owner();
}

TEST_CASE("every size up to the largest class fits its block; larger ones are not pooled", "[block_pool]") {
  BlockPool* pool = BlockPool::create();
  for (std::size_t size : {std::size_t{1}, std::size_t{127}, std::size_t{128}, std::size_t{129}, std::size_t{1024},
                           std::size_t{1025}, std::size_t{8191}, BlockPool::kMaxBlock}) {
    BufferRep* b = pool->allocate(size);
    CHECK(fill_and_check(b, size, 7));
    b->release();
  }
  const std::size_t pooled = pool->blocks();
  BufferRep* big = pool->allocate(BlockPool::kMaxBlock + 1);
  CHECK(fill_and_check(big, BlockPool::kMaxBlock + 1, 3));
  big->release();
  CHECK(pool->blocks() == pooled);
  pool->release_owner();
}

TEST_CASE("a class at its cap hands out unpooled blocks", "[block_pool]") {
  BlockPool* pool = BlockPool::create();
  const std::size_t cap = BlockPool::kClassBytes / BlockPool::kMaxBlock;
  std::vector<BufferRep*> held;
  for (std::size_t i = 0; i < cap + 5; ++i) held.push_back(pool->allocate(BlockPool::kMaxBlock));
  CHECK(pool->blocks() == cap);
  for (BufferRep* b : held) b->release();
  pool->release_owner();
}

TEST_CASE("blocks outlive their pool's owner and come back from other threads", "[block_pool]") {
  BlockPool* pool = BlockPool::create();
  std::vector<BufferRep*> first, second;
  for (int i = 0; i < 2000; ++i) (i % 2 ? first : second).push_back(pool->allocate(std::size_t(100 + i % 900)));
  // One thread releases its share while the owner keeps allocating and
  // releasing; then the owner leaves and another thread returns the rest.
  std::thread a([&] {
    for (BufferRep* b : first) b->release();
  });
  for (int i = 0; i < 2000; ++i) {
    BufferRep* b = pool->allocate(512);
    REQUIRE(fill_and_check(b, 512, char(i)));
    b->release();
  }
  a.join();
  pool->release_owner();
  std::thread b([&] {
    for (BufferRep* r : second) {
      r->retain();  // a second holder, as a consumer's Event
      r->release();
      r->release();  // the last: the pool frees itself after the last one
    }
  });
  b.join();
}

TEST_CASE("reuse hands back a block only to its pool, in its class, when the caller's is the only reference",
          "[block_pool]") {
  BlockPool* pool = BlockPool::create();
  BlockPool* other = BlockPool::create();
  BufferRep* b = pool->allocate(1000);  // class 1024
  REQUIRE(fill_and_check(b, 1000, 1));

  CHECK(pool->reuse(nullptr, 1000) == nullptr);
  CHECK(other->reuse(b, 1000) == nullptr);                           // another pool's
  CHECK(pool->reuse(b, 500) == nullptr);                             // a smaller class
  CHECK(pool->reuse(b, 1025) == nullptr);                            // a larger class
  CHECK(pool->reuse(b, BlockPool::kMaxBlock + 1) == nullptr);        // unpooled sizes
  b->retain();                                                       // an Event shares it
  CHECK(pool->reuse(b, 1000) == nullptr);
  b->release();
  BufferRep* unpooled = BufferRep::allocate(1000);
  CHECK(pool->reuse(unpooled, 1000) == nullptr);
  unpooled->release();

  // Sole holder, same class: the same block, resized, with one reference.
  REQUIRE(pool->reuse(b, 1024) == b);
  CHECK(b->size == 1024);
  CHECK(b->refs.load() == 1);
  CHECK(fill_and_check(b, 1024, 2));
  REQUIRE(pool->reuse(b, 513) == b);  // the bottom of the class
  CHECK(fill_and_check(b, 513, 3));
  CHECK(pool->blocks() == 1);
  b->release();
  other->release_owner();
  pool->release_owner();
}

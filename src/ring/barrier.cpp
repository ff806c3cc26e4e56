#include "ring/barrier.hpp"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace rill::detail {

namespace {

bool register_expedited() noexcept {
  const long supported = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if (supported < 0 || !(supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) return false;
  return syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

std::atomic<int> fallback_word{0};

}  // namespace

bool heavy_barrier_available() noexcept {
  static const bool available = register_expedited();
  return available;
}

bool heavy_barrier() noexcept {
  if (heavy_barrier_available() && syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return true;
  fallback_word.fetch_add(1, std::memory_order_seq_cst);  // a local full barrier at least
  return false;
}

}  // namespace rill::detail

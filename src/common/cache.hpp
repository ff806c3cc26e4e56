// Cache-line size used to keep independently written atomics apart.
#pragma once

#include <cstddef>
#include <thread>

namespace rill::detail {

// std::hardware_destructive_interference_size is 64 on the targets rill
// supports, but GCC warns that its value may differ between compilations
// (ABI hazard), so the constant is spelled out. Adjacent-line prefetch on
// x86 makes 128 tempting; 64 keeps slots and gates compact and measured best.
inline constexpr std::size_t kCacheLine = 64;

// One pause instruction: tells the core we are spinning (saves power and
// frees the sibling hyperthread).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// One step of a short wait for another thread's store: a pause for the
// first `spins` steps, then a yield (the other thread may be preempted, and
// on a busy machine it may need this core to finish).
inline void pause_or_yield(int step, int spins) noexcept {
  if (step < spins) {
    cpu_relax();
  } else {
    std::this_thread::yield();
  }
}

// Asks for the cache line at p ahead of a read.
inline void prefetch_for_read(const void* p) noexcept { __builtin_prefetch(p, 0, 3); }

}  // namespace rill::detail

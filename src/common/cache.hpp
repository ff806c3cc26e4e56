// Cache-line size used to keep independently written atomics apart.
#pragma once

#include <cstddef>

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

}  // namespace rill::detail

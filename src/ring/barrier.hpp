// An asymmetric store-load barrier, for handshakes where one side runs per
// event and the other rarely (a publisher vs. a thread going to sleep).
//
// The fast side calls light_barrier(): a compiler barrier only, no
// instruction. The slow side calls heavy_barrier(): Linux membarrier
// (PRIVATE_EXPEDITED) makes every running thread of the process execute a
// full memory barrier before it returns. For a handshake
//     fast: store(A); light_barrier(); load(B)
//     slow: store(B); heavy_barrier(); load(A)
// either the fast side's load runs after the barrier reached its CPU (and
// sees B) or its store(A) was made visible by that barrier (and the slow
// side sees A). Thread-safe; no allocation.
#pragma once

#include <atomic>

namespace rill::detail {

inline void light_barrier() noexcept { std::atomic_signal_fence(std::memory_order_seq_cst); }

// Returns true when the kernel provided the process-wide barrier; false
// when it does not (then callers must not rely on the handshake alone:
// Doorbell sleeps in short slices instead). ~1 us per call.
bool heavy_barrier() noexcept;

// True when heavy_barrier() is the process-wide barrier: the kernel has
// membarrier PRIVATE_EXPEDITED and this process is registered for it
// (decided on the first call, by either function; a registered process's
// barrier does not fail). A fast side that relies on the handshake alone
// asks this once and, when false, uses full barriers itself.
bool heavy_barrier_available() noexcept;

}  // namespace rill::detail

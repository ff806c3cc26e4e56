// SequencedRing: one partition's ring, sequenced in the style of the LMAX
// Disruptor, with a cursor ("gate") per attached consumer.
//
// Sequence numbers are event offsets: seq s lives in slot s & (capacity-1).
//  * published_  — every seq below it is written and visible (release/acquire).
//  * gates       — one per attached consumer, each on its own cache line:
//                  the consumer's next unacked seq. A producer may write seq s
//                  only when s < min(gates) + capacity, so an unacked event is
//                  never overwritten.
//  * floor_      — seqs below it may be overwritten. A consumer attaching
//                  late clamps its start to floor_, which is how it learns
//                  what is still readable.
//
// Producers cache their write limit and rescan the gates only when the cache
// says "full" (refresh_limit). Single-producer rings publish with one store;
// multi-producer rings claim with a CAS under the cached limit (so a claim
// never waits for space it holds, and a closing topic can refuse it) and
// publish in claim order, so consumers read one cursor and
// timestamps stay non-decreasing — without a producer ever waiting for
// another's claim (mp_publish): a claim finished before an earlier one is
// marked written, and whoever next moves or reads the published cursor
// publishes it. (Waiting for one's turn instead collapsed into a convoy, one
// context switch per event, whenever producers outnumbered cores and one
// was preempted mid-claim.)
//
// Attaching while producers run (the subtle part): a producer's limit comes
// from a gate scan; a consumer attaching during that scan could be missed.
// refresh_limit therefore stores floor_ (seq_cst) and scans the gates again;
// attach stores its gate (seq_cst) and then loads floor_. One of the two
// sees the other: either the producer's limit respects the new gate, or the
// consumer raises its start to a floor the limit already respects.
//
// Lossy rings (OverflowPolicy::kDropOldest, and durable topics) never wait
// for consumers: a producer pushes lagging gates forward instead — except
// "hard" gates (a durable topic's writer), which it waits for as usual. A consumer copying slots
// pins the first seq it copies; a producer whose new limit would overwrite a
// pinned seq waits for that copy to finish (a few hundred ns), never for the
// consumer's pace. Every refresh checks every pin: a gate another producer
// pushed is no proof that its consumer's copy has finished.
//
// Thread-safety: producer methods are safe from several threads (multi-
// producer) or one (single-producer sp_* state); consumer methods touch only
// their own gate; published() is safe from any thread (it may publish
// marked multi-producer claims); attach/detach must be serialized by the
// caller.
// Allocation: only in the constructor.
#pragma once

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>

#include "common/cache.hpp"
#include "rill/detail/publish_lane.hpp"

namespace rill::detail {

// SequencedRing's OnPublish policy: what happens to a value as it becomes
// visible (below). The default does nothing.
struct NothingOnPublish {
  template <class T>
  void operator()(T&, std::int64_t&) const noexcept {}
};

// OnPublish: called as `on_publish(value, last)` for each multi-producer
// value just before it becomes visible, in seq order, one at a time, on
// whichever thread publishes it; `last` is ring state it may keep between
// calls (rill: the last timestamp, so that stamps never go back).
template <class T, class OnPublish = NothingOnPublish>
class SequencedRing {
 public:
  static constexpr std::uint64_t kDetached = ~std::uint64_t{0};
  static constexpr std::uint64_t kNoPin = ~std::uint64_t{0};

  struct alignas(kCacheLine) Gate {
    std::atomic<std::uint64_t> next{kDetached};  // the consumer's next unacked seq
    std::atomic<std::uint64_t> pin{kNoPin};      // lossy rings: first seq being copied
    std::atomic<bool> hard{false};               // never pushed (lossy rings)
  };

  // REQUIRES: capacity is a power of two >= 2; max_gates >= 1. The first
  // seq written is `start` (a durable partition reopened after restart).
  SequencedRing(std::uint64_t capacity, std::uint32_t max_gates, bool lossy, std::uint64_t start = 0)
      : capacity_(capacity),
        mask_(capacity - 1),
        chunk_(capacity / 8 ? capacity / 8 : 1),
        lossy_(lossy),
        max_gates_(max_gates),
        slots_(new Slot[capacity]),
        gates_(new Gate[max_gates]),
        written_(new std::atomic<std::uint64_t>[capacity]()) {
    assert(capacity >= 2 && (capacity & (capacity - 1)) == 0 && "ring capacity must be a power of two");
    assert(max_gates >= 1);
    published_.store(start, std::memory_order_relaxed);
    floor_.store(start, std::memory_order_relaxed);
    mp_.claim.store(start, std::memory_order_relaxed);
    mp_.limit.store(start, std::memory_order_relaxed);
    sp_.state.next = start;
    sp_.state.limit = start;
  }

  SequencedRing(const SequencedRing&) = delete;
  SequencedRing& operator=(const SequencedRing&) = delete;

  std::uint64_t capacity() const noexcept { return capacity_; }
  bool lossy() const noexcept { return lossy_; }
  T& slot(std::uint64_t seq) noexcept { return slots_[seq & mask_].value; }
  const T& slot(std::uint64_t seq) const noexcept { return slots_[seq & mask_].value; }

  // Every seq below the result is readable. A reader that finds the next
  // claim marked written (mp_publish) publishes it first: every claim
  // becomes visible at the latest when someone looks.
  std::uint64_t published() noexcept {
    const std::uint64_t p = published_.load(std::memory_order_acquire);
    if (!marked(p)) [[likely]] return p;
    publish_marked();
    return published_.load(std::memory_order_acquire);
  }
  // Seqs below the result may be overwritten at any moment.
  std::uint64_t floor() const noexcept { return floor_.load(std::memory_order_seq_cst); }

  // ------------------------------------------------------------ producers

  // Returns an exclusive bound: every seq below it may be written now without
  // overwriting an unacked event (on a lossy ring: the bound is >= want_end,
  // after pushing lagging gates forward). Scans the gates: call it only when
  // the cached bound is too low. Thread-safe among producers.
  std::uint64_t refresh_limit(std::uint64_t want_end) noexcept {
    // Soft gates are pushed only as far as the hard gates let producers
    // overwrite: a pushed consumer may rely on the skipped seqs being past
    // every hard gate (a durable writer: on disk).
    if (lossy_ && want_end > capacity_) push_gates(std::min(want_end - capacity_, scan_gates(/*hard_only=*/true)));
    std::uint64_t lowest = scan_gates();
    std::uint64_t f;
    if (lowest == kDetached) {
      // Nobody reads: overwrite ahead in chunks so a refresh (and its fence)
      // is paid once per chunk, keeping the newest events for late attachers.
      f = want_end + chunk_ > capacity_ ? want_end + chunk_ - capacity_ : 0;
    } else {
      f = lowest;
    }
    raise(floor_, f);
    // A gate stored during the first scan that did not see the new floor
    // shows up here; every other late attacher sees the floor (see above).
    const std::uint64_t again = scan_gates();
    if (again < f) f = again;
    // Seqs below f may now be overwritten: wait out every copy in progress
    // there, whoever pushed the gate past it (another producer's cached
    // limit carries no handshake with the copying consumer).
    if (lossy_) wait_for_pins(f);
    return f + capacity_;
  }

  // Single producer: makes seqs below `end` visible. REQUIRES: written.
  // (rill's producers write and publish through sp_writer().commit.)
  void publish(std::uint64_t end) noexcept { published_.store(end, std::memory_order_release); }

  // Single-producer bookkeeping, touched only by the one producer thread.
  SingleProducerCursor& sp() noexcept { return sp_.state; }
  // The single producer's writer (the slots, its cursor, the published
  // cursor), for T whose slots are exactly T (no padding).
  SpWriter<T> sp_writer() noexcept {
    static_assert(sizeof(Slot) == sizeof(T), "sp_writer: slots must be exactly T");
    return {&slots_[0].value, mask_, &sp_.state, &published_};
  }

  // Multi-producer: the next seq a claim would get (a hint; others race).
  std::uint64_t mp_claimed() const noexcept { return mp_.claim.load(std::memory_order_relaxed); }
  // Every seq below the result was handed to a publisher: published, or
  // claimed and being written or waiting for an earlier claim (mp_publish).
  std::uint64_t handed_out() const noexcept {
    return std::max(published_.load(std::memory_order_acquire), mp_claimed());
  }
  // Multi-producer: claims n seqs only if they fit under the cached limit
  // (refreshing it once). Never waits. Returns the first seq, or nullopt.
  std::optional<std::uint64_t> try_claim(std::uint64_t n) noexcept {
    std::uint64_t c = mp_.claim.load(std::memory_order_relaxed);
    for (;;) {
      if (c + n > mp_.limit.load(std::memory_order_acquire)) {
        if (c + n > raise_mp_limit(refresh_limit(c + n))) return std::nullopt;
      }
      if (mp_.claim.compare_exchange_weak(c, c + n, std::memory_order_relaxed)) return c;
    }
  }
  // Multi-producer, before writing a claim: returns once [first, first+n)
  // lies within one ring of the published seqs, so that writing it
  // overwrites no earlier claim still unpublished (or its mark). Gates
  // never pass published seqs, so this binds only where producers outrun
  // the gates (lossy rings, rings nobody reads): a claim still being
  // written with a whole ring of claims behind it holds the next ones back
  // for the rest of its copy.
  void mp_wait_in_window(std::uint64_t first, std::uint64_t n) noexcept {
    for (int i = 0; first + n > published() + capacity_; ++i) pause_or_yield(i, 256);
  }

  // Multi-producer: publishes the claim [first, first+n), written by the
  // caller, without waiting for earlier claims. When every earlier claim is
  // published (the usual case) the caller publishes its own, and then any
  // later claims already marked. Otherwise it marks its seqs written and
  // publishes whatever marked claims are next; its own become visible when
  // the claim before them is published — by that claim's producer, by
  // another's mp_publish, or by the next published() call, whichever comes
  // first. No fence on the usual path: a mark that a racing publisher
  // misses is found by the next look (consumers look whenever they poll,
  // and every publish rings the data bell after its stores, so a sleeping
  // consumer wakes and looks). Never waits for another producer.
  void mp_publish(std::uint64_t first, std::uint64_t n) noexcept {
    const std::uint64_t end = first + n;
    if (published_.load(std::memory_order_acquire) == first) {
      // Unmarked, `first` can be published by no one else: ours.
      for (std::uint64_t s = first; s < end; ++s) on_publish_(slot(s), sp_.state.last_ts);
      published_.store(end, std::memory_order_release);
      if (!marked(end)) [[likely]] return;
    } else {
      for (std::uint64_t s = first; s < end; ++s) written_[s & mask_].store(s + 1, std::memory_order_release);
    }
    publish_marked();
  }

  // ------------------------------------------------------------ consumers

  // Attaches a gate at `pos` or later: returns the gate index and sets `pos`
  // to the start actually granted (raised to the floor when older events
  // may already be overwritten). nullopt when max_gates are attached.
  // REQUIRES: attach/detach calls are serialized by the caller.
  // A hard gate is never pushed forward on a lossy ring.
  std::optional<std::uint32_t> attach(std::uint64_t& pos, bool hard = false) noexcept {
    std::uint32_t i = 0;
    while (i < max_gates_ && gates_[i].next.load(std::memory_order_relaxed) != kDetached) ++i;
    if (i == max_gates_) return std::nullopt;
    if (gate_count_.load(std::memory_order_relaxed) <= i) gate_count_.store(i + 1, std::memory_order_seq_cst);
    gates_[i].pin.store(kNoPin, std::memory_order_relaxed);
    gates_[i].hard.store(hard, std::memory_order_relaxed);
    std::uint64_t p = pos;
    gates_[i].next.store(p, std::memory_order_seq_cst);
    for (;;) {
      const std::uint64_t f = floor_.load(std::memory_order_seq_cst);
      if (f <= p) break;
      p = f;
      raise(gates_[i].next, p);
    }
    pos = gates_[i].next.load(std::memory_order_seq_cst);
    return i;
  }

  // Frees the gate; producers stop gating on it at their next refresh.
  void detach(std::uint32_t gate) noexcept {
    gates_[gate].pin.store(kNoPin, std::memory_order_release);
    gates_[gate].next.store(kDetached, std::memory_order_seq_cst);
  }

  // The consumer acked every seq below `next`.
  void ack(std::uint32_t gate, std::uint64_t next) noexcept {
    if (lossy_) {
      raise(gates_[gate].next, next);  // a producer may have pushed it further
    } else {
      gates_[gate].next.store(next, std::memory_order_release);
    }
  }

  // Moves a gate forward (positioning after attach, e.g. by timestamp).
  void advance(std::uint32_t gate, std::uint64_t next) noexcept { raise(gates_[gate].next, next); }

  std::uint64_t gate_next(std::uint32_t gate) const noexcept {
    return gates_[gate].next.load(std::memory_order_seq_cst);
  }

  // Lossy rings: before copying seqs from `first` on, pin them. Returns the
  // first seq that is safe to copy (>= first: the gate may have been pushed
  // past `first`, which then was overwritten). unpin() when the copy is done.
  std::uint64_t pin(std::uint32_t gate, std::uint64_t first) noexcept {
    Gate& g = gates_[gate];
    for (;;) {
      g.pin.store(first, std::memory_order_seq_cst);
      const std::uint64_t next = g.next.load(std::memory_order_seq_cst);
      if (next <= first) return first;
      first = next;
    }
  }
  void unpin(std::uint32_t gate) noexcept { gates_[gate].pin.store(kNoPin, std::memory_order_release); }

 private:
  struct alignas(kCacheLine) Slot {
    T value{};
  };

  // True when the claim holding seq s was marked written (mp_publish).
  bool marked(std::uint64_t s) const noexcept { return written_[s & mask_].load(std::memory_order_acquire) == s + 1; }

  // Publishes marked seqs from the published cursor on, one thread at a
  // time (publishing_; a thread that finds it held leaves them to the
  // holder, which looks again after letting go). A seq is marked only by a
  // producer that found an earlier claim unpublished, so no one publishes
  // it directly: the holder's stores to published_ and on_publish_'s state
  // never race with a direct publish (which starts only once published_
  // reaches its own, unmarked claim).
  void publish_marked() noexcept {
    while (marked(published_.load(std::memory_order_acquire))) {
      if (publishing_.exchange(true, std::memory_order_acquire)) return;
      const std::uint64_t from = published_.load(std::memory_order_acquire);
      std::uint64_t p = from;
      for (; marked(p); ++p) on_publish_(slot(p), sp_.state.last_ts);
      if (p != from) published_.store(p, std::memory_order_release);
      publishing_.store(false, std::memory_order_release);
    }
  }

  static void raise(std::atomic<std::uint64_t>& a, std::uint64_t v) noexcept {
    std::uint64_t cur = a.load(std::memory_order_seq_cst);
    while (cur < v && !a.compare_exchange_weak(cur, v, std::memory_order_seq_cst)) {
    }
  }

  std::uint64_t raise_mp_limit(std::uint64_t v) noexcept {
    raise(mp_.limit, v);
    return mp_.limit.load(std::memory_order_acquire);
  }

  std::uint64_t scan_gates(bool hard_only = false) const noexcept {
    std::uint64_t lowest = kDetached;
    const std::uint32_t n = gate_count_.load(std::memory_order_seq_cst);
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::uint64_t g = gates_[i].next.load(std::memory_order_seq_cst);
      if (hard_only && !gates_[i].hard.load(std::memory_order_relaxed)) continue;
      if (g < lowest) lowest = g;
    }
    return lowest;
  }

  // Lossy rings: every soft gate below `needed` jumps to it. A consumer
  // that pins after the jump sees it and reads on from there; one that
  // pinned before is waited for by wait_for_pins.
  void push_gates(std::uint64_t needed) noexcept {
    const std::uint32_t n = gate_count_.load(std::memory_order_seq_cst);
    for (std::uint32_t i = 0; i < n; ++i) {
      Gate& g = gates_[i];
      std::uint64_t cur = g.next.load(std::memory_order_seq_cst);
      if (cur == kDetached || cur >= needed || g.hard.load(std::memory_order_relaxed)) continue;
      raise(g.next, needed);
    }
  }

  // Lossy rings: returns once no consumer is copying a seq below `bound`.
  // A copy pins its first seq and then re-reads its gate (pin()); the gate
  // scan that produced `bound` came before these pin loads, so a consumer
  // either saw its gate at or past `bound` or shows its pin here. The
  // acquire load of the released unpin orders its copy before our writes.
  void wait_for_pins(std::uint64_t bound) const noexcept {
    const std::uint32_t n = gate_count_.load(std::memory_order_seq_cst);
    for (std::uint32_t i = 0; i < n; ++i) {
      const Gate& g = gates_[i];
      while (g.pin.load(std::memory_order_seq_cst) < bound) std::this_thread::yield();
    }
  }

  const std::uint64_t capacity_;
  const std::uint64_t mask_;
  const std::uint64_t chunk_;
  const bool lossy_;
  const std::uint32_t max_gates_;
  std::unique_ptr<Slot[]> slots_;
  std::unique_ptr<Gate[]> gates_;
  // Multi-producer marks: written_[s & mask] == s + 1 once the claim holding
  // seq s is written and waits for the claims before it (mp_publish).
  std::unique_ptr<std::atomic<std::uint64_t>[]> written_;
  [[no_unique_address]] OnPublish on_publish_{};

  // Each independently written word on its own cache line.
  alignas(kCacheLine) std::atomic<std::uint64_t> published_{0};
  struct alignas(kCacheLine) {
    std::atomic<std::uint64_t> claim{0};
    std::atomic<std::uint64_t> limit{0};
  } mp_;
  alignas(kCacheLine) std::atomic<bool> publishing_{false};  // publish_marked's holder
  struct alignas(kCacheLine) {
    SingleProducerCursor state;
  } sp_;
  alignas(kCacheLine) std::atomic<std::uint64_t> floor_{0};
  alignas(kCacheLine) std::atomic<std::uint32_t> gate_count_{0};
};

}  // namespace rill::detail

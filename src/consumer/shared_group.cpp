// SharedGroup: dispatch, individual acks and redelivery for one name.
#include "consumer/shared_group.hpp"

#include <algorithm>

#include "common/clock.hpp"
#include "common/hash.hpp"
#include "storage/durable_log.hpp"

namespace rill::detail {

namespace {

// Rendezvous weight of (slot, instance): the instance with the highest
// weight owns the slot, so a join or leave moves only the slots it must.
std::uint64_t weight(std::uint64_t slot, std::uint64_t instance) noexcept {
  std::uint64_t x = (slot + 1) * 0x9e3779b97f4a7c15ull ^ instance * 0xbf58476d1ce4e5b9ull;
  x ^= x >> 31;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 29);
}

}  // namespace

SharedGroup::SharedGroup(TopicCore& topic, const std::vector<PartitionInit>& parts, bool keyed)
    : topic_(topic), keyed_(keyed), lossy_(!parts.empty() && topic.ring(parts[0].partition).lossy()) {
  if (keyed_) slots_.resize(kSlots);
  std::lock_guard<std::mutex> lock(mu_);
  for (const PartitionInit& init : parts) {
    auto p = std::make_unique<Part>();
    p->partition = init.partition;
    p->gate = init.gate;
    p->ring = &topic.ring(init.partition);
    p->base = init.start;
    p->dispatch.store(init.start, std::memory_order_relaxed);
    if (lossy_) p->window_end.store(init.start + window(*p), std::memory_order_relaxed);
    p->durable_acked = init.durable_acked;
    if (!init.acked_above.empty()) restore(*p, init.acked_above);
    parts_.push_back(std::move(p));
  }
}

void SharedGroup::restore(Part& p, const std::string& acked_above) {
  // Bit i: offset base + i was acked. Those not acked below the last acked
  // one are due for delivery, as if returned by an instance that left.
  std::size_t bits = acked_above.size() * 8;
  auto acked = [&](std::size_t i) { return (std::uint8_t(acked_above[i / 8]) >> (i % 8)) & 1; };
  while (bits > 0 && !acked(bits - 1)) --bits;
  if (bits == 0) return;
  scan_slots_.resize(bits);
  slots_of(p, p.base, p.base + bits, scan_slots_.data());
  std::size_t due = 0;
  for (std::size_t i = 0; i < bits; ++i) {
    Entry e;
    e.slot = scan_slots_[i];
    if (acked(i)) {
      e.acked = true;
    } else {
      e.queued = true;
      p.due.insert(p.base + i);
      ++due;
    }
    p.entries.push_back(e);
  }
  p.dispatch.store(p.base + bits, std::memory_order_relaxed);
  due_count_.fetch_add(due, std::memory_order_relaxed);
  settle(p);
}

std::vector<std::uint32_t> SharedGroup::partitions() const {
  std::vector<std::uint32_t> out;
  for (const auto& p : parts_) out.push_back(p->partition);
  return out;
}

bool SharedGroup::reads(std::uint32_t partition) const noexcept { return part_of(partition) != nullptr; }

std::uint32_t SharedGroup::gate(std::uint32_t partition) const noexcept {
  const Part* p = part_of(partition);
  return p ? p->gate : 0;
}

void SharedGroup::bump() noexcept {
  epoch_.fetch_add(1, std::memory_order_acq_rel);
  topic_.wake_consumers();
}

void SharedGroup::reassign_slots() {
  if (!keyed_) return;
  for (std::size_t s = 0; s < slots_.size(); ++s) {
    std::uint64_t best = 0, best_w = 0;
    for (std::uint64_t m : members_) {
      const std::uint64_t w = weight(s, m);
      if (best == 0 || w > best_w) {
        best = m;
        best_w = w;
      }
    }
    slots_[s].owner = best;
  }
}

void SharedGroup::join(std::uint64_t instance) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    members_.push_back(instance);
    reassign_slots();
  }
  instances_.fetch_add(1, std::memory_order_acq_rel);
  bump();  // keys moved to the newcomer; deferred events may be its now
}

std::size_t SharedGroup::leave(std::uint64_t instance) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::size_t returned = 0;
    for (auto& p : parts_) {
      for (std::size_t i = 0; i < p->entries.size(); ++i) {
        Entry& e = p->entries[i];
        if (e.holder != instance || e.acked) continue;
        unhold(e);
        if (!e.queued) {
          e.queued = true;
          p->due.insert(p->base + i);
          ++returned;
        }
      }
    }
    due_count_.fetch_add(returned, std::memory_order_release);
    members_.erase(std::remove(members_.begin(), members_.end(), instance), members_.end());
    reassign_slots();
  }
  const std::size_t left = instances_.fetch_sub(1, std::memory_order_acq_rel) - 1;
  bump();
  return left;
}

const SharedGroup::Part* SharedGroup::part_of(std::uint32_t partition) const noexcept {
  for (auto& p : parts_) {
    if (p->partition == partition) return p.get();
  }
  return nullptr;
}

SharedGroup::Entry* SharedGroup::find(Part& p, std::uint64_t offset) noexcept {
  if (offset < p.base || offset >= p.base + p.entries.size()) return nullptr;
  return &p.entries[offset - p.base];
}

bool SharedGroup::may_take(std::uint64_t instance, std::uint16_t slot) const noexcept {
  if (slot == kAnySlot) return true;
  const KeySlot& k = slots_[slot];
  return k.owner == instance && (k.held == 0 || k.holder == instance);
}

void SharedGroup::hand(Entry& e, std::uint64_t instance) noexcept {
  e.holder = instance;
  e.queued = false;
  ++e.deliveries;
  if (e.slot != kAnySlot) {
    KeySlot& k = slots_[e.slot];
    k.holder = instance;
    ++k.held;
  }
}

void SharedGroup::unhold(Entry& e) noexcept {
  e.holder = 0;
  if (e.slot != kAnySlot) {
    KeySlot& k = slots_[e.slot];
    if (--k.held == 0) k.holder = 0;
  }
}

std::uint16_t SharedGroup::ring_slot(const Part& p, std::uint64_t offset) const noexcept {
  const EventRecord& r = p.ring->slot(offset);
  if (r.key_size == 0) return kAnySlot;
  return std::uint16_t(hash_key(std::string_view(r.head(), r.key_size)) % kSlots);
}

void SharedGroup::slots_of(Part& p, std::uint64_t from, std::uint64_t to, std::uint16_t* out) {
  std::fill(out, out + (to - from), kAnySlot);
  if (!keyed_ || from == to) return;
  std::uint64_t first = from;  // offsets below it are gone from the ring
  if (lossy_) {
    std::lock_guard<std::mutex> pin(pin_mu_);
    first = std::min(p.ring->pin(p.gate, from), to);
    for (std::uint64_t o = first; o < to; ++o) out[o - from] = ring_slot(p, o);
    p.ring->unpin(p.gate);
  } else {
    for (std::uint64_t o = from; o < to; ++o) out[o - from] = ring_slot(p, o);
  }
  DurableTopic* d = topic_.durable();
  if (first == from || !d) return;  // memory-only: dropped events are lost, any instance acks them
  std::uint64_t first_kept = 0;
  // A failed read leaves kAnySlot: the copy meets the same failure and
  // reports it to the instance that took the event.
  (void)d->log->store().read(
      d->stored.dbs[p.partition], from, first, std::size_t(first - from),
      [&](const StoredEvent& se) {
        if (!se.key.empty()) out[se.offset - from] = std::uint16_t(hash_key(se.key) % kSlots);
      },
      first_kept);
}

void SharedGroup::make_due(std::int64_t now_ns) {
  std::size_t moved = 0;
  auto it = delayed_.begin();
  for (; it != delayed_.end() && it->first <= now_ns; ++it) {
    auto [part, offset] = it->second;
    part->due.insert(offset);
    ++moved;
  }
  delayed_.erase(delayed_.begin(), it);
  earliest_delayed_.store(delayed_.empty() ? INT64_MAX : delayed_.begin()->first, std::memory_order_release);
  if (moved) due_count_.fetch_add(moved, std::memory_order_release);
}

std::size_t SharedGroup::take(std::uint64_t instance, std::size_t max, std::int64_t now_ns, std::uint32_t& partition,
                              std::uint64_t* offsets, std::int64_t& next_due_ns, std::uint64_t& skipped) {
  std::unique_lock<std::mutex> lock(mu_);
  make_due(now_ns);
  const std::size_t k = parts_.size();
  // Redeliveries first: they are the oldest work (keyed: only this
  // instance's keys, and only keys nobody else still holds).
  for (std::size_t j = 0; j < k; ++j) {
    Part& p = *parts_[(next_part_ + j) % k];
    std::size_t n = 0;
    for (auto it = p.due.begin(); it != p.due.end() && n < max;) {
      Entry& e = p.entries[*it - p.base];
      if (!may_take(instance, e.slot)) {
        ++it;
        continue;
      }
      hand(e, instance);
      offsets[n++] = *it;
      it = p.due.erase(it);
    }
    if (n == 0) continue;
    due_count_.fetch_sub(n, std::memory_order_release);
    next_part_ = (next_part_ + j + 1) % k;
    partition = p.partition;
    return n;
  }
  // New events, round-robin over the partitions. Keyed: events of keys
  // owned (or still held) elsewhere are deferred, in order, to `due`.
  bool deferred = false;
  for (std::size_t j = 0; j < k; ++j) {
    Part& p = *parts_[(next_part_ + j) % k];
    std::uint64_t from = p.dispatch.load(std::memory_order_relaxed);
    if (lossy_ && !topic_.durable() && p.entries.empty()) {
      // Nothing held: jump over what producers pushed the gate past.
      const std::uint64_t floor = p.ring->gate_next(p.gate);
      if (floor > from) {
        skipped += floor - from;
        from = p.base = floor;
        p.dispatch.store(from, std::memory_order_release);
        p.window_end.store(from + window(p), std::memory_order_release);
      }
    }
    const std::uint64_t available = topic_.visible(p.partition);
    const std::uint64_t scan_end = std::min({available, from + 4 * max, p.window_end.load(std::memory_order_relaxed)});
    std::size_t n = 0;
    std::size_t deferred_here = 0;
    // Keys in the ring are read in place (the gate holds them); a lossy
    // ring's are read for the whole scan under one pin.
    const bool pinned_scan = keyed_ && lossy_;
    if (pinned_scan && from < scan_end) {
      scan_slots_.resize(scan_end - from);
      slots_of(p, from, scan_end, scan_slots_.data());
    }
    const std::uint64_t scan_from = from;
    for (; from < scan_end && n < max; ++from) {
      Entry e;
      if (keyed_) e.slot = pinned_scan ? scan_slots_[from - scan_from] : ring_slot(p, from);
      if (may_take(instance, e.slot)) {
        hand(e, instance);
        offsets[n++] = from;
      } else {
        e.queued = true;
        p.due.insert(from);
        ++deferred_here;
      }
      p.entries.push_back(e);
    }
    p.dispatch.store(from, std::memory_order_release);
    if (deferred_here) {
      due_count_.fetch_add(deferred_here, std::memory_order_release);
      deferred = true;
    }
    if (n == 0) continue;
    next_part_ = (next_part_ + j + 1) % k;
    partition = p.partition;
    lock.unlock();
    if (deferred) bump();  // their owners may be asleep
    return n;
  }
  if (!delayed_.empty()) next_due_ns = std::min(next_due_ns, delayed_.begin()->first);
  lock.unlock();
  if (deferred) bump();
  return 0;
}

bool SharedGroup::has_work(std::uint64_t seen_epoch) const noexcept {
  if (keyed_) {
    // Due events may all belong to others: only a change is news.
    if (epoch() != seen_epoch) return true;
  } else if (due_count_.load(std::memory_order_acquire) > 0) {
    return true;
  }
  const std::int64_t delayed = earliest_delayed_.load(std::memory_order_acquire);
  if (delayed != INT64_MAX && delayed <= now_ns(false)) return true;
  for (const auto& p : parts_) {
    const std::uint64_t end = std::min(topic_.visible(p->partition), p->window_end.load(std::memory_order_acquire));
    if (end > p->dispatch.load(std::memory_order_acquire)) return true;
  }
  return false;
}

void SharedGroup::settle(Part& p) {
  std::uint64_t moved = 0;
  while (!p.entries.empty() && p.entries.front().acked) {
    p.entries.pop_front();
    ++moved;
  }
  if (moved == 0) return;
  p.base += moved;
  if (lossy_) p.window_end.store(p.base + window(p), std::memory_order_release);
  p.ring->ack(p.gate, p.base);
  if (p.durable_acked) raise_position(*p.durable_acked, p.base);
  topic_.after_ack();
}

bool SharedGroup::acks_snapshot(std::uint32_t partition, std::uint64_t& base, std::string& acked_above,
                                std::uint64_t& version) {
  std::lock_guard<std::mutex> lock(mu_);
  Part* p = part_of(partition);
  if (!p || p->version == p->saved_version) return false;
  version = p->version;
  base = p->base;
  std::size_t bits = p->entries.size();
  while (bits > 0 && !p->entries[bits - 1].acked) --bits;
  acked_above.assign((bits + 7) / 8, '\0');
  for (std::size_t i = 0; i < bits; ++i) {
    if (p->entries[i].acked) acked_above[i / 8] = char(std::uint8_t(acked_above[i / 8]) | (1u << (i % 8)));
  }
  return true;
}

void SharedGroup::acks_saved(std::uint32_t partition, std::uint64_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Part* p = part_of(partition)) p->saved_version = std::max(p->saved_version, version);
}

Status SharedGroup::ack(std::uint64_t instance, std::uint32_t partition, std::uint64_t offset) {
  bool freed_key = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Part* p = part_of(partition);
    Entry* e = p ? find(*p, offset) : nullptr;
    if (p && !e && offset < p->base) return Status::Ok();  // acked (and settled) before
    if (!e || (!e->acked && e->holder != instance)) {
      return Status::InvalidArgument("ack() of offset " + std::to_string(offset) + " in partition " +
                                     std::to_string(partition) +
                                     ", which this instance does not hold (redelivered to another, or never delivered)");
    }
    if (e->acked) return Status::Ok();
    e->acked = true;
    ++p->version;
    unhold(*e);
    freed_key = keyed_ && e->slot != kAnySlot && slots_[e->slot].held == 0 && due_count_.load() > 0;
    settle(*p);
  }
  if (DurableTopic* d = topic_.durable()) d->log->mark_acks_dirty();
  if (freed_key) bump();  // events of this key may wait for their new owner
  return Status::Ok();
}

Result<std::uint32_t> SharedGroup::nack(std::uint64_t instance, std::uint32_t partition, std::uint64_t offset,
                                        std::int64_t delay_ns, std::int64_t now_ns, std::uint32_t max_deliveries,
                                        bool& dead) {
  dead = false;
  std::unique_lock<std::mutex> lock(mu_);
  Part* p = part_of(partition);
  Entry* e = p ? find(*p, offset) : nullptr;
  if (!e || e->acked || e->holder != instance) {
    return Status::InvalidArgument("nack() of offset " + std::to_string(offset) + " in partition " +
                                   std::to_string(partition) + ", which this instance does not hold");
  }
  const std::uint32_t deliveries = e->deliveries;
  if (max_deliveries > 0 && deliveries >= max_deliveries) {
    dead = true;  // stays held: the caller dead-letters it, then acks it
    return deliveries;
  }
  unhold(*e);
  e->queued = true;
  if (delay_ns <= 0) {
    p->due.insert(offset);
    due_count_.fetch_add(1, std::memory_order_release);
  } else {
    // Saturated: a delay of kForever (or near it) is due never, not at once.
    const std::int64_t due = delay_ns >= INT64_MAX - now_ns ? INT64_MAX : now_ns + delay_ns;
    delayed_.emplace(due, std::make_pair(p, offset));
    earliest_delayed_.store(delayed_.begin()->first, std::memory_order_release);
  }
  lock.unlock();
  bump();
  return deliveries;
}

}  // namespace rill::detail

// SharedGroup: dispatch, individual acks and redelivery for one name.
#include "consumer/shared_group.hpp"

#include <algorithm>

#include "common/clock.hpp"

namespace rill::detail {

SharedGroup::SharedGroup(TopicCore& topic, const std::vector<PartitionInit>& parts) : topic_(topic) {
  for (const PartitionInit& init : parts) {
    auto p = std::make_unique<Part>();
    p->partition = init.partition;
    p->gate = init.gate;
    p->ring = &topic.ring(init.partition);
    p->base = init.start;
    p->dispatch.store(init.start, std::memory_order_relaxed);
    parts_.push_back(std::move(p));
  }
}

std::vector<std::uint32_t> SharedGroup::partitions() const {
  std::vector<std::uint32_t> out;
  for (const auto& p : parts_) out.push_back(p->partition);
  return out;
}

void SharedGroup::join() noexcept { instances_.fetch_add(1, std::memory_order_acq_rel); }

std::size_t SharedGroup::leave(std::uint64_t instance) {
  std::size_t returned = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& p : parts_) {
      for (std::size_t i = 0; i < p->entries.size(); ++i) {
        Entry& e = p->entries[i];
        if (e.holder != instance || e.acked) continue;
        e.holder = 0;
        if (!e.queued) {
          e.queued = true;
          p->due.insert(p->base + i);
          ++returned;
        }
      }
    }
    due_count_.fetch_add(returned, std::memory_order_release);
  }
  const std::size_t left = instances_.fetch_sub(1, std::memory_order_acq_rel) - 1;
  if (returned) topic_.wake_consumers();
  return left;
}

SharedGroup::Part* SharedGroup::part_of(std::uint32_t partition) noexcept {
  for (auto& p : parts_) {
    if (p->partition == partition) return p.get();
  }
  return nullptr;
}

SharedGroup::Entry* SharedGroup::find(Part& p, std::uint64_t offset) noexcept {
  if (offset < p.base || offset >= p.base + p.entries.size()) return nullptr;
  return &p.entries[offset - p.base];
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
                              std::uint64_t* offsets, std::int64_t& next_due_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  make_due(now_ns);
  const std::size_t k = parts_.size();
  // Redeliveries first: they are the oldest work.
  for (std::size_t j = 0; j < k; ++j) {
    Part& p = *parts_[(next_part_ + j) % k];
    if (p.due.empty()) continue;
    std::size_t n = 0;
    while (n < max && !p.due.empty()) {
      const std::uint64_t o = *p.due.begin();
      p.due.erase(p.due.begin());
      Entry& e = p.entries[o - p.base];
      e.queued = false;
      e.holder = instance;
      ++e.deliveries;
      offsets[n++] = o;
    }
    due_count_.fetch_sub(n, std::memory_order_release);
    next_part_ = (next_part_ + j + 1) % k;
    partition = p.partition;
    return n;
  }
  // New events, round-robin over the partitions.
  for (std::size_t j = 0; j < k; ++j) {
    Part& p = *parts_[(next_part_ + j) % k];
    const std::uint64_t from = p.dispatch.load(std::memory_order_relaxed);
    const std::uint64_t available = topic_.visible(p.partition);
    if (available <= from) continue;
    const std::size_t n = std::size_t(std::min<std::uint64_t>(available - from, max));
    for (std::size_t i = 0; i < n; ++i) {
      p.entries.push_back(Entry{instance, 1, false, false});
      offsets[i] = from + i;
    }
    p.dispatch.store(from + n, std::memory_order_release);
    next_part_ = (next_part_ + j + 1) % k;
    partition = p.partition;
    return n;
  }
  if (!delayed_.empty()) next_due_ns = std::min(next_due_ns, delayed_.begin()->first);
  return 0;
}

bool SharedGroup::has_work() const noexcept {
  if (due_count_.load(std::memory_order_acquire) > 0) return true;
  const std::int64_t delayed = earliest_delayed_.load(std::memory_order_acquire);
  if (delayed != INT64_MAX && delayed <= now_ns(false)) return true;
  for (const auto& p : parts_) {
    if (topic_.visible(p->partition) > p->dispatch.load(std::memory_order_acquire)) return true;
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
  p.ring->ack(p.gate, p.base);
  topic_.after_ack();
}

Status SharedGroup::ack(std::uint64_t instance, std::uint32_t partition, std::uint64_t offset) {
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
  e->holder = 0;
  settle(*p);
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
  e->holder = 0;
  e->queued = true;
  if (delay_ns <= 0) {
    p->due.insert(offset);
    due_count_.fetch_add(1, std::memory_order_release);
  } else {
    delayed_.emplace(now_ns + delay_ns, std::make_pair(p, offset));
    earliest_delayed_.store(delayed_.begin()->first, std::memory_order_release);
  }
  lock.unlock();
  topic_.wake_consumers();
  return deliveries;
}

}  // namespace rill::detail

#include "topic/topic_core.hpp"

#include <string>

namespace rill::detail {

Status validate_topic_options(const TopicOptions& o) {
  if (o.partitions < 1 || o.partitions > 1024) {
    return Status::InvalidArgument("partitions is " + std::to_string(o.partitions) + "; it must be in [1, 1024]");
  }
  if (o.capacity < 2 || o.capacity > (1u << 24) || (o.capacity & (o.capacity - 1)) != 0) {
    return Status::InvalidArgument("capacity is " + std::to_string(o.capacity) +
                                   "; it must be a power of two in [2, 16777216]");
  }
  if (o.max_event_size < 1 || o.max_event_size > (1u << 30)) {
    return Status::InvalidArgument("max_event_size is " + std::to_string(o.max_event_size) +
                                   "; it must be in [1, 1073741824]");
  }
  if (o.max_consumers < 1 || o.max_consumers > 1024) {
    return Status::InvalidArgument("max_consumers is " + std::to_string(o.max_consumers) +
                                   "; it must be in [1, 1024]");
  }
  return Status::Ok();
}

TopicCore::TopicCore(std::string name, const TopicOptions& options, std::unique_ptr<DurableTopic> durable)
    : name_(std::move(name)),
      options_(options),
      blocking_(options.wait == WaitStrategy::kBlocking),
      durable_(std::move(durable)) {
  rings_.reserve(options_.partitions);
  for (std::uint32_t p = 0; p < options_.partitions; ++p) {
    if (durable_) {
      // One more gate than consumers: the writer's.
      DurablePartition& dp = durable_->parts[p];
      rings_.push_back(std::make_unique<EventRing>(options_.capacity, options_.max_consumers + 1, true, dp.state.next));
      std::uint64_t start = dp.state.next;
      dp.writer_gate = *rings_.back()->attach(start, /*hard=*/true);
    } else {
      rings_.push_back(std::make_unique<EventRing>(options_.capacity, options_.max_consumers,
                                                   options_.overflow == OverflowPolicy::kDropOldest));
    }
  }
}

TopicCore::~TopicCore() {
  for (auto& ring : rings_) {
    for (std::uint64_t i = 0; i < ring->capacity(); ++i) ring->slot(i).reset();
  }
}

void TopicCore::close() noexcept {
  closed_.store(true, std::memory_order_seq_cst);
  wake_consumers();
  space_bell_.wake_all();
}

TopicCore::NameState& TopicCore::name_state(const std::string& name) {
  auto it = names_.find(name);
  if (it == names_.end()) {
    NameState s;
    s.gate.assign(options_.partitions, kNoGate);
    s.live.assign(options_.partitions, false);
    if (durable_) {
      s.acked = std::make_unique<std::atomic<std::uint64_t>[]>(options_.partitions);
      for (std::uint32_t p = 0; p < options_.partitions; ++p) s.acked[p].store(kNoPosition, std::memory_order_relaxed);
      s.persisted.assign(options_.partitions, kNoPosition);
      s.acked_above.resize(options_.partitions);
    }
    it = names_.emplace(name, std::move(s)).first;
  }
  return it->second;
}

Status TopicCore::remove_name(const std::string& name) {
  {
    std::lock_guard<std::mutex> lock(registry_mu_);
    auto it = names_.find(name);
    if (it == names_.end()) {
      return Status::NotFound("topic '" + name_ + "' has no consumer named '" + name + "'");
    }
    for (bool live : it->second.live) {
      if (live) return Status::AlreadyExists("consumer '" + name + "' is live; close it before removing the name");
    }
    for (std::uint32_t p = 0; p < options_.partitions; ++p) {
      if (it->second.gate[p] != kNoGate) rings_[p]->detach(it->second.gate[p]);
    }
    if (durable_) removed_names_.push_back(it->first);
    names_.erase(it);
  }
  space_bell_.wake_all();  // producers held back by the name may proceed
  return Status::Ok();
}

void TopicCore::forget_if_unused(const std::string& name) {
  auto it = names_.find(name);
  if (it == names_.end()) return;
  for (std::uint32_t p = 0; p < options_.partitions; ++p) {
    if (it->second.gate[p] != kNoGate || it->second.live[p]) return;
    if (durable_ && it->second.acked[p].load(std::memory_order_relaxed) != kNoPosition) return;
  }
  names_.erase(it);
}

void TopicCore::restore_cursor(const std::string& name, std::uint32_t partition, std::uint64_t acked_next,
                               std::string acked_above) {
  std::lock_guard<std::mutex> lock(registry_mu_);
  NameState& ns = name_state(name);
  ns.acked[partition].store(acked_next, std::memory_order_relaxed);
  ns.persisted[partition] = acked_next;
  ns.acked_above[partition] = std::move(acked_above);
}

std::vector<std::string> TopicCore::names() const {
  std::lock_guard<std::mutex> lock(registry_mu_);
  std::vector<std::string> out;
  for (const auto& [name, state] : names_) out.push_back(name);
  return out;
}

Result<std::vector<std::uint64_t>> TopicCore::positions(const std::string& name) const {
  std::lock_guard<std::mutex> lock(registry_mu_);
  auto it = names_.find(name);
  if (it == names_.end()) return Status::NotFound("topic '" + name_ + "' has no consumer named '" + name + "'");
  const NameState& ns = it->second;
  std::vector<std::uint64_t> out(options_.partitions, kNoPosition);
  for (std::uint32_t p = 0; p < options_.partitions; ++p) {
    if (durable_) out[p] = ns.acked[p].load(std::memory_order_acquire);
    if (out[p] == kNoPosition && ns.gate[p] != kNoGate) out[p] = rings_[p]->gate_next(ns.gate[p]);
  }
  return out;
}

std::vector<PartitionStats> TopicCore::stats() const {
  std::vector<PartitionStats> out;
  for (std::uint32_t p = 0; p < options_.partitions; ++p) {
    EventRing* ring = rings_[p].get();  // published() may publish marked claims
    PartitionStats s;
    s.next_offset = ring->published();
    if (durable_) {
      s.earliest_offset = std::min(durable_->parts[p].earliest.load(std::memory_order_acquire), s.next_offset);
      s.committed_offset = durable_->parts[p].committed.load(std::memory_order_acquire);
    } else {
      const std::uint64_t held = s.next_offset > ring->capacity() ? s.next_offset - ring->capacity() : 0;
      s.earliest_offset = std::max(held, std::min(ring->floor(), s.next_offset));
      s.committed_offset = s.next_offset;
    }
    out.push_back(s);
  }
  return out;
}

}  // namespace rill::detail

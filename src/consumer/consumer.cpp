// The consume path. Hot path per batch: one acquire load of the partition's
// published cursor, a copy of each slot's used bytes into a reused Event
// (no allocation), and on ack one release store of the gate (plus, with the
// blocking wait strategy, one fence and a load to wake a sleeping producer).
#include <algorithm>
#include <cassert>
#include <string>
#include <thread>
#include <utility>

#include "common/clock.hpp"
#include "common/dead_letter.hpp"
#include "common/names.hpp"
#include "consumer/consumer_impl.hpp"
#include "consumer/shared_group.hpp"
#include "event/record_writer.hpp"
#include "producer/producer_impl.hpp"
#include "rill/json.hpp"
#include "ring/wait.hpp"

namespace rill {
namespace detail {

namespace {
std::atomic<std::uint64_t> next_consumer_id{1};

// The first seq in [lo, hi) whose timestamp is >= t, or hi. Timestamps are
// non-decreasing within a partition. REQUIRES: the caller keeps [lo, hi)
// from being overwritten (a gate or a pin).
std::uint64_t first_at_or_after(EventRing& ring, std::uint64_t lo, std::uint64_t hi, std::int64_t t) {
  while (lo < hi) {
    const std::uint64_t mid = lo + (hi - lo) / 2;
    if (ring.slot(mid).timestamp_ns < t) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}
}  // namespace

ConsumerImpl::ConsumerImpl(std::shared_ptr<TopicCore> topic, ConsumerOptions options)
    : topic_(std::move(topic)),
      options_(std::move(options)),
      id_(next_consumer_id.fetch_add(1, std::memory_order_relaxed)),
      cursor_of_(topic_->partitions(), -1),
      batch_(options_.max_batch) {}

ConsumerImpl::~ConsumerImpl() {
  if (pulls_) pulls_->disown();
  detach();
}

const std::shared_ptr<PullQueue>& ConsumerImpl::pulls() {
  if (!pulls_) pulls_ = std::make_shared<PullQueue>(this, options_);
  return pulls_;
}

// Reserves this name on the requested partitions and attaches a gate in
// each, positioned per options. Called once, before the handle is shared.
Status ConsumerImpl::attach() {
  const std::uint32_t parts = topic_->partitions();
  std::vector<std::uint32_t> wanted = options_.partitions;
  if (wanted.empty()) {
    for (std::uint32_t p = 0; p < parts; ++p) wanted.push_back(p);
  }
  std::vector<bool> seen(parts, false);
  for (std::uint32_t p : wanted) {
    if (p >= parts) {
      return Status::InvalidArgument("partition " + std::to_string(p) + " is out of range; topic '" +
                                     topic_->name() + "' has " + std::to_string(parts));
    }
    if (seen[p]) return Status::InvalidArgument("partition " + std::to_string(p) + " is listed twice");
    seen[p] = true;
  }
  if (Status s = check_individual_acks(); !s.ok()) return s;

  std::lock_guard<std::mutex> lock(topic_->registry_mutex());
  if (topic_->closed()) return Status::Closed("topic '" + topic_->name() + "' is closed");
  TopicCore::NameState& ns = topic_->name_state(options_.name);
  if (individual()) {
    // Joining the name's live group (shared mode), or taking up its state.
    const bool keyed = options_.mode == ConsumerMode::kKeyShared;
    if (ns.group && ns.group->instances() > 0) {
      if (!sharing()) {
        return Status::AlreadyExists("consumer '" + options_.name + "' is live (shared) on topic '" +
                                     topic_->name() + "'");
      }
      if (ns.group->keyed() != keyed) {
        return Status::InvalidArgument("live instances of consumer '" + options_.name + "' use " +
                                       (keyed ? "kShared" : "kKeyShared") + "; all instances need the same mode");
      }
      if (ns.group->partitions() != wanted) {
        return Status::InvalidArgument("shared instances of consumer '" + options_.name +
                                       "' must read the same partitions");
      }
      return join_group(ns.group);
    }
    if (ns.group && ns.group->partitions() == wanted && ns.group->keyed() == keyed) {
      for (std::uint32_t p : wanted) {
        if (ns.live[p]) return name_is_live(p);
      }
      for (std::uint32_t p : wanted) ns.live[p] = true;
      return join_group(ns.group);
    }
  }
  for (std::uint32_t p : wanted) {
    if (ns.live[p]) {
      if (options_.mode == ConsumerMode::kStandby) {
        standby_.store(true, std::memory_order_release);  // wait for the active one (stand_by)
        return Status::Ok();
      }
      return name_is_live(p);
    }
  }
  standby_.store(false, std::memory_order_release);
  ns.group.reset();  // a cumulative consumer (or other partitions) starts from the gates
  for (std::uint32_t p : wanted) {
    if (topic_->durable()) {
      if (Status s = attach_durable(ns, p); !s.ok()) {
        undo_new_gates(ns);
        return s;
      }
      continue;
    }
    EventRing& ring = topic_->ring(p);
    const Position& pos = position_;
    const std::uint32_t owned = ns.gate[p];
    // Where the name's acks left off; a new name starts at the earliest held.
    const std::uint64_t acked_next = owned == TopicCore::kNoGate ? 0 : ring.gate_next(owned);
    std::uint64_t want = 0;
    bool counts_gap = false;
    switch (pos.kind()) {
      case Position::Kind::kEarliest: want = 0; break;
      case Position::Kind::kLatest: want = ring.published(); break;
      case Position::Kind::kUnread: want = acked_next; break;
      case Position::Kind::kOffset:
        // Never past the newest event: a gate ahead of the producer would
        // grant it room that readers still hold.
        want = std::min(pos.value(), ring.published());
        counts_gap = true;
        break;
      case Position::Kind::kTimestamp: want = 0; break;
    }
    std::uint64_t start = want;
    std::uint32_t gate = owned;
    if (owned != TopicCore::kNoGate && want >= acked_next) {
      ring.advance(owned, want);  // forward from the acked position: safe in place
      start = ring.gate_next(owned);
    } else {
      // A new name, or a move backwards: attach a fresh gate (clamped to what
      // is still held), and only then let go of the old one.
      std::optional<std::uint32_t> fresh = ring.attach(start);
      if (!fresh) {
        undo_new_gates(ns);
        return too_many_names(p);
      }
      if (owned != TopicCore::kNoGate) ring.detach(owned);
      if (owned == TopicCore::kNoGate) new_gates_.push_back(p);
      gate = *fresh;
      ns.gate[p] = gate;
    }
    if (pos.kind() == Position::Kind::kTimestamp) {
      // Binary search the held events (our gate protects them) for the first
      // timestamp >= t; timestamps are non-decreasing within a partition.
      const std::uint64_t lo = first_at_or_after(ring, start, ring.published(), std::int64_t(pos.value()));
      ring.advance(gate, lo);
      start = lo;
    }
    if (counts_gap && start > want) count(skipped_, start - want);
    cursor_of_[p] = int(cursors_.size());
    cursors_.push_back(Cursor{p, gate, start, start, &ring});
  }
  for (std::uint32_t p : wanted) ns.live[p] = true;
  attached_ = true;
  // Every write to a single-producer ring goes through SpWriter::commit,
  // which marks slots; lossy rings are read under pins, never by mark. (A
  // topic's rings are all lossy or none, all of one capacity.)
  const EventRing& ring0 = topic_->ring(0);
  marked_ = topic_->options().producers == ProducerMode::kSingle && !ring0.lossy() &&
            ring0.capacity() < (std::uint64_t{1} << 32);
  if (individual()) {
    // The name's first individual-ack instance: the group takes over the
    // cursors just positioned.
    std::vector<SharedGroup::PartitionInit> init;
    for (const Cursor& c : cursors_) {
      init.push_back({c.partition, c.gate, c.read, c.durable_acked});
      if (c.durable_acked) {
        // A restored cursor's individually acked set applies where the
        // group starts at the restored position.
        std::string& bits = ns.acked_above[c.partition];
        if (c.read == ns.persisted[c.partition]) init.back().acked_above = std::move(bits);
        bits.clear();
      }
    }
    ns.group = std::make_shared<SharedGroup>(*topic_, init, options_.mode == ConsumerMode::kKeyShared);
    cursors_.clear();
    std::fill(cursor_of_.begin(), cursor_of_.end(), -1);
    attached_ = false;
    return join_group(ns.group);
  }
  return Status::Ok();
}

Status ConsumerImpl::name_is_live(std::uint32_t p) const {
  return Status::AlreadyExists("consumer '" + options_.name + "' is already live on partition " + std::to_string(p) +
                               " of topic '" + topic_->name() + "'");
}

Status ConsumerImpl::check_individual_acks() {
  if (!individual()) {
    if (options_.max_redeliveries > 0 || !options_.dead_letter_topic.empty()) {
      return Status::InvalidArgument("max_redeliveries and dead_letter_topic need individual acks "
                                     "(ConsumerMode::kShared or ConsumerOptions::individual_acks)");
    }
    return Status::Ok();
  }
  if (options_.max_redeliveries > 0 && options_.dead_letter_topic.empty()) {
    return Status::InvalidArgument("max_redeliveries needs a dead_letter_topic to send exhausted events to");
  }
  if (!options_.dead_letter_topic.empty()) {
    dead_letter_ = topic_->sibling(options_.dead_letter_topic);
    if (!dead_letter_) {
      return Status::NotFound("dead-letter topic '" + options_.dead_letter_topic + "' does not exist on this bus");
    }
    if (dead_letter_->options().producers == ProducerMode::kSingle) {
      return Status::InvalidArgument("dead-letter topic '" + options_.dead_letter_topic +
                                     "' is single-producer; dead letters need a multi-producer topic");
    }
  }
  offsets_.resize(batch_.size());
  found_.resize(batch_.size());
  return Status::Ok();
}

Status ConsumerImpl::join_group(std::shared_ptr<SharedGroup> group) {
  group_ = std::move(group);
  group_->join(id_);
  attached_ = true;
  return Status::Ok();
}

Status ConsumerImpl::attach_durable(TopicCore::NameState& ns, std::uint32_t p) {
  EventRing& ring = topic_->ring(p);
  DurableTopic& d = *topic_->durable();
  DurablePartition& dp = d.parts[p];
  const Position& pos = position_;
  const std::uint64_t earliest = dp.earliest.load(std::memory_order_acquire);
  const std::uint64_t top = ring.published();
  const std::uint64_t acked = ns.acked[p].load(std::memory_order_acquire);
  std::uint64_t want = 0;
  switch (pos.kind()) {
    case Position::Kind::kEarliest: want = earliest; break;
    case Position::Kind::kLatest: want = top; break;
    case Position::Kind::kUnread: want = acked != kNoPosition ? acked : earliest; break;
    case Position::Kind::kOffset: want = pos.value(); break;
    case Position::Kind::kTimestamp: want = dp.committed.load(std::memory_order_acquire); break;
  }
  want = std::min(want, top);
  // On a durable ring the gate only serves the copy handshake with
  // producers (they push it forward rather than wait): events between
  // `want` and the gate are read from disk.
  std::uint32_t gate = ns.gate[p];
  if (gate == TopicCore::kNoGate) {
    std::uint64_t g = want;
    std::optional<std::uint32_t> fresh = ring.attach(g);
    if (!fresh) {
      return too_many_names(p);
    }
    gate = *fresh;
    ns.gate[p] = gate;
    new_gates_.push_back(p);
  } else {
    ring.advance(gate, want);
  }
  if (pos.kind() == Position::Kind::kTimestamp) {
    const std::int64_t t = std::int64_t(pos.value());
    for (;;) {
      const std::uint64_t base = dp.committed.load(std::memory_order_acquire);
      Result<std::uint64_t> lo = d.log->store().lower_bound_timestamp(d.stored.dbs[p], t, earliest, base);
      if (!lo.ok()) return lo.status();
      if (*lo < base) {
        want = *lo;
        break;
      }
      // Not on disk: search the ring's uncommitted tail, pinned against
      // producers; if `base` was overwritten meanwhile it is on disk now.
      if (ring.pin(gate, base) > base) {
        ring.unpin(gate);
        std::this_thread::yield();
        continue;
      }
      want = first_at_or_after(ring, base, ring.published(), t);
      ring.unpin(gate);
      break;
    }
  }
  if (acked == kNoPosition) ns.acked[p].store(want, std::memory_order_release);  // the name is now durable
  cursor_of_[p] = int(cursors_.size());
  cursors_.push_back(Cursor{p, gate, want, want, &ring, &dp, &ns.acked[p]});
  return Status::Ok();
}

std::size_t ConsumerImpl::read_disk(Cursor& c, std::uint64_t end, std::size_t max) {
  DurableTopic& d = *topic_->durable();
  std::size_t n = 0;
  std::uint64_t first_kept = end;
  Status s = d.log->store().read(
      d.stored.dbs[c.partition], c.read, end, max,
      [&](const StoredEvent& se) { deliver_stored(n++, se, c.partition); }, first_kept);
  if (topic_->closed()) {
    // Deleted meanwhile: the store hands its databases to the next topic
    // created, so what was read may not be this topic's.
    error_ = stopped_status();
    return 0;
  }
  if (!s.ok()) {
    error_ = std::move(s);
    return 0;
  }
  if (first_kept > c.read) {
    // Only retention deletes committed events, and it publishes the new
    // earliest offset after its commit: until then, read again later.
    if (c.read >= c.dp->earliest.load(std::memory_order_acquire)) return 0;
    if (!options_.jump_to_earliest) {
      error_ = Status::OutOfRange("offset " + std::to_string(c.read) + " of partition " +
                                  std::to_string(c.partition) + " of topic '" + topic_->name() +
                                  "' was deleted by retention; the earliest kept is " + std::to_string(first_kept));
      return 0;
    }
    count(skipped_, first_kept - c.read);
    c.read = first_kept;
    if (c.acked_next < first_kept) c.acked_next = first_kept;
  }
  c.read += n;
  count(delivered_, n);
  count(from_disk_, n);
  return n;
}

void ConsumerImpl::deliver_stored(std::size_t i, const StoredEvent& se, std::uint32_t partition) {
  Event& e = batch_[i];
  PreparedEvent prepared;
  const Message m{se.key, se.metadata, se.data, {}, 0};
  // Cannot fail: no total limit, and Store::read refuses a key or metadata
  // over its limit as corruption.
  (void)prepare_event(m, ~std::uint32_t{0}, prepared);
  write_record(e.record(), prepared, se.timestamp_ns);
  e.set_origin(EventId{partition, se.offset}, id_);
}

std::size_t ConsumerImpl::copy_group(std::uint32_t partition, std::size_t n) {
  EventRing& ring = topic_->ring(partition);
  if (!group_->lossy()) {
    // The group's gate (at the lowest unacked offset) protects every
    // offset handed out until it is acked: copy without a lock.
    for (std::size_t i = 0; i < n; ++i) deliver(i, ring.slot(offsets_[i]), EventId{partition, offsets_[i]});
    return n;
  }
  // Producers push a lossy ring's gates: pin, copy what is still in the
  // ring; offsets_[0, gone) (ascending) were dropped from it.
  std::size_t gone = 0;
  {
    std::lock_guard<std::mutex> pin(group_->pin_mutex());
    const std::uint32_t gate = group_->gate(partition);
    const std::uint64_t first = ring.pin(gate, offsets_[0]);
    while (gone < n && offsets_[gone] < first) ++gone;
    for (std::size_t i = gone; i < n; ++i) deliver(i, ring.slot(offsets_[i]), EventId{partition, offsets_[i]});
    ring.unpin(gate);
  }
  if (gone == 0) return n;
  // Durable: read them back, one read per run of consecutive offsets.
  // Memory-only, or deleted by retention: lost; acked as skipped.
  std::fill(found_.begin(), found_.begin() + std::ptrdiff_t(gone), false);
  if (DurableTopic* d = topic_->durable()) {
    for (std::size_t i = 0; i < gone;) {
      std::size_t j = i + 1;
      while (j < gone && offsets_[j] == offsets_[j - 1] + 1) ++j;
      std::uint64_t first_kept = 0;
      Status s = d->log->store().read(
          d->stored.dbs[partition], offsets_[i], offsets_[j - 1] + 1, j - i,
          [&](const StoredEvent& se) {
            const std::size_t at = i + std::size_t(se.offset - offsets_[i]);
            deliver_stored(at, se, partition);
            found_[at] = true;
            count(from_disk_, 1);
          },
          first_kept);
      if (!s.ok()) {
        // Nothing is lost: the events stay held by this instance; give them
        // back for redelivery and report the failure.
        bool dead = false;
        for (std::size_t k = 0; k < n; ++k) (void)group_->nack(id_, partition, offsets_[k], 0, 0, 0, dead);
        error_ = std::move(s);
        return 0;
      }
      i = j;
    }
    if (topic_->closed()) {  // deleted meanwhile: as read_disk
      error_ = stopped_status();
      return 0;
    }
  }
  std::size_t kept = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (i < gone && !found_[i]) {
      (void)group_->ack(id_, partition, offsets_[i]);
      count(skipped_, 1);
      continue;
    }
    if (kept != i) {
      batch_[kept] = std::move(batch_[i]);
      offsets_[kept] = offsets_[i];
    }
    ++kept;
  }
  return kept;
}

Status ConsumerImpl::too_many_names(std::uint32_t partition) const {
  return Status::ResourceExhausted("topic '" + topic_->name() + "' already has max_consumers (" +
                                   std::to_string(topic_->options().max_consumers) +
                                   ") consumer names on partition " + std::to_string(partition) +
                                   "; remove unused names with Topic::remove_consumer");
}

void ConsumerImpl::undo_new_gates(TopicCore::NameState& ns) noexcept {
  for (std::uint32_t p : new_gates_) {
    topic_->ring(p).detach(ns.gate[p]);
    ns.gate[p] = TopicCore::kNoGate;
  }
  new_gates_.clear();
  cursors_.clear();
  std::fill(cursor_of_.begin(), cursor_of_.end(), -1);
  topic_->forget_if_unused(options_.name);
}

void ConsumerImpl::detach() noexcept {
  // close() on another thread and the owner's destructor may both get here:
  // the registry mutex orders them, so attached_ is read under it.
  std::lock_guard<std::mutex> lock(topic_->registry_mutex());
  if (!attached_) return;
  TopicCore::NameState& ns = topic_->name_state(options_.name);
  if (group_) {  // what this instance holds unacked goes to the others
    if (group_->leave(id_) == 0) {
      for (std::uint32_t p : group_->partitions()) ns.live[p] = false;
    }
    group_.reset();
  }
  // The gates stay with the name, at the acked positions: unacked events
  // stay protected for the next consumer of this name.
  for (const Cursor& c : cursors_) ns.live[c.partition] = false;
  cursors_.clear();
  std::fill(cursor_of_.begin(), cursor_of_.end(), -1);
  attached_ = false;
  topic_->name_released();  // a standby of this name may take over
}

Status ConsumerImpl::stand_by(Deadline deadline) {
  for (;;) {
    const std::uint64_t epoch = topic_->release_epoch();
    // Take over from the last ack, whatever position this instance asked
    // for: the name's history belongs to the instance that went.
    position_ = Position::unread();
    if (Status s = attach(); !s.ok()) return s;
    if (!standby_.load(std::memory_order_acquire)) return Status::Ok();
    const bool changed = wait_until(WaitStrategy::kBlocking, topic_->data_bell(), deadline, [&] {
      return stopped() || topic_->release_epoch() != epoch;
    });
    if (stopped()) return stopped_status();
    if (!changed) return Status::TimedOut("standby: the active instance is still live");
  }
}

void ConsumerImpl::close() noexcept {
  if (close_requested_.exchange(true, std::memory_order_seq_cst)) return;
  topic_->wake_consumers();  // a blocked poll (single- or multi-topic) returns Closed
  // The handshake's slow side (see enter()): every thread of the process
  // passes a full barrier, so a call either shows in in_call_ now or sees
  // close_requested_ when it enters. A registered process's barrier fails
  // only transiently (the kernel allocating a CPU mask); should it keep
  // failing, the owner's next call or the destructor detaches instead.
  bool ordered = !asymmetric_;
  for (int tries = 0; !ordered && tries < 100; ++tries) {
    ordered = heavy_barrier();
    if (!ordered) std::this_thread::yield();
  }
  if (ordered && !in_call_.load(std::memory_order_seq_cst)) detach();  // else the call in flight detaches on leave()
}

bool ConsumerImpl::stopped() const noexcept {
  return close_requested_.load(std::memory_order_acquire) || topic_->closed();
}

std::size_t ConsumerImpl::take(Cursor& c, std::uint64_t available, std::size_t max) noexcept {
  EventRing& ring = *c.ring;
  std::uint64_t first = c.read;
  if (ring.lossy()) {
    first = ring.pin(c.gate, first);
    if (first > c.read) {
      if (c.dp) {  // durable: what the ring dropped is on disk
        ring.unpin(c.gate);
        return read_disk(c, first, max);
      }
      count(skipped_, first - c.read);
      c.read = first;
      if (c.acked_next < first) c.acked_next = first;
    }
    available = visible(c);
    if (available <= first) {
      ring.unpin(c.gate);
      return 0;
    }
  }
  const std::size_t n = std::size_t(std::min<std::uint64_t>(available - first, max));
  deliver_run(c, first, n, batch_.data());
  if (ring.lossy()) ring.unpin(c.gate);
  return n;
}

Result<std::span<const Event>> ConsumerImpl::poll_batch(std::size_t max, Timeout timeout) {
  const InCall call(*this);
  if (!call) return Status::Closed("consumer '" + options_.name + "' is closed");
  if (topic_->closed()) return stopped_status();  // its events are not handed out (acks would fail)
  if (standby_.load(std::memory_order_acquire)) {
    if (Status s = stand_by(deadline_after(timeout)); !s.ok()) return s;
  }
  max = std::clamp<std::size_t>(max, 1, batch_.size());
  if (group_) return poll_group(max, timeout);
  const std::uint64_t min_batch = std::min<std::uint64_t>(options_.min_batch, max);
  auto try_take = [&] {
    auto look = [&](const Cursor& c) { return visible(c); };
    return take_round_robin(look, [&](Cursor& c, std::uint64_t available) {
      if (available - c.read < min_batch && timeout != Timeout::zero()) {
        available = linger(c, available, c.read + min_batch, deadline_after(timeout));
      }
      return take(c, available, max);
    });
  };
  if (std::size_t n = try_take()) return std::span<const Event>(batch_.data(), n);
  if (!error_.ok()) return std::exchange(error_, Status::Ok());
  if (timeout == Timeout::zero()) {  // a try: no spinning (multi-topic consumers poll this way)
    if (stopped()) return stopped_status();
    return Status::TimedOut("no event within the timeout");
  }
  const Deadline deadline = deadline_after(timeout);
  std::size_t n = 0;
  wait_for_work(deadline);
  if (stopped()) return stopped_status();
  n = try_take();
  if (!error_.ok()) return std::exchange(error_, Status::Ok());
  if (n == 0) return Status::TimedOut("no event within the timeout");  // a literal: no allocation
  return std::span<const Event>(batch_.data(), n);
}

Result<Event> ConsumerImpl::poll_one(Timeout timeout) {
  // Every path returns `r` (named return value: an Event is not moved out).
  Result<Event> r(std::in_place);
  {
    const InCall call(*this);
    // A topic's rings are all lossy or none: take() pins lossy slots (and
    // reads what a durable one dropped from disk).
    if (call && !group_ && !standby_.load(std::memory_order_acquire) && !cursors_.empty() &&
        !cursors_.front().ring->lossy() && !topic_->closed()) {
      auto take_one = [&] {
        return take_round_robin([&](const Cursor& c) { return visible_one(c); },
                                [&](Cursor& c, std::uint64_t) {
                                  deliver_run(c, c.read, 1, &*r);
                                  return std::size_t{1};
                                }) != 0;
      };
      if (take_one()) return r;
      if (timeout != Timeout::zero()) {
        // Wait here rather than in poll_batch, so that the event this wait
        // is for goes straight into r too (a ping-pong always waits).
        wait_for_work(deadline_after(timeout));
        if (!stopped() && take_one()) return r;
      }
      // Not from poll_batch: its look reads the published cursor, and on a
      // marked ring a consumer that reads it makes the producer take that
      // line back before its next mark can show (spinning on poll(0)).
      if (!stopped()) {
        r = Status::TimedOut("no event within the timeout");
        return r;
      }
      timeout = Timeout::zero();  // poll_batch says which stop, without waiting
    }
  }
  Result<std::span<const Event>> batch = poll_batch(1, timeout);
  if (batch.ok()) {
    *r = (*batch)[0];
  } else {
    r = batch.status();
  }
  return r;
}

std::uint64_t ConsumerImpl::linger(const Cursor& c, std::uint64_t available, std::uint64_t want,
                                   Deadline poll_deadline) noexcept {
  // Look every kPauses pause instructions (~25 ns each on the bench VM).
  // After kSpinLooks looks (~25 us) a longer linger stops spinning, as the
  // topic's wait strategy says: kYield yields between looks, kBlocking
  // naps up to kNap (a long linger is a latency trade already; ringing the
  // data bell for it would cost every publish a wake-up).
  constexpr int kPauses = 8;
  constexpr int kSpinLooks = 128;
  constexpr auto kNap = std::chrono::microseconds(50);
  const WaitStrategy strategy = topic_->options().wait;
  const Deadline until = std::min(poll_deadline, deadline_after(options_.batch_linger));
  for (int look = 0; available < want; ++look) {
    if (look < kSpinLooks || strategy == WaitStrategy::kBusySpin) {
      for (int i = 0; i < kPauses; ++i) cpu_relax();
    } else if (strategy == WaitStrategy::kYield) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::min<SteadyClock::duration>(kNap, until - SteadyClock::now()));
    }
    available = visible(c);
    if (stopped() || SteadyClock::now() >= until) break;
  }
  return available;
}

Result<std::span<const Event>> ConsumerImpl::poll_group(std::size_t max, Timeout timeout) {
  const Deadline deadline = deadline_after(timeout);
  for (;;) {
    std::int64_t next_due = INT64_MAX;
    std::uint32_t partition = 0;
    const std::int64_t now = now_ns(false);
    const std::uint64_t epoch = group_->epoch();  // before take: a change after it wakes us
    std::uint64_t skipped = 0;
    const std::size_t taken = group_->take(id_, max, now, partition, offsets_.data(), next_due, skipped);
    if (skipped) count(skipped_, skipped);
    if (taken) {
      const std::size_t n = copy_group(partition, taken);
      if (!error_.ok()) return std::exchange(error_, Status::Ok());
      if (n == 0) continue;  // every one was lost: take again
      count(delivered_, n);
      return std::span<const Event>(batch_.data(), n);
    }
    if (stopped()) return stopped_status();
    if (SteadyClock::now() >= deadline) return Status::TimedOut("no event within the timeout");
    Deadline until = deadline;  // wake for the earliest delayed redelivery too
    const Deadline wake = SteadyClock::now();
    if (next_due != INT64_MAX && next_due - now < std::chrono::nanoseconds(deadline - wake).count()) {
      until = wake + std::chrono::nanoseconds(next_due - now);
    }
    wait_until(topic_->options().wait, topic_->data_bell(), until,
               [&] { return stopped() || group_->has_work(epoch); });
  }
}

Status ConsumerImpl::nack(const Event& e, Timeout delay, std::string_view reason) {
  const InCall call(*this);
  if (!call) return Status::Closed("consumer '" + options_.name + "' is closed");
  if (!group_) {
    return Status::InvalidArgument("nack() needs individual acks (ConsumerMode::kShared or "
                                   "ConsumerOptions::individual_acks)");
  }
  if (Status s = check_origin("nack", e); !s.ok()) return s;
  const std::uint32_t max_deliveries = options_.max_redeliveries ? options_.max_redeliveries + 1 : 0;
  bool dead = false;
  Result<std::uint32_t> deliveries =
      group_->nack(id_, e.partition(), e.offset(), delay.count(), now_ns(false), max_deliveries, dead);
  if (!deliveries.ok()) return deliveries.status();
  if (!dead) return Status::Ok();
  if (Status s = dead_letter(e, *deliveries, reason); !s.ok()) return s;  // still held: nack or ack again
  Status s = group_->ack(id_, e.partition(), e.offset());
  if (s.ok()) count(acked_, 1);
  return s;
}

Status ConsumerImpl::dead_letter(const Event& e, std::uint32_t deliveries, std::string_view reason) {
  nlohmann::json info = {{"reason", reason.empty() ? "nacked" : std::string(reason)},
                         {"topic", topic_->name()},
                         {"partition", e.partition()},
                         {"offset", e.offset()},
                         {"consumer", options_.name},
                         {"deliveries", deliveries}};
  const DeadLetter d = fit_dead_letter(e.key(), e.metadata(), e.data(), std::move(info), dead_letter_->options().max_event_size);
  if (!dead_letter_producer_) dead_letter_producer_ = std::make_unique<ProducerImpl>(dead_letter_, false);
  const Message m{d.key, d.metadata, d.data, {}, kAnyPartition};
  LazyDeadline deadline(kForever);
  Result<EventId> id = dead_letter_producer_->publish_message(m, deadline, true);
  return id.ok() ? Status::Ok() : id.status();
}

bool ConsumerImpl::wait_for_work(Deadline deadline) {
  return wait_until(topic_->options().wait, topic_->data_bell(), deadline, [&] { return has_work(); });
}

bool ConsumerImpl::has_work() const noexcept {
  if (group_) return stopped() || group_->has_work(group_->epoch());
  if (stopped() || standby_.load(std::memory_order_acquire)) return true;  // a standby's poll checks itself
  for (const Cursor& c : cursors_) {
    if (next_visible(c)) return true;
  }
  return false;
}

Status ConsumerImpl::stopped_status() const {
  return Status::Closed("consumer '" + options_.name + "' or its topic is closed");
}

Status ConsumerImpl::foreign_event(const char* call) const {
  return Status::InvalidArgument(std::string(call) + "() needs an event delivered to this consumer ('" +
                                 options_.name + "'); this one came from another consumer or none");
}

Status ConsumerImpl::check_ack(const Event& e, Cursor*& cursor) {
  cursor = ack_cursor(e);
  if (cursor) return Status::Ok();
  // Why not, in the order ack_cursor decides it.
  if (Status s = check_origin("ack", e); !s.ok()) return s;
  const EventId id = e.id();
  if (id.partition >= cursor_of_.size() || cursor_of_[id.partition] < 0) {
    return Status::InvalidArgument("ack() of partition " + std::to_string(id.partition) +
                                   ", which this consumer does not read");
  }
  return Status::InvalidArgument("ack() of offset " + std::to_string(id.offset) + " in partition " +
                                 std::to_string(id.partition) + ", which was not delivered yet");
}

Result<std::atomic<std::uint64_t>*> ConsumerImpl::durable_ack_target(const Event& e) {
  if (!topic_->durable()) {
    return Status::InvalidArgument("a write batch acks events of durable topics only; topic '" + topic_->name() +
                                   "' is memory-only");
  }
  const InCall call(*this);
  if (!call) return Status::Closed("consumer '" + options_.name + "' is closed");
  if (group_) {
    return Status::InvalidArgument("a write batch acks cumulatively; consumer '" + options_.name +
                                   "' acks individually (shared mode or individual_acks): use ack()");
  }
  Cursor* cursor = nullptr;
  if (Status s = check_ack(e, cursor); !s.ok()) return s;
  return cursor->durable_acked;
}

Status ConsumerImpl::ack(const Event& e) {
  const InCall call(*this);
  if (!call) return Status::Closed("consumer '" + options_.name + "' is closed");
  if (topic_->closed()) return Status::Closed("topic '" + topic_->name() + "' is closed");
  if (group_) {  // individual
    if (Status s = check_origin("ack", e); !s.ok()) return s;
    Status s = group_->ack(id_, e.partition(), e.offset());
    if (s.ok()) count(acked_, 1);
    return s;
  }
  Cursor* cursor = ack_cursor(e);
  if (!cursor) return check_ack(e, cursor);  // why not
  Cursor& c = *cursor;
  const std::uint64_t next = e.offset() + 1;
  if (next <= c.acked_next) return Status::Ok();  // already covered by an earlier ack
  count(acked_, next - c.acked_next);
  c.acked_next = next;
  c.ring->ack(c.gate, next);
  if (c.durable_acked) {
    raise_position(*c.durable_acked, next);
    topic_->durable()->log->mark_acks_dirty();
  }
  topic_->after_ack();
  return Status::Ok();
}

}  // namespace detail

// ------------------------------------------------------------ the handle

Consumer::Consumer() noexcept = default;
Consumer::Consumer(std::unique_ptr<detail::ConsumerImpl> impl) noexcept : impl_(std::move(impl)) {}
Consumer::Consumer(Consumer&&) noexcept = default;
Consumer& Consumer::operator=(Consumer&& o) noexcept {
  if (this != &o) {
    close();
    impl_ = std::move(o.impl_);
  }
  return *this;
}
Consumer::~Consumer() { close(); }

namespace {
Status pulled_not_handed_out() {
  return Status::InvalidArgument(
      "this consumer holds pulled events not yet handed out: use pull() or poll(), not both at once");
}
}  // namespace

Result<Event> Consumer::poll(Timeout timeout) {
  assert(impl_ && "poll() needs a valid Consumer");
  if (impl_->pull_buffered()) return pulled_not_handed_out();
  return impl_->poll_one(timeout);
}

Result<std::span<const Event>> Consumer::poll_batch(std::size_t max, Timeout timeout) {
  assert(impl_ && "poll_batch() needs a valid Consumer");
  if (impl_->pull_buffered()) return pulled_not_handed_out();
  return impl_->poll_batch(max, timeout);
}

Status Consumer::ack(const Event& e) {
  assert(impl_ && "ack() needs a valid Consumer");
  return impl_->ack(e);
}

void Consumer::close() noexcept {
  if (impl_) impl_->close();
}

const std::string& Consumer::name() const noexcept {
  assert(impl_ && "name() needs a valid Consumer");
  return impl_->options().name;
}

const std::string& Consumer::topic() const noexcept {
  assert(impl_ && "topic() needs a valid Consumer");
  return impl_->topic().name();
}

Status Consumer::nack(const Event& e, Timeout delay, std::string_view reason) {
  assert(impl_ && "nack() needs a valid Consumer");
  return impl_->nack(e, delay, reason);
}

bool Consumer::active() const noexcept {
  assert(impl_ && "active() needs a valid Consumer");
  return impl_->active();
}

ConsumerStats Consumer::stats() const noexcept {
  assert(impl_ && "stats() needs a valid Consumer");
  return impl_->stats();
}

Consumer::iterator& Consumer::iterator::operator++() {
  Result<Event> r = c_->poll(kForever);
  if (r.ok()) {
    current_ = std::move(*r);
  } else {
    c_ = nullptr;  // closed: the loop ends
  }
  return *this;
}

}  // namespace rill

// The publish path. Hot path per event (small, single producer, room in the
// ring): pick a partition, copy <= 128 bytes into the slot, one clock read,
// one release store of the cursor, and one plain load of the doorbell's
// sleeper count (blocking wait strategy). No lock, no allocation, no
// read-modify-write, no memory barrier on a single-producer topic.
#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.hpp"
#include "common/hash.hpp"
#include "common/user_code.hpp"
#include "event/record_writer.hpp"
#include "producer/producer_impl.hpp"
#include "ring/wait.hpp"
#include "topic/topic_core.hpp"

namespace rill {
namespace detail {

Status ProducerImpl::publish_run(std::uint32_t partition, PreparedEvent* prepared, std::size_t n, LazyDeadline& deadline,
                                 bool may_wait, std::uint64_t& first) {
  if (stopped()) return stop_status();
  EventRing& ring = topic_->ring(partition);
  const TopicOptions& opt = topic_->options();
  // Durable topics wait only for the writer (never for consumers), whatever
  // the overflow policy; a waiting producer nudges the writer to commit.
  const bool wait_ok = may_wait && (log_ || opt.overflow == OverflowPolicy::kBlock);
  auto nudge = [this] {
    if (log_) log_->nudge();
  };
  // Full and TimedOut are routine outcomes of try/timed calls: their
  // messages are literals so that reporting them never allocates.
  auto full = [] { return Status::Full("the partition is full: a consumer has not acked its oldest event"); };
  auto timed_out = [] { return Status::TimedOut("no room in the partition within the timeout"); };

  if (single_) {
    auto& sp = ring.sp();
    const std::uint64_t s = sp.next;
    const std::uint64_t end = s + n;
    if (end > sp.limit) {
      sp.limit = ring.refresh_limit(end);
      if (end > sp.limit) {
        if (!wait_ok) return full();
        nudge();
        const bool ok = wait_until(opt.wait, topic_->space_bell(), deadline.get(), [&] {
          if (stopped()) return true;
          sp.limit = ring.refresh_limit(end);
          return end <= sp.limit;
        });
        if (stopped()) return stop_status();
        if (!ok) return timed_out();
      }
    }
    sp_commit(ring, n, prepared[n - 1].wide(),
              [prepared](EventRecord& slot, std::size_t i, std::int64_t ts) { write_record(slot, prepared[i], ts); });
    first = s;
    return Status::Ok();
  }

  // Multi-producer: claims with CAS only when the room is there, so a
  // producer never holds a claim it cannot fill and every wait (untimed
  // ones too) ends with nothing claimed when the producer or topic closes.
  std::optional<std::uint64_t> c = ring.try_claim(n);
  if (!c) {
    if (!wait_ok) return full();
    nudge();
    wait_until(opt.wait, topic_->space_bell(), deadline.get(), [&] {
      if (stopped()) return true;
      c = ring.try_claim(n);
      return c.has_value();
    });
    if (!c) {
      if (stopped()) return stop_status();
      return timed_out();
    }
  }
  const std::uint64_t s = *c;
  mp_commit(ring, s, prepared, n);
  first = s;
  return Status::Ok();
}

void ProducerImpl::mp_commit(EventRing& ring, std::uint64_t s, PreparedEvent* prepared, std::size_t n) noexcept {
  ring.mp_wait_in_window(s, n);
  for (std::size_t i = 0; i < n; ++i) prefetch_slot(ring.slot(s + i), prepared[i].wide());
  const std::int64_t ts = append_stamp_ns(topic_->options().precise_timestamps);
  for (std::size_t i = 0; i < n; ++i) write_record(ring.slot(s + i), prepared[i], ts);
  ring.mp_publish(s, n);
  topic_->after_publish();
  if (log_) ring_writer(s, s + n);
}

namespace {

// A single producer of large events, about to write seq s (`size` bytes of
// data), requests the lines it will write next: the header of the block
// four slots on (the lines of its slot were requested by an earlier
// commit), and the data lines of the next slot's block, up to
// kDataPrefetchBytes (assuming the next event is as large as this one).
// The blocks were last touched a lap ago, often by a consumer's core; the
// copy into a block whose lines are all requested at once runs at the rate
// of many transfers in flight rather than one stream's. (On the bench VM:
// header 4 ahead beat 2 and 8; data lines of s+1 and s+2 alike.)
constexpr std::uint64_t kHeaderPrefetch = 4;
constexpr std::size_t kDataPrefetchBytes = 2048;

void prefetch_blocks_ahead(EventRing& ring, std::uint64_t s, std::size_t size) noexcept {
  // Only slots within the granted room: a slot beyond it may still be read,
  // and requesting its block's lines for writing would take them from a
  // consumer (the reads themselves are safe: only this producer writes the
  // slots, and a slot holds a reference to its block).
  const std::uint64_t limit = ring.sp().limit;
  if (s + kHeaderPrefetch < limit) {
    if (const BufferRep* ahead = ring.slot(s + kHeaderPrefetch).block) prefetch_for_write(ahead);
  }
  if (s + 1 >= limit) return;
  if (const BufferRep* next = ring.slot(s + 1).block) {
    const std::size_t bytes = std::min({size, next->size, kDataPrefetchBytes});
    for (std::size_t at = 0; at < bytes; at += 64) prefetch_for_write(next->data + at);
  }
}

}  // namespace

bool ProducerImpl::try_publish_inline(const std::string_view* parts, std::int64_t explicit_partition, EventId& id) {
  const std::string_view key = parts[0], metadata = parts[1], data = parts[2];
  const std::size_t head = key.size() + metadata.size();
  const std::size_t total = head + data.size();
  if (hooked_ || stopped()) return false;
  // Inline events; and on a single-producer topic, events whose data goes
  // into a block of its own (key and metadata inline).
  const bool all_inline = total <= inline_limit_;
  if (!all_inline && !(single_ && head <= kInlineEventBytes && total <= topic_->options().max_event_size)) {
    return false;
  }
  const bool chosen = explicit_partition != kAnyPartition;
  if (chosen && (explicit_partition < 0 || explicit_partition >= std::int64_t(topic_->partitions()))) {
    return false;  // the general path refuses it
  }
  const std::uint32_t partition = default_partition(key, explicit_partition);
  EventRing& ring = sole_ring_ ? *sole_ring_ : topic_->ring(partition);
  std::uint64_t s;
  if (single_) {
    s = ring.sp().next;
    if (s + 1 > ring.sp().limit) return false;  // a refresh (and perhaps a wait): the general path
    if (all_inline) {
      sp_commit(ring, 1, EventRecord::inline_wide(total), [&](EventRecord& slot, std::size_t, std::int64_t ts) {
        write_inline_record(slot, key, metadata, data, ts);
      });
    } else {
      // The room is granted and nothing below waits: the block is written.
      // Both below only on rings that never drop events (lossy rings left out).
      const bool keeps_events = !ring.lossy();
      if (keeps_events) prefetch_blocks_ahead(ring, s, data.size());
      // Every reader is past the slot's old event, so when nobody else holds
      // its block the new event takes it over (no locked operations, and the
      // lines are the ones this slot used a lap ago); else a new block.
      EventRecord& target = ring.slot(s);
      BufferRep* block = pool_ && keeps_events ? pool_->reuse(target.block, data.size()) : nullptr;
      if (block) {
        target.block = nullptr;  // the new event's reference now
      } else {
        block = new_block(data.size(), &pool_);
      }
      PreparedEvent prepared = PreparedEvent::of(key, metadata, data, EventRecord::kHeadInline, block);
      std::memcpy(prepared.block->bytes(), data.data(), data.size());
      sp_commit(ring, 1, prepared.wide(), [&](EventRecord& slot, std::size_t, std::int64_t ts) {
        write_record(slot, prepared, ts);
      });
    }
  } else {
    // Claims only under the cached limit (one refresh at most), never waits.
    std::optional<std::uint64_t> c = ring.try_claim(1);
    if (!c) return false;
    s = *c;
    PreparedEvent prepared = PreparedEvent::of(key, metadata, data, EventRecord::kAllInline, nullptr);
    mp_commit(ring, s, &prepared, 1);
  }
  if (!chosen && key.empty() && !sole_ring_) advance_sticky();
  id = EventId{partition, s};
  return true;
}

namespace {

// Runs a user hook; an exception becomes InvalidArgument naming the hook.
template <class F>
Status guarded_hook(const char* what, F&& f) {
  if (std::optional<std::string> thrown = user_code_threw(std::forward<F>(f))) {
    return Status::InvalidArgument(std::string(what) + " threw: " + *thrown + "; nothing was published");
  }
  return Status::Ok();
}

}  // namespace

Result<std::uint32_t> ProducerImpl::select_partition(const Message& m) {
  const std::uint32_t parts = topic_->partitions();
  std::uint32_t chosen = 0;
  Status s = guarded_hook("the partition selector", [&] { chosen = options_.partition_selector(m, parts); });
  if (!s.ok()) return s;
  if (chosen >= parts) {
    return Status::InvalidArgument("the partition selector chose partition " + std::to_string(chosen) +
                                   "; topic '" + topic_->name() + "' has " + std::to_string(parts) +
                                   "; nothing was published");
  }
  return chosen;
}

Result<Message> ProducerImpl::serialize(const Message& m, std::string& text) const {
  text.clear();
  Status verdict;
  if (Status thrown = guarded_hook("the metadata serializer",
                                   [&] { verdict = options_.metadata_serializer(m.metadata, text); });
      !thrown.ok()) {
    return thrown;
  }
  if (!verdict.ok()) {
    return Status::InvalidArgument("the metadata serializer refused the metadata: " + std::string(verdict.message()) +
                                   "; nothing was published");
  }
  Message out = m;
  out.metadata = text;
  return out;
}

Status ProducerImpl::run_validator(const Message& m) const {
  Status verdict;
  if (Status thrown = guarded_hook("the validator", [&] { verdict = options_.validator(m); }); !thrown.ok()) {
    return thrown;
  }
  if (verdict.ok()) return verdict;
  return Status::InvalidArgument("the validator refused the event: " + std::string(verdict.message()) +
                                 "; nothing was published");
}

}  // namespace detail

std::uint32_t key_partition(std::string_view key, std::uint32_t partitions) noexcept {
  return std::uint32_t(detail::hash_key(key) % partitions);
}

PartitionSelector round_robin_partitions() {
  return [next = std::uint32_t{0}](const Message&, std::uint32_t partitions) mutable {
    if (next >= partitions) next = 0;
    return next++;
  };
}

PartitionSelector key_hash_partitions() {
  return [](const Message& m, std::uint32_t partitions) { return key_partition(m.key, partitions); };
}

Producer::Producer() noexcept = default;
Producer::Producer(std::unique_ptr<detail::ProducerImpl> impl) noexcept
    : impl_(std::move(impl)), lane_(impl_ ? impl_->lane() : nullptr) {}
Producer::Producer(Producer&& o) noexcept : impl_(std::move(o.impl_)), lane_(std::exchange(o.lane_, nullptr)) {}
Producer& Producer::operator=(Producer&& o) noexcept {
  if (this != &o) {
    impl_ = std::move(o.impl_);
    lane_ = std::exchange(o.lane_, nullptr);
  }
  return *this;
}
Producer::~Producer() { close(); }

const std::string& Producer::topic() const noexcept {
  assert(impl_ && "topic() needs a valid Producer");
  return impl_->topic_->name();
}

void Producer::close() noexcept {
  if (!impl_) return;
  impl_->closed_.store(true, std::memory_order_relaxed);
  if (impl_->loose_sender_) impl_->loose_sender_->closed_.store(true, std::memory_order_relaxed);
  impl_->topic_->space_bell().wake_all();
}

namespace detail {

Result<EventId> ProducerImpl::publish_message(const Message& m, LazyDeadline& deadline, bool may_wait) {
  // Buffers take the general path.
  if (m.buffer.empty()) {
    EventId id;
    const std::string_view parts[3] = {m.key, m.metadata, m.data};
    if (try_publish_inline(parts, m.partition, id)) return id;
  }
  return publish_checked(m, deadline, may_wait);
}

Result<EventId> ProducerImpl::publish_checked(const Message& m, LazyDeadline& deadline, bool may_wait) {
  if (has_serializer()) {
    std::string text;
    Result<Message> serialized = serialize(m, text);
    if (!serialized.ok()) return serialized.status();
    if (Status s = validate(*serialized); !s.ok()) return s;
    return publish_validated(*serialized, deadline, may_wait);
  }
  if (Status s = validate(m); !s.ok()) return s;
  return publish_validated(m, deadline, may_wait);
}

Result<EventId> ProducerImpl::publish_validated(const Message& m, LazyDeadline& deadline, bool may_wait) {
  Result<std::uint32_t> part = pick_partition(m);
  if (!part.ok()) return part.status();
  PreparedEvent prepared;
  if (Status s = prepare_event(m, topic_->options().max_event_size, prepared, &pool_); !s.ok()) return s;
  std::uint64_t offset = 0;
  Status s = publish_run(*part, &prepared, 1, deadline, may_wait, offset);
  if (!s.ok()) {
    prepared.discard();
    return s;
  }
  if (m.partition == kAnyPartition && m.key.empty() && default_partitioning()) advance_sticky();
  return EventId{*part, offset};
}

}  // namespace detail

namespace {
Status pushing() {
  return Status::InvalidArgument("this producer pushes (Producer::push): its sender threads publish; "
                                 "use another Producer handle to publish directly");
}
}  // namespace

PushFuture Producer::push(const Message& m, Timeout timeout) {
  assert(impl_ && "push() needs a valid Producer");
  detail::ProducerImpl& p = *impl_;
  if (!p.pusher_) {
    if (p.options_.push.max_batches < 1) {
      return detail::Pusher::refused(Status::InvalidArgument("ProducerOptions::push.max_batches must be >= 1"));
    }
    // The senders will own the publishing: from here on this handle's
    // publishes go out of line and fail (also if starting them throws).
    lane_ = nullptr;
    std::vector<detail::ProducerImpl*> senders{&p};
    if (p.options_.push.ordering == Ordering::kLoose && !p.single_) {
      p.loose_sender_ = std::make_unique<detail::ProducerImpl>(p.topic_, false, p.options_);
      senders.push_back(p.loose_sender_.get());
    }
    p.pusher_ = std::make_shared<detail::Pusher>(p.options_.push, std::move(senders));
    p.pusher_->start();
  }
  return p.pusher_->push(m, timeout);
}

FlushFuture Producer::flush() {
  assert(impl_ && "flush() needs a valid Producer");
  if (!impl_->pusher_) return FlushFuture();  // nothing was pushed
  return impl_->pusher_->flush();
}

namespace {

// Producer::publish's calls past the fast path: the pusher check, the
// general path, the wait for a sync commit.
Result<EventId> publish_general(detail::ProducerImpl& p, const Message& m, Timeout timeout) {
  if (p.pusher_) return pushing();
  detail::LazyDeadline deadline(timeout);
  // direct(): publish_fast_or has tried the hot path (or the message has a
  // Buffer, which never takes it); a sync topic's append may still take it.
  Result<EventId> id = p.direct() ? p.publish_checked(m, deadline, true) : p.publish_message(m, deadline, true);
  if (id.ok() && p.log_ && p.topic_->durable()->sync) {
    if (Status s = p.wait_durable(*id, deadline.get()); !s.ok()) return s;
  }
  return id;
}

// A publish call: the fast path when the producer may take it, else
// `otherwise()`. Inlined into both publish calls (through a helper that
// returned an optional Result, publish(key, metadata, data) measured
// ~27 ns instead of ~21).
template <class Otherwise>
[[gnu::always_inline]] inline Result<EventId> publish_fast_or(detail::ProducerImpl& p, const std::string_view* parts,
                                                               std::int64_t partition, Otherwise&& otherwise) {
  if (p.direct()) {
    EventId id;
    if (p.try_publish_inline(parts, partition, id)) return id;
  }
  return otherwise();
}

}  // namespace

Result<EventId> Producer::publish_parts(const std::string_view (&parts)[3]) {
  assert(impl_ && "publish() needs a valid Producer");
  return publish_fast_or(*impl_, parts, kAnyPartition, [&] {
    return publish_general(*impl_, Message{parts[0], parts[1], parts[2], {}, kAnyPartition}, kForever);
  });
}

Result<EventId> Producer::publish_message(const Message& m, Timeout timeout) {
  assert(impl_ && "publish() needs a valid Producer");
  if (!m.buffer.empty()) return publish_general(*impl_, m, timeout);  // Buffers take the general path
  const std::string_view parts[3] = {m.key, m.metadata, m.data};
  return publish_fast_or(*impl_, parts, m.partition, [&] { return publish_general(*impl_, m, timeout); });
}

Result<EventId> Producer::publish_async(const Message& m, Timeout timeout) {
  assert(impl_ && "publish_async() needs a valid Producer");
  if (impl_->pusher_) return pushing();
  detail::LazyDeadline deadline(timeout);
  return impl_->publish_message(m, deadline, true);
}

Status Producer::wait_durable(EventId id, Timeout timeout) {
  assert(impl_ && "wait_durable() needs a valid Producer");
  if (id.partition >= impl_->topic_->partitions()) {
    return Status::InvalidArgument("wait_durable: partition " + std::to_string(id.partition) + " is out of range");
  }
  if (id.offset >= impl_->topic_->ring(id.partition).handed_out()) {  // memory-only topics too
    return Status::InvalidArgument("wait_durable: offset " + std::to_string(id.offset) + " was never published");
  }
  return impl_->wait_durable(id, detail::deadline_after(timeout));
}

Result<EventId> Producer::try_publish(const Message& m) {
  assert(impl_ && "try_publish() needs a valid Producer");
  if (impl_->pusher_) return pushing();
  detail::LazyDeadline deadline(Timeout::zero());
  return impl_->publish_message(m, deadline, false);
}

Result<std::size_t> Producer::publish_batch(std::span<const Message> messages, Timeout timeout) {
  assert(impl_ && "publish_batch() needs a valid Producer");
  if (impl_->pusher_) return pushing();
  detail::ProducerImpl& p = *impl_;
  if (p.has_serializer()) {  // serialize every message first: a refusal publishes none
    std::vector<std::string> texts(messages.size());
    std::vector<Message> serialized;
    serialized.reserve(messages.size());
    for (std::size_t i = 0; i < messages.size(); ++i) {
      Result<Message> m = p.serialize(messages[i], texts[i]);
      if (!m.ok()) return m.status();
      serialized.push_back(std::move(*m));
    }
    return detail::publish_messages(p, serialized, timeout);
  }
  return detail::publish_messages(p, messages, timeout);
}

Result<std::size_t> detail::publish_messages(detail::ProducerImpl& p, std::span<const Message> messages,
                                             Timeout timeout) {
  const std::uint32_t max_size = p.topic_->options().max_event_size;
  // Validate everything first: an invalid message publishes nothing. A
  // partition selector is asked once per message, here.
  // The common case (no validator, no selector, valid sizes) builds no
  // Status per message.
  std::vector<std::uint32_t> selected;
  const bool by_default = p.default_partitioning();
  if (!by_default) selected.reserve(messages.size());
  const std::int64_t partitions = p.topic_->partitions();
  for (const Message& m : messages) {
    if (p.has_validator()) {
      if (Status s = p.validate(m); !s.ok()) return s;
    }
    if (!by_default || (m.partition != kAnyPartition && (m.partition < 0 || m.partition >= partitions))) {
      Result<std::uint32_t> part = p.pick_partition(m);
      if (!part.ok()) return part.status();
      if (!by_default) selected.push_back(*part);
    }
    if (Status s = detail::check_event_size(m, max_size); !s.ok()) return s;
  }
  auto partition_of = [&](std::size_t i) {
    return by_default ? p.default_partition(messages[i].key, messages[i].partition) : selected[i];
  };
  detail::LazyDeadline deadline(timeout);
  const bool sync = p.log_ && p.topic_->durable()->sync;
  std::vector<std::uint64_t> last_offset;  // sync topics: per partition, the last published + 1
  if (sync) last_offset.assign(p.topic_->partitions(), 0);
  const std::size_t max_run = std::min<std::size_t>(detail::ProducerImpl::kMaxRun, p.topic_->options().capacity / 2);
  detail::PreparedEvent prepared[detail::ProducerImpl::kMaxRun];
  std::size_t done = 0;
  while (done < messages.size()) {
    const std::uint32_t part = partition_of(done);
    std::size_t n = 1;
    if (by_default && partitions == 1) {
      n = std::min(messages.size() - done, max_run);  // one partition: every message goes there
    } else {
      while (done + n < messages.size() && n < max_run && partition_of(done + n) == part) ++n;
    }
    for (std::size_t i = 0; i < n; ++i) {
      Status s = detail::prepare_event(messages[done + i], max_size, prepared[i], &p.pool_);
      assert(s.ok() && "validated above");
      (void)s;
    }
    std::uint64_t first = 0;
    Status s = p.publish_run(part, prepared, n, deadline, true, first);
    if (!s.ok()) {
      for (std::size_t i = 0; i < n; ++i) prepared[i].discard();
      if (done == 0) return s;
      break;
    }
    if (sync) last_offset[part] = first + n;
    done += n;
  }
  p.advance_sticky();
  if (sync) {
    for (std::uint32_t part = 0; part < last_offset.size(); ++part) {
      if (last_offset[part] == 0) continue;
      if (Status s = p.wait_durable(EventId{part, last_offset[part] - 1}, deadline.get()); !s.ok()) return s;
    }
  }
  return done;
}

}  // namespace rill

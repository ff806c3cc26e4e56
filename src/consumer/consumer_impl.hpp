// ConsumerImpl: the state behind a Consumer handle — one cursor per
// partition read, the reused batch of Events, and the close handshake.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "consumer/pull_queue.hpp"
#include "ring/barrier.hpp"
#include "rill/consumer.hpp"
#include "topic/topic_core.hpp"

namespace rill::detail {

class ProducerImpl;
class SharedGroup;

class ConsumerImpl {
 public:
  ConsumerImpl(std::shared_ptr<TopicCore> topic, ConsumerOptions options);
  ~ConsumerImpl();

  // Reserves the name on its partitions and attaches gates. REQUIRES: called
  // once, before the handle is shared. Fails: AlreadyExists,
  // ResourceExhausted, InvalidArgument (partition list), Closed.
  Status attach();
  // False while a standby instance waits for the active one to close.
  bool active() const noexcept { return !standby_.load(std::memory_order_acquire); }

  Result<std::span<const Event>> poll_batch(std::size_t max, Timeout timeout);
  // Consumer::poll: poll_batch(1, timeout)'s event. On rings that never
  // drop events (no pinning) it finds, or waits for, the next one itself
  // and copies its slot straight into the result, not into the batch and
  // out again; lossy rings, standby and individual acks take poll_batch.
  Result<Event> poll_one(Timeout timeout);
  // True when a poll would not wait: an event is visible or the consumer
  // or its topic is closed. The owner's thread; safe against close().
  bool ready_to_poll() noexcept {
    const InCall call(*this);
    return !call || has_work();
  }
  Status ack(const Event& e);
  // Individual acks only: gives the event back (see Consumer::nack).
  Status nack(const Event& e, Timeout delay, std::string_view reason);
  // Durable topics: the name's durable position that acking e raises (for
  // a write batch); validates e like ack() does.
  Result<std::atomic<std::uint64_t>*> durable_ack_target(const Event& e);
  void close() noexcept;  // thread-safe

  // The pull model's queue, made on first use; disowned when this dies.
  const std::shared_ptr<PullQueue>& pulls();
  // True while pull() holds events of a poll_batch not yet handed out.
  bool pull_buffered() const noexcept { return pulls_ && pulls_->buffered(); }

  const ConsumerOptions& options() const noexcept { return options_; }
  const TopicCore& topic() const noexcept { return *topic_; }
  const std::shared_ptr<TopicCore>& shared_topic() const noexcept { return topic_; }
  ConsumerStats stats() const noexcept {
    return ConsumerStats{delivered_.load(std::memory_order_relaxed), acked_.load(std::memory_order_relaxed),
                         skipped_.load(std::memory_order_relaxed), from_disk_.load(std::memory_order_relaxed)};
  }

 private:
  struct Cursor {
    std::uint32_t partition;
    std::uint32_t gate;
    std::uint64_t read;        // next seq to deliver
    std::uint64_t acked_next;  // next seq not acked (what the gate holds)
    EventRing* ring;
    // Durable topics: the partition's shared state and the name's durable
    // position (null on memory-only topics).
    DurablePartition* dp = nullptr;
    std::atomic<std::uint64_t>* durable_acked = nullptr;
  };

  // Copies a ring slot into e (batch_[i] for a batch), stamped as this
  // consumer's event id. REQUIRES: the slot is protected (gate or pin) for
  // the copy.
  void deliver(std::size_t i, const EventRecord& slot, EventId id) noexcept { deliver_to(batch_[i], slot, id); }
  void deliver_to(Event& e, const EventRecord& slot, EventId id) noexcept {
    e.record().reset();
    e.record().copy_from(slot);
    e.set_origin(id, id_);
  }
  // Ok when e was delivered by this consumer; else InvalidArgument naming `call`.
  Status check_origin(const char* call, const Event& e) const {
    if (e.origin() == id_) return Status::Ok();
    return foreign_event(call);
  }
  Status foreign_event(const char* call) const;
  // Closed, for a call that found the consumer or its topic stopped.
  Status stopped_status() const;
  // The cursor acking e moves: e was delivered by this consumer, from a
  // partition it reads. Null when e may not be acked here.
  Cursor* ack_cursor(const Event& e) noexcept {
    if (e.origin() != id_) return nullptr;
    const EventId id = e.id();
    if (id.partition >= cursor_of_.size() || cursor_of_[id.partition] < 0) return nullptr;
    Cursor& c = cursors_[std::size_t(cursor_of_[id.partition])];
    return id.offset < c.read ? &c : nullptr;
  }
  // Ok when e may be acked by this consumer (sets its cursor); else why not.
  Status check_ack(const Event& e, Cursor*& cursor);
  // ConsumerOptions::min_batch: waits until `want` events of c's partition
  // are visible, batch_linger has passed or poll_deadline has come, looking
  // sparsely (see the option); returns what is visible then (>= available).
  std::uint64_t linger(const Cursor& c, std::uint64_t available, std::uint64_t want, Deadline poll_deadline) noexcept;
  // TopicCore::visible for c's partition, through the cursor's own ring
  // pointer (one load, not the three dependent ones through the topic's
  // ring table).
  std::uint64_t visible(const Cursor& c) const noexcept { return topic_->visible(*c.ring, c.partition); }
  // True when c's next event is visible. On marked rings (see marked_) it
  // reads the next slot's mark, not the published cursor: the line a
  // waiting consumer then takes from the producer is the event's own.
  bool next_visible(const Cursor& c) const noexcept { return visible_one(c) > c.read; }
  // visible(c), or on marked rings c.read + 1 when the next event is
  // visible (else c.read): what a poll of one event needs to know.
  std::uint64_t visible_one(const Cursor& c) const noexcept {
    if (marked_) return c.read + (c.ring->slot(c.read).marked(c.read) ? 1 : 0);
    return visible(c);
  }
  // Offers each cursor with events, by look(cursor) (visible or
  // visible_one), round-robin from next_, to take_from(cursor, available)
  // until one returns a count > 0; returns it (0: none did). The next look
  // starts after the cursor that was offered.
  template <class Look, class TakeFrom>
  std::size_t take_round_robin(Look&& look, TakeFrom&& take_from) {
    // Stepping without a division (a 64-bit div per look was ~10% of a
    // single-event poll). Reassignment may have shrunk cursors_ below next_.
    const std::size_t k = cursors_.size();
    auto step = [k](std::size_t i) { return i + 1 == k ? 0 : i + 1; };
    std::size_t i = next_ < k ? next_ : 0;
    for (std::size_t j = 0; j < k; ++j, i = step(i)) {
      Cursor& c = cursors_[i];
      const std::uint64_t available = look(c);
      if (available > c.read) {
        next_ = step(i);
        if (const std::size_t n = take_from(c, available)) return n;
      }
    }
    return 0;
  }
  // Copies the n events of c's ring from `first` into out[0..n), moves c
  // past them and counts them. REQUIRES: they are visible and protected
  // (gate or pin) for the copy.
  void deliver_run(Cursor& c, std::uint64_t first, std::size_t n, Event* out) noexcept {
    for (std::size_t i = 0; i < n; ++i) {
      // The slots were just written on the producer's core: request the
      // lines a few events ahead so their transfers overlap.
      if (i + 8 < n) prefetch_for_read(&c.ring->slot(first + i + 8));
      deliver_to(out[i], c.ring->slot(first + i), EventId{c.partition, first + i});
    }
    c.read = first + n;
    count(delivered_, n);
  }
  // Copies up to `max` events of cursor c into batch_; returns how many.
  std::size_t take(Cursor& c, std::uint64_t available, std::size_t max) noexcept;
  // Durable topics: reads events [c.read, end) from disk into batch_ (at
  // most max); on failure sets error_ and returns 0. Allocates: for events
  // larger than kInlineEventBytes.
  std::size_t read_disk(Cursor& c, std::uint64_t end, std::size_t max);
  // Durable topics: positions the name on partition p. REQUIRES: registry
  // mutex held.
  Status attach_durable(TopicCore::NameState& ns, std::uint32_t p);
  // Writes a stored (disk) event into batch_[i], stamped as this consumer's.
  // Allocates: for events larger than kInlineEventBytes.
  void deliver_stored(std::size_t i, const StoredEvent& se, std::uint32_t partition);
  Status error_;  // a failed disk read, reported by the poll that met it

  // The close handshake: a call in flight (poll/ack) sets in_call_; close()
  // sets close_requested_ and then looks at in_call_, a call looks at
  // close_requested_ after setting in_call_ and after clearing it. Of two
  // that race, at least one sees the other's store; whoever sees the
  // consumer closed and out of its call detaches (detach() is idempotent),
  // and never while the owning thread is in a call (copying slots, walking
  // cursors_). The owner's side is plain stores and a compiler barrier:
  // close() makes the store-load order hold with heavy_barrier() (ring/
  // barrier.hpp; ~1 us, once per consumer). Without the kernel's barrier
  // both sides use full barriers. Inline: two of them frame every poll and
  // ack (locked operations there cost a ping-pong ~20% of its rate).
  bool enter() noexcept {  // false when closed
    set_in_call(true);
    if (close_requested_.load(std::memory_order_seq_cst)) [[unlikely]] {
      leave();  // close() may have seen this call and left the detach to it
      return false;
    }
    return true;
  }
  void leave() noexcept {
    set_in_call(false);
    if (close_requested_.load(std::memory_order_seq_cst)) [[unlikely]] detach();  // close() arrived meanwhile
  }
  // The owner's store of in_call_, ordered before its next load of
  // close_requested_: by close()'s heavy_barrier(), or here by a full one.
  void set_in_call(bool in) noexcept {
    if (asymmetric_) {
      in_call_.store(in, std::memory_order_release);
      light_barrier();
    } else {
      in_call_.store(in, std::memory_order_seq_cst);
    }
  }
  // enter() for the scope of a call; false when the consumer is closed.
  class InCall {
   public:
    explicit InCall(ConsumerImpl& c) noexcept : c_(c), entered_(c.enter()) {}
    ~InCall() {
      if (entered_) c_.leave();
    }
    InCall(const InCall&) = delete;
    InCall& operator=(const InCall&) = delete;
    explicit operator bool() const noexcept { return entered_; }

   private:
    ConsumerImpl& c_;
    const bool entered_;
  };
  bool stopped() const noexcept;
  bool has_work() const noexcept;  // REQUIRES: in a call (cursors stay)
  // Waits by the topic's wait strategy until has_work() or the deadline;
  // false at the deadline.
  bool wait_for_work(Deadline deadline);

  // Individual acks (shared mode, ConsumerOptions::individual_acks): the
  // name's SharedGroup does dispatch and acks; cursors_ stay empty.
  bool individual() const noexcept {
    return options_.mode == ConsumerMode::kShared || options_.mode == ConsumerMode::kKeyShared ||
           options_.individual_acks;
  }
  bool sharing() const noexcept {
    return options_.mode == ConsumerMode::kShared || options_.mode == ConsumerMode::kKeyShared;
  }
  Status check_individual_acks();  // options and topic allow it; resolves the dead-letter topic
  Status join_group(std::shared_ptr<SharedGroup> group);
  Result<std::span<const Event>> poll_group(std::size_t max, Timeout timeout);
  // Copies the n events the group handed out (offsets_) into batch_; on
  // lossy rings, reads what the ring dropped from disk, or acks it as
  // skipped (memory-only). Returns how many are in batch_ (in order); 0
  // with error_ set when a disk read failed (the events were given back).
  std::size_t copy_group(std::uint32_t partition, std::size_t n);
  std::vector<bool> found_;  // copy_group's disk hits; sized once
  // Publishes e to the dead-letter topic with why in its metadata.
  Status dead_letter(const Event& e, std::uint32_t deliveries, std::string_view reason);
  Status name_is_live(std::uint32_t partition) const;
  std::shared_ptr<SharedGroup> group_;
  std::vector<std::uint64_t> offsets_;  // take()'s offsets; sized once
  std::shared_ptr<TopicCore> dead_letter_;
  std::unique_ptr<ProducerImpl> dead_letter_producer_;
  // A standby's poll: takes over when the name is free (Ok: now active),
  // else waits until the deadline for the active instance to go.
  Status stand_by(Deadline deadline);
  std::atomic<bool> standby_{false};

  void detach() noexcept;  // frees the name for the next consumer; its gates stay
  // ResourceExhausted: every gate of the partition's ring is taken.
  Status too_many_names(std::uint32_t partition) const;
  // A failed attach gives back the gates it took for partitions the name
  // never read. REQUIRES: registry mutex held.
  void undo_new_gates(TopicCore::NameState& ns) noexcept;
  std::vector<std::uint32_t> new_gates_;  // partitions given a first gate by attach()

  std::shared_ptr<TopicCore> topic_;
  const ConsumerOptions options_;
  Position position_ = options_.position;  // where attach() starts; a standby's takeover resets it to unread
  const std::uint64_t id_;             // process-unique; stamps delivered Events
  std::vector<Cursor> cursors_;
  // The topic's rings are single-producer and never drop events: their
  // slots carry seq marks (EventRecord::mark) and the mark of a cursor's
  // next slot says whether its event is visible. Set by attach().
  bool marked_ = false;
  std::vector<int> cursor_of_;         // partition -> index in cursors_, or -1
  std::size_t next_ = 0;               // round-robin start for the next poll
  std::shared_ptr<PullQueue> pulls_;
  std::vector<Event> batch_;           // reused: poll_batch never allocates
  bool attached_ = false;
  const bool asymmetric_ = heavy_barrier_available();  // the close handshake's kind (enter())
  std::atomic<bool> in_call_{false};                   // written by the owning thread only
  std::atomic<bool> close_requested_{false};
  // stats(): written only by the thread in a call (one at a time), read by
  // any thread. So a plain load and store add to them (count()), not a
  // locked read-modify-write on every poll and ack.
  std::atomic<std::uint64_t> delivered_{0};
  std::atomic<std::uint64_t> acked_{0};
  std::atomic<std::uint64_t> skipped_{0};
  std::atomic<std::uint64_t> from_disk_{0};
  static void count(std::atomic<std::uint64_t>& counter, std::uint64_t n) noexcept {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

}  // namespace rill::detail

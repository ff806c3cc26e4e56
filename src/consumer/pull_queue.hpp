// The pull model's engine: futures of one consumer, completed in pull
// order by whichever thread waits on one of them.
//
// Thread-safety: as the Consumer (one thread at a time). Lifetime: shared
// by the ConsumerImpl, its futures and its PulledEvents; the ConsumerImpl
// disowns it on destruction, after which everything returns Closed.
// Allocation: one slot per pull(); per event, what the selector and
// allocator ask for (a descriptor of several runs, rill's own buffer).
#pragma once

#include <atomic>
#include <deque>
#include <vector>
#include <memory>
#include <mutex>
#include <optional>

#include "rill/pull.hpp"

namespace rill::detail {

class ConsumerImpl;

struct PullSlot {
  std::optional<Result<std::optional<PulledEvent>>> value;  // set once complete
  bool abandoned = false;  // its future was dropped before completing
};

class PullQueue : public std::enable_shared_from_this<PullQueue> {
 public:
  PullQueue(ConsumerImpl* consumer, const ConsumerOptions& options)
      : consumer_(consumer), hooks_(std::make_shared<const Hooks>(Hooks{options.selector, options.allocator})) {}
  // The consumer is going: events held here refer to this queue
  // (PulledEvent::queue_), so dropping them breaks that cycle. Tasks still
  // running on a pool keep their own batch alive.
  void disown() noexcept {
    consumer_ = nullptr;
    prepared_.clear();
    returned_.clear();
    fixed_.clear();
    batch_ = {};
    batch_next_ = 0;
  }

  std::shared_ptr<PullSlot> enqueue();
  // Completes pending slots in order until `slot` is complete: Ok; or
  // TimedOut (slot still pending). Waits at most `timeout` overall.
  Status drive(const PullSlot& slot, Timeout timeout);
  // The next event with no future in between (process()): only when no
  // future is pending, so pull order holds. nullopt at the end of the
  // stream; TimedOut when none came in time.
  Result<std::optional<PulledEvent>> next_direct(Timeout timeout) {
    if (!consumer_) return Status::Closed("the consumer was destroyed");
    return next(timeout);
  }
  bool has_pending() const noexcept { return !pending_.empty(); }
  Status ack(const Event& e);
  bool buffered() const noexcept { return batch_next_ < batch_.size() || !prepared_.empty() || !returned_.empty(); }

  // process() on a thread pool: while deferring, ack() (from any thread)
  // queues the event; apply_deferred_acks() acks the queued ones on the
  // consumer's thread and returns the first failure.
  void defer_acks(bool on) noexcept { deferring_.store(on, std::memory_order_release); }
  Status apply_deferred_acks();
  // Events pulled but never handed out, in pull order: next() returns them
  // first.
  void give_back(std::vector<PulledEvent> events);

 private:
  // The next event, selected and placed; nullopt at the end of the stream.
  // TimedOut when none came in time (nothing consumed).
  Result<std::optional<PulledEvent>> next(Timeout timeout);
  Result<std::optional<PulledEvent>> next_prepared(Timeout timeout);
  // The next batch: poll_batch's (adaptive), or pull_batch_size events
  // gathered in fixed_ (short only at the timeout or the end). Closed at
  // the end of the stream with nothing gathered.
  Result<std::span<const Event>> fetch(Timeout timeout);

  // The user's hooks, shared with pool tasks that may outlive the consumer.
  struct Hooks {
    DataSelector selector;
    DataAllocator allocator;
  };
  // A batch being selected and placed on the thread pool.
  struct Prepared {
    std::vector<PulledEvent> events;
    std::vector<Status> status;  // per event, set by its task
    std::atomic<std::size_t> remaining{0};
    std::size_t next = 0;  // the next to hand out
  };
  PulledEvent start(const Event& taken);  // the event, moved out of the consumer's batch
  // Runs selector and allocator and gathers the bytes. Any thread.
  static Status place(const Hooks& hooks, PulledEvent& e);

  ConsumerImpl* consumer_;
  std::shared_ptr<const Hooks> hooks_;
  std::deque<std::shared_ptr<Prepared>> prepared_;
  std::deque<std::shared_ptr<PullSlot>> pending_;
  std::span<const Event> batch_;  // the last fetched batch, handed out one by one
  std::vector<Event> fixed_;      // a fixed-size batch being gathered
  std::deque<PulledEvent> returned_;
  std::atomic<bool> deferring_{false};
  std::mutex deferred_mu_;
  std::vector<Event> deferred_;  // guarded by deferred_mu_
  std::size_t batch_next_ = 0;
};

}  // namespace rill::detail

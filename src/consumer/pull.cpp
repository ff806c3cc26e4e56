// The pull model on top of poll_batch: futures completed in pull order,
// each event passed through the consumer's selector and allocator.
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "common/clock.hpp"
#include "common/user_code.hpp"
#include "consumer/consumer_impl.hpp"
#include "consumer/pull_queue.hpp"
#include "rill/consumer.hpp"
#include "rill/thread_pool.hpp"

namespace rill {
namespace detail {

namespace {

Status consumer_gone() { return Status::Closed("the consumer that pulled this was destroyed"); }

std::string event_name(const EventId& id) {
  return "event (partition " + std::to_string(id.partition) + ", offset " + std::to_string(id.offset) + ")";
}

Timeout remaining(Deadline deadline) noexcept {
  if (deadline == Deadline::max()) return kForever;
  const auto left = deadline - SteadyClock::now();
  return left.count() > 0 ? std::chrono::duration_cast<Timeout>(left) : Timeout::zero();
}

// Runs a user callback; an exception becomes InvalidArgument naming what
// threw and the event.
template <class F>
Status guarded(const char* what, const EventId& id, F&& f) {
  if (std::optional<std::string> thrown = user_code_threw(std::forward<F>(f))) {
    return Status::InvalidArgument(std::string(what) + " threw on " + event_name(id) + ": " + *thrown);
  }
  return Status::Ok();
}

}  // namespace

std::shared_ptr<PullSlot> PullQueue::enqueue() {
  pending_.push_back(std::make_shared<PullSlot>());
  return pending_.back();
}

Status PullQueue::drive(const PullSlot& slot, Timeout timeout) {
  const Deadline deadline = deadline_after(timeout);
  while (!slot.value) {
    if (!consumer_) return consumer_gone();
    // Slots ahead of ours complete first; dropped ones give their turn up.
    while (!pending_.empty() && pending_.front()->abandoned) pending_.pop_front();
    Result<std::optional<PulledEvent>> r = next(remaining(deadline));
    if (!r.ok() && r.status().is_timed_out()) return r.status();
    pending_.front()->value.emplace(std::move(r));
    pending_.pop_front();
  }
  return Status::Ok();
}

Result<std::optional<PulledEvent>> PullQueue::next(Timeout timeout) {
  if (!returned_.empty()) {
    PulledEvent e = std::move(returned_.front());
    returned_.pop_front();
    return std::optional<PulledEvent>(std::move(e));
  }
  if (consumer_->options().thread_pool) return next_prepared(timeout);
  if (batch_next_ == batch_.size()) {
    Result<std::span<const Event>> r = fetch(timeout);
    if (!r.ok()) {
      if (r.status().is_closed()) return std::optional<PulledEvent>();  // the end of the stream
      return r.status();
    }
    batch_ = *r;
    batch_next_ = 0;
  }
  PulledEvent e = start(batch_[batch_next_++]);
  if (Status s = place(*hooks_, e); !s.ok()) return s;
  return std::optional<PulledEvent>(std::move(e));
}

// With a thread pool: whole batches are selected and placed on the pool,
// up to prefetch_batches ahead, and handed out in order.
Result<std::optional<PulledEvent>> PullQueue::next_prepared(Timeout timeout) {
  const ConsumerOptions& o = consumer_->options();
  const std::size_t depth = std::max<std::uint32_t>(1, o.prefetch_batches);
  while (prepared_.size() < depth) {
    Result<std::span<const Event>> r = fetch(prepared_.empty() ? timeout : Timeout::zero());
    if (!r.ok()) {
      if (!prepared_.empty()) break;  // hand out what is ready first
      if (r.status().is_closed()) return std::optional<PulledEvent>();
      return r.status();
    }
    auto b = std::make_shared<Prepared>();
    b->events.reserve(r->size());
    for (const Event& e : *r) b->events.push_back(start(e));
    b->status.resize(r->size());
    if (hooks_->selector || hooks_->allocator) {
      b->remaining.store(r->size(), std::memory_order_relaxed);
      for (std::size_t i = 0; i < r->size(); ++i) {
        o.thread_pool->submit([b, i, hooks = hooks_] {
          b->status[i] = place(*hooks, b->events[i]);
          if (b->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) b->remaining.notify_all();
        });
      }
    }
    prepared_.push_back(std::move(b));
  }
  Prepared& front = *prepared_.front();
  for (std::size_t left; (left = front.remaining.load(std::memory_order_acquire)) != 0;) front.remaining.wait(left);
  const std::size_t i = front.next++;
  Result<std::optional<PulledEvent>> out = front.status[i].ok()
                                               ? Result<std::optional<PulledEvent>>(std::move(front.events[i]))
                                               : Result<std::optional<PulledEvent>>(front.status[i]);
  if (front.next == front.events.size()) prepared_.pop_front();
  return out;
}

Result<std::span<const Event>> PullQueue::fetch(Timeout timeout) {
  const ConsumerOptions& o = consumer_->options();
  if (o.pull_batch_size == 0) return consumer_->poll_batch(o.max_batch, timeout);
  const std::size_t want = o.pull_batch_size;
  if (fixed_.capacity() < want) fixed_.reserve(want);
  fixed_.clear();
  const Deadline deadline = deadline_after(timeout);
  while (fixed_.size() < want) {
    Result<std::span<const Event>> r = consumer_->poll_batch(want - fixed_.size(), remaining(deadline));
    if (!r.ok()) {
      if (!fixed_.empty() && (r.status().is_timed_out() || r.status().is_closed())) break;  // short
      return r.status();
    }
    // The consumer refills every entry it hands out: moving them is safe.
    for (const Event& e : *r) fixed_.push_back(std::move(const_cast<Event&>(e)));
  }
  return std::span<const Event>(fixed_.data(), fixed_.size());
}

// Moves the event out of the consumer's batch: the storage is not const,
// and take() refills every entry it hands out, so nothing reads it again.
PulledEvent PullQueue::start(const Event& taken) {
  PulledEvent out;
  out.event_ = std::move(const_cast<Event&>(taken));
  out.queue_ = shared_from_this();
  out.selection_ = DataDescriptor::all(out.event_.data().size());
  return out;
}

Status PullQueue::place(const Hooks& hooks, PulledEvent& out) {
  if (!hooks.selector && !hooks.allocator) return Status::Ok();  // zero-copy: data() views the event's own bytes
  const Event& e = out.event_;
  const std::string_view data = e.data();
  const EventHeader header{e.id(), e.key(), e.metadata(), e.timestamp_ns(), data.size()};
  DataDescriptor chosen = out.selection_;  // all
  if (hooks.selector) {
    const DataDescriptor all = chosen;
    if (Status s = guarded("the data selector", e.id(), [&] { chosen = hooks.selector(header, all); }); !s.ok()) {
      return s;
    }
  }
  DataView into;
  if (!chosen.empty()) {
    if (chosen.data_size() != data.size()) {
      return Status::InvalidArgument("the data selector's descriptor for " + event_name(e.id()) +
                                     " was made for data of " + std::to_string(chosen.data_size()) +
                                     " bytes; the event's data has " + std::to_string(data.size()));
    }
    if (hooks.allocator) {
      if (Status s = guarded("the data allocator", e.id(), [&] { into = hooks.allocator(header, chosen); }); !s.ok()) {
        return s;
      }
    } else {
      std::shared_ptr<char[]> bytes(new char[chosen.size()]);
      char* const at = bytes.get();  // before the move below
      into = DataView(at, chosen.size(), std::move(bytes));
    }
    if (Status s = gather(data, chosen, into); !s.ok()) {
      return Status::InvalidArgument(event_name(e.id()) + ": " + std::string(s.message()));
    }
  }
  out.selection_ = std::move(chosen);
  out.placed_ = std::move(into);
  out.selective_ = true;
  return Status::Ok();
}

Status PullQueue::ack(const Event& e) {
  if (deferring_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(deferred_mu_);
    deferred_.push_back(e);
    return Status::Ok();
  }
  if (!consumer_) return consumer_gone();
  return consumer_->ack(e);
}

Status PullQueue::apply_deferred_acks() {
  std::vector<Event> acks;
  {
    std::lock_guard<std::mutex> lock(deferred_mu_);
    acks.swap(deferred_);
  }
  Status first;
  for (const Event& e : acks) {
    Status s = consumer_ ? consumer_->ack(e) : consumer_gone();
    if (!s.ok() && first.ok()) first = std::move(s);
  }
  return first;
}

void PullQueue::give_back(std::vector<PulledEvent> events) {
  for (auto it = events.rbegin(); it != events.rend(); ++it) returned_.push_front(std::move(*it));
}

}  // namespace detail

// ------------------------------------------------------------ handles

DataView PulledEvent::data() const noexcept {
  if (selective_) return placed_;
  const std::string_view d = event_.data();
  return DataView(const_cast<char*>(d.data()), d.size());  // read-only by contract
}

Status PulledEvent::acknowledge() const {
  if (!queue_) return Status::InvalidArgument("acknowledge() needs an event delivered by pull()");
  return queue_->ack(event_);
}

PullFuture& PullFuture::operator=(PullFuture&& o) noexcept {
  if (this != &o) {
    if (slot_ && !slot_->value) slot_->abandoned = true;
    queue_ = std::move(o.queue_);
    slot_ = std::move(o.slot_);
  }
  return *this;
}

PullFuture::~PullFuture() {
  if (slot_ && !slot_->value) slot_->abandoned = true;
}

bool PullFuture::completed() {
  if (!slot_) return false;
  if (!slot_->value) (void)queue_->drive(*slot_, Timeout::zero());
  return slot_->value.has_value();
}

Result<std::optional<PulledEvent>> PullFuture::wait(Timeout timeout) {
  if (!slot_) return Status::InvalidArgument("wait() on an empty PullFuture; get one from Consumer::pull()");
  if (!slot_->value) {
    if (Status s = queue_->drive(*slot_, timeout); !s.ok()) return s;
  }
  return *slot_->value;
}

PullFuture Consumer::pull() {
  assert(impl_ && "pull() needs a valid Consumer");
  const std::shared_ptr<detail::PullQueue>& q = impl_->pulls();
  return PullFuture(q, q->enqueue());
}

PullRange::iterator& PullRange::iterator::operator++() {
  Result<std::optional<PulledEvent>> r = range_->consumer_->pull().wait(range_->idle_);
  if (r.ok() && *r) {
    current_ = std::move(**r);
    return *this;
  }
  range_->status_ = r.ok() ? Status::Ok() : r.status();  // Ok: closed
  range_ = nullptr;
  current_.reset();
  return *this;
}

Result<std::size_t> Consumer::process(const EventHandler& handler, Timeout idle_timeout, std::size_t max_events) {
  assert(impl_ && "process() needs a valid Consumer");
  std::size_t handled = 0;
  const std::shared_ptr<detail::PullQueue>& q = impl_->pulls();
  while (handled < max_events) {
    // Futures pulled earlier come first; without any, no future is made.
    Result<std::optional<PulledEvent>> r = q->has_pending() ? pull().wait(idle_timeout) : q->next_direct(idle_timeout);
    if (!r.ok()) {
      if (r.status().is_timed_out()) break;  // idle: done for now
      return r.status();
    }
    if (!*r) break;  // closed
    bool go_on = true;
    if (Status s = detail::guarded("the event handler", (*r)->id(), [&] { go_on = handler(**r); }); !s.ok()) {
      return s;
    }
    ++handled;
    if (!go_on) break;
  }
  return handled;
}

Result<std::size_t> Consumer::process(const EventHandler& handler, Timeout idle_timeout, std::size_t max_events,
                                      const std::shared_ptr<ThreadPool>& pool) {
  if (!pool) return process(handler, idle_timeout, max_events);
  assert(impl_ && "process() needs a valid Consumer");
  const std::shared_ptr<detail::PullQueue>& q = impl_->pulls();
  // Per partition, a lane of events waiting for the handler; a pool task
  // runs a lane until it is empty (one task per lane at a time: order).
  struct Waiting {
    std::uint64_t seq;  // pull order, to give back what was not handed out
    PulledEvent event;
  };
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::map<std::uint32_t, std::deque<Waiting>> lanes;
    std::set<std::uint32_t> running;  // lanes with a task
    std::size_t queued = 0;           // in lanes, not yet handed out
    std::size_t handled = 0;
    bool stop = false;
    Status error;
  };
  Shared sh;
  const std::size_t lookahead = 4 * std::max<std::size_t>(1, pool->size());
  auto run_lane = [&sh, &handler](std::uint32_t partition) {
    for (;;) {
      std::unique_lock<std::mutex> lock(sh.mu);
      std::deque<Waiting>& lane = sh.lanes[partition];
      if (lane.empty() || sh.stop) {
        sh.running.erase(partition);
        sh.cv.notify_all();
        return;
      }
      Waiting w = std::move(lane.front());
      lane.pop_front();
      --sh.queued;
      lock.unlock();
      bool go_on = true;
      Status s = detail::guarded("the event handler", w.event.id(), [&] { go_on = handler(w.event); });
      lock.lock();
      ++sh.handled;
      if (!s.ok() || !go_on) sh.stop = true;
      if (!s.ok() && sh.error.ok()) sh.error = std::move(s);
      sh.cv.notify_all();
    }
  };
  q->defer_acks(true);
  using detail::deadline_after;
  detail::Deadline idle_until = deadline_after(idle_timeout);  // kForever: Deadline::max()
  std::uint64_t seq = 0;
  std::size_t dispatched = 0;
  Status pull_error;
  while (dispatched < max_events) {
    {
      std::unique_lock<std::mutex> lock(sh.mu);
      sh.cv.wait(lock, [&] { return sh.stop || sh.queued < lookahead; });
      if (sh.stop) break;
    }
    if (Status s = q->apply_deferred_acks(); !s.ok()) {
      pull_error = std::move(s);
      break;
    }
    // Short waits, so that a handler asking to stop ends the call promptly.
    const Timeout slice = std::min<Timeout>(detail::remaining(idle_until), std::chrono::milliseconds(5));
    Result<std::optional<PulledEvent>> r = q->has_pending() ? pull().wait(slice) : q->next_direct(slice);
    if (!r.ok()) {
      if (r.status().is_timed_out()) {
        if (detail::SteadyClock::now() >= idle_until) break;  // idle: done for now
        continue;
      }
      pull_error = r.status();
      break;
    }
    if (!*r) break;  // closed
    idle_until = deadline_after(idle_timeout);
    const std::uint32_t partition = (*r)->id().partition;
    std::lock_guard<std::mutex> lock(sh.mu);
    sh.lanes[partition].push_back({seq++, std::move(**r)});
    ++sh.queued;
    ++dispatched;
    if (sh.running.insert(partition).second) pool->submit([&run_lane, partition] { run_lane(partition); });
  }
  std::vector<Waiting> left;
  {
    std::unique_lock<std::mutex> lock(sh.mu);
    if (!pull_error.ok()) sh.stop = true;
    sh.cv.wait(lock, [&] { return sh.running.empty() && (sh.stop || sh.queued == 0); });
    for (auto& [partition, lane] : sh.lanes) {
      for (Waiting& w : lane) left.push_back(std::move(w));
    }
  }
  std::sort(left.begin(), left.end(), [](const Waiting& a, const Waiting& b) { return a.seq < b.seq; });
  std::vector<PulledEvent> back;
  for (Waiting& w : left) back.push_back(std::move(w.event));
  q->give_back(std::move(back));
  q->defer_acks(false);
  Status acked = q->apply_deferred_acks();
  if (!sh.error.ok()) return sh.error;
  if (!pull_error.ok()) return pull_error;
  if (!acked.ok()) return acked;
  return sh.handled;
}

}  // namespace rill

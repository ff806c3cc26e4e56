// The pull model on top of poll_batch: futures completed in pull order,
// each event passed through the consumer's selector and allocator.
#include <exception>
#include <string>

#include "common/clock.hpp"
#include "consumer/consumer_impl.hpp"
#include "consumer/pull_queue.hpp"
#include "rill/consumer.hpp"

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
  try {
    f();
    return Status::Ok();
  } catch (const std::exception& ex) {
    return Status::InvalidArgument(std::string(what) + " threw on " + event_name(id) + ": " + ex.what());
  } catch (...) {
    return Status::InvalidArgument(std::string(what) + " threw a non-exception on " + event_name(id));
  }
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
  if (batch_next_ == batch_.size()) {
    Result<std::span<const Event>> r = consumer_->poll_batch(consumer_->options().max_batch, timeout);
    if (!r.ok()) {
      if (r.status().is_closed()) return std::optional<PulledEvent>();  // the end of the stream
      return r.status();
    }
    batch_ = *r;
    batch_next_ = 0;
  }
  // Move the event out: the consumer's batch storage is not const, and
  // take() refills every entry it hands out, so nothing reads it again.
  Result<PulledEvent> e = select(std::move(const_cast<Event&>(batch_[batch_next_++])));
  if (!e.ok()) return e.status();
  return std::optional<PulledEvent>(std::move(*e));
}

Result<PulledEvent> PullQueue::select(Event&& taken) {
  PulledEvent out;
  out.event_ = std::move(taken);
  const Event& e = out.event_;
  out.queue_ = shared_from_this();
  const ConsumerOptions& o = consumer_->options();
  const std::string_view data = e.data();
  const DataDescriptor all = DataDescriptor::all(data.size());
  if (!o.selector && !o.allocator) {
    out.selection_ = all;  // zero-copy: data() views the event's own bytes
    return out;
  }
  const EventHeader header{e.id(), e.key(), e.metadata(), e.timestamp_ns(), data.size()};
  DataDescriptor chosen = all;
  if (o.selector) {
    if (Status s = guarded("the data selector", e.id(), [&] { chosen = o.selector(header, all); }); !s.ok()) return s;
  }
  DataView into;
  if (!chosen.empty()) {
    if (chosen.data_size() != data.size()) {
      return Status::InvalidArgument("the data selector's descriptor for " + event_name(e.id()) +
                                     " was made for data of " + std::to_string(chosen.data_size()) +
                                     " bytes; the event's data has " + std::to_string(data.size()));
    }
    if (o.allocator) {
      if (Status s = guarded("the data allocator", e.id(), [&] { into = o.allocator(header, chosen); }); !s.ok()) {
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
  return out;
}

Status PullQueue::ack(const Event& e) {
  if (!consumer_) return consumer_gone();
  return consumer_->ack(e);
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

}  // namespace rill

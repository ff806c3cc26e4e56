// rill/pull.hpp — the pull model: Consumer::pull() returns a future of the
// next event, with only the data bytes the consumer's selector chose, placed
// where its allocator said (see rill/data_view.hpp).
//
//   rill::ConsumerOptions o{.name = "app2"};
//   o.selector = [](const rill::EventHeader& h, const rill::DataDescriptor& all) {
//     return energy_of(h.metadata) > 20 ? all : rill::DataDescriptor{};
//   };
//   rill::Consumer c = *topic.consumer(o);
//   rill::PullFuture f = c.pull();             // never blocks
//   auto e = f.wait(-1);                        // Result<std::optional<PulledEvent>>
//   if (e.ok() && *e) { use((*e)->data()); (void)(*e)->acknowledge(); }
//
// Futures complete in the order pull() made them. The pulling runs on the
// thread that waits (or asks completed()): no background thread, so a
// future must be used like its Consumer — by one thread at a time.
// A future whose consumer was closed completes with std::nullopt (the end
// of the stream); one whose consumer was destroyed fails with Closed.
//
// Errors: a selector or allocator that throws, a selection made for another
// data size, or an allocator view smaller than the selection fail that one
// future with InvalidArgument naming the event; the consumer goes on with
// the next event. The failed event is not acked, so a consumer reopened
// under the same name gets it again.
#pragma once

#include <cstddef>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>

#include "rill/data_view.hpp"
#include "rill/event.hpp"
#include "rill/options.hpp"
#include "rill/status.hpp"

namespace rill {

namespace detail {
class PullQueue;
struct PullSlot;
}  // namespace detail

// An event as pull() delivers it.
class PulledEvent {
 public:
  // The event as stored: header, and (in memory) all of its data.
  const Event& event() const noexcept { return event_; }
  EventId id() const noexcept { return event_.id(); }
  std::string_view key() const noexcept { return event_.key(); }
  std::string_view metadata() const noexcept { return event_.metadata(); }
  std::int64_t timestamp_ns() const noexcept { return event_.timestamp_ns(); }

  // What the selector chose (DataDescriptor::all(size) without a selector).
  const DataDescriptor& selection() const noexcept { return selection_; }
  // The selected bytes. Without selector and allocator: a read-only view of
  // the event's own data (zero-copy; valid while this object lives). With
  // them: the allocator's memory (or, without an allocator, a buffer rill
  // allocated, owned by the view). Empty when the data was declined.
  DataView data() const noexcept;

  // Consumer::ack(event()) through the consumer that pulled it: cumulative
  // in its partition. Call it on the consumer's thread. Fails: Closed once
  // the consumer is gone; as Consumer::ack otherwise.
  Status acknowledge() const;

 private:
  friend class detail::PullQueue;
  Event event_;
  DataDescriptor selection_;
  DataView placed_;        // where the selected bytes went
  bool selective_ = false;  // a selector or an allocator is set: placed_ holds the data
  std::shared_ptr<detail::PullQueue> queue_;
};

// The next event of a consumer, once it is there. Move-only.
class PullFuture {
 public:
  PullFuture() noexcept = default;
  PullFuture(PullFuture&&) noexcept = default;
  PullFuture& operator=(PullFuture&&) noexcept;
  PullFuture(const PullFuture&) = delete;
  PullFuture& operator=(const PullFuture&) = delete;
  ~PullFuture();  // an unfinished future gives up its place: its event goes to the next one

  // True once wait() would return at once. Takes an event that is already
  // there, never waits.
  bool completed();

  // The event (std::nullopt: the consumer or its topic was closed), or an
  // error. TimedOut when nothing came within the timeout: the future is still
  // pending and may be waited on again. Once complete, every wait returns
  // the same value.
  Result<std::optional<PulledEvent>> wait(Timeout timeout = kForever);
  // The same, in milliseconds; -1 waits forever.
  Result<std::optional<PulledEvent>> wait(int timeout_ms) {
    return wait(timeout_ms < 0 ? kForever : Timeout(std::chrono::milliseconds(timeout_ms)));
  }

 private:
  friend class Consumer;
  PullFuture(std::shared_ptr<detail::PullQueue> q, std::shared_ptr<detail::PullSlot> s) noexcept
      : queue_(std::move(q)), slot_(std::move(s)) {}
  std::shared_ptr<detail::PullQueue> queue_;
  std::shared_ptr<detail::PullSlot> slot_;
};

// process(): called per event; return false to stop after this one.
using EventHandler = std::function<bool(const PulledEvent&)>;

class Consumer;

// Range iteration over pulled events (Consumer::pulled): the loop ends when
// no event came within the idle timeout, the consumer was closed, or a pull
// failed; status() then says which (TimedOut, Ok, or the error).
class PullRange {
 public:
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = PulledEvent;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    const PulledEvent& operator*() const { return *current_; }
    const PulledEvent* operator->() const { return &*current_; }
    iterator& operator++();
    friend bool operator==(const iterator& a, const iterator& b) { return a.range_ == b.range_; }

   private:
    friend class PullRange;
    explicit iterator(PullRange* r) : range_(r) { ++*this; }
    PullRange* range_ = nullptr;
    std::optional<PulledEvent> current_;
  };
  iterator begin() { return iterator(this); }
  iterator end() { return iterator(); }
  const Status& status() const noexcept { return status_; }

 private:
  friend class Consumer;
  PullRange(Consumer& c, Timeout idle) noexcept : consumer_(&c), idle_(idle) {}
  Consumer* consumer_;
  Timeout idle_;
  Status status_;
};

}  // namespace rill

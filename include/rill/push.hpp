// rill/push.hpp — futures of Producer::push and Producer::flush.
//
// push() copies the message into the batch being filled and returns at
// once; sender threads publish whole batches (ProducerOptions::push). A
// PushFuture completes with the event's id once its batch is published
// (sync durable topics: committed), or with the reason it was not.
// flush() hands over the batch being filled; its future completes once
// every batch pushed before it is published.
//
// Thread-safety: futures follow their Producer's rule (one thread at a
// time); waiting on a future whose batch is still being filled hands that
// batch to the senders, so do that on the producer's thread (or flush()
// first). Futures may outlive their Producer; closing it fails what is
// still pending with Closed (flush().wait() first to publish everything).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>

#include "rill/event.hpp"
#include "rill/options.hpp"
#include "rill/status.hpp"

namespace rill {

namespace detail {
class Pusher;
struct PushBatch;
}  // namespace detail

class PushFuture {
 public:
  PushFuture() noexcept = default;
  // True once wait() would return at once.
  bool completed() const noexcept;
  // The event's id, or why it was not published (the validator's refusal,
  // InvalidArgument, TimedOut of a timed push, Closed, a storage failure).
  // TimedOut (and still pending) when the timeout passes first.
  Result<EventId> wait(Timeout timeout = kForever) const;
  Result<EventId> wait(int timeout_ms) const {
    return wait(timeout_ms < 0 ? kForever : Timeout(std::chrono::milliseconds(timeout_ms)));
  }

 private:
  friend class detail::Pusher;
  PushFuture(std::shared_ptr<detail::Pusher> p, std::shared_ptr<detail::PushBatch> b, std::size_t i) noexcept
      : pusher_(std::move(p)), batch_(std::move(b)), index_(i) {}
  explicit PushFuture(Status failed) : failed_(std::move(failed)) {}
  std::shared_ptr<detail::Pusher> pusher_;
  std::shared_ptr<detail::PushBatch> batch_;
  std::size_t index_ = 0;
  Status failed_;  // refused at push time
};

class FlushFuture {
 public:
  FlushFuture() noexcept = default;
  bool completed() const noexcept;
  // Ok once everything pushed before the flush is published (each push's
  // own outcome is in its PushFuture); TimedOut when the timeout passes.
  Status wait(Timeout timeout = kForever) const;
  Status wait(int timeout_ms) const {
    return wait(timeout_ms < 0 ? kForever : Timeout(std::chrono::milliseconds(timeout_ms)));
  }

 private:
  friend class detail::Pusher;
  FlushFuture(std::shared_ptr<detail::Pusher> p, std::uint64_t upto) noexcept : pusher_(std::move(p)), upto_(upto) {}
  std::shared_ptr<detail::Pusher> pusher_;
  std::uint64_t upto_ = 0;  // batches below this sequence number
};

}  // namespace rill

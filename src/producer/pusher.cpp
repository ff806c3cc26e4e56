// Producer::push: batching, sender threads, futures.
#include "producer/pusher.hpp"

#include <map>
#include <optional>

#include "event/record_writer.hpp"
#include "producer/producer_impl.hpp"

namespace rill {
namespace detail {

Pusher::Pusher(PushOptions options, std::vector<ProducerImpl*> senders)
    : options_(options), senders_(std::move(senders)) {}

Pusher::~Pusher() { stop(); }

void Pusher::start() {
  for (ProducerImpl* p : senders_) threads_.emplace_back([this, p] { run(p); });
}

template <class Pred>
bool Pusher::wait_done(std::unique_lock<std::mutex>& lock, Deadline deadline, Pred&& pred) {
  if (deadline == Deadline::max()) {
    done_cv_.wait(lock, pred);
    return true;
  }
  return done_cv_.wait_until(lock, deadline, pred);
}

bool Pusher::hand_over(std::unique_lock<std::mutex>& lock, Deadline deadline, bool may_wait, bool force) {
  if (!current_ || current_->items.empty()) return true;
  if (!force) {
    auto room = [&] { return stopping_ || queue_.size() + in_flight_ < options_.max_batches; };
    if (!room() && (!may_wait || !wait_done(lock, deadline, room))) return false;
    if (stopping_) return false;
  }
  current_->seq = next_seq_++;
  current_->handed = true;
  unfinished_.insert(current_->seq);
  queue_.push_back(std::move(current_));
  current_.reset();
  pending_.fetch_add(1, std::memory_order_release);
  work_cv_.notify_one();
  return true;
}

PushFuture Pusher::push(const Message& given, Timeout timeout) {
  ProducerImpl& p = *senders_.front();
  if (p.stopped()) return refused(p.stop_status());
  std::string text;
  std::optional<Message> serialized;
  if (p.has_serializer()) {
    Result<Message> r = p.serialize(given, text);
    if (!r.ok()) return refused(r.status());
    serialized = std::move(*r);
  }
  const Message& m = serialized ? *serialized : given;
  if (Status s = p.validate(m); !s.ok()) return refused(std::move(s));
  if (Status s = check_event_size(m, p.topic_->options().max_event_size); !s.ok()) return refused(std::move(s));
  const std::size_t cap = options_.batch_size ? options_.batch_size : kAdaptiveCap;
  if (current_ && current_->items.size() >= cap) {  // full: wait for room (try/timed pushes may fail)
    std::unique_lock<std::mutex> lock(mu_);
    if (!hand_over(lock, deadline_after(timeout), timeout != Timeout::zero())) {
      if (stopping_) return refused(Status::Closed("the producer is closed"));
      return refused(Status::TimedOut("max_batches batches are pending"));
    }
  }
  if (!current_) current_ = std::make_shared<PushBatch>();
  std::shared_ptr<PushBatch> batch = current_;
  batch->items.push_back({std::string(m.key), std::string(m.metadata), std::string(m.buffer.empty() ? m.data : ""),
                          m.buffer, m.partition});
  const std::size_t index = batch->items.size() - 1;
  // A full batch goes at once; adaptive batches go whenever no sender is busy.
  const bool full = batch->items.size() >= cap;
  if (full || (options_.batch_size == 0 && pending_.load(std::memory_order_acquire) == 0)) {
    std::unique_lock<std::mutex> lock(mu_);
    (void)hand_over(lock, Deadline(), false);  // no room now: the next push (or a wait) hands it over
  }
  return PushFuture(shared_from_this(), std::move(batch), index);
}

FlushFuture Pusher::flush() {
  std::unique_lock<std::mutex> lock(mu_);
  (void)hand_over(lock, Deadline(), false, /*force=*/true);
  return FlushFuture(shared_from_this(), next_seq_);
}

void Pusher::run(ProducerImpl* producer) {
  for (;;) {
    std::shared_ptr<PushBatch> b;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and drained
      b = std::move(queue_.front());
      queue_.pop_front();
      ++in_flight_;
    }
    b->results.reserve(b->items.size());
    std::map<std::uint32_t, std::uint64_t> last;  // sync topics: per partition, the last offset published
    for (const PushBatch::Item& item : b->items) {
      const Message m{item.key, item.metadata, item.data, item.buffer, item.partition};
      LazyDeadline forever(kForever);
      Result<EventId> id = producer->publish_validated(m, forever, true);  // validated by push()
      if (id.ok()) last[id->partition] = id->offset;
      b->results.push_back(std::move(id));
    }
    if (producer->log_ && producer->topic_->durable()->sync) {
      for (const auto& [partition, offset] : last) {
        Status s = producer->wait_durable(EventId{partition, offset}, Deadline::max());
        if (s.ok()) continue;
        for (Result<EventId>& r : b->results) {
          if (r.ok() && r->partition == partition) r = s;
        }
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      b->done.store(true, std::memory_order_release);
      --in_flight_;
      unfinished_.erase(b->seq);
      pending_.fetch_sub(1, std::memory_order_release);
    }
    done_cv_.notify_all();
  }
}

void Pusher::stop() noexcept {
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_ && threads_.empty()) return;
    (void)hand_over(lock, Deadline(), false, /*force=*/true);
    stopping_ = true;
  }
  work_cv_.notify_all();
  done_cv_.notify_all();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

Result<EventId> Pusher::wait(const std::shared_ptr<PushBatch>& b, std::size_t index, Timeout timeout) {
  const Deadline deadline = deadline_after(timeout);
  std::unique_lock<std::mutex> lock(mu_);
  if (!b->handed) {  // still being filled: it goes now (the producer's thread, by contract)
    if (!hand_over(lock, deadline, true)) {
      if (stopping_) return Status::Closed("the producer is closed");
      return Status::TimedOut("max_batches batches are pending");
    }
  }
  if (!wait_done(lock, deadline, [&] { return b->done.load(std::memory_order_acquire); })) {
    return Status::TimedOut("the event's batch is not published yet");
  }
  return b->results[index];
}

bool Pusher::flushed(std::uint64_t upto) const {
  std::lock_guard<std::mutex> lock(mu_);
  return unfinished_.empty() || *unfinished_.begin() >= upto;
}

Status Pusher::wait_flushed(std::uint64_t upto, Timeout timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const bool ok =
      wait_done(lock, deadline_after(timeout), [&] { return unfinished_.empty() || *unfinished_.begin() >= upto; });
  return ok ? Status::Ok() : Status::TimedOut("batches pushed before the flush are still being published");
}

}  // namespace detail

bool PushFuture::completed() const noexcept {
  if (!batch_) return true;  // refused at push time (or empty)
  return batch_->done.load(std::memory_order_acquire);
}

Result<EventId> PushFuture::wait(Timeout timeout) const {
  if (!batch_) {
    if (!failed_.ok()) return failed_;
    return Status::InvalidArgument("wait() on an empty PushFuture; get one from Producer::push");
  }
  return pusher_->wait(batch_, index_, timeout);
}

bool FlushFuture::completed() const noexcept { return !pusher_ || pusher_->flushed(upto_); }

Status FlushFuture::wait(Timeout timeout) const {
  if (!pusher_) return Status::Ok();
  return pusher_->wait_flushed(upto_, timeout);
}

}  // namespace rill

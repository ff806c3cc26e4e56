// Pusher: Producer::push's batches and the sender threads that publish them.
//
// The producer's thread fills `current_` (no lock: one thread at a time, as
// for any Producer call) and hands whole batches over under mu_; senders
// take them in order (one sender: strict order; two: loose), publish each
// event through a ProducerImpl, and complete the batch's futures.
// Lifetime: shared by the ProducerImpl and every future; stop() (from the
// Producer's destructor) hands over what is left, lets the senders drain
// the queue and joins them. Allocation: one batch object per batch and the
// copies of each pushed message's bytes.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.hpp"
#include "rill/producer.hpp"
#include "rill/push.hpp"

namespace rill::detail {

class ProducerImpl;

struct PushBatch {
  struct Item {
    std::string key, metadata, data;
    Buffer buffer;
    std::int64_t partition = kAnyPartition;
  };
  std::vector<Item> items;
  std::vector<Result<EventId>> results;  // written by the sender before `done`
  std::uint64_t seq = 0;
  bool handed = false;          // guarded by Pusher::mu_
  std::atomic<bool> done{false};
};

class Pusher : public std::enable_shared_from_this<Pusher> {
 public:
  // `senders`: one ProducerImpl per sender thread; they outlive stop().
  Pusher(PushOptions options, std::vector<ProducerImpl*> senders);
  ~Pusher();
  void start();  // REQUIRES: owned by a shared_ptr

  PushFuture push(const Message& m, Timeout timeout);
  static PushFuture refused(Status why) { return PushFuture(std::move(why)); }
  FlushFuture flush();
  void stop() noexcept;

  // For the futures.
  Result<EventId> wait(const std::shared_ptr<PushBatch>& b, std::size_t index, Timeout timeout);
  bool flushed(std::uint64_t upto) const;
  Status wait_flushed(std::uint64_t upto, Timeout timeout);

 private:
  static constexpr std::size_t kAdaptiveCap = 1024;
  // Moves current_ to the queue when there is room (waiting until the
  // deadline if may_wait), or always when forced. REQUIRES: mu_ held.
  bool hand_over(std::unique_lock<std::mutex>& lock, Deadline deadline, bool may_wait, bool force = false);
  void run(ProducerImpl* producer);
  template <class Pred>
  bool wait_done(std::unique_lock<std::mutex>& lock, Deadline deadline, Pred&& pred);

  const PushOptions options_;
  const std::vector<ProducerImpl*> senders_;
  std::shared_ptr<PushBatch> current_;  // the producer's thread only
  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // senders: a batch is queued, or stop
  std::condition_variable done_cv_;  // waiters: a batch is done, or room
  std::deque<std::shared_ptr<PushBatch>> queue_;
  std::size_t in_flight_ = 0;
  std::set<std::uint64_t> unfinished_;  // handed over, not done
  std::uint64_t next_seq_ = 0;
  bool stopping_ = false;
  std::atomic<std::size_t> pending_{0};  // queued + in flight, for the adaptive check
  std::vector<std::thread> threads_;
};

}  // namespace rill::detail

#include "storage/durable_log.hpp"

#include <algorithm>

#include "consumer/shared_group.hpp"
#include "event/record_writer.hpp"
#include "ring/wait.hpp"
#include "topic/topic_core.hpp"

namespace rill::detail {

namespace {

// One partition's share of a group.
struct GroupPart {
  TopicCore* topic;
  std::uint32_t partition;
  std::uint64_t from, to;  // events [from, to) go into this group
  PartitionState state;    // after the group
};

struct CursorChange {
  TopicCore* topic;
  std::string name;
  std::uint32_t partition;
  std::uint64_t value;  // kNoPosition: delete
  std::string acked_above{};  // individual acks: offsets acked above `value`
  // Individual acks: the group and the version of its snapshot, marked
  // saved once committed (SharedGroup::acks_saved).
  std::shared_ptr<SharedGroup> group{};
  std::uint64_t group_version = 0;
};

}  // namespace

Result<std::shared_ptr<DurableLog>> DurableLog::open(const BusOptions& options) {
  Result<std::unique_ptr<Store>> store = Store::open(options);
  if (!store.ok()) return store.status();
  std::shared_ptr<DurableLog> log(new DurableLog(std::move(*store), options));
  if (!log->read_only()) log->writer_ = std::thread([raw = log.get()] { raw->run(); });
  return log;
}

DurableLog::DurableLog(std::unique_ptr<Store> store, const BusOptions& options)
    : store_(std::move(store)), options_(options), last_fsync_(SteadyClock::now()) {}

DurableLog::~DurableLog() { stop(); }

void DurableLog::add_topic(std::shared_ptr<TopicCore> topic) {
  std::lock_guard<std::mutex> lock(topics_mu_);
  topics_.push_back(std::move(topic));
}

void DurableLog::remove_topic(const TopicCore* topic) {
  std::lock_guard<std::mutex> lock(topics_mu_);
  std::erase_if(topics_, [&](const std::shared_ptr<TopicCore>& t) { return t.get() == topic; });
}

void DurableLog::stop() noexcept {
  if (stop_.exchange(true)) return;
  writer_bell_.wake_all();
  batch_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  store_->close();  // the path's lock is free now, even while handles live
  {
    std::lock_guard<std::mutex> lock(topics_mu_);
    topics_.clear();  // topics hold the log: break the cycle
  }
  {
    // Batches never started are refused.
    std::lock_guard<std::mutex> lock(batch_mu_);
    for (BatchRequest* r : batches_) {
      r->done = true;
      r->status = Status::Closed("the bus closed before the write batch ran; nothing of it was published");
    }
    batches_.clear();
    batches_queued_.store(0);
  }
  batch_cv_.notify_all();
  durable_bell_.wake_all();
}

Status DurableLog::failure() const {
  std::lock_guard<std::mutex> lock(failure_mu_);
  return failure_;
}

void DurableLog::fail(Status s, bool retry) noexcept {
  {
    std::lock_guard<std::mutex> lock(failure_mu_);
    if (failed_.load() && !retrying_) return;  // the first sticky failure stays
    failure_ = std::move(s);
    retrying_ = retry;
    failed_.store(true, std::memory_order_release);
  }
  durable_bell_.wake_all();
  for (auto& t : topics_) {  // REQUIRES: topics_mu_ held (the writer)
    t->space_bell().wake_all();
    t->wake_consumers();
  }
}

void DurableLog::recover() noexcept {
  std::lock_guard<std::mutex> lock(failure_mu_);
  retrying_ = false;
  failed_.store(false, std::memory_order_release);  // failure_ stays: a racing reader may still report it
}

DurableLog::Pending DurableLog::pending() const noexcept {
  Pending out;
  for (const auto& t : topics_) {
    const DurableTopic* d = t->durable();
    for (std::uint32_t p = 0; p < t->partitions(); ++p) {
      const std::uint64_t n = t->ring(p).published() - d->parts[p].state.next;
      if (n == 0) continue;
      out.total += n;
      out.most = std::max(out.most, n);
      out.sync = out.sync || d->sync;
      // A ring half full of uncommitted events is about to stall producers.
      out.near_full = out.near_full || n * 2 >= t->options().capacity;
    }
  }
  return out;
}

void DurableLog::finish_batch(BatchRequest& request, Status status) {
  std::lock_guard<std::mutex> lock(batch_mu_);
  request.done = true;
  request.status = std::move(status);
  batch_cv_.notify_all();
}

void DurableLog::run() noexcept {
  Deadline last_commit = SteadyClock::now();
  Deadline next_retry{};
  // A group that failed: a full map is retried after kFullRetry, anything
  // else stops durable publishing for good.
  auto group_failed = [&](Status s) {
    const bool retry = s.is_resource_exhausted();
    fail(std::move(s), retry);
    next_retry = SteadyClock::now() + kFullRetry;
  };
  for (;;) {
    const bool stopping = stop_.load(std::memory_order_acquire);
    BatchRequest* batch = nullptr;
    if (batches_queued_.load(std::memory_order_acquire) && !stopping) {
      std::lock_guard<std::mutex> lock(batch_mu_);
      if (!batches_.empty()) {
        batch = batches_.front();
        batches_.pop_front();
        batches_queued_.fetch_sub(1);
        batch->started = true;
      }
    }
    std::unique_lock<std::mutex> topics_lock(topics_mu_);
    if (failed() && retrying_ && (stopping || SteadyClock::now() >= next_retry)) {
      // A full map: try the group again (at close, one last time).
      Status s = commit_group(stopping, !stopping);
      if (s.ok()) {
        recover();
        last_commit = SteadyClock::now();
      } else {
        group_failed(std::move(s));
      }
    }
    if (failed()) {
      topics_lock.unlock();
      if (batch) finish_batch(*batch, failure());
      if (stopping) return;
      writer_bell_.sleep([&] { return stop_.load() || batches_queued_.load() != 0; },
                         SteadyClock::now() + std::chrono::milliseconds(50));
      continue;
    }
    if (batch) {
      Status s = execute_batch(*batch);
      topics_lock.unlock();
      finish_batch(*batch, std::move(s));
      last_commit = SteadyClock::now();
      continue;
    }
    const Deadline now = SteadyClock::now();
    const Pending pending_now = pending();
    const bool full_group = pending_now.near_full || pending_now.most >= options_.commit_events;
    const bool due = stopping || pending_now.sync || full_group ||
                     ((pending_now.total > 0 || acks_dirty_.load(std::memory_order_relaxed)) &&
                      now - last_commit >= options_.commit_interval);
    if (due) {
      if (!stopping && pending_now.sync && !full_group) {
        // Group commit: the publishers the last group woke are appending
        // again. Wait until as many wait for a commit as waited when the
        // last group's fsync ended (the publishers active then), so that
        // one fsync covers them all rather than a trickle of small groups
        // each paying its own — but no longer than publishers keep coming:
        // 50 us without a new event ends the wait (publishers gone, or
        // publishing without waiting), and 500 us at most. A lone sync
        // publisher is back at once: no delay.
        const Deadline start = SteadyClock::now();
        const Deadline until = start + std::chrono::microseconds(500);
        auto gathered = [&] {
          return (waiters_at_last_commit_ > 0 && waiting_for_commit() >= waiters_at_last_commit_) ||
                 pending().total >= options_.commit_events || stop_.load(std::memory_order_acquire);
        };
        std::uint64_t seen = pending().total;
        Deadline changed = start;
        while (!gathered()) {
          const Deadline t = SteadyClock::now();
          if (t >= until) break;
          if (const std::uint64_t p = pending().total; p != seen) {
            seen = p;
            changed = t;
          } else if (t - changed >= std::chrono::microseconds(50)) {
            break;
          }
          writer_bell_.sleep(gathered, std::min(until, t + std::chrono::microseconds(25)));
        }
      }
      if (Status s = commit_group(stopping, !stopping); !s.ok()) group_failed(std::move(s));
      last_commit = SteadyClock::now();
      if (stopping) return;
      continue;
    }
    topics_lock.unlock();
    // Sleep in slices of at most 1 ms so that commit_events and the
    // interval are noticed; sync publishers and batches wake us at once.
    const Deadline until = std::min(last_commit + options_.commit_interval, now + std::chrono::milliseconds(1));
    writer_bell_.sleep(
        [&] {
          if (stop_.load(std::memory_order_acquire) || batches_queued_.load(std::memory_order_acquire)) return true;
          std::lock_guard<std::mutex> lock(topics_mu_);
          return pending().sync;
        },
        until);
  }
}

Status DurableLog::commit_group(bool force_sync, bool capped) {
  std::vector<CursorChange> cursors;
  // Cursors first: an acked offset was published before the ack, so it is
  // at or below the bounds taken next.
  for (const auto& t : topics_) {
    std::lock_guard<std::mutex> lock(t->registry_mutex());
    for (std::string& name : t->removed_names_locked()) {
      for (std::uint32_t p = 0; p < t->partitions(); ++p) cursors.push_back({t.get(), name, p, kNoPosition});
    }
    t->removed_names_locked().clear();
    for (auto& [name, ns] : t->names_locked()) {
      for (std::uint32_t p = 0; p < t->partitions(); ++p) {
        if (ns.group && ns.group->reads(p)) {  // individual acks: the base and the acked set above it
          CursorChange c{t.get(), name, p, 0};
          if (ns.group->acks_snapshot(p, c.value, c.acked_above, c.group_version)) {
            c.group = ns.group;
            cursors.push_back(std::move(c));
          }
          continue;
        }
        const std::uint64_t v = ns.acked[p].load(std::memory_order_acquire);
        if (v != kNoPosition && v != ns.persisted[p]) cursors.push_back({t.get(), name, p, v});
      }
    }
  }
  acks_dirty_.store(false, std::memory_order_relaxed);

  std::vector<GroupPart> parts;
  bool sync_needed = force_sync;
  const std::int64_t now_wall = now_ns(false);
  const Deadline now = SteadyClock::now();
  for (const auto& t : topics_) {
    DurableTopic* d = t->durable();
    for (std::uint32_t p = 0; p < t->partitions(); ++p) {
      DurablePartition& dp = d->parts[p];
      std::uint64_t bound = t->ring(p).published();
      if (dp.hold != kNoPosition) bound = std::min(bound, dp.hold);
      // A bounded group: LMDB's cost per put grows with a transaction's
      // dirty pages. (A write batch's final group is never capped: it must
      // hold the whole batch.)
      if (capped && bound - dp.state.next > options_.commit_events) bound = dp.state.next + options_.commit_events;
      const Retention& r = t->options().retention;
      const bool retention_due = (r.max_events && dp.state.next - dp.state.earliest > r.max_events) ||
                                 (r.max_bytes && dp.state.bytes > r.max_bytes) ||
                                 (r.max_age.count() && now >= dp.next_age_check);
      if (bound == dp.state.next && !retention_due) continue;
      if (bound > dp.state.next && d->sync) sync_needed = true;
      parts.push_back(GroupPart{t.get(), p, dp.state.next, bound, dp.state});
    }
  }
  if (parts.empty() && cursors.empty()) return Status::Ok();
  if (!parts.empty() && now - last_fsync_ >= options_.async_fsync_interval) sync_needed = true;

  Status s = store_->write([&](WriteTxn& w) -> Status {
    for (GroupPart& g : parts) {
      DurableTopic* d = g.topic->durable();
      DurablePartition& dp = d->parts[g.partition];
      const PartitionDbs& dbs = d->stored.dbs[g.partition];
      EventRing& ring = g.topic->ring(g.partition);
      g.state = dp.state;  // the function may run again after the map grows
      for (std::uint64_t seq = g.from; seq < g.to; ++seq) {
        // Safe: the writer's hard gate (at g.from) keeps these slots. They
        // were written on the producers' cores: request lines ahead.
        if (seq + 8 < g.to) prefetch_for_read(&ring.slot(seq + 8));
        if (seq + 4 < g.to) {
          const EventRecord& ahead = ring.slot(seq + 4);  // prefetched 4 events ago
          if (ahead.block) prefetch_for_read(ahead.block->data);
        }
        const EventRecord& rec = ring.slot(seq);
        const std::string_view key(rec.head(), rec.key_size);
        const std::string_view meta(rec.head() + rec.key_size, rec.meta_size);
        const std::string_view data(rec.data_ptr(), rec.data_size);
        if (Status as = w.append(dbs, seq, rec.timestamp_ns, key, meta, data); !as.ok()) return as;
        g.state.bytes += std::uint64_t(rec.key_size) + rec.meta_size + rec.data_size;
      }
      g.state.next = g.to;
      const Retention& r = g.topic->options().retention;
      if (r.max_events || r.max_bytes || r.max_age.count()) {
        std::uint64_t limit = g.state.next;
        if (r.keep_unacked) {
          std::lock_guard<std::mutex> lock(g.topic->registry_mutex());
          for (auto& [name, ns] : g.topic->names_locked()) {
            const std::uint64_t v = ns.acked[g.partition].load(std::memory_order_acquire);
            if (v != kNoPosition) limit = std::min(limit, v);
          }
        }
        const std::int64_t cutoff = now_wall - std::chrono::duration_cast<std::chrono::nanoseconds>(r.max_age).count();
        std::uint64_t kept_bytes = g.state.bytes;
        auto keep = [&](const StoredEvent& e, std::uint64_t size) {
          const bool drop = (r.max_events && g.state.next - e.offset > r.max_events) ||
                            (r.max_bytes && kept_bytes > r.max_bytes) ||
                            (r.max_age.count() && e.timestamp_ns < cutoff);
          if (drop) kept_bytes -= size;
          return !drop;
        };
        std::uint64_t events = 0, bytes = 0;
        if (Status ts = w.trim(dbs, limit, keep, events, bytes); !ts.ok()) return ts;
        g.state.earliest += events;
        g.state.bytes -= bytes;
      }
      if (Status ps = w.put_state(d->stored.id, g.partition, g.state); !ps.ok()) return ps;
    }
    for (const CursorChange& c : cursors) {
      const std::uint32_t id = c.topic->durable()->stored.id;
      Status cs = c.value == kNoPosition ? w.delete_cursor(id, c.partition, c.name)
                                         : w.put_cursor(id, c.partition, c.name, c.value, c.acked_above);
      if (!cs.ok()) return cs;
    }
    return Status::Ok();
  }, /*durable=*/sync_needed);
  if (!s.ok()) {
    // Nothing was written: the next attempt (a full map is retried) must
    // still delete the removed names' cursors and write the acks.
    for (const CursorChange& c : cursors) {
      if (c.value != kNoPosition || c.partition != 0) continue;  // one entry per removed name
      std::lock_guard<std::mutex> lock(c.topic->registry_mutex());
      c.topic->removed_names_locked().push_back(c.name);
    }
    acks_dirty_.store(true, std::memory_order_relaxed);
    return s;
  }
  if (sync_needed) last_fsync_ = SteadyClock::now();

  waiters_at_last_commit_ = waiting_for_commit();
  // Publish the group: committed offsets, the writer's gates, cursors.
  for (GroupPart& g : parts) {
    DurablePartition& dp = g.topic->durable()->parts[g.partition];
    dp.state = g.state;
    if (g.topic->options().retention.max_age.count()) dp.next_age_check = now + std::chrono::milliseconds(100);
    dp.earliest.store(g.state.earliest, std::memory_order_release);
    dp.committed.store(g.to, std::memory_order_release);
    g.topic->ring(g.partition).ack(dp.writer_gate, g.to);
    g.topic->after_ack();
    if (g.topic->durable()->sync) g.topic->after_publish();  // consumers see committed events only
  }
  // Record what is on disk now, for names still registered (one may have
  // been removed since the snapshot: its deletion is in the next group).
  for (const CursorChange& c : cursors) {
    if (c.value == kNoPosition) continue;
    std::lock_guard<std::mutex> lock(c.topic->registry_mutex());
    auto& names = c.topic->names_locked();
    auto it = names.find(c.name);
    if (it == names.end()) continue;
    // Removed since the snapshot and registered again: the new one's acks
    // are not on disk (the next group deletes the old cursor).
    const auto& removed = c.topic->removed_names_locked();
    if (std::find(removed.begin(), removed.end(), c.name) != removed.end()) continue;
    it->second.persisted[c.partition] = c.value;
    if (c.group && it->second.group == c.group) c.group->acks_saved(c.partition, c.group_version);
  }
  durable_bell_.notify();
  return Status::Ok();
}

Status DurableLog::wait_committed(TopicCore& topic, std::uint32_t partition, std::uint64_t offset, Deadline deadline,
                                  const std::atomic<bool>* cancelled) {
  DurablePartition& dp = topic.durable()->parts[partition];
  auto done = [&] { return dp.committed.load(std::memory_order_acquire) > offset; };
  if (done()) return Status::Ok();
  // Whether a failure ended the wait, noted when seen: a full map's retry
  // may clear failed() again before we report.
  bool failure_seen = false;
  auto stop = [&] {
    if (done()) return true;
    if (failed()) {
      failure_seen = true;
      return true;
    }
    return topic.closed() || stop_.load(std::memory_order_acquire) ||
           (cancelled && cancelled->load(std::memory_order_relaxed));
  };
  // A commit takes long enough (its fsyncs) that yielding through it only
  // takes the CPU from the writer and the other publishers: sleep.
  // Registered before the nudge: a writer lingering for waiters sees us.
  WaitSlot* slot = register_waiter(dp.committed, offset);
  nudge();
  wait_until(WaitStrategy::kBlocking, durable_bell_, deadline, stop, /*yields=*/0);
  unregister_waiter(slot);
  if (done()) return Status::Ok();
  if (failure_seen || failed()) {
    return failure().with_context("the event was appended but not committed; it may still be if the writer "
                                  "recovers (a full map is retried)");
  }
  if (topic.closed() || stop_.load() || (cancelled && cancelled->load())) {
    return Status::Closed("closed before the event was committed; it may or may not be on disk");
  }
  return Status::TimedOut("the event was not committed within the timeout; it may still be");
}

DurableLog::WaitSlot* DurableLog::register_waiter(const std::atomic<std::uint64_t>& committed,
                                                  std::uint64_t offset) noexcept {
  for (std::size_t i = 0; i < kWaitSlots; ++i) {
    WaitSlot& w = wait_slots_[i];
    if (w.busy.load(std::memory_order_relaxed) || w.busy.exchange(true, std::memory_order_acquire)) continue;
    w.offset.store(offset, std::memory_order_relaxed);
    w.committed.store(&committed, std::memory_order_release);
    return &w;
  }
  return nullptr;
}

// The writer may have loaded the slot's pointer just before it is cleared:
// scanning_ (seq_cst on both sides) tells, and the waiter lets that short
// scan end before returning (after which its topic may be destroyed).
void DurableLog::unregister_waiter(WaitSlot* slot) noexcept {
  if (!slot) return;
  slot->committed.store(nullptr, std::memory_order_seq_cst);
  // Past 1024 pauses the writer was preempted mid-scan: yield to it.
  for (int i = 0; scanning_.load(std::memory_order_seq_cst) != 0; ++i) pause_or_yield(i, 1024);
  slot->busy.store(false, std::memory_order_release);
}

int DurableLog::waiting_for_commit() noexcept {
  scanning_.fetch_add(1, std::memory_order_seq_cst);
  int n = 0;
  for (std::size_t i = 0; i < kWaitSlots; ++i) {
    const WaitSlot& w = wait_slots_[i];
    const std::atomic<std::uint64_t>* c = w.committed.load(std::memory_order_seq_cst);
    if (c && c->load(std::memory_order_acquire) <= w.offset.load(std::memory_order_relaxed)) ++n;
  }
  scanning_.fetch_sub(1, std::memory_order_seq_cst);
  return n;
}

Status DurableLog::run_batch(BatchRequest& request, Deadline deadline) {
  if (failed()) return failure();
  {
    std::unique_lock<std::mutex> lock(batch_mu_);
    if (stop_.load()) return Status::Closed("the bus is closed");
    batches_.push_back(&request);
    batches_queued_.fetch_add(1);
  }
  writer_bell_.wake_all();
  std::unique_lock<std::mutex> lock(batch_mu_);
  while (!request.done) {
    if (deadline == Deadline::max()) {
      batch_cv_.wait(lock);
    } else if (batch_cv_.wait_until(lock, deadline) == std::cv_status::timeout && !request.done && !request.started) {
      std::erase(batches_, &request);
      batches_queued_.fetch_sub(1);
      return Status::TimedOut("the write batch did not start within the timeout; nothing of it was published");
    }
  }
  return request.status;
}

// Runs on the writer thread with topics_mu_ held.
Status DurableLog::execute_batch(BatchRequest& r) {
  std::vector<DurablePartition*> held;
  auto release_holds = [&] {
    for (DurablePartition* dp : held) dp->hold = kNoPosition;
    held.clear();
  };
  // Waiting for ring space or for an earlier producer's claim: keep
  // committing what lies below the holds, since producers may be waiting
  // for us.
  auto make_progress = [&]() -> Status {
    if (Status s = commit_group(false, true); !s.ok()) {
      fail(s);  // below the holds only, but the batch ends here: stop for good, as after its own group
      return s;
    }
    std::this_thread::yield();
    return Status::Ok();
  };
  // A topic closed (or deleted) before the batch started: the writer no
  // longer commits it (remove_topic takes topics_mu_, which we hold, so one
  // open now stays in the writer's set until this batch has committed).
  auto closed_one = [&]() -> const TopicCore* {
    for (const BatchRequest::Item& it : r.items) {
      if (it.topic->closed()) return it.topic.get();
    }
    for (const BatchRequest::Ack& a : r.acks) {
      if (a.topic->closed()) return a.topic.get();
    }
    return nullptr;
  };
  if (const TopicCore* t = closed_one()) {
    return Status::Closed("topic '" + t->name() + "' is closed or deleted; nothing of the write batch committed");
  }
  r.ids.assign(r.items.size(), EventId{});
  std::size_t i = 0;
  while (i < r.items.size()) {
    TopicCore& topic = *r.items[i].topic;
    const std::uint32_t p = r.items[i].partition;
    std::size_t n = 1;
    while (i + n < r.items.size() && r.items[i + n].topic.get() == &topic && r.items[i + n].partition == p) ++n;
    EventRing& ring = topic.ring(p);
    DurablePartition& dp = topic.durable()->parts[p];
    std::optional<std::uint64_t> first;
    while (!(first = ring.try_claim(n))) {
      if (topic.closed() || stop_.load()) {
        // Runs already published stay held: they are never committed, so
        // the batch stays all-or-nothing (their partitions commit no
        // further until the bus is reopened).
        if (held.empty()) release_holds();
        return Status::Closed("topic '" + topic.name() + "' closed during the write batch; nothing of it committed");
      }
      if (Status s = make_progress(); !s.ok()) return s;
    }
    if (dp.hold == kNoPosition) {
      dp.hold = *first;
      held.push_back(&dp);
    }
    ring.mp_wait_in_window(*first, n);  // the writer's gate already bounds it: returns at once
    const std::int64_t ts = append_stamp_ns(topic.options().precise_timestamps);
    for (std::size_t k = 0; k < n; ++k) {
      const BatchRequest::Item& it = r.items[i + k];
      Message m{it.key, it.metadata, it.data, {}, p};
      PreparedEvent prepared;
      Status ps = prepare_event(m, ~std::uint32_t{0}, prepared);
      assert(ps.ok());
      (void)ps;
      write_record(ring.slot(*first + k), prepared, ts);
      r.ids[it.index] = EventId{p, *first + k};
    }
    ring.mp_publish(*first, n);
    // Published now, or marked for the producer of an earlier claim still
    // copying. The batch commits whole in the final group, so it waits here
    // until that producer has published it (producers never wait for it).
    while (ring.published() < *first + n) {
      if (Status s = make_progress(); !s.ok()) return s;
    }
    topic.after_publish();
    i += n;
  }
  for (const BatchRequest::Ack& a : r.acks) raise_position(*a.acked, a.next);
  release_holds();
  if (Status s = commit_group(true, false); !s.ok()) {
    // Its events are in the rings now, and its acks raised: a later group
    // would commit them after the batch reported failure. Stop for good.
    fail(s);
    return s;
  }
  return Status::Ok();
}

}  // namespace rill::detail

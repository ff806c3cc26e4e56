#include "rill/bus.hpp"

#include <algorithm>
#include <cassert>
#include <map>
#include <mutex>

#include "common/names.hpp"
#include "consumer/consumer_impl.hpp"
#include "consumer/multi_consumer_impl.hpp"
#include "producer/producer_impl.hpp"
#include "storage/durable_log.hpp"
#include "topic/topic_core.hpp"

namespace rill {
namespace detail {

class BusCore {
 public:
  BusCore(BusOptions options, std::shared_ptr<DurableLog> log) : options_(std::move(options)), log_(std::move(log)) {}
  ~BusCore() { (void)close(); }

  DurableLog* log() const noexcept { return log_.get(); }

  // Rebuilds the durable topics and their consumers' positions.
  Status restore() {
    Result<std::vector<StoredTopic>> stored = log_->store().load_topics();
    if (!stored.ok()) return stored.status();
    Result<std::vector<StoredCursor>> cursors = log_->store().load_cursors();
    if (!cursors.ok()) return cursors.status();
    std::map<std::uint32_t, std::shared_ptr<TopicCore>> by_id;
    for (StoredTopic& t : *stored) {
      // A damaged configuration must not size rings or gates.
      Status valid = validate_name("topic name", t.name);
      if (valid.ok()) valid = validate_topic_options(t.options);
      if (!valid.ok()) {
        return Status::Corruption("store '" + log_->store().path() + "': the stored configuration of topic '" +
                                  t.name + "' is invalid: " + std::string(valid.message()));
      }
      std::string name = t.name;
      auto core = make_durable(std::move(t));
      by_id[core->durable()->stored.id] = core;
      topics_.emplace(std::move(name), core);
    }
    for (const StoredCursor& c : *cursors) {
      auto it = by_id.find(c.topic_id);
      if (it == by_id.end() || c.partition >= it->second->partitions()) continue;  // a dropped topic's leftovers
      it->second->restore_cursor(c.name, c.partition, c.acked_next, c.acked_above);
    }
    for (auto& [id, core] : by_id) log_->add_topic(core);
    return Status::Ok();
  }

  Result<std::shared_ptr<TopicCore>> create(std::string_view name, const TopicOptions& options, bool exist_ok) {
    if (Status s = validate_name("topic name", name); !s.ok()) return s;
    if (Status s = validate_topic_options(options); !s.ok()) return s;
    const bool durable = options.durability != Durability::kNone;
    if (durable && !log_) {
      return Status::InvalidArgument("topic '" + std::string(name) +
                                     "' is durable but the bus has no store: open it with Bus::open and a path");
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return Status::Closed("the bus is closed");
    auto it = topics_.find(name);
    if (it != topics_.end()) {
      if (exist_ok) return it->second;
      return Status::AlreadyExists("topic '" + std::string(name) + "' already exists");
    }
    if (log_ && log_->read_only()) return Status::InvalidArgument("the bus is open read-only: no new topics");
    std::shared_ptr<TopicCore> core;
    if (durable) {
      Result<StoredTopic> stored = log_->store().create_topic(name, options);
      if (!stored.ok()) return stored.status();
      core = make_durable(std::move(*stored));
      log_->add_topic(core);
    } else {
      core = std::make_shared<TopicCore>(std::string(name), options);
      core->set_bus(bell_, lookup());
    }
    topics_.emplace(std::string(name), core);
    return core;
  }

  Result<std::shared_ptr<TopicCore>> open(std::string_view name) const {
    if (Status s = validate_name("topic name", name); !s.ok()) return s;
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return Status::Closed("the bus is closed");
    auto it = topics_.find(name);
    if (it == topics_.end()) return Status::NotFound("topic '" + std::string(name) + "' does not exist");
    return it->second;
  }

  std::vector<std::string> list() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> names;
    for (const auto& [name, core] : topics_) names.push_back(name);
    return names;
  }

  Status remove(std::string_view name) {
    if (Status s = validate_name("topic name", name); !s.ok()) return s;
    std::shared_ptr<TopicCore> core;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return Status::Closed("the bus is closed");
      auto it = topics_.find(name);
      if (it == topics_.end()) return Status::NotFound("topic '" + std::string(name) + "' does not exist");
      if (log_ && log_->read_only()) return Status::InvalidArgument("the bus is open read-only: no deletes");
      core = std::move(it->second);
      topics_.erase(it);
    }
    core->close();
    if (DurableTopic* d = core->durable()) {
      log_->remove_topic(core.get());
      return log_->store().drop_topic(d->stored);
    }
    return Status::Ok();
  }

  Status close() noexcept {
    std::map<std::string, std::shared_ptr<TopicCore>, std::less<>> topics;
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      topics.swap(topics_);
    }
    for (auto& [name, core] : topics) core->close();
    // After the topics: no publish can start, and everything published is
    // committed by the writer's last group.
    if (!log_) return Status::Ok();
    log_->stop();
    if (!log_->failed()) return Status::Ok();
    return log_->failure().with_context("closing the bus: what durable topics held since the last commit is not stored");
  }

  const BusOptions& options() const noexcept { return options_; }
  const std::shared_ptr<Doorbell>& shared_bell() const noexcept { return bell_; }
  // Lets topics find their siblings without keeping the bus alive.
  void set_self(std::weak_ptr<BusCore> self) noexcept { self_ = std::move(self); }
  TopicCore::TopicLookup lookup() const {
    return [self = self_](std::string_view name) -> std::shared_ptr<TopicCore> {
      std::shared_ptr<BusCore> core = self.lock();
      if (!core) return nullptr;
      auto r = core->open(name);
      return r.ok() ? std::move(*r) : nullptr;
    };
  }
  // Rung by every publish to any of this bus's topics: multi-topic
  // consumers sleep here.
  Doorbell& bell() noexcept { return *bell_; }

 private:
  std::shared_ptr<TopicCore> make_durable(StoredTopic stored) {
    auto d = std::make_unique<DurableTopic>();
    d->log = log_;
    d->sync = stored.options.durability == Durability::kSync;
    d->parts = std::make_unique<DurablePartition[]>(stored.options.partitions);
    for (std::uint32_t p = 0; p < stored.options.partitions; ++p) {
      DurablePartition& dp = d->parts[p];
      dp.state = stored.partitions[p];
      dp.committed.store(dp.state.next, std::memory_order_relaxed);
      dp.earliest.store(dp.state.earliest, std::memory_order_relaxed);
    }
    const TopicOptions options = stored.options;
    std::string name = stored.name;
    d->stored = std::move(stored);
    auto core = std::make_shared<TopicCore>(std::move(name), options, std::move(d));
    core->set_bus(bell_, lookup());  // before the writer or anyone else sees it
    return core;
  }

  const BusOptions options_;
  const std::shared_ptr<DurableLog> log_;
  const std::shared_ptr<Doorbell> bell_ = std::make_shared<Doorbell>();
  std::weak_ptr<BusCore> self_;
  mutable std::mutex mu_;
  bool closed_ = false;
  std::map<std::string, std::shared_ptr<TopicCore>, std::less<>> topics_;
};

}  // namespace detail

// ------------------------------------------------------------ Topic

const std::string& Topic::name() const noexcept { return core_->name(); }
const TopicOptions& Topic::options() const noexcept { return core_->options(); }
bool Topic::closed() const noexcept { return core_->closed(); }
std::vector<PartitionStats> Topic::stats() const { return core_->stats(); }
std::vector<std::string> Topic::consumer_names() const { return core_->names(); }

Result<std::vector<std::uint64_t>> Topic::positions(std::string_view name) const {
  if (Status s = detail::validate_name("consumer name", name); !s.ok()) return s;
  static_assert(kNotRead == detail::kNoPosition);
  return core_->positions(std::string(name));
}

Result<std::uint64_t> Topic::lag(std::string_view name) const {
  Result<std::vector<std::uint64_t>> next = positions(name);
  if (!next.ok()) return next.status();
  std::uint64_t lag = 0;
  for (std::uint32_t p = 0; p < next->size(); ++p) {
    const std::uint64_t end = core_->visible(p);
    if ((*next)[p] != kNotRead && end > (*next)[p]) lag += end - (*next)[p];
  }
  return lag;
}

Status Topic::remove_consumer(std::string_view name) const {
  if (Status s = detail::validate_name("consumer name", name); !s.ok()) return s;
  return core_->remove_name(std::string(name));
}

Result<Producer> Topic::producer(ProducerOptions options) const {
  if (core_->closed()) return Status::Closed("topic '" + core_->name() + "' is closed");
  if (const detail::DurableTopic* d = core_->durable(); d && d->log->read_only()) {
    return Status::InvalidArgument("topic '" + core_->name() + "' belongs to a read-only bus: no producers");
  }
  const bool single = core_->options().producers == ProducerMode::kSingle;
  if (single && !core_->take_single_producer()) {
    return Status::AlreadyExists("topic '" + core_->name() +
                                 "' is single-producer and already has a live Producer");
  }
  return Producer(std::make_unique<detail::ProducerImpl>(core_, single, std::move(options)));
}

Result<Consumer> Topic::consumer(ConsumerOptions options) const {
  if (Status s = detail::validate_name("consumer name", options.name); !s.ok()) return s;
  if (options.max_batch < 1) return Status::InvalidArgument("max_batch is 0; it must be at least 1");
  options.max_batch = std::min(options.max_batch, core_->options().capacity);
  {
    // A fixed pull batch holds its events unacked: on a ring whose
    // producers wait for (or fail on) its readers it could never fill past
    // the capacity. Elsewhere (durable, kDropOldest) only its memory bounds it.
    const TopicOptions& t = core_->options();
    const bool readers_hold = !core_->durable() && t.overflow != OverflowPolicy::kDropOldest;
    const std::uint32_t most = readers_hold ? t.capacity : kMaxPullBatch;
    if (options.pull_batch_size > most) {
      return Status::InvalidArgument("pull_batch_size " + std::to_string(options.pull_batch_size) + " exceeds " +
                                     (readers_hold ? "the capacity of topic '" + core_->name() + "' ("
                                                   : std::string("the limit (")) +
                                     std::to_string(most) + ")");
    }
  }
  if (options.batch_linger.count() < 0) return Status::InvalidArgument("batch_linger is negative");
  options.min_batch = std::clamp<std::uint32_t>(options.min_batch, 1, options.max_batch);
  auto impl = std::make_unique<detail::ConsumerImpl>(core_, std::move(options));
  if (Status s = impl->attach(); !s.ok()) return s;
  return Consumer(std::move(impl));
}

// ------------------------------------------------------------ Bus

Bus::Bus(Empty) noexcept {}

Bus::Bus(BusOptions options) {
  assert(options.path.empty() && "a bus with a path must be opened with Bus::open");
  core_ = std::make_shared<detail::BusCore>(std::move(options), nullptr);
  core_->set_self(core_);
}

Result<Bus> Bus::open(BusOptions options) {
  std::shared_ptr<detail::DurableLog> log;
  if (!options.path.empty()) {
    if (options.commit_events < 1) return Status::InvalidArgument("commit_events must be at least 1");
    if (options.max_durable_partitions < 1 || options.max_durable_partitions > 32000) {
      return Status::InvalidArgument("max_durable_partitions must be in [1, 32000]");
    }
    Result<std::shared_ptr<detail::DurableLog>> opened = detail::DurableLog::open(options);
    if (!opened.ok()) return opened.status();
    log = std::move(*opened);
  }
  Bus bus{Empty{}};
  bus.core_ = std::make_shared<detail::BusCore>(std::move(options), log);
  bus.core_->set_self(bus.core_);
  if (log) {
    if (Status s = bus.core_->restore(); !s.ok()) {
      bus.core_.reset();  // stops the writer before the store closes
      return s;
    }
  }
  return bus;
}

namespace {
Status moved_from() { return Status::Closed("this Bus was moved from"); }
}  // namespace

Status Bus::commit(WriteBatch& batch, Timeout timeout) {
  if (!core_) return moved_from();
  detail::DurableLog* log = core_->log();
  if (!log) return Status::InvalidArgument("commit() needs a bus opened with a path");
  if (log->read_only()) return Status::InvalidArgument("the bus is open read-only");
  detail::BatchRequest& r = batch.request();
  if (r.items.empty() && r.acks.empty()) {  // nothing to commit (and nothing to wait for)
    r.ids.clear();
    return Status::Ok();
  }
  std::map<std::pair<const detail::TopicCore*, std::uint32_t>, std::size_t> per_partition;
  for (const auto& item : r.items) {
    if (item.topic->durable()->log.get() != log) {
      return Status::InvalidArgument("the write batch publishes to topic '" + item.topic->name() +
                                     "' of another bus");
    }
    const std::size_t n = ++per_partition[{item.topic.get(), item.partition}];
    if (n > item.topic->options().capacity / 2) {
      return Status::InvalidArgument("the write batch has more than half the ring capacity (" +
                                     std::to_string(item.topic->options().capacity / 2) + ") of events for partition " +
                                     std::to_string(item.partition) + " of topic '" + item.topic->name() + "'");
    }
  }
  for (const auto& a : r.acks) {
    if (a.topic->durable()->log.get() != log) {
      return Status::InvalidArgument("the write batch acks an event of topic '" + a.topic->name() +
                                     "' of another bus");
    }
  }
  // The writer publishes one partition's events as one run.
  std::stable_sort(r.items.begin(), r.items.end(), [](const auto& a, const auto& b) {
    return std::pair(a.topic.get(), a.partition) < std::pair(b.topic.get(), b.partition);
  });
  r.started = r.done = false;
  r.status = Status::Ok();
  if (Status s = log->run_batch(r, detail::deadline_after(timeout)); !s.ok()) return s;
  // The in-memory half of each ack (the durable half is committed), for
  // the consumers that still exist.
  for (auto& [consumer, event] : batch.acks_) {
    if (std::shared_ptr<detail::ConsumerImpl> impl = consumer.lock()) (void)impl->ack(event);
  }
  return Status::Ok();
}
Bus::Bus(Bus&&) noexcept = default;
Bus& Bus::operator=(Bus&&) noexcept = default;
Bus::~Bus() = default;

Result<Topic> Bus::create_topic(std::string_view name, TopicOptions options) {
  if (!core_) return moved_from();
  auto r = core_->create(name, options, false);
  if (!r.ok()) return r.status();
  return Topic(std::move(*r));
}

Result<Topic> Bus::topic(std::string_view name) const {
  if (!core_) return moved_from();
  auto r = core_->open(name);
  if (!r.ok()) return r.status();
  return Topic(std::move(*r));
}

Result<Topic> Bus::ensure_topic(std::string_view name) {
  if (!core_) return moved_from();
  return ensure_topic(name, core_->options().default_topic);
}

Result<Topic> Bus::ensure_topic(std::string_view name, TopicOptions options) {
  if (!core_) return moved_from();
  auto r = core_->create(name, options, true);
  if (!r.ok()) return r.status();
  return Topic(std::move(*r));
}

std::vector<std::string> Bus::list_topics() const { return core_ ? core_->list() : std::vector<std::string>{}; }

Status Bus::delete_topic(std::string_view name) { return core_ ? core_->remove(name) : moved_from(); }

Result<Producer> Bus::producer(std::string_view topic_name, ProducerOptions options) const {
  auto t = topic(topic_name);
  if (!t.ok()) return t.status();
  return t->producer(std::move(options));
}

Result<MultiConsumer> Bus::multi_consumer(MultiConsumerOptions options) const {
  if (!core_) return moved_from();
  if (Status s = detail::validate_name("consumer name", options.name); !s.ok()) return s;
  std::weak_ptr<detail::BusCore> weak = core_;
  auto open_topic = [weak](std::string_view name) -> Result<Topic> {
    std::shared_ptr<detail::BusCore> core = weak.lock();
    if (!core) return Status::Closed("the bus is gone");
    auto r = core->open(name);
    if (!r.ok()) return r.status();
    return Topic(std::move(*r));
  };
  MultiConsumer c(std::make_unique<MultiConsumer::Impl>(options, std::move(open_topic), core_->shared_bell()));
  Status s = options.assignment.empty() ? c.update_topics(options.topics) : c.assign(options.assignment);
  if (!s.ok()) return s;
  return c;
}

Result<Consumer> Bus::consumer(std::string_view topic_name, ConsumerOptions options) const {
  auto t = topic(topic_name);
  if (!t.ok()) return t.status();
  return t->consumer(std::move(options));
}

Status Bus::close() noexcept {
  return core_ ? core_->close() : Status::Ok();
}

}  // namespace rill

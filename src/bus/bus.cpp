#include "rill/bus.hpp"

#include <algorithm>
#include <map>
#include <mutex>

#include "common/names.hpp"
#include "consumer/consumer_impl.hpp"
#include "producer/producer_impl.hpp"
#include "topic/topic_core.hpp"

namespace rill {
namespace detail {

class BusCore {
 public:
  explicit BusCore(BusOptions options) : options_(std::move(options)) {}
  ~BusCore() { close(); }

  Result<std::shared_ptr<TopicCore>> create(std::string_view name, const TopicOptions& options, bool exist_ok) {
    if (Status s = validate_name("topic name", name); !s.ok()) return s;
    if (Status s = validate_topic_options(options); !s.ok()) return s;
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return Status::Closed("the bus is closed");
    auto it = topics_.find(name);
    if (it != topics_.end()) {
      if (exist_ok) return it->second;
      return Status::AlreadyExists("topic '" + std::string(name) + "' already exists");
    }
    auto core = std::make_shared<TopicCore>(std::string(name), options);
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
      core = std::move(it->second);
      topics_.erase(it);
    }
    core->close();
    return Status::Ok();
  }

  void close() noexcept {
    std::map<std::string, std::shared_ptr<TopicCore>, std::less<>> topics;
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      topics.swap(topics_);
    }
    for (auto& [name, core] : topics) core->close();
  }

  const BusOptions& options() const noexcept { return options_; }

 private:
  const BusOptions options_;
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

Status Topic::remove_consumer(std::string_view name) const {
  if (Status s = detail::validate_name("consumer name", name); !s.ok()) return s;
  return core_->remove_name(std::string(name));
}

Result<Producer> Topic::producer(ProducerOptions) const {
  if (core_->closed()) return Status::Closed("topic '" + core_->name() + "' is closed");
  const bool single = core_->options().producers == ProducerMode::kSingle;
  if (single && !core_->take_single_producer()) {
    return Status::AlreadyExists("topic '" + core_->name() +
                                 "' is single-producer and already has a live Producer");
  }
  return Producer(std::make_unique<detail::ProducerImpl>(core_, single));
}

Result<Consumer> Topic::consumer(ConsumerOptions options) const {
  if (Status s = detail::validate_name("consumer name", options.name); !s.ok()) return s;
  if (options.max_batch < 1) return Status::InvalidArgument("max_batch is 0; it must be at least 1");
  options.max_batch = std::min(options.max_batch, core_->options().capacity);
  auto impl = std::make_unique<detail::ConsumerImpl>(core_, std::move(options));
  if (Status s = impl->attach(); !s.ok()) return s;
  return Consumer(std::move(impl));
}

// ------------------------------------------------------------ Bus

Bus::Bus(BusOptions options) : core_(std::make_unique<detail::BusCore>(std::move(options))) {}
Bus::Bus(Bus&&) noexcept = default;
Bus& Bus::operator=(Bus&&) noexcept = default;
Bus::~Bus() = default;

Result<Topic> Bus::create_topic(std::string_view name, TopicOptions options) {
  auto r = core_->create(name, options, false);
  if (!r.ok()) return r.status();
  return Topic(std::move(*r));
}

Result<Topic> Bus::topic(std::string_view name) const {
  auto r = core_->open(name);
  if (!r.ok()) return r.status();
  return Topic(std::move(*r));
}

Result<Topic> Bus::ensure_topic(std::string_view name) { return ensure_topic(name, core_->options().default_topic); }

Result<Topic> Bus::ensure_topic(std::string_view name, TopicOptions options) {
  auto r = core_->create(name, options, true);
  if (!r.ok()) return r.status();
  return Topic(std::move(*r));
}

std::vector<std::string> Bus::list_topics() const { return core_->list(); }

Status Bus::delete_topic(std::string_view name) { return core_->remove(name); }

Result<Producer> Bus::producer(std::string_view topic_name, ProducerOptions options) const {
  auto t = topic(topic_name);
  if (!t.ok()) return t.status();
  return t->producer(std::move(options));
}

Result<Consumer> Bus::consumer(std::string_view topic_name, ConsumerOptions options) const {
  auto t = topic(topic_name);
  if (!t.ok()) return t.status();
  return t->consumer(std::move(options));
}

void Bus::close() noexcept { core_->close(); }

}  // namespace rill

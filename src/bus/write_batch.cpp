#include "rill/write_batch.hpp"

#include <cassert>

#include "consumer/consumer_impl.hpp"
#include "consumer/multi_consumer_impl.hpp"
#include "event/record_writer.hpp"
#include "producer/producer_impl.hpp"
#include "storage/durable_log.hpp"
#include "topic/topic_core.hpp"

namespace rill {

WriteBatch::WriteBatch() : request_(std::make_unique<detail::BatchRequest>()) {}
WriteBatch::WriteBatch(WriteBatch&&) noexcept = default;
WriteBatch& WriteBatch::operator=(WriteBatch&&) noexcept = default;
WriteBatch::~WriteBatch() = default;

detail::BatchRequest& WriteBatch::request() {
  if (!request_) request_ = std::make_unique<detail::BatchRequest>();
  return *request_;
}

Status WriteBatch::publish(const Topic& topic, const Message& m) {
  const std::shared_ptr<detail::TopicCore>& core = topic.core_;
  const TopicOptions& o = core->options();
  if (!core->durable()) {
    return Status::InvalidArgument("a write batch publishes to durable topics only; '" + core->name() +
                                   "' is memory-only");
  }
  if (o.producers != ProducerMode::kMulti) {
    return Status::InvalidArgument("topic '" + core->name() + "' is single-producer; a write batch needs kMulti");
  }
  if (core->closed()) return Status::Closed("topic '" + core->name() + "' is closed or deleted");
  if (Status s = detail::check_event_size(m, o.max_event_size); !s.ok()) return s;
  Result<std::uint32_t> partition = detail::choose_partition(*core, m, 0);  // keyless: partition 0
  if (!partition.ok()) return partition.status();
  detail::BatchRequest::Item item;
  item.topic = core;
  item.partition = *partition;
  item.key = std::string(m.key);
  item.metadata = std::string(m.metadata);
  item.data = std::string(detail::message_data(m));
  detail::BatchRequest& r = request();
  item.index = r.items.size();
  r.items.push_back(std::move(item));
  return Status::Ok();
}

Status WriteBatch::ack(Consumer& consumer, const Event& event) {
  assert(consumer.valid() && "WriteBatch::ack needs a valid Consumer");
  Result<std::atomic<std::uint64_t>*> target = consumer.impl_->durable_ack_target(event);
  if (!target.ok()) return target.status();
  detail::BatchRequest::Ack a;
  a.topic = consumer.impl_->shared_topic();
  a.acked = *target;
  a.next = event.offset() + 1;
  request().acks.push_back(std::move(a));
  acks_.emplace_back(consumer.impl_, event);
  return Status::Ok();
}

Status WriteBatch::ack(MultiConsumer& consumer, std::string_view topic, const Event& event) {
  assert(consumer.impl_ && "WriteBatch::ack needs a valid MultiConsumer");
  MultiConsumer::Impl::Member* m = consumer.impl_->find(topic);
  if (!m) {
    return Status::InvalidArgument("write batch ack of an event of topic '" + std::string(topic) +
                                   "', which multi-consumer '" + consumer.impl_->options.name + "' does not read");
  }
  return ack(m->consumer, event);
}

std::span<const EventId> WriteBatch::ids() const noexcept {
  return request_ ? std::span<const EventId>(request_->ids) : std::span<const EventId>();
}
std::size_t WriteBatch::events() const noexcept { return request_ ? request_->items.size() : 0; }
bool WriteBatch::empty() const noexcept { return !request_ || (request_->items.empty() && request_->acks.empty()); }

void WriteBatch::clear() {
  if (request_) {
    request_->items.clear();
    request_->acks.clear();
    request_->ids.clear();
  }
  acks_.clear();
}

}  // namespace rill

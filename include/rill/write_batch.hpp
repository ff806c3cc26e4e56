// rill/write_batch.hpp — publishes to several durable topics and acks input
// events in one LMDB transaction: all of it commits, or none of it.
//
// This is what makes a pipeline stage exactly-once across crashes: the
// stage's output events and the ack of the input they came from commit
// together, so after a crash either both are on disk (the input is not
// delivered again) or neither is (the input is delivered again and the
// output produced once more).
//
//   rill::WriteBatch batch;
//   batch.publish(out_topic, {.key = e.key(), .data = transformed});
//   batch.ack(in_consumer, e);
//   rill::Status s = bus.commit(batch);   // committed and fsynced
//
// Every topic must be durable (kAsync or kSync) and kMulti-producer, on the
// bus that commits the batch. Events of a batch are published in order per
// partition; keyless events go to partition 0 unless Message::partition
// says otherwise. The batch is fsynced whatever the topics' durability.
//
// A WriteBatch is a value used by one thread; the consumers it acks for must
// not be used by another thread during commit. A consumer may be moved
// between ack() and commit; one closed or destroyed meanwhile still has the
// ack committed durably (its name resumes after it), only its in-memory
// half is skipped. A moved-from WriteBatch is empty and usable.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "rill/consumer.hpp"
#include "rill/event.hpp"
#include "rill/multi_consumer.hpp"
#include "rill/producer.hpp"
#include "rill/status.hpp"
#include "rill/topic.hpp"

namespace rill {

namespace detail {
struct BatchRequest;
}

class WriteBatch {
 public:
  WriteBatch();
  WriteBatch(WriteBatch&&) noexcept;
  WriteBatch& operator=(WriteBatch&&) noexcept;
  ~WriteBatch();

  // Adds an event. The message's bytes are copied. Fails: InvalidArgument
  // (memory-only or single-producer topic, too large, bad partition).
  Status publish(const Topic& topic, const Message& m);

  // Adds a cumulative ack of `event`, which `consumer` delivered (a durable
  // topic's consumer). On commit the ack is durable and applied to the
  // consumer as Consumer::ack would. Fails: InvalidArgument (memory-only
  // topic, foreign or undelivered event), Closed.
  Status ack(Consumer& consumer, const Event& event);
  // The same for an event of `topic` that a MultiConsumer delivered.
  // Fails: as above; InvalidArgument when it does not read that topic.
  Status ack(MultiConsumer& consumer, std::string_view topic, const Event& event);

  // After a successful Bus::commit: where each published event landed, in
  // the order of the publish calls.
  std::span<const EventId> ids() const noexcept;

  std::size_t events() const noexcept;
  bool empty() const noexcept;
  // Forgets everything added (and the ids of the last commit).
  void clear();

 private:
  friend class Bus;
  // Made on first use (a moved-from batch has none).
  detail::BatchRequest& request();
  std::unique_ptr<detail::BatchRequest> request_;
  // The consumers acked for, for the in-memory half of each ack on commit.
  std::vector<std::pair<std::weak_ptr<detail::ConsumerImpl>, Event>> acks_;
};

}  // namespace rill

// rill/bus.hpp — the in-process message bus: owns topics.
//
// A Bus is thread-safe: topics may be created, opened, listed and deleted
// from any thread while producers and consumers run. Destroying (or closing)
// the Bus closes every topic and wakes every blocked call; handles that
// outlive it return Closed. A moved-from Bus is closed: its calls return
// Closed (list_topics() nothing).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "rill/multi_consumer.hpp"
#include "rill/options.hpp"
#include "rill/status.hpp"
#include "rill/topic.hpp"
#include "rill/write_batch.hpp"

namespace rill {

namespace detail {
class BusCore;
}

class Bus {
 public:
  // A memory-only bus. REQUIRES: options.path is empty (use Bus::open).
  explicit Bus(BusOptions options = {});

  // Opens a bus; with options.path set, opens (or creates) its durable
  // store and restores every durable topic, its next offsets and its
  // consumers' acked positions (reading only per-partition records: the
  // time does not depend on the log's length).
  // Fails: InvalidArgument (path is a file), NotFound (missing path and
  // create_if_missing off), AlreadyExists (another process writes the
  // path; the message names it), IOError (unwritable), Corruption
  // (truncated data.mdb, damaged meta pages or path to a partition's newest
  // event, an invalid stored topic configuration, unknown format version).
  // Later, reading a partition whose log lacks an event it should hold
  // fails with Corruption. Not detected: bytes changed inside a record
  // (records carry no checksum), and a damaged page elsewhere, on which
  // LMDB itself aborts the process when it reaches it.
  static Result<Bus> open(BusOptions options);
  Bus(Bus&&) noexcept;
  Bus& operator=(Bus&&) noexcept;
  Bus(const Bus&) = delete;
  Bus& operator=(const Bus&) = delete;
  ~Bus();

  // Topic names: 1-249 characters of [A-Za-z0-9._-].
  // Fails: InvalidArgument (name or options), AlreadyExists, Closed.
  Result<Topic> create_topic(std::string_view name, TopicOptions options = {});
  // Fails: NotFound, InvalidArgument (name), Closed.
  Result<Topic> topic(std::string_view name) const;
  // Opens the topic, creating it with `options` (default: BusOptions::
  // default_topic) when it does not exist.
  Result<Topic> ensure_topic(std::string_view name);
  Result<Topic> ensure_topic(std::string_view name, TopicOptions options);
  // Names of all topics, sorted.
  std::vector<std::string> list_topics() const;
  // Closes the topic (its handles return Closed) and forgets it.
  Status delete_topic(std::string_view name);

  // Shortcuts for topic(name) followed by producer()/consumer().
  Result<Producer> producer(std::string_view topic, ProducerOptions options = {}) const;
  Result<Consumer> consumer(std::string_view topic, ConsumerOptions options) const;

  // One consumer over several topics (rill/multi_consumer.hpp), reading
  // options.topics or options.assignment. Fails: as update_topics/assign
  // (NotFound, InvalidArgument, AlreadyExists), Closed.
  Result<MultiConsumer> multi_consumer(MultiConsumerOptions options) const;

  // Commits a write batch (see rill/write_batch.hpp) and fsyncs it. On Ok
  // every event and ack of it is durable; on any error none is. TimedOut
  // only while the batch had not started (nothing of it was published).
  // Fails: InvalidArgument (topic of another bus, more events for one
  // partition than half its capacity, memory-only bus), Closed, the storage
  // failure.
  Status commit(WriteBatch& batch, Timeout timeout = kForever);

  // Closes every topic, then commits what durable topics hold and closes
  // the store; idempotent. Fails: the storage failure that kept the last
  // commit from being made (a full map, an I/O error) — the events and acks
  // of durable topics since the last successful commit are not stored;
  // everything committed before is. Every call returns the same result.
  Status close() noexcept;

 private:
  struct Empty {};
  explicit Bus(Empty) noexcept;
  std::shared_ptr<detail::BusCore> core_;
};

}  // namespace rill

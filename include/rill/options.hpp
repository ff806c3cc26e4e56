// rill/options.hpp — plain option structs with defaults and their trade-offs.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "rill/data_view.hpp"

namespace rill {

class ThreadPool;  // rill/thread_pool.hpp

// Blocking calls take a Timeout; kForever waits until success or close.
using Timeout = std::chrono::nanoseconds;
inline constexpr Timeout kForever = Timeout::max();

// ---------------------------------------------------------------- topics

// What a producer does when a partition's ring is full because a consumer
// has not acked the oldest event.
enum class OverflowPolicy : std::uint8_t {
  // Wait for space (backpressure). Nothing is lost. The default.
  kBlock,
  // Return Status::Full at once; nothing is published. The caller decides.
  kFail,
  // Lossy: never wait; the lagging consumers skip ahead over the oldest
  // events. Each consumer counts what it skipped (Consumer::stats().skipped).
  kDropOldest,
};

// How a thread waits for data (consumers) or for space (producers).
enum class WaitStrategy : std::uint8_t {
  // Spin briefly, then yield, then sleep on a futex until woken. Behaves well
  // with more threads than cores. The publisher (and the acker) only loads
  // a sleeper count, with no memory barrier; a thread about to sleep pays
  // ~1 us for a process-wide barrier (membarrier) so no wake-up is missed.
  kBlocking,
  // Spin, then yield the core; never sleeps. Lowest latency when there are
  // spare cores; burns a core per waiting thread.
  kYield,
  // Pure busy-spin. Only with a dedicated core per waiting thread.
  kBusySpin,
};

// Who publishes to a topic.
enum class ProducerMode : std::uint8_t {
  // Any number of Producer handles at once. Claims with a compare-and-swap
  // when the room is there.
  kMulti,
  // At most one live Producer handle: the fast path with no read-modify-
  // write. A second producer is refused with AlreadyExists.
  kSingle,
};

// Whether a topic's events and its consumers' acks are kept on disk, in the
// bus's LMDB environment (BusOptions::path). Acks of a durable topic are
// committed with the same groups as its events.
enum class Durability : std::uint8_t {
  // Memory only: the ring is the whole log. Nothing survives the process.
  kNone,
  // A background writer commits in groups (every BusOptions::commit_interval,
  // or as soon as BusOptions::commit_events are pending). A publish completes
  // at append, and consumers see an event at once. A process crash (SIGKILL)
  // loses at most the events and acks not yet in a committed group: at most
  // commit_interval's worth. A power loss or OS crash may also lose groups
  // committed since the last fsync, which the writer issues at least every
  // BusOptions::async_fsync_interval and at close; as LMDB documents for
  // unsynced commits, such a crash inside that window can also damage the
  // store (where that matters, use kSync).
  kAsync,
  // A publish completes only when its event is committed with LMDB's
  // ordered commit (data pages fsynced, then the meta page written and
  // fsynced); concurrent publishers share that commit (group commit).
  // Consumers see only committed events. A completed publish survives a
  // process crash and a power loss.
  kSync,
};

// How much of a durable topic's log to keep on disk (per partition). The
// oldest events go first when any limit is exceeded; 0 means no limit.
struct Retention {
  std::uint64_t max_events = 0;
  std::uint64_t max_bytes = 0;  // key + metadata + data bytes of the kept events
  std::chrono::milliseconds max_age{0};  // by append timestamp
  // Never delete an event a consumer name with a durable position has not
  // acked, even when a limit says so (Topic::remove_consumer lifts it).
  bool keep_unacked = false;
};

struct TopicOptions {
  // Number of partitions (1..1024). Events with the same key always land in
  // the same partition; order is kept within a partition, not across.
  std::uint32_t partitions = 1;

  // Events per partition ring; a power of two in [2, 2^24]. A larger ring
  // absorbs longer bursts and lets newly attached consumers read further
  // back, at 128 bytes of memory per slot (plus the data of large events).
  std::uint32_t capacity = 4096;

  OverflowPolicy overflow = OverflowPolicy::kBlock;
  WaitStrategy wait = WaitStrategy::kBlocking;
  ProducerMode producers = ProducerMode::kMulti;

  // Largest key + metadata + data accepted, in bytes (1 .. 1 GiB). A larger
  // event is refused with InvalidArgument and nothing is published.
  std::uint32_t max_event_size = 1u << 20;

  // Event timestamps (append time, non-decreasing within a partition) come
  // from a millisecond wall clock by default, like Kafka's stamps: one load
  // per publish from a word that one process-wide rill thread refreshes
  // every millisecond while stamps are read (it sleeps after 100 ms
  // without). true: nanosecond resolution, one clock read per publish call
  // (~25 ns in a VM).
  bool precise_timestamps = false;

  // Most consumer names holding a position on the topic (1 .. 1024), live or
  // not; Topic::remove_consumer frees one. Each costs one cache line per
  // partition, scanned when a producer finds the ring full.
  std::uint32_t max_consumers = 64;

  // kAsync and kSync need a bus opened with a path. On a durable topic the
  // ring is the hot tail of the log: producers wait only for the writer,
  // never for consumers; a consumer that falls out of the ring window reads
  // from disk until it catches up. The overflow policy is then ignored.
  Durability durability = Durability::kNone;
  Retention retention{};
};

// ---------------------------------------------------------------- consumers

// Where a consumer starts reading in each partition.
class Position {
 public:
  enum class Kind : std::uint8_t { kEarliest, kLatest, kUnread, kOffset, kTimestamp };

  // The oldest event still held.
  static Position earliest() { return Position(Kind::kEarliest, 0); }
  // Only events published after the consumer attached.
  static Position latest() { return Position(Kind::kLatest, 0); }
  // Right after this consumer name's last ack (the default). A name never
  // seen before starts at the earliest event held.
  static Position unread() { return Position(Kind::kUnread, 0); }
  // At this offset (every partition). Below the oldest held: starts at the
  // oldest and counts the gap in stats().skipped. Past the newest: starts
  // with the next event published (as latest()).
  static Position offset(std::uint64_t n) { return Position(Kind::kOffset, n); }
  // At the first event whose timestamp is >= t.
  static Position timestamp(std::chrono::system_clock::time_point t) {
    return Position(Kind::kTimestamp,
                    std::uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count()));
  }

  Kind kind() const noexcept { return kind_; }
  std::uint64_t value() const noexcept { return value_; }

 private:
  Position(Kind k, std::uint64_t v) : kind_(k), value_(v) {}
  Kind kind_;
  std::uint64_t value_;
};

// How several live instances of one consumer name share its partitions.
enum class ConsumerMode : std::uint8_t {
  // One live instance per name and partition; a second is refused with
  // AlreadyExists. The default.
  kExclusive,
  // Failover: a second instance waits as a standby (its polls deliver
  // nothing, Consumer::active() is false); when the active instance closes,
  // one standby takes over, resuming right after the name's last ack.
  kStandby,
  // Work sharing: instances of the name receive disjoint events and ack
  // each event on its own (acks are individual); the name's position is
  // its lowest unacked event. When an instance closes, the events it holds
  // unacked go to the others. Order holds per instance, not per partition.
  // Any topic: on durable ones the acked set survives a restart; on lossy
  // (kDropOldest) ones events the ring dropped are skipped (stats().skipped).
  kShared,
  // As kShared, but every key belongs to one instance at a time, so events
  // of a key are delivered in order, to one instance. When instances come
  // or go, keys move; a key's new owner gets its events only once the old
  // owner acked (or left with) the ones it held, so per-key order holds
  // across rebalancing. Keyless events go to any instance. A nack lets a
  // newer event of its key overtake it.
  kKeyShared,
};

struct ConsumerOptions {
  // Mandatory: 1-249 characters of [A-Za-z0-9._-]. The topic keeps each
  // name's acked positions (and holds producers back for them) until
  // Topic::remove_consumer; one live consumer per name and partition.
  std::string name{};

  Position position = Position::unread();

  // Partitions to read; empty means all of them.
  std::vector<std::uint32_t> partitions{};

  ConsumerMode mode = ConsumerMode::kExclusive;

  // Acks one event at a time instead of cumulatively (always so in
  // kShared): the name's position moves over the contiguous acked prefix,
  // so events may be processed and acked out of order (parallel handlers).
  // Enables Consumer::nack. Any topic (see kShared). Durable topics: the
  // name's cursor record keeps the offsets acked above its position, so a
  // restart repeats nothing acked; the group hands out at most 65536 (or
  // the ring's capacity, if larger) events past its first unacked one.
  bool individual_acks = false;

  // With individual acks: a nacked event that was already redelivered this
  // many times goes to `dead_letter_topic` instead (with the reason in its
  // metadata) and counts as acked. 0: redeliver without limit. A limit
  // needs a dead-letter topic: an existing multi-producer topic of the bus.
  std::uint32_t max_redeliveries = 0;
  std::string dead_letter_topic{};

  // Most events poll_batch() returns at once (>= 1; capped at the topic's
  // capacity). Larger batches
  // amortize the cursor update; memory is max_batch Events (152 bytes each).
  std::uint32_t max_batch = 256;

  // poll_batch()'s trade of latency for throughput, like Kafka's
  // fetch.min.bytes and fetch.max.wait.ms: a poll that finds fewer than
  // min_batch events of a partition lingers up to batch_linger (and never
  // past its own timeout) for more, then returns what is there. While it
  // lingers it looks at the partition every few hundred nanoseconds rather
  // than continuously; after ~25 us it yields between looks, or naps 50 us
  // at a time under WaitStrategy::kBlocking. Why that matters: a consumer
  // that keeps up with a fast producer otherwise reads the partition's
  // cursor right after every event, taking its cache line from the
  // producer each time, and both run at the speed of that transfer
  // (spsc_throughput in the README: rill, with min_batch = 256 and a 5 us
  // linger, against rill_no_linger). Default 1: no linger, the lowest
  // latency. min_batch above max_batch means max_batch; batch_linger must
  // not be negative. Exclusive consumers with cumulative acks only (kShared
  // and individual acks ignore it).
  std::uint32_t min_batch = 1;
  std::chrono::nanoseconds batch_linger{0};

  // Durable topics: what poll does when the consumer's position was deleted
  // by retention. true: jump to the earliest event kept and count the gap in
  // stats().skipped. false: poll returns OutOfRange (the consumer stays at
  // its position; reopen it elsewhere).
  bool jump_to_earliest = true;

  // The pull model (Consumer::pull, Consumer::process; rill/pull.hpp).
  // selector: which bytes of each event's data to take; empty: all of them.
  // allocator: where the selected bytes go; empty with a selector: a buffer
  // rill allocates per event. Both empty: pulled events show the event's
  // own data, zero-copy. poll() and poll_batch() ignore both.
  DataSelector selector{};
  DataAllocator allocator{};
  // With a pool, pull() runs selector and allocator for whole batches on
  // its threads (so both must then be thread-safe) and still hands events
  // out in order. prefetch_batches: batches prepared ahead (>= 1).
  std::shared_ptr<ThreadPool> thread_pool{};
  std::uint32_t prefetch_batches = 2;
  // The pull model's batch size (Diaspora's BatchSize). 0, adaptive: a
  // batch is fetched as soon as one event is there, with whatever is there
  // up to max_batch, so batches grow while the consumer falls behind.
  // n > 0, fixed: a batch is fetched once n events are there (gathered
  // over partitions and polls); it goes short only when the pull's timeout
  // expires or the consumer closes, so a stream's tail is not held back.
  // Memory: n Events, reserved at the first pull. At most the topic's
  // capacity on memory-only topics whose producers wait for (or fail on)
  // their readers (a batch's events stay unacked until it is handed out),
  // else at most kMaxPullBatch: Topic::consumer refuses more with
  // InvalidArgument.
  std::uint32_t pull_batch_size = 0;
};

// The largest ConsumerOptions::pull_batch_size on topics that do not bound
// it by their capacity.
inline constexpr std::uint32_t kMaxPullBatch = 1u << 20;

struct Message;  // rill/producer.hpp

// Checks a message before anything of it is published: Ok, or why it is
// refused. A refusal (or an exception) fails the publish with
// InvalidArgument carrying the reason; nothing is published, and a batch
// with a refused message publishes none of its messages.
using Validator = std::function<Status(const Message&)>;

// The producer's metadata serializer: turns the metadata a caller passes
// (structured, in whatever text form the application uses) into the text
// the event carries, e.g. `key=value` pairs into a JSON object, or JSON
// normalized, enriched or re-encoded. It runs first, on the calling thread,
// once per message of publish, try_publish, publish_batch and push; the
// validator and the partition selector see its output. Returns Ok and
// fills `out`, or why the metadata is refused: then (and on an exception)
// that call fails with InvalidArgument and publishes nothing. Allocates:
// the output text, per message. Built-in: rill::json_object_metadata()
// (rill/json.hpp).
using MetadataSerializer = std::function<Status(std::string_view metadata, std::string& out)>;

// Picks the partition, below `partitions`, of a message that names none
// (Message::partition == kAnyPartition). Called once per message, on the
// publishing thread. An answer out of range (or an exception) fails the
// publish with InvalidArgument. Built-ins: rill::round_robin_partitions(),
// rill::key_hash_partitions() (rill/producer.hpp).
using PartitionSelector = std::function<std::uint32_t(const Message&, std::uint32_t partitions)>;

// Producer::push: whether batches may be published out of order.
enum class Ordering : std::uint8_t {
  // One sender thread publishes the batches in push order: a partition
  // sees pushed events in push order. The default.
  kStrict,
  // Two sender threads publish batches as they come (multi-producer
  // topics; single-producer topics stay strict): more throughput when
  // publishing waits, no order between batches.
  kLoose,
};

// Producer::push batching (the Diaspora producer model).
struct PushOptions {
  // Events per batch handed to the sender. 0: adaptive — a batch goes as
  // soon as a sender is free, and grows (up to 1024) while they are busy.
  std::size_t batch_size = 0;
  // Batches waiting or being published at most; push waits (try_push and
  // timed pushes fail) while that many are pending. >= 1.
  std::size_t max_batches = 4;
  Ordering ordering = Ordering::kStrict;
};

struct ProducerOptions {
  // Reserved for the producer's name in stats and durable logs; may be empty.
  std::string name{};
  // Empty: metadata is published as given.
  MetadataSerializer metadata_serializer{};
  // Empty: every message is accepted.
  Validator validator{};
  // Empty: the key's hash for keyed messages, round-robin for keyless ones
  // (one partition per publish call, so a batch stays one run).
  PartitionSelector partition_selector{};
  // Producer::push only.
  PushOptions push{};
};

// ---------------------------------------------------------------- the bus

struct BusOptions {
  // Defaults for topics created on demand (Bus::ensure_topic).
  TopicOptions default_topic{};

  // ---- durability (Bus::open). Empty path: memory only.

  // A directory holding one LMDB environment (data.mdb, lock.mdb) and
  // rill.lock. Created with mode 0700 (files 0600) when create_if_missing.
  // One process may write a path at a time; others are refused with
  // AlreadyExists naming the holder's pid.
  std::string path{};
  bool create_if_missing = true;
  // Open for reading only (tools): works while another process writes.
  // Topics, stats and consumers work; producers, topic changes and
  // durable acks are refused.
  bool read_only = false;

  // Group commit of async topics: a group is committed at least this often
  // while events are pending, and as soon as commit_events are pending.
  std::chrono::milliseconds commit_interval{10};
  std::uint32_t commit_events = 4096;
  // Async topics: the longest time between fsyncs of committed groups.
  std::chrono::milliseconds async_fsync_interval{1000};

  // The LMDB map starts at initial_map_size and doubles whenever it is full,
  // up to max_map_size; beyond that durable publishes fail with
  // ResourceExhausted (what a full disk looks like) while the writer retries
  // its group every 100 ms; they resume once it commits (a delete_topic
  // freed room: in a map full to the last page even that fails, so leave
  // headroom). Other storage failures stop durable publishing until the bus
  // is reopened. 0: no limit but the disk's.
  std::uint64_t initial_map_size = std::uint64_t{64} << 20;
  std::uint64_t max_map_size = 0;
  // Most durable partitions (summed over topics) the environment can hold.
  std::uint32_t max_durable_partitions = 2048;
};

}  // namespace rill

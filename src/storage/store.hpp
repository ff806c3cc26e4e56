// Store: rill's LMDB environment — the on-disk log of durable topics, their
// configurations and their consumers' cursors. The layout is described in
// src/storage/FORMAT.md (format version kFormatVersion).
//
// One process writes a path at a time: open() takes an exclusive flock on
// <path>/rill.lock (which records the holder's pid); read-only opens skip it.
//
// Thread-safety: every method is thread-safe. Write transactions are
// serialized by an internal mutex; reads run concurrently with them (LMDB
// MVCC). The map grows (doubling) when LMDB reports it full: the write is
// retried, so callers never see MDB_MAP_FULL; past BusOptions::max_map_size
// a write fails with ResourceExhausted and changes nothing.
#pragma once

#include <lmdb.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rill/options.hpp"
#include "rill/status.hpp"

namespace rill::detail {

inline constexpr std::uint32_t kFormatVersion = 1;

// The two databases of one durable partition.
struct PartitionDbs {
  MDB_dbi log = 0;   // offset -> head record (timestamp, sizes, key, metadata)
  MDB_dbi data = 0;  // offset -> data bytes (absent when the data is empty)
  std::uint32_t topic_id = 0;  // whose state record (meta p/<id><partition>) bounds the log
  std::uint32_t partition = 0;
};

// What the store keeps per partition besides the events (restart reads only
// this, never the log).
struct PartitionState {
  std::uint64_t earliest = 0;  // oldest offset kept
  std::uint64_t next = 0;      // offset of the next event
  std::uint64_t bytes = 0;     // key + metadata + data bytes kept
};

struct StoredTopic {
  std::string name;
  std::uint32_t id = 0;
  TopicOptions options;
  std::vector<PartitionState> partitions;
  std::vector<PartitionDbs> dbs;
};

struct StoredCursor {
  std::uint32_t topic_id = 0;
  std::uint32_t partition = 0;
  std::string name;
  std::uint64_t acked_next = 0;
  // Individual acks: bit i set when offset acked_next + i was acked (bit i
  // of byte i / 8); empty for cumulative names.
  std::string acked_above;
};

// One stored event as read back (views valid during the read callback).
struct StoredEvent {
  std::uint64_t offset = 0;
  std::int64_t timestamp_ns = 0;
  std::string_view key, metadata, data;
};

class Store;

// The writer's view of one write transaction. Valid only inside the
// Store::write callback.
class WriteTxn {
 public:
  // Appends (MDB_APPEND): offsets must increase within the partition.
  Status append(const PartitionDbs& dbs, std::uint64_t offset, std::int64_t timestamp_ns, std::string_view key,
                std::string_view metadata, std::string_view data);
  Status put_state(std::uint32_t topic_id, std::uint32_t partition, const PartitionState& state);
  Status put_cursor(std::uint32_t topic_id, std::uint32_t partition, std::string_view name, std::uint64_t acked_next,
                    std::string_view acked_above = {});
  Status delete_cursor(std::uint32_t topic_id, std::uint32_t partition, std::string_view name);
  // Deletes the oldest events of a partition while keep(event) says no and
  // the offset is below `limit`; returns how many and how many bytes.
  Status trim(const PartitionDbs& dbs, std::uint64_t limit,
              const std::function<bool(const StoredEvent&, std::uint64_t size)>& keep,
              std::uint64_t& events, std::uint64_t& bytes);

 private:
  friend class Store;
  explicit WriteTxn(MDB_txn* txn, Store& store) : txn_(txn), store_(store) {}
  // The Status for a failed LMDB call; notes MDB_MAP_FULL so that
  // Store::write grows the map and runs the transaction again.
  Status check(int rc, std::string_view what);
  // A cursor on `dbi` kept from one append to the next: positioned at the
  // end after an MDB_APPEND put, the next append puts without descending
  // the tree from its root again (an mdb_put opens a cursor and descends
  // per call; ~15% of the durable writer's time). One per role (log,
  // data); another database closes and replaces it. trim() drops them.
  // LMDB frees a write transaction's cursors when it ends: they are never
  // closed after that.
  struct AppendCursor {
    MDB_cursor* cursor = nullptr;
    MDB_dbi dbi = 0;
  };
  Result<MDB_cursor*> append_cursor(AppendCursor& c, MDB_dbi dbi);
  void drop_append_cursors() noexcept;
  MDB_txn* txn_;
  Store& store_;
  bool map_full_ = false;
  AppendCursor log_cursor_, data_cursor_;
};

class Store {
 public:
  // Opens (creating if asked) the environment at options.path.
  // Fails: InvalidArgument (empty path, path is a file), IOError
  // (unwritable, missing without create_if_missing), AlreadyExists (another
  // process writes it), Corruption (not an LMDB file, truncated, unknown
  // format version).
  static Result<std::unique_ptr<Store>> open(const BusOptions& options);
  ~Store();  // close()
  // fsyncs (writable stores), closes the environment and releases the
  // writer lock; waits for transactions in flight. Later calls return
  // Closed. Idempotent.
  void close() noexcept;

  bool read_only() const noexcept { return read_only_; }
  const std::string& path() const noexcept { return path_; }

  // ---- control plane (each call is its own committed, fsynced transaction)
  Result<std::vector<StoredTopic>> load_topics();
  Result<std::vector<StoredCursor>> load_cursors();
  // Persists a new topic; returns it with its id and databases.
  Result<StoredTopic> create_topic(std::string_view name, const TopicOptions& options);
  // Forgets a topic: its configuration, events, partition states, cursors.
  Status drop_topic(const StoredTopic& topic);

  // ---- data plane
  // Runs fn in one write transaction and commits it. fn may run more than
  // once (after the map grows): it must be repeatable.
  //  durable: LMDB's ordered commit — fsync the data pages, then write and
  //    fsync the meta page — so a power loss at any moment leaves either
  //    the previous or this transaction. Returns once both are on disk.
  //  otherwise: written without fsync (MDB_NOSYNC): a process crash keeps
  //    it; a power loss before the next durable commit or sync() may lose
  //    it (LMDB: such a loss can also damage the store).
  Status write(const std::function<Status(WriteTxn&)>& fn, bool durable = false);
  // fsyncs everything committed so far.
  Status sync();

  // Reads events of a partition from `from` (inclusive) while offset < end
  // and fewer than max, calling fn for each. `first_kept` is set to the
  // offset of the first event at or after `from` (end when none).
  Status read(const PartitionDbs& dbs, std::uint64_t from, std::uint64_t end, std::size_t max,
              const std::function<void(const StoredEvent&)>& fn, std::uint64_t& first_kept);
  // The first offset in [lo, hi) whose timestamp is >= t, or hi.
  Result<std::uint64_t> lower_bound_timestamp(const PartitionDbs& dbs, std::int64_t t, std::uint64_t lo,
                                              std::uint64_t hi);

 private:
  friend class WriteTxn;
  Store() = default;
  Status open_env(const BusOptions& options);
  Status check_format(bool fresh);
  Result<PartitionDbs> open_partition_dbs(MDB_txn* txn, std::uint32_t topic_id, std::uint32_t partition, bool create);
  Status grow_map();
  Status error(int rc, std::string_view what) const;
  Status closed_status() const;
  // Begins a read-only transaction under a shared hold on txn_mu_.
  // Fails: Closed, IOError.
  struct ReadScope;
  Status begin_read(ReadScope& r);

  // LMDB allows one environment per file per process (a second one's close
  // would drop the first one's locks): the directories open in this
  // process, by device and inode. Registers this store's; false when the
  // directory is open already. (A child forked without exec inherits the
  // set; it must exec before opening stores anyway, as LMDB requires.)
  bool register_in_process(dev_t dev, ino_t ino);
  void unregister_in_process() noexcept;

  std::string path_;
  bool read_only_ = false;
  int lock_fd_ = -1;
  std::optional<std::pair<dev_t, ino_t>> registered_;  // while in the process registry
  MDB_env* env_ = nullptr;
  MDB_dbi meta_ = 0, topics_ = 0, cursors_ = 0;
  std::uint64_t map_size_ = 0;
  std::uint64_t max_map_size_ = 0;
  std::mutex write_mu_;         // one write transaction at a time
  std::shared_mutex txn_mu_;    // shared: any transaction; exclusive: map resize
};

}  // namespace rill::detail

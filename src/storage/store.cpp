#include "storage/store.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

namespace rill::detail {

namespace {

constexpr unsigned kMaxReaders = 512;

// ---- encodings (all integers on disk are big-endian)

void put_be(char* p, std::uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) {
    p[i] = char(v & 0xff);
    v >>= 8;
  }
}
std::uint64_t get_be(const char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | std::uint8_t(p[i]);
  return v;
}

struct OffsetKey {
  char bytes[8];
  explicit OffsetKey(std::uint64_t offset) { put_be(bytes, offset, 8); }
  MDB_val val() { return MDB_val{sizeof bytes, bytes}; }
};

std::string partition_key(std::uint32_t topic_id, std::uint32_t partition) {
  std::string k = "p/";
  k.resize(10);
  put_be(k.data() + 2, topic_id, 4);
  put_be(k.data() + 6, partition, 4);
  return k;
}

std::string cursor_key(std::uint32_t topic_id, std::uint32_t partition, std::string_view name) {
  std::string k(8, '\0');
  put_be(k.data(), topic_id, 4);
  put_be(k.data() + 4, partition, 4);
  k.append(name);
  return k;
}

MDB_val as_val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string_view as_view(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }

// Head record: timestamp (8), key size (4), metadata size (4), data size (4),
// then key and metadata bytes, then the data when it is at most
// kDataInHeadMax bytes. Larger data lives in the partition's data database,
// whose pages a reader of keys and metadata never touches; small data would
// cost a second lookup to keep apart and shares the head's page anyway.
constexpr std::size_t kHeadFixed = 20;
constexpr std::size_t kDataInHeadMax = 256;
std::size_t data_in_head(std::uint64_t data_size) { return data_size <= kDataInHeadMax ? data_size : 0; }

std::string encode_options(std::uint32_t id, const TopicOptions& o) {
  nlohmann::json j = {
      {"id", id},
      {"partitions", o.partitions},
      {"capacity", o.capacity},
      {"overflow", int(o.overflow)},
      {"wait", int(o.wait)},
      {"producers", int(o.producers)},
      {"max_event_size", o.max_event_size},
      {"precise_timestamps", o.precise_timestamps},
      {"max_consumers", o.max_consumers},
      {"durability", int(o.durability)},
      {"retention",
       {{"max_events", o.retention.max_events},
        {"max_bytes", o.retention.max_bytes},
        {"max_age_ms", o.retention.max_age.count()},
        {"keep_unacked", o.retention.keep_unacked}}},
  };
  return j.dump();
}

bool decode_options(std::string_view text, std::uint32_t& id, TopicOptions& o) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return false;
  try {
    id = j.at("id").get<std::uint32_t>();
    o.partitions = j.at("partitions").get<std::uint32_t>();
    o.capacity = j.at("capacity").get<std::uint32_t>();
    // Enumerations within their ranges (the rest of the options is checked
    // by the bus, as for a new topic; durable topics are never kNone).
    auto enumerator = [&](const char* field, int lo, int hi, int& out) {
      out = j.at(field).get<int>();
      return out >= lo && out <= hi;
    };
    int overflow, wait, producers, durability;
    if (!enumerator("overflow", 0, int(OverflowPolicy::kDropOldest), overflow) ||
        !enumerator("wait", 0, int(WaitStrategy::kBusySpin), wait) ||
        !enumerator("producers", 0, int(ProducerMode::kSingle), producers) ||
        !enumerator("durability", int(Durability::kNone) + 1, int(Durability::kSync), durability)) {
      return false;
    }
    o.overflow = OverflowPolicy(overflow);
    o.wait = WaitStrategy(wait);
    o.producers = ProducerMode(producers);
    o.durability = Durability(durability);
    o.max_event_size = j.at("max_event_size").get<std::uint32_t>();
    o.precise_timestamps = j.at("precise_timestamps").get<bool>();
    o.max_consumers = j.at("max_consumers").get<std::uint32_t>();
    const auto& r = j.at("retention");
    o.retention.max_events = r.at("max_events").get<std::uint64_t>();
    o.retention.max_bytes = r.at("max_bytes").get<std::uint64_t>();
    o.retention.max_age = std::chrono::milliseconds(r.at("max_age_ms").get<std::int64_t>());
    o.retention.keep_unacked = r.at("keep_unacked").get<bool>();
  } catch (const nlohmann::json::exception&) {
    return false;
  }
  return true;
}

std::string encode_state(const PartitionState& s) {
  std::string v(24, '\0');
  put_be(v.data(), s.earliest, 8);
  put_be(v.data() + 8, s.next, 8);
  put_be(v.data() + 16, s.bytes, 8);
  return v;
}

// A partition state record (encode_state's layout); false when malformed.
bool decode_state(const MDB_val& v, PartitionState& out) {
  if (v.mv_size != 24) return false;
  const char* b = static_cast<const char*>(v.mv_data);
  out = PartitionState{get_be(b, 8), get_be(b + 8, 8), get_be(b + 16, 8)};
  return true;
}

// A transaction aborted on scope exit unless committed.
struct ScopedTxn {
  MDB_txn* txn = nullptr;
  ~ScopedTxn() {
    if (txn) mdb_txn_abort(txn);
  }
  // Read-only transactions are committed too: database handles opened in
  // them then stay valid for the environment's life.
  int commit() {
    const int rc = mdb_txn_commit(txn);
    txn = nullptr;
    return rc;
  }
};

}  // namespace

// A read transaction and the shared hold on txn_mu_ that keeps the map
// from being resized under it; the transaction ends first.
struct Store::ReadScope {
  std::shared_lock<std::shared_mutex> shared;
  ScopedTxn scoped;
};

// ------------------------------------------------------------ opening

Status Store::closed_status() const { return Status::Closed("store '" + path_ + "' is closed"); }

Status Store::error(int rc, std::string_view what) const {
  std::string msg = std::string(what) + " in '" + path_ + "': " + mdb_strerror(rc);
  switch (rc) {
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
      return Status::Corruption(msg);
    case MDB_MAP_FULL:
      return Status::ResourceExhausted(msg);
    default:
      return Status::IOError(msg);
  }
}

Result<std::unique_ptr<Store>> Store::open(const BusOptions& options) {
  if (options.path.empty()) return Status::InvalidArgument("BusOptions::path is empty");
  std::unique_ptr<Store> store(new Store());
  store->path_ = options.path;
  store->read_only_ = options.read_only;
  store->max_map_size_ = options.max_map_size;
  if (Status s = store->open_env(options); !s.ok()) return s;
  return store;
}

Status Store::open_env(const BusOptions& options) {
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return Status::InvalidArgument("store path '" + path_ + "' exists and is not a directory");
    }
  } else if (errno != ENOENT) {
    return Status::IOError("cannot stat store path '" + path_ + "': " + std::strerror(errno));
  } else if (!options.create_if_missing || read_only_) {
    return Status::NotFound("store path '" + path_ + "' does not exist (create_if_missing is off)");
  } else if (::mkdir(path_.c_str(), 0700) != 0) {
    return Status::IOError("cannot create store directory '" + path_ + "': " + std::strerror(errno));
  }

  const std::string data_file = path_ + "/data.mdb";
  const bool fresh = ::stat(data_file.c_str(), &st) != 0;
  if (fresh && read_only_) return Status::NotFound("no rill store in '" + path_ + "' (no data.mdb)");

  if (!read_only_) {
    const std::string lock_file = path_ + "/rill.lock";
    lock_fd_ = ::open(lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd_ < 0) {
      return Status::IOError("cannot open '" + lock_file + "': " + std::strerror(errno) +
                             " (is the directory writable?)");
    }
    if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      char buf[32] = {};
      const ssize_t n = ::pread(lock_fd_, buf, sizeof buf - 1, 0);
      const std::string holder = n > 0 ? std::string(buf, std::size_t(n)) : std::string("unknown");
      ::close(lock_fd_);
      lock_fd_ = -1;
      return Status::AlreadyExists("store '" + path_ + "' is open for writing by process " + holder +
                                   "; one writer at a time (read-only opens are allowed)");
    }
    const std::string pid = std::to_string(::getpid());
    if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) != ssize_t(pid.size())) {
      return Status::IOError("cannot write '" + lock_file + "': " + std::strerror(errno));
    }
  }

  // After the writer lock, so that a second writer learns which process
  // holds the store.
  struct stat dir {};
  if (::stat(path_.c_str(), &dir) != 0) {
    return Status::IOError("cannot stat store path '" + path_ + "': " + std::strerror(errno));
  }
  if (!register_in_process(dir.st_dev, dir.st_ino)) {
    return Status::AlreadyExists("store '" + path_ + "' is already open in this process (pid " +
                                 std::to_string(::getpid()) +
                                 ", by another Bus): use that one; LMDB allows one handle per store and process");
  }

  if (!fresh) {
    // LMDB maps the file and trusts its length: a truncated file would fault
    // on first access. Compare the size with what the meta pages claim.
    if (st.st_size < 2 * 4096) {
      return Status::Corruption("'" + data_file + "' is truncated (" + std::to_string(st.st_size) +
                                " bytes): not a rill store");
    }
  }

  int rc = mdb_env_create(&env_);
  if (rc != 0) return error(rc, "mdb_env_create");
  mdb_env_set_maxdbs(env_, 2 * options.max_durable_partitions + 8);
  mdb_env_set_maxreaders(env_, kMaxReaders);
  map_size_ = std::max<std::uint64_t>(options.initial_map_size, 1 << 20);
  if (max_map_size_ && map_size_ > max_map_size_) map_size_ = max_map_size_;
  if (!fresh && std::uint64_t(st.st_size) > map_size_) map_size_ = std::uint64_t(st.st_size);
  mdb_env_set_mapsize(env_, map_size_);
  // MDB_NOSYNC by default: async groups are written (a process crash keeps
  // them) and fsynced by sync(); durable writes clear it for their commit.
  unsigned flags = MDB_NOTLS | MDB_NOSYNC;
  if (read_only_) flags = MDB_NOTLS | MDB_RDONLY;
  rc = mdb_env_open(env_, path_.c_str(), flags, 0600);
  if (rc != 0) {
    if (rc == EACCES || rc == EROFS) return error(rc, "cannot open the store (is the directory writable?)");
    if (rc == MDB_INVALID) return Status::Corruption("'" + data_file + "' is not an LMDB file (corrupt store)");
    return error(rc, "cannot open the store");
  }
  if (!fresh) {
    MDB_envinfo info;
    MDB_stat stat;
    mdb_env_info(env_, &info);
    mdb_env_stat(env_, &stat);
    const std::uint64_t needed = (std::uint64_t(info.me_last_pgno) + 1) * stat.ms_psize;
    if (std::uint64_t(st.st_size) < needed) {
      return Status::Corruption("'" + data_file + "' is truncated: " + std::to_string(st.st_size) +
                                " bytes, its pages need " + std::to_string(needed));
    }
    if (info.me_mapsize > map_size_) map_size_ = info.me_mapsize;
  }
  return check_format(fresh);
}

Status Store::check_format(bool fresh) {
  ScopedTxn scoped;
  int rc = mdb_txn_begin(env_, nullptr, read_only_ ? MDB_RDONLY : 0, &scoped.txn);
  if (rc != 0) return error(rc, "cannot begin a transaction");
  MDB_txn* txn = scoped.txn;
  const unsigned create = read_only_ ? 0 : MDB_CREATE;
  if ((rc = mdb_dbi_open(txn, "meta", create, &meta_)) != 0) {
    if (rc == MDB_NOTFOUND) return Status::Corruption("'" + path_ + "' holds an LMDB file that is not a rill store");
    return error(rc, "cannot open the meta database");
  }
  MDB_val k = as_val("format"), v;
  rc = mdb_get(txn, meta_, &k, &v);
  if (rc == MDB_NOTFOUND) {
    if (!fresh) return Status::Corruption("'" + path_ + "' has no format version: not a rill store");
    char buf[4];
    put_be(buf, kFormatVersion, 4);
    MDB_val nv{4, buf};
    if ((rc = mdb_put(txn, meta_, &k, &nv, 0)) != 0) return error(rc, "cannot write the format version");
  } else if (rc != 0) {
    return error(rc, "cannot read the format version");
  } else {
    const std::uint64_t version = v.mv_size == 4 ? get_be(static_cast<const char*>(v.mv_data), 4) : 0;
    if (version != kFormatVersion) {
      return Status::Corruption("store '" + path_ + "' has format version " + std::to_string(version) +
                                "; this rill reads version " + std::to_string(kFormatVersion));
    }
  }
  if ((rc = mdb_dbi_open(txn, "topics", create, &topics_)) != 0) return error(rc, "cannot open 'topics'");
  if ((rc = mdb_dbi_open(txn, "cursors", create, &cursors_)) != 0) return error(rc, "cannot open 'cursors'");
  rc = scoped.commit();
  if (rc != 0) return error(rc, "cannot commit");
  if (!read_only_ && fresh) return sync();
  return Status::Ok();
}

Store::~Store() { close(); }

namespace {
std::mutex open_in_process_mu;
std::set<std::pair<dev_t, ino_t>>& open_in_process() {
  static auto* open = new std::set<std::pair<dev_t, ino_t>>();  // never destroyed: stores may close at exit
  return *open;
}
}  // namespace

bool Store::register_in_process(dev_t dev, ino_t ino) {
  std::lock_guard<std::mutex> lock(open_in_process_mu);
  if (!open_in_process().insert({dev, ino}).second) return false;
  registered_ = std::pair(dev, ino);
  return true;
}

void Store::unregister_in_process() noexcept {
  if (!registered_) return;
  std::lock_guard<std::mutex> lock(open_in_process_mu);
  open_in_process().erase(*registered_);
  registered_.reset();
}

void Store::close() noexcept {
  std::lock_guard<std::mutex> writer(write_mu_);
  std::unique_lock<std::shared_mutex> exclusive(txn_mu_);
  if (env_) {
    if (!read_only_) mdb_env_sync(env_, 1);
    mdb_env_close(env_);
    env_ = nullptr;
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
  lock_fd_ = -1;
  unregister_in_process();
}

// ------------------------------------------------------------ control plane

Result<PartitionDbs> Store::open_partition_dbs(MDB_txn* txn, std::uint32_t topic_id, std::uint32_t partition,
                                               bool create) {
  const std::string suffix = std::to_string(topic_id) + "." + std::to_string(partition);
  PartitionDbs dbs;
  dbs.topic_id = topic_id;
  dbs.partition = partition;
  const unsigned flags = create ? MDB_CREATE : 0;
  int rc = mdb_dbi_open(txn, ("l" + suffix).c_str(), flags, &dbs.log);
  if (rc == 0) rc = mdb_dbi_open(txn, ("d" + suffix).c_str(), flags, &dbs.data);
  if (rc == MDB_NOTFOUND) {
    return Status::Corruption("store '" + path_ + "' lacks the log of partition " + std::to_string(partition) +
                              " of topic id " + std::to_string(topic_id));
  }
  if (rc == MDB_DBS_FULL) {
    return Status::ResourceExhausted("store '" + path_ + "' holds BusOptions::max_durable_partitions already");
  }
  if (rc != 0) return error(rc, "cannot open a partition's databases");
  return dbs;
}

Result<std::vector<StoredTopic>> Store::load_topics() {
  std::unique_lock<std::mutex> writer;  // before txn_mu_, as in write()
  if (!read_only_) writer = std::unique_lock<std::mutex>(write_mu_);
  std::shared_lock<std::shared_mutex> shared(txn_mu_);
  if (!env_) return closed_status();
  // Opening databases by name needs a write transaction when writable.
  ScopedTxn scoped;
  int rc = mdb_txn_begin(env_, nullptr, read_only_ ? MDB_RDONLY : 0, &scoped.txn);
  if (rc != 0) return error(rc, "cannot begin a transaction");
  MDB_txn* txn = scoped.txn;
  std::vector<StoredTopic> out;
  MDB_cursor* cur = nullptr;
  if ((rc = mdb_cursor_open(txn, topics_, &cur)) != 0) return error(rc, "cannot read topics");
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    StoredTopic t;
    t.name = std::string(as_view(k));
    if (!decode_options(as_view(v), t.id, t.options)) {
      mdb_cursor_close(cur);
      return Status::Corruption("store '" + path_ + "': the configuration of topic '" + t.name +
                                     "' is unreadable");
    }
    out.push_back(std::move(t));
  }
  mdb_cursor_close(cur);
  if (rc != MDB_NOTFOUND) return error(rc, "cannot read topics");
  for (StoredTopic& t : out) {
    for (std::uint32_t p = 0; p < t.options.partitions; ++p) {
      const std::string key = partition_key(t.id, p);
      MDB_val pk = as_val(key), pv;
      PartitionState state;
      if ((rc = mdb_get(txn, meta_, &pk, &pv)) != 0 || !decode_state(pv, state)) {
        return Status::Corruption("store '" + path_ + "': partition " + std::to_string(p) + " of topic '" +
                                       t.name + "' has no state record");
      }
      t.partitions.push_back(state);
      Result<PartitionDbs> dbs = open_partition_dbs(txn, t.id, p, false);
      if (!dbs.ok()) return dbs.status();
      t.dbs.push_back(*dbs);
      // Touch the newest event: walks the tree from root to last leaf, so a
      // damaged page shows up here as Corruption rather than later.
      MDB_cursor* c = nullptr;
      if ((rc = mdb_cursor_open(txn, dbs->log, &c)) != 0) return error(rc, "cannot read a partition");
      MDB_val lk, lv;
      rc = mdb_cursor_get(c, &lk, &lv, MDB_LAST);
      mdb_cursor_close(c);
      if (rc != 0 && rc != MDB_NOTFOUND) return error(rc, "cannot read topic '" + t.name + "'");
      if (rc == 0 && (lk.mv_size != 8 || get_be(static_cast<const char*>(lk.mv_data), 8) >= t.partitions[p].next)) {
        return Status::Corruption("store '" + path_ + "': the log of topic '" + t.name +
                                       "' disagrees with its state record");
      }
    }
  }
  rc = scoped.commit();
  if (rc != 0) return error(rc, "cannot commit");
  return out;
}

Result<std::vector<StoredCursor>> Store::load_cursors() {
  ReadScope r;
  if (Status s = begin_read(r); !s.ok()) return s;
  int rc = 0;
  MDB_cursor* cur = nullptr;
  if ((rc = mdb_cursor_open(r.scoped.txn, cursors_, &cur)) != 0) return error(rc, "cannot read cursors");
  std::vector<StoredCursor> out;
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size < 9 || v.mv_size < 8) {
      mdb_cursor_close(cur);
      return Status::Corruption("store '" + path_ + "': a consumer cursor record is malformed");
    }
    const char* kb = static_cast<const char*>(k.mv_data);
    const char* vb = static_cast<const char*>(v.mv_data);
    out.push_back(StoredCursor{std::uint32_t(get_be(kb, 4)), std::uint32_t(get_be(kb + 4, 4)),
                               std::string(kb + 8, k.mv_size - 8), get_be(vb, 8), std::string(vb + 8, v.mv_size - 8)});
  }
  mdb_cursor_close(cur);
  if (rc != MDB_NOTFOUND) return error(rc, "cannot read cursors");
  return out;
}

Result<StoredTopic> Store::create_topic(std::string_view name, const TopicOptions& options) {
  if (read_only_) return Status::InvalidArgument("the store is open read-only");
  StoredTopic t;
  t.name = std::string(name);
  t.options = options;
  Status s = write([&](WriteTxn& w) -> Status {
    // The smallest id not in use, so that a deleted topic's (emptied)
    // databases are reused rather than piling up.
    std::set<std::uint32_t> used;
    MDB_cursor* cur = nullptr;
    int rc = mdb_cursor_open(w.txn_, topics_, &cur);
    if (rc != 0) return error(rc, "cannot read topics");
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      std::uint32_t id = 0;
      TopicOptions ignored;
      if (decode_options(as_view(v), id, ignored)) used.insert(id);
    }
    mdb_cursor_close(cur);
    t.id = 0;
    while (used.count(t.id)) ++t.id;
    const std::string config = encode_options(t.id, options);
    MDB_val nk = as_val(name), nv = as_val(config);
    if ((rc = mdb_put(w.txn_, topics_, &nk, &nv, MDB_NOOVERWRITE)) != 0) {
      if (rc == MDB_KEYEXIST) return Status::AlreadyExists("topic '" + t.name + "' exists in the store");
      return w.check(rc, "cannot store topic '" + t.name + "'");
    }
    t.partitions.assign(options.partitions, PartitionState{});
    t.dbs.clear();
    for (std::uint32_t p = 0; p < options.partitions; ++p) {
      Result<PartitionDbs> dbs = open_partition_dbs(w.txn_, t.id, p, true);
      if (!dbs.ok()) return dbs.status();
      t.dbs.push_back(*dbs);
      if (Status ps = w.put_state(t.id, p, PartitionState{}); !ps.ok()) return ps;
    }
    return Status::Ok();
  }, /*durable=*/true);
  if (!s.ok()) return s;
  return t;
}

Status Store::drop_topic(const StoredTopic& t) {
  if (read_only_) return Status::InvalidArgument("the store is open read-only");
  return write([&](WriteTxn& w) -> Status {
    MDB_val nk = as_val(t.name);
    int rc = mdb_del(w.txn_, topics_, &nk, nullptr);
    if (rc != 0 && rc != MDB_NOTFOUND) return w.check(rc, "cannot delete topic '" + t.name + "'");
    for (std::uint32_t p = 0; p < t.options.partitions; ++p) {
      // Emptied, not deleted: the handles stay valid for readers still in
      // flight, and the next topic given this id reuses the databases.
      if ((rc = mdb_drop(w.txn_, t.dbs[p].log, 0)) != 0) return w.check(rc, "cannot empty a partition");
      if ((rc = mdb_drop(w.txn_, t.dbs[p].data, 0)) != 0) return w.check(rc, "cannot empty a partition");
      const std::string key = partition_key(t.id, p);
      MDB_val pk = as_val(key);
      rc = mdb_del(w.txn_, meta_, &pk, nullptr);
      if (rc != 0 && rc != MDB_NOTFOUND) return w.check(rc, "cannot delete a partition state");
    }
    // Cursors of this topic: keys start with the big-endian topic id.
    MDB_cursor* cur = nullptr;
    if ((rc = mdb_cursor_open(w.txn_, cursors_, &cur)) != 0) return w.check(rc, "cannot read cursors");
    char prefix[4];
    put_be(prefix, t.id, 4);
    MDB_val k{4, prefix}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && k.mv_size >= 4 &&
                                                          std::memcmp(k.mv_data, prefix, 4) == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      if ((rc = mdb_cursor_del(cur, 0)) != 0) break;
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) return w.check(rc, "cannot delete cursors");
    return Status::Ok();
  }, /*durable=*/true);
}

// ------------------------------------------------------------ data plane

Status Store::begin_read(ReadScope& r) {
  r.shared = std::shared_lock<std::shared_mutex>(txn_mu_);
  if (!env_) return closed_status();
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &r.scoped.txn);
  for (int tries = 0; rc == MDB_MAP_RESIZED && tries < 8; ++tries) {
    // Another process (the writer of a store open read-only here) grew the
    // map: adopt its size, with no transaction open, and begin again (it
    // may grow again meanwhile).
    r.shared.unlock();
    {
      std::unique_lock<std::shared_mutex> exclusive(txn_mu_);
      if (!env_) return closed_status();
      if ((rc = mdb_env_set_mapsize(env_, 0)) != 0) return error(rc, "cannot adopt the grown map");
      MDB_envinfo info;
      mdb_env_info(env_, &info);
      map_size_ = std::max<std::uint64_t>(map_size_, info.me_mapsize);
    }
    r.shared.lock();
    if (!env_) return closed_status();
    rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &r.scoped.txn);
  }
  if (rc != 0) return error(rc, "cannot begin a read transaction");
  return Status::Ok();
}

Status Store::grow_map() {
  std::uint64_t next = map_size_ * 2;
  if (max_map_size_ && next > max_map_size_) next = max_map_size_;
  if (next <= map_size_) {
    return Status::ResourceExhausted("store '" + path_ + "' is full: its map reached BusOptions::max_map_size (" +
                                     std::to_string(max_map_size_) + " bytes); nothing of this write was kept");
  }
  std::unique_lock<std::shared_mutex> exclusive(txn_mu_);  // no transaction may be open
  if (!env_) return closed_status();
  const int rc = mdb_env_set_mapsize(env_, next);
  if (rc != 0) return error(rc, "cannot grow the map");
  map_size_ = next;
  return Status::Ok();
}

Status Store::write(const std::function<Status(WriteTxn&)>& fn, bool durable) {
  if (read_only_) return Status::InvalidArgument("the store is open read-only");
  std::lock_guard<std::mutex> lock(write_mu_);
  // The environment runs with MDB_NOSYNC; a durable commit clears it for
  // one transaction. Only writers (under write_mu_) touch the flags.
  struct SyncScope {
    MDB_env* env;
    bool on;
    SyncScope(MDB_env* e, bool durable_commit) : env(e), on(durable_commit && e) {
      if (on) mdb_env_set_flags(env, MDB_NOSYNC, 0);
    }
    ~SyncScope() {
      if (on) mdb_env_set_flags(env, MDB_NOSYNC, 1);
    }
  } sync_scope(env_, durable);
  for (;;) {
    int rc;
    {
      std::shared_lock<std::shared_mutex> shared(txn_mu_);
      if (!env_) return closed_status();
      MDB_txn* txn = nullptr;
      rc = mdb_txn_begin(env_, nullptr, 0, &txn);
      if (rc != 0) return error(rc, "cannot begin a write transaction");
      WriteTxn w(txn, *this);
      Status s = fn(w);
      if (!s.ok()) {
        mdb_txn_abort(txn);
        if (!w.map_full_) return s;
        rc = MDB_MAP_FULL;
      } else {
        rc = mdb_txn_commit(txn);
        if (rc == 0) return Status::Ok();
      }
    }
    if (rc != MDB_MAP_FULL) return error(rc, "cannot commit");
    if (Status g = grow_map(); !g.ok()) return g;
  }
}

Status Store::sync() {
  if (read_only_) return Status::Ok();
  std::shared_lock<std::shared_mutex> shared(txn_mu_);
  if (!env_) return closed_status();
  const int rc = mdb_env_sync(env_, 1);
  if (rc != 0) return error(rc, "fsync failed");
  return Status::Ok();
}

Status Store::read(const PartitionDbs& dbs, std::uint64_t from, std::uint64_t end, std::size_t max,
                   const std::function<void(const StoredEvent&)>& fn, std::uint64_t& first_kept) {
  first_kept = end;
  ReadScope r;
  if (Status s = begin_read(r); !s.ok()) return s;
  int rc = 0;
  // The partition's bounds in the same snapshot: every offset from earliest
  // to next - 1 is in the log, so one missing there is damage (retention
  // deletes only below earliest). No state record (a dropped topic): no
  // bound to check.
  std::uint64_t stored_next = 0;
  {
    const std::string key = partition_key(dbs.topic_id, dbs.partition);
    MDB_val pk = as_val(key), pv;
    PartitionState state;
    if (mdb_get(r.scoped.txn, meta_, &pk, &pv) == 0 && decode_state(pv, state) && from >= state.earliest) {
      stored_next = state.next;
    }
  }
  std::uint64_t expect = from;  // the next offset that must be there (below stored_next)
  auto missing = [&] {
    return Status::Corruption("store '" + path_ + "': offset " + std::to_string(expect) + " of partition " +
                              std::to_string(dbs.partition) + " is missing from its log (kept offsets run to " +
                              std::to_string(stored_next) + ")");
  };
  MDB_cursor* cur = nullptr;
  if ((rc = mdb_cursor_open(r.scoped.txn, dbs.log, &cur)) != 0) return error(rc, "cannot read the log");
  OffsetKey start(from);
  MDB_val k = start.val(), v;
  std::size_t n = 0;
  Status out = Status::Ok();
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8 || v.mv_size < kHeadFixed) {
      out = Status::Corruption("store '" + path_ + "': a log record is malformed");
      break;
    }
    const std::uint64_t offset = get_be(static_cast<const char*>(k.mv_data), 8);
    if (n == max) break;
    if (offset > expect && expect < std::min(end, stored_next)) {
      // Events before the hole go out first; the next read starts at it.
      if (n == 0) out = missing();
      break;
    }
    expect = offset + 1;
    if (n == 0) first_kept = std::min(offset, end);
    if (offset >= end) break;
    const char* h = static_cast<const char*>(v.mv_data);
    StoredEvent e;
    e.offset = offset;
    e.timestamp_ns = std::int64_t(get_be(h, 8));
    const std::uint32_t ks = std::uint32_t(get_be(h + 8, 4)), ms = std::uint32_t(get_be(h + 12, 4));
    const std::uint32_t ds = std::uint32_t(get_be(h + 16, 4));
    if (v.mv_size != kHeadFixed + ks + ms + data_in_head(ds)) {
      out = Status::Corruption("store '" + path_ + "': a log record's sizes disagree");
      break;
    }
    if (ks > kMaxKeyBytes || ms > kMaxMetadataBytes) {  // no publish stores one (the Event could not hold it)
      out = Status::Corruption("store '" + path_ + "': a log record's key or metadata is over its size limit");
      break;
    }
    e.key = std::string_view(h + kHeadFixed, ks);
    e.metadata = std::string_view(h + kHeadFixed + ks, ms);
    if (data_in_head(ds)) {
      e.data = std::string_view(h + kHeadFixed + ks + ms, ds);
    } else if (ds) {
      MDB_val dv;
      if ((rc = mdb_get(r.scoped.txn, dbs.data, &k, &dv)) != 0 || dv.mv_size != ds) {
        out = Status::Corruption("store '" + path_ + "': the data of offset " + std::to_string(offset) +
                                 " is missing or of the wrong size");
        break;
      }
      e.data = as_view(dv);
    }
    fn(e);
    ++n;
  }
  mdb_cursor_close(cur);
  if (out.ok() && rc != 0 && rc != MDB_NOTFOUND) out = error(rc, "cannot read the log");
  if (out.ok() && rc == MDB_NOTFOUND && n == 0 && expect < std::min(end, stored_next)) out = missing();
  return out;
}

Result<std::uint64_t> Store::lower_bound_timestamp(const PartitionDbs& dbs, std::int64_t t, std::uint64_t lo,
                                                   std::uint64_t hi) {
  ReadScope r;
  if (Status s = begin_read(r); !s.ok()) return s;
  int rc = 0;
  while (lo < hi) {
    const std::uint64_t mid = lo + (hi - lo) / 2;
    OffsetKey key(mid);
    MDB_val k = key.val(), v;
    rc = mdb_get(r.scoped.txn, dbs.log, &k, &v);
    if (rc == MDB_NOTFOUND) {  // deleted by retention meanwhile: search above
      lo = mid + 1;
      continue;
    }
    if (rc != 0) return error(rc, "cannot read the log");
    if (v.mv_size < kHeadFixed) return Status::Corruption("store '" + path_ + "': a log record is malformed");
    if (std::int64_t(get_be(static_cast<const char*>(v.mv_data), 8)) < t) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// ------------------------------------------------------------ WriteTxn

Status WriteTxn::check(int rc, std::string_view what) {
  if (rc == MDB_MAP_FULL) map_full_ = true;
  return store_.error(rc, what);
}

Result<MDB_cursor*> WriteTxn::append_cursor(AppendCursor& c, MDB_dbi dbi) {
  if (c.cursor && c.dbi == dbi) return c.cursor;
  if (c.cursor) mdb_cursor_close(c.cursor);
  c.cursor = nullptr;
  if (const int rc = mdb_cursor_open(txn_, dbi, &c.cursor); rc != 0) {
    c.cursor = nullptr;
    return check(rc, "cannot append to the log");
  }
  c.dbi = dbi;
  return c.cursor;
}

void WriteTxn::drop_append_cursors() noexcept {
  for (AppendCursor* c : {&log_cursor_, &data_cursor_}) {
    if (c->cursor) mdb_cursor_close(c->cursor);
    c->cursor = nullptr;
  }
}

Status WriteTxn::append(const PartitionDbs& dbs, std::uint64_t offset, std::int64_t timestamp_ns,
                        std::string_view key, std::string_view metadata, std::string_view data) {
  OffsetKey k(offset);
  MDB_val kv = k.val();
  const std::size_t inline_data = data_in_head(data.size());
  MDB_val hv{kHeadFixed + key.size() + metadata.size() + inline_data, nullptr};
  Result<MDB_cursor*> log = append_cursor(log_cursor_, dbs.log);
  if (!log.ok()) return log.status();
  // MDB_RESERVE: LMDB hands out the space and we write the record in place.
  int rc = mdb_cursor_put(*log, &kv, &hv, MDB_APPEND | MDB_RESERVE);
  if (rc != 0) return check(rc, "cannot append to the log");
  char* h = static_cast<char*>(hv.mv_data);
  put_be(h, std::uint64_t(timestamp_ns), 8);
  put_be(h + 8, key.size(), 4);
  put_be(h + 12, metadata.size(), 4);
  put_be(h + 16, data.size(), 4);
  if (!key.empty()) std::memcpy(h + kHeadFixed, key.data(), key.size());
  if (!metadata.empty()) std::memcpy(h + kHeadFixed + key.size(), metadata.data(), metadata.size());
  if (inline_data) {
    std::memcpy(h + kHeadFixed + key.size() + metadata.size(), data.data(), inline_data);
  } else if (!data.empty()) {
    MDB_val dv = as_val(data);
    Result<MDB_cursor*> data_cursor = append_cursor(data_cursor_, dbs.data);
    if (!data_cursor.ok()) return data_cursor.status();
    if ((rc = mdb_cursor_put(*data_cursor, &kv, &dv, MDB_APPEND)) != 0) {
      return check(rc, "cannot append to the log");
    }
  }
  return Status::Ok();
}

Status WriteTxn::put_state(std::uint32_t topic_id, std::uint32_t partition, const PartitionState& state) {
  const std::string key = partition_key(topic_id, partition), value = encode_state(state);
  MDB_val k = as_val(key), v = as_val(value);
  const int rc = mdb_put(txn_, store_.meta_, &k, &v, 0);
  if (rc != 0) return check(rc, "cannot write a partition state");
  return Status::Ok();
}

Status WriteTxn::put_cursor(std::uint32_t topic_id, std::uint32_t partition, std::string_view name,
                            std::uint64_t acked_next, std::string_view acked_above) {
  const std::string key = cursor_key(topic_id, partition, name);
  std::string value(8 + acked_above.size(), '\0');
  put_be(value.data(), acked_next, 8);
  std::copy(acked_above.begin(), acked_above.end(), value.begin() + 8);
  MDB_val k = as_val(key), v = as_val(value);
  const int rc = mdb_put(txn_, store_.cursors_, &k, &v, 0);
  if (rc != 0) return check(rc, "cannot write a consumer cursor");
  return Status::Ok();
}

Status WriteTxn::delete_cursor(std::uint32_t topic_id, std::uint32_t partition, std::string_view name) {
  const std::string key = cursor_key(topic_id, partition, name);
  MDB_val k = as_val(key);
  const int rc = mdb_del(txn_, store_.cursors_, &k, nullptr);
  if (rc != 0 && rc != MDB_NOTFOUND) return check(rc, "cannot delete a consumer cursor");
  return Status::Ok();
}

Status WriteTxn::trim(const PartitionDbs& dbs, std::uint64_t limit,
                      const std::function<bool(const StoredEvent&, std::uint64_t size)>& keep, std::uint64_t& events,
                      std::uint64_t& bytes) {
  events = bytes = 0;
  drop_append_cursors();  // deletes here; appends position afresh
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn_, dbs.log, &cur);
  if (rc != 0) return check(rc, "cannot trim the log");
  MDB_val k, v;
  Status out = Status::Ok();
  while ((rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
    if (k.mv_size != 8 || v.mv_size < kHeadFixed) {
      out = Status::Corruption("store '" + store_.path_ + "': a log record is malformed");
      break;
    }
    const char* h = static_cast<const char*>(v.mv_data);
    StoredEvent e;
    e.offset = get_be(static_cast<const char*>(k.mv_data), 8);
    e.timestamp_ns = std::int64_t(get_be(h, 8));
    const std::uint64_t size = get_be(h + 8, 4) + get_be(h + 12, 4) + get_be(h + 16, 4);
    e.data = std::string_view(nullptr, 0);
    if (e.offset >= limit || keep(e, size)) break;
    const std::uint64_t data_size = get_be(h + 16, 4);
    const bool has_data = data_size != 0 && data_in_head(data_size) == 0;
    MDB_val dk = k;
    char key_copy[8];
    std::memcpy(key_copy, k.mv_data, 8);
    dk.mv_data = key_copy;
    if ((rc = mdb_cursor_del(cur, 0)) != 0) break;
    if (has_data && (rc = mdb_del(txn_, dbs.data, &dk, nullptr)) != 0 && rc != MDB_NOTFOUND) break;
    rc = 0;
    ++events;
    bytes += size;
  }
  mdb_cursor_close(cur);
  if (out.ok() && rc != 0 && rc != MDB_NOTFOUND) out = check(rc, "cannot trim the log");
  return out;
}

}  // namespace rill::detail

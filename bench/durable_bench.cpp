// Durable throughput, 100-byte events, every store on the same disk (a
// fresh directory under $TMPDIR per run), against hand-written LMDB:
//
//  durable_async/rill/100             one producer, kAsync topic; an
//                                     iteration ends when its last event
//                                     is committed (not just appended)
//  durable_async/lmdb_raw_batched/100 1000 MDB_APPEND puts per transaction,
//                                     no fsync per commit (MDB_NOSYNC)
//  durable_sync/rill/100              4 producer threads, each keeping up
//                                     to 256 publishes awaiting their
//                                     durable completion (publish_async +
//                                     wait_durable), kSync topic
//  durable_sync/lmdb_raw_each/100     one fsynced transaction per event
//  durable_sync/lmdb_raw_batched/100  1000 puts per fsynced transaction
#include <lmdb.h>
#include <unistd.h>

#include <cstdlib>
#include <deque>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "rill/rill.hpp"

namespace {

using namespace rill_bench;

constexpr std::size_t kEventBytes = 100;

class BenchDir {
 public:
  // Starts from a quiet disk: ::sync() first writes back what earlier
  // benchmarks left dirty (the async ones leave hundreds of MB), which would
  // otherwise queue ahead of this benchmark's fsyncs — penalizing whichever
  // scenario happens to run next. Outside the timed loop.
  BenchDir() {
    ::sync();
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/rill-bench-XXXXXX";
    if (!::mkdtemp(pattern.data())) std::abort();
    path_ = pattern;
  }
  ~BenchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void check(int rc, const char* what) {
  if (rc != 0) {
    std::fprintf(stderr, "lmdb: %s: %s\n", what, mdb_strerror(rc));
    std::abort();
  }
}

void check(const rill::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "rill: %s: %s\n", what, s.to_string().c_str());
    std::abort();
  }
}

// Raw LMDB: big-endian offsets appended to one database, `per_txn` puts per
// transaction. sync: fsync at every commit (LMDB's default) or never.
class RawLog {
 public:
  RawLog(const std::string& dir, bool sync) {
    check(mdb_env_create(&env_), "create");
    check(mdb_env_set_mapsize(env_, std::size_t(8) << 30), "mapsize");
    check(mdb_env_open(env_, dir.c_str(), sync ? 0 : MDB_NOSYNC, 0600), "open");
    MDB_txn* txn = nullptr;
    check(mdb_txn_begin(env_, nullptr, 0, &txn), "begin");
    check(mdb_dbi_open(txn, nullptr, 0, &dbi_), "dbi");
    check(mdb_txn_commit(txn), "commit");
  }
  ~RawLog() { mdb_env_close(env_); }

  void append(std::uint64_t n, std::uint64_t per_txn, const char* data) {
    while (n > 0) {
      const std::uint64_t k = std::min(n, per_txn);
      MDB_txn* txn = nullptr;
      check(mdb_txn_begin(env_, nullptr, 0, &txn), "begin");
      for (std::uint64_t i = 0; i < k; ++i) {
        char key[8];
        std::uint64_t v = next_++;
        for (int b = 7; b >= 0; --b, v >>= 8) key[b] = char(v & 0xff);
        MDB_val kv{8, key}, dv{kEventBytes, const_cast<char*>(data)};
        check(mdb_put(txn, dbi_, &kv, &dv, MDB_APPEND), "put");
      }
      check(mdb_txn_commit(txn), "commit");
      n -= k;
    }
  }

 private:
  MDB_env* env_ = nullptr;
  MDB_dbi dbi_ = 0;
  std::uint64_t next_ = 0;
};

void raw_batched(benchmark::State& state, bool sync, std::uint64_t per_txn, std::uint64_t per_iteration) {
  BenchDir dir;
  RawLog log(dir.path(), sync);
  const std::string data(kEventBytes, 'x');
  std::uint64_t total = 0;
  for (auto _ : state) {
    log.append(per_iteration, per_txn, data.data());
    total += per_iteration;
  }
  state.SetItemsProcessed(std::int64_t(total));
}

rill::Bus open_bus(const std::string& dir) {
  rill::BusOptions o;
  o.path = dir + "/store";
  auto bus = rill::Bus::open(o);
  check(bus.status(), "open");
  return std::move(*bus);
}

void durable_async_rill(benchmark::State& state) {
  BenchDir dir;
  rill::Bus bus = open_bus(dir.path());
  auto topic = bus.create_topic("log", {.partitions = 1, .capacity = 1 << 16, .durability = rill::Durability::kAsync});
  check(topic.status(), "topic");
  auto producer = topic->producer();
  const std::string data(kEventBytes, 'x');
  std::uint64_t total = 0;
  for (auto _ : state) {
    rill::EventId last{};
    for (std::uint64_t i = 0; i < kEventsPerIteration; ++i) {
      auto id = producer->publish(rill::Message{.data = data, .partition = 0});
      check(id.status(), "publish");
      last = *id;
    }
    check(producer->wait_durable(last), "wait_durable");
    total += kEventsPerIteration;
  }
  state.SetItemsProcessed(std::int64_t(total));
}

void durable_sync_rill(benchmark::State& state) {
  constexpr int kThreads = 4;
  constexpr std::size_t kInFlight = 256;
  constexpr std::uint64_t kPerThread = 4096;
  BenchDir dir;
  rill::Bus bus = open_bus(dir.path());
  auto topic = bus.create_topic("log", {.partitions = 1, .capacity = 1 << 14, .durability = rill::Durability::kSync});
  check(topic.status(), "topic");
  const std::string data(kEventBytes, 'x');
  auto run_share = [&](rill::Producer& p) {
    std::deque<rill::EventId> pending;
    for (std::uint64_t i = 0; i < kPerThread; ++i) {
      if (pending.size() == kInFlight) {
        check(p.wait_durable(pending.front()), "wait_durable");
        pending.pop_front();
      }
      auto id = p.publish_async(rill::Message{.data = data, .partition = 0});
      check(id.status(), "publish");
      pending.push_back(*id);
    }
    for (const rill::EventId& id : pending) check(p.wait_durable(id), "wait_durable");
  };
  std::uint64_t total = 0;
  for (auto _ : state) {
    std::vector<std::thread> helpers;
    for (int t = 1; t < kThreads; ++t) {
      helpers.emplace_back([&] {
        auto p = topic->producer();
        run_share(*p);
      });
    }
    auto p = topic->producer();
    run_share(*p);
    for (auto& h : helpers) h.join();
    total += kPerThread * kThreads;
  }
  state.SetItemsProcessed(std::int64_t(total));
}

const bool registered = [] {
  add("durable_async/rill/100", durable_async_rill);
  add("durable_async/lmdb_raw_batched/100",
      [](benchmark::State& s) { raw_batched(s, false, 1000, kEventsPerIteration); });
  add("durable_sync/rill/100", durable_sync_rill);
  add("durable_sync/lmdb_raw_each/100", [](benchmark::State& s) { raw_batched(s, true, 1, 256); });
  add("durable_sync/lmdb_raw_batched/100", [](benchmark::State& s) { raw_batched(s, true, 1000, 16384); });
  return true;
}();

}  // namespace

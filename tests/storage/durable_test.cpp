// Durable topics on a real LMDB store in a temp dir: restart, acked cursors,
// sync group commit, catch-up reads from disk, write batches, retention,
// read-only opens, and faults (bad paths, corrupt files, a full store).
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <lmdb.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "rill/rill.hpp"
#include "support/store.hpp"
#include "support/temp_dir.hpp"

using namespace rill;
using namespace std::chrono_literals;
using rill::testing::TempDir;
using rill::testing::durable;
using rill::testing::open_bus;
using rill::testing::store_at;

namespace {

// Payload i: small for most, large (a heap block) for every 7th.
std::string payload(int i) {
  std::string s = "event-" + std::to_string(i);
  if (i % 7 == 0) s += std::string(300, char('a' + i % 26));
  return s;
}

// Edits a closed store with raw LMDB in one write transaction.
void edit_raw(const std::string& path, const std::function<void(MDB_txn*)>& edit) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  mdb_env_set_maxdbs(env, 64);
  REQUIRE(mdb_env_open(env, path.c_str(), 0, 0600) == 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  edit(txn);
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);
}

MDB_dbi open_dbi(MDB_txn* txn, const std::string& name) {
  MDB_dbi dbi = 0;
  REQUIRE(mdb_dbi_open(txn, name.c_str(), 0, &dbi) == 0);
  return dbi;
}

// The log database of partition 0 of a store's one topic: l<id>.0.
MDB_dbi first_log(MDB_txn* txn) {
  for (int id = 0; id < 4; ++id) {
    MDB_dbi dbi = 0;
    if (mdb_dbi_open(txn, ("l" + std::to_string(id) + ".0").c_str(), 0, &dbi) == 0) return dbi;
  }
  FAIL("no log database");
  return 0;
}

// A store with one kSync topic "t" (one partition) holding the events
// "0" to "9"; returns its path.
std::string store_of_ten(TempDir& dir) {
  const std::string path = dir.sub("store");
  Bus bus = open_bus(path);
  auto t = bus.create_topic("t", durable(Durability::kSync, 1, 16));
  auto p = t->producer();
  for (int i = 0; i < 10; ++i) REQUIRE(p->publish(Message{.data = std::to_string(i)}).ok());
  return path;
}

// Polls until a poll fails (at most 20): the data read, and the failure.
std::pair<std::vector<std::string>, Status> read_until_failure(Consumer& c) {
  std::vector<std::string> got;
  for (int i = 0; i < 20; ++i) {
    auto e = c.poll(1s);
    if (!e.ok()) return {got, e.status()};
    got.emplace_back(e->data());
  }
  return {got, Status::Ok()};
}

std::vector<std::string> drain(Consumer& c, Timeout first_wait = 2s) {
  std::vector<std::string> out;
  Timeout wait = first_wait;
  for (;;) {
    auto e = c.poll(wait);
    if (!e.ok()) {
      REQUIRE(e.status().is_timed_out());
      return out;
    }
    out.emplace_back(e->data());
    wait = 50ms;
  }
}

}  // namespace

TEST_CASE("a store directory is created 0700 with files 0600", "[durable]") {
  TempDir dir;
  const std::string path = dir.sub("store");
  {
    Bus bus = open_bus(path);
    REQUIRE(bus.create_topic("t", durable(Durability::kAsync)).ok());
  }
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  for (const char* f : {"data.mdb", "lock.mdb", "rill.lock"}) {
    REQUIRE(::stat((path + "/" + f).c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
  }
}

TEST_CASE("events, offsets and acked positions survive a restart", "[durable]") {
  TempDir dir;
  const std::string path = dir.sub("store");
  const Durability level = GENERATE(Durability::kAsync, Durability::kSync);
  {
    Bus bus = open_bus(path);
    auto topic = bus.create_topic("log", durable(level, 2, 64));
    REQUIRE(topic.ok());
    auto consumer = topic->consumer({.name = "reader"});
    REQUIRE(consumer.ok());
    auto producer = topic->producer();
    for (int i = 0; i < 300; ++i) {
      REQUIRE(producer->publish(Message{.key = std::to_string(i % 5), .metadata = "{\"i\":" + std::to_string(i) + "}",
                                        .data = payload(i)})
                  .ok());
    }
    // Ack half of what partition 0 holds, then close the bus.
    std::uint64_t acked = 0;
    for (int n = 0; n < 1000; ++n) {
      auto e = consumer->poll(1s);
      REQUIRE(e.ok());
      if (e->partition() != 0) continue;
      if (e->offset() == 40) {
        REQUIRE(consumer->ack(*e).ok());
        acked = e->offset() + 1;
        break;
      }
    }
    REQUIRE(acked == 41);
  }
  Bus bus = open_bus(path);
  REQUIRE(bus.list_topics() == std::vector<std::string>{"log"});
  auto topic = bus.topic("log");
  REQUIRE(topic.ok());
  CHECK(topic->options().durability == level);
  std::uint64_t total = 0;
  for (const PartitionStats& s : topic->stats()) {
    CHECK(s.earliest_offset == 0);
    CHECK(s.committed_offset == s.next_offset);
    total += s.next_offset;
  }
  CHECK(total == 300);
  CHECK(topic->consumer_names() == std::vector<std::string>{"reader"});

  // The name resumes right after its ack in partition 0.
  auto resumed = topic->consumer({.name = "reader", .partitions = {0}});
  REQUIRE(resumed.ok());
  auto first = resumed->poll(1s);
  REQUIRE(first.ok());
  CHECK(first->offset() == 41);

  // Every event is back, byte-exact, with its key and metadata; new events
  // continue the offsets.
  auto all = topic->consumer({.name = "auditor", .position = Position::earliest()});
  REQUIRE(all.ok());
  std::set<std::string> seen;
  std::vector<std::uint64_t> next_offset(2, 0);
  for (int n = 0; n < 300; ++n) {
    auto e = all->poll(1s);
    REQUIRE(e.ok());
    CHECK(e->offset() == next_offset[e->partition()]++);
    const std::string meta(e->metadata());
    const int i = std::stoi(meta.substr(5));
    CHECK(e->data() == payload(i));
    CHECK(e->key() == std::to_string(i % 5));
    CHECK(seen.insert(std::string(e->data())).second);
  }
  auto producer = topic->producer();
  REQUIRE(producer.ok());
  auto id = producer->publish(Message{.data = "after restart", .partition = 1});
  REQUIRE(id.ok());
  CHECK(id->offset == next_offset[1]);
}

TEST_CASE("sync publishes from many threads share commits and all land once", "[durable]") {
  TempDir dir;
  const std::string path = dir.sub("store");
  // 4 publishers leaving one by one (the writer's group sizing follows
  // them), or more waiting publishers than the writer counts (64).
  const std::tuple<int, int, int> shape = GENERATE(std::tuple{4, 300, 60}, std::tuple{80, 40, 0});
  const int kThreads = std::get<0>(shape), first = std::get<1>(shape), step = std::get<2>(shape);
  auto each = [first, step](int t) { return first - t * step; };
  {
    Bus bus = open_bus(path);
    auto topic = bus.create_topic("orders", durable(Durability::kSync, 2));
    REQUIRE(topic.ok());
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        auto p = topic->producer();
        for (int i = 0; i < each(t); ++i) {
          const std::string data = std::to_string(t) + ":" + std::to_string(i);
          auto id = p->publish(Message{.key = std::to_string(t), .data = data});
          // Completed means committed: the partition's committed offset is past it.
          if (!id.ok() || topic->stats()[id->partition].committed_offset <= id->offset) failures++;
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(failures == 0);
  }
  Bus bus = open_bus(path);
  auto c = bus.consumer("orders", {.name = "check", .position = Position::earliest()});
  REQUIRE(c.ok());
  std::vector<int> next(kThreads, 0);
  for (const std::string& s : drain(*c)) {
    const int t = std::stoi(s.substr(0, s.find(':')));
    const int i = std::stoi(s.substr(s.find(':') + 1));
    CHECK(i == next[t]);  // per producer order (one key: one partition), no loss, no duplicate
    next[t] = i + 1;
  }
  for (int t = 0; t < kThreads; ++t) CHECK(next[t] == each(t));
}

TEST_CASE("publish_async keeps many events in flight; wait_durable confirms them", "[durable]") {
  TempDir dir;
  Bus bus = open_bus(dir.sub("store"));
  auto topic = bus.create_topic("t", durable(Durability::kSync, 1, 256));
  auto p = topic->producer();
  std::vector<EventId> ids;
  for (int i = 0; i < 200; ++i) {
    auto id = p->publish_async(Message{.data = payload(i)});
    REQUIRE(id.ok());
    ids.push_back(*id);
  }
  for (const EventId& id : ids) REQUIRE(p->wait_durable(id, 10s).ok());
  CHECK(topic->stats()[0].committed_offset == 200);
  CHECK(p->wait_durable(EventId{0, 5000}).is_invalid_argument());
  CHECK(p->wait_durable(EventId{3, 0}).is_invalid_argument());
}

TEST_CASE("publish_async from several threads: wait_durable accepts every id a publish returned", "[durable]") {
  // A multi-producer publish may return before its event is visible (an
  // earlier claim is still being copied by another thread): its id is
  // still one wait_durable knows, and the event is committed in order.
  TempDir dir;
  Bus bus = open_bus(dir.sub("store"));
  auto topic = bus.create_topic("t", durable(Durability::kSync, 1, 1024));
  REQUIRE(topic.ok());
  constexpr int kThreads = 8, kEach = 1000;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      auto p = topic->producer();
      std::deque<EventId> pending;
      for (int i = 0; i < kEach; ++i) {
        auto id = p->publish_async(Message{.data = payload(i)});
        if (!id.ok()) {
          failures++;
          continue;
        }
        pending.push_back(*id);
        if (pending.size() == 2) {
          if (!p->wait_durable(pending.front(), 10s).ok()) failures++;
          pending.pop_front();
        }
      }
      for (const EventId& id : pending) {
        if (!p->wait_durable(id, 10s).ok()) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures == 0);
  CHECK(topic->stats()[0].committed_offset == std::uint64_t(kThreads) * kEach);
}

TEST_CASE("a slow consumer never blocks producers and catches up from disk", "[durable]") {
  TempDir dir;
  Bus bus = open_bus(dir.sub("store"));
  // A 16-slot ring, 5000 events, a consumer that reads nothing meanwhile.
  auto topic = bus.create_topic("fast", durable(Durability::kAsync, 1, 16));
  REQUIRE(topic.ok());
  auto slow = topic->consumer({.name = "slow"});
  REQUIRE(slow.ok());
  {
    auto p = topic->producer();
    for (int i = 0; i < 5000; ++i) REQUIRE(p->publish(Message{.data = payload(i)}, 10s).ok());
  }
  std::vector<std::string> got = drain(*slow);
  REQUIRE(got.size() == 5000);
  for (int i = 0; i < 5000; ++i) REQUIRE(got[std::size_t(i)] == payload(i));
  CHECK(slow->stats().skipped == 0);
  CHECK(slow->stats().from_disk >= 5000 - 16);  // all but the ring's last 16 came from disk

  // A consumer that reads while the producer runs sees every event in order.
  auto live = topic->consumer({.name = "live", .position = Position::latest()});
  std::atomic<int> failed_publishes{0};  // Catch's macros are for the main thread only
  std::thread producer([&] {
    auto p = topic->producer();
    for (int i = 5000; i < 20000; ++i) {
      if (!p->publish(Message{.data = payload(i)}, 10s).ok()) failed_publishes++;
    }
  });
  int expect = 5000;
  while (expect < 20000) {
    auto batch = live->poll_batch(64, 10s);
    REQUIRE(batch.ok());
    for (const Event& e : *batch) {
      REQUIRE(e.offset() == std::uint64_t(expect));
      REQUIRE(e.data() == payload(expect));
      ++expect;
    }
    if (expect % 3 == 0) std::this_thread::sleep_for(100us);  // fall behind now and then
  }
  producer.join();
  CHECK(failed_publishes == 0);
}

TEST_CASE("after a restart, earliest, offset and timestamp positions read from disk", "[durable]") {
  TempDir dir;
  const std::string path = dir.sub("store");
  std::chrono::system_clock::time_point middle;
  {
    Bus bus = open_bus(path);
    auto topic = bus.create_topic("t", durable(Durability::kSync, 1, 64));
    auto p = topic->producer();
    for (int i = 0; i < 100; ++i) REQUIRE(p->publish(Message{.data = std::to_string(i)}).ok());
    std::this_thread::sleep_for(20ms);  // past the coarse clock's tick
    middle = std::chrono::system_clock::now();
    std::this_thread::sleep_for(20ms);
    for (int i = 100; i < 200; ++i) REQUIRE(p->publish(Message{.data = std::to_string(i)}).ok());
  }
  Bus bus = open_bus(path);
  auto topic = bus.topic("t");
  auto earliest = topic->consumer({.name = "a", .position = Position::earliest()});
  CHECK(earliest->poll(1s)->data() == "0");
  auto at = topic->consumer({.name = "b", .position = Position::offset(150)});
  CHECK(at->poll(1s)->data() == "150");
  auto by_time = topic->consumer({.name = "c", .position = Position::timestamp(middle)});
  CHECK(by_time->poll(1s)->data() == "100");
  auto latest = topic->consumer({.name = "d", .position = Position::latest()});
  CHECK(latest->poll(50ms).status().is_timed_out());
}

TEST_CASE("a write batch publishes and acks atomically", "[durable][batch]") {
  TempDir dir;
  const std::string path = dir.sub("store");
  {
    Bus bus = open_bus(path);
    auto in = bus.create_topic("in", durable(Durability::kSync, 2));
    auto out = bus.create_topic("out", durable(Durability::kSync, 3));
    auto audit = bus.create_topic("audit", durable(Durability::kAsync));
    REQUIRE((in.ok() && out.ok() && audit.ok()));
    auto stage = in->consumer({.name = "stage"});
    {
      auto p = in->producer();
      for (int i = 0; i < 50; ++i) REQUIRE(p->publish(Message{.key = std::to_string(i), .data = std::to_string(i)}).ok());
    }
    for (int n = 0; n < 50; ++n) {
      auto e = stage->poll(1s);
      REQUIRE(e.ok());
      WriteBatch batch;
      REQUIRE(batch.publish(*out, Message{.key = e->key(), .data = "out-" + std::string(e->data())}).ok());
      REQUIRE(batch.publish(*audit, Message{.data = "seen-" + std::string(e->data())}).ok());
      REQUIRE(batch.ack(*stage, *e).ok());
      REQUIRE(bus.commit(batch).ok());
      REQUIRE(batch.ids().size() == 2);
      CHECK(stage->stats().acked >= 1);
    }
  }
  Bus bus = open_bus(path);
  auto out_reader = bus.consumer("out", {.name = "check", .position = Position::earliest()});
  auto audit_reader = bus.consumer("audit", {.name = "check", .position = Position::earliest()});
  auto outs = drain(*out_reader);
  auto audits = drain(*audit_reader);
  CHECK(outs.size() == 50);
  CHECK(audits.size() == 50);
  CHECK(std::set<std::string>(outs.begin(), outs.end()).size() == 50);
  // The stage's name has acked everything: nothing is delivered again.
  auto stage = bus.consumer("in", {.name = "stage"});
  CHECK(stage->poll(50ms).status().is_timed_out());
}

TEST_CASE("write batches refuse what they cannot commit atomically", "[durable][batch]") {
  TempDir dir;
  Bus bus = open_bus(dir.sub("store"));
  Bus memory_bus;
  auto mem = bus.create_topic("mem");
  auto single = bus.create_topic("single", [] {
    TopicOptions o = durable(Durability::kSync);
    o.producers = ProducerMode::kSingle;
    return o;
  }());
  auto small = bus.create_topic("small", durable(Durability::kSync, 1, 8));
  auto ok_topic = bus.create_topic("ok", durable(Durability::kSync));
  REQUIRE((mem.ok() && single.ok() && small.ok() && ok_topic.ok()));
  WriteBatch batch;
  CHECK(batch.publish(*mem, Message{.data = "x"}).is_invalid_argument());
  CHECK(batch.publish(*single, Message{.data = "x"}).is_invalid_argument());
  CHECK(batch.publish(*ok_topic, Message{.data = "x", .partition = 4}).is_invalid_argument());
  CHECK(batch.empty());
  for (int i = 0; i < 5; ++i) REQUIRE(batch.publish(*small, Message{.data = "x"}).ok());
  CHECK(bus.commit(batch).is_invalid_argument());  // 5 events > half of an 8-slot ring
  CHECK(small->stats()[0].next_offset == 0);       // nothing published
  CHECK(memory_bus.commit(batch).is_invalid_argument());
  // An ack of a memory topic's event, or of an event not delivered.
  auto mc = mem->consumer({.name = "c"});
  auto mp = mem->producer();
  REQUIRE(mp->publish(Message{.data = "m"}).ok());
  auto me = mc->poll(1s);
  CHECK(batch.ack(*mc, *me).is_invalid_argument());
  auto dc = ok_topic->consumer({.name = "c"});
  CHECK(batch.ack(*dc, *me).is_invalid_argument());
  // The bus still works; an empty batch commits at once, whatever the timeout.
  batch.clear();
  CHECK(bus.commit(batch, Timeout::zero()).ok());
  REQUIRE(batch.publish(*ok_topic, Message{.data = "fine"}).ok());
  REQUIRE(bus.commit(batch).ok());
  CHECK(dc->poll(1s)->data() == "fine");
}

TEST_CASE("a write batch to a deleted topic commits nothing, its ack included", "[durable][batch]") {
  TempDir dir;
  const std::string path = dir.sub("store");
  for (const char* deleted : {"out", "in"}) {
    INFO("deleted before commit: " << deleted);
    {
      Bus bus = open_bus(path);
      auto in = bus.ensure_topic("in", durable(Durability::kSync));
      auto out = bus.ensure_topic("out", durable(Durability::kSync));
      auto keep = bus.ensure_topic("keep", durable(Durability::kSync));
      REQUIRE((in.ok() && out.ok() && keep.ok()));
      auto stage = in->consumer({.name = std::string("stage-") + deleted});
      REQUIRE(in->producer()->publish(Message{.data = "input"}).ok());
      auto e = stage->poll(1s);
      REQUIRE(e.ok());
      WriteBatch batch;
      REQUIRE(batch.publish(*out, Message{.data = "output"}).ok());
      REQUIRE(batch.publish(*keep, Message{.data = "kept?"}).ok());
      REQUIRE(batch.ack(*stage, *e).ok());
      REQUIRE(bus.delete_topic(deleted).ok());
      CHECK(bus.commit(batch).is_closed());
      CHECK(keep->stats()[0].next_offset == 0);  // nothing of it published
      CHECK(stage->stats().acked == 0);
      // A batch refuses a deleted topic up front, and the bus keeps working.
      WriteBatch later;
      CHECK(later.publish(deleted == std::string("out") ? *out : *in, Message{.data = "x"}).is_closed());
      REQUIRE(later.publish(*keep, Message{.data = "fine"}).ok());
      REQUIRE(bus.commit(later).ok());
      CHECK(keep->stats()[0].next_offset == 1);
    }
    // After a restart nothing of the first batch is there, and when the
    // input topic survived its event is delivered again (its ack was not
    // committed either).
    Bus bus = open_bus(path);
    auto keep = bus.consumer("keep", {.name = "check", .position = Position::earliest()});
    CHECK(drain(*keep) == std::vector<std::string>{"fine"});
    REQUIRE(bus.delete_topic("keep").ok());
    if (deleted == std::string("out")) {
      auto stage = bus.consumer("in", {.name = "stage-out"});
      CHECK(stage->poll(1s)->data() == "input");
    } else {
      CHECK(bus.topic("in").status().is_not_found());
      auto out = bus.consumer("out", {.name = "check", .position = Position::earliest()});
      CHECK(drain(*out, 50ms).empty());
    }
    for (const std::string& t : bus.list_topics()) REQUIRE(bus.delete_topic(t).ok());
  }
}

TEST_CASE("a write batch outlives the consumers it acks for, and moves", "[durable][batch]") {
  TempDir dir;
  const std::string path = dir.sub("store");
  {
    Bus bus = open_bus(path);
    auto in = bus.create_topic("in", durable(Durability::kSync));
    auto out = bus.create_topic("out", durable(Durability::kSync));
    REQUIRE((in.ok() && out.ok()));
    auto p = in->producer();
    for (int i = 0; i < 3; ++i) REQUIRE(p->publish(Message{.data = std::to_string(i)}).ok());

    // A consumer moved between ack() and commit gets its in-memory ack.
    auto moved = in->consumer({.name = "moved"});
    auto e = moved->poll(1s);
    REQUIRE(e.ok());
    WriteBatch batch;
    REQUIRE(batch.ack(*moved, *e).ok());
    Consumer elsewhere = std::move(*moved);
    REQUIRE(bus.commit(batch).ok());
    CHECK(elsewhere.stats().acked == 1);

    // One destroyed meanwhile still has its ack committed durably.
    {
      auto gone = in->consumer({.name = "gone"});
      auto g0 = gone->poll(1s);
      auto g1 = gone->poll(1s);
      REQUIRE((g0.ok() && g1.ok()));
      batch.clear();
      REQUIRE(batch.ack(*gone, *g1).ok());
      REQUIRE(batch.publish(*out, Message{.data = "from 1"}).ok());
    }
    REQUIRE(bus.commit(batch).ok());

    // A moved-from batch is empty and usable again.
    WriteBatch taken = std::move(batch);
    CHECK(batch.empty());
    CHECK(batch.events() == 0);
    CHECK(batch.ids().empty());
    batch.clear();
    REQUIRE(bus.commit(batch).ok());
    REQUIRE(batch.publish(*out, Message{.data = "again"}).ok());
    REQUIRE(bus.commit(batch).ok());
    CHECK(batch.ids().size() == 1);
  }
  Bus bus = open_bus(path);
  auto gone = bus.consumer("in", {.name = "gone"});
  CHECK(gone->poll(1s)->data() == "2");  // resumes after the committed ack
  auto out = bus.consumer("out", {.name = "check", .position = Position::earliest()});
  CHECK(drain(*out) == std::vector<std::string>{"from 1", "again"});
}

TEST_CASE("retention by count deletes the oldest events; consumers jump or get OutOfRange", "[durable][retention]") {
  TempDir dir;
  Bus bus = open_bus(dir.sub("store"));
  TopicOptions o = durable(Durability::kSync, 1, 16);
  o.retention.max_events = 10;
  auto topic = bus.create_topic("t", o);
  auto p = topic->producer();
  for (int i = 0; i < 100; ++i) REQUIRE(p->publish(Message{.data = std::to_string(i)}).ok());
  REQUIRE(p->publish(Message{.data = "100"}).ok());  // one more group, after which the trim is visible
  const PartitionStats s = topic->stats()[0];
  CHECK(s.next_offset == 101);
  CHECK(s.earliest_offset >= 91 - 1);
  CHECK(s.earliest_offset <= 91);

  auto jumper = topic->consumer({.name = "jumper", .position = Position::offset(0)});
  auto first = jumper->poll(1s);
  REQUIRE(first.ok());
  CHECK(first->offset() == s.earliest_offset);
  CHECK(jumper->stats().skipped == s.earliest_offset);

  auto strict = topic->consumer({.name = "strict", .position = Position::offset(0), .jump_to_earliest = false});
  CHECK(strict->poll(1s).status().is_out_of_range());
  CHECK(strict->poll(1s).status().is_out_of_range());  // stays there

  auto earliest = topic->consumer({.name = "e", .position = Position::earliest()});
  CHECK(earliest->poll(1s)->offset() == s.earliest_offset);
}

TEST_CASE("retention keeps what registered consumers have not acked, when asked", "[durable][retention]") {
  TempDir dir;
  Bus bus = open_bus(dir.sub("store"));
  TopicOptions o = durable(Durability::kSync, 1, 16);
  o.retention.max_bytes = 100;
  o.retention.keep_unacked = true;
  auto topic = bus.create_topic("t", o);
  auto holder = topic->consumer({.name = "holder"});
  auto p = topic->producer();
  for (int i = 0; i < 50; ++i) REQUIRE(p->publish(Message{.data = std::string(20, 'x')}).ok());
  CHECK(topic->stats()[0].earliest_offset == 0);  // holder acked nothing
  for (int i = 0; i < 30; ++i) {
    auto e = holder->poll(1s);
    REQUIRE(e.ok());
    REQUIRE(holder->ack(*e).ok());
  }
  for (int i = 0; i < 200 && topic->stats()[0].earliest_offset < 30; ++i) {
    REQUIRE(p->publish(Message{.data = std::string(20, 'y')}).ok());
  }
  const std::uint64_t earliest = topic->stats()[0].earliest_offset;
  CHECK(earliest == 30);  // the bytes limit wants more gone; the ack stops it
  // Removing the name lifts the protection.
  holder->close();
  REQUIRE(topic->remove_consumer("holder").ok());
  for (int i = 0; i < 10; ++i) REQUIRE(p->publish(Message{.data = std::string(20, 'z')}).ok());
  CHECK(topic->stats()[0].earliest_offset > 30);
}

TEST_CASE("retention by age", "[durable][retention]") {
  TempDir dir;
  Bus bus = open_bus(dir.sub("store"));
  TopicOptions o = durable(Durability::kSync);
  o.retention.max_age = 50ms;
  auto topic = bus.create_topic("t", o);
  auto p = topic->producer();
  for (int i = 0; i < 20; ++i) REQUIRE(p->publish(Message{.data = "old"}).ok());
  std::this_thread::sleep_for(300ms);
  for (int i = 0; i < 50 && topic->stats()[0].earliest_offset < 20; ++i) {
    REQUIRE(p->publish(Message{.data = "new"}).ok());
    std::this_thread::sleep_for(20ms);
  }
  CHECK(topic->stats()[0].earliest_offset >= 20);
}

TEST_CASE("one writer per store; a second is refused with the holder's pid", "[durable]") {
  TempDir dir;
  const std::string path = dir.sub("store");
  Bus bus = open_bus(path);
  auto second = Bus::open(store_at(path));
  REQUIRE(!second.ok());
  CHECK(second.status().is_already_exists());
  CHECK(second.status().to_string().find(std::to_string(::getpid())) != std::string::npos);
  REQUIRE(bus.create_topic("still-works", durable(Durability::kSync)).ok());
}

TEST_CASE("a read-only bus reads durable topics and refuses writes", "[durable]") {
  TempDir dir;
  const std::string path = dir.sub("store");
  {
    Bus bus = open_bus(path);
    auto topic = bus.create_topic("t", durable(Durability::kSync));
    auto p = topic->producer();
    for (int i = 0; i < 10; ++i) REQUIRE(p->publish(Message{.data = std::to_string(i)}).ok());
  }
  BusOptions o = store_at(path);
  o.read_only = true;
  auto bus = Bus::open(o);
  INFO(bus.status().to_string());
  REQUIRE(bus.ok());
  auto topic = bus->topic("t");
  REQUIRE(topic.ok());
  CHECK(topic->producer().status().is_invalid_argument());
  CHECK(bus->create_topic("new", durable(Durability::kSync)).status().is_invalid_argument());
  CHECK(bus->delete_topic("t").is_invalid_argument());
  auto c = topic->consumer({.name = "tool", .position = Position::earliest()});
  CHECK(drain(*c).size() == 10);
  // One LMDB handle per store and process: a second open here, read-only or
  // not, is refused while this one lives (closing it would drop the
  // other's locks); another process may write meanwhile.
  auto second = Bus::open(o);
  CHECK(second.status().is_already_exists());
  auto writer = Bus::open(store_at(path));
  CHECK(writer.status().is_already_exists());
  CHECK(writer.status().to_string().find("already open in this process") != std::string::npos);
  CHECK(bus->close().ok());
  auto after = Bus::open(store_at(path));
  INFO(after.status().to_string());
  CHECK(after.ok());
}

TEST_CASE("a read-only bus keeps reading after another process grows the map", "[durable]") {
  TempDir dir;
  const std::string path = dir.sub("store");
  {
    BusOptions o = store_at(path);
    o.initial_map_size = 1 << 20;
    auto bus = Bus::open(o);
    REQUIRE(bus.ok());
    auto t = bus->create_topic("t", durable(Durability::kSync));
    auto p = t->producer();
    for (int i = 0; i < 10; ++i) REQUIRE(p->publish(Message{.data = std::to_string(i)}).ok());
  }
  BusOptions ro = store_at(path);
  ro.read_only = true;
  ro.initial_map_size = 1 << 20;  // maps what the file holds now
  auto bus = Bus::open(ro);
  REQUIRE(bus.ok());
  // Another process appends 6 MB: its map grows past this one's.
  const char* argv[] = {RILL_STORE_WRITER, path.c_str(), "60", "100000", nullptr};
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, RILL_STORE_WRITER, nullptr, nullptr, const_cast<char**>(argv), environ) == 0);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  auto c = bus->consumer("t", {.name = "tool", .position = Position::earliest()});
  REQUIRE(c.ok());
  CHECK(drain(*c) == std::vector<std::string>{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"});
}

TEST_CASE("deleting a durable topic removes it from the store", "[durable]") {
  TempDir dir;
  const std::string path = dir.sub("store");
  {
    Bus bus = open_bus(path);
    auto a = bus.create_topic("a", durable(Durability::kSync));
    REQUIRE(a->producer()->publish(Message{.data = "1"}).ok());
    REQUIRE(bus.create_topic("b", durable(Durability::kAsync)).ok());
    REQUIRE(bus.delete_topic("a").ok());
    CHECK(a->closed());
  }
  {
    Bus bus = open_bus(path);
    CHECK(bus.list_topics() == std::vector<std::string>{"b"});
    auto again = bus.create_topic("a", durable(Durability::kSync));
    REQUIRE(again.ok());
    CHECK(again->stats()[0].next_offset == 0);  // an id's databases are reused empty
  }
}

TEST_CASE("bad storage input gives a clear error and loses nothing", "[durable][faults]") {
  TempDir dir;
  SECTION("a durable topic needs a store") {
    Bus bus;
    CHECK(bus.create_topic("t", durable(Durability::kAsync)).status().is_invalid_argument());
    CHECK(bus.create_topic("t").ok());
  }
  SECTION("the path is a file") {
    std::ofstream(dir.sub("file")) << "not a directory";
    auto bus = Bus::open(store_at(dir.sub("file")));
    REQUIRE(!bus.ok());
    CHECK(bus.status().is_invalid_argument());
  }
  SECTION("the directory cannot be created") {
    auto bus = Bus::open(store_at("/proc/rill-cannot-exist/store"));
    REQUIRE(!bus.ok());
    CHECK(bus.status().is_io_error());
  }
  SECTION("a missing store without create_if_missing") {
    BusOptions o = store_at(dir.sub("missing"));
    o.create_if_missing = false;
    CHECK(Bus::open(o).status().is_not_found());
  }
  SECTION("an unwritable directory") {
    if (::geteuid() == 0) {
      WARN("running as root: directory permissions do not apply; covered by the /proc case");
    } else {
      std::filesystem::create_directory(dir.sub("ro"));
      ::chmod(dir.sub("ro").c_str(), 0500);
      auto bus = Bus::open(store_at(dir.sub("ro")));
      REQUIRE(!bus.ok());
      CHECK(bus.status().is_io_error());
    }
  }
  SECTION("damaged data.mdb files") {
    const std::string path = dir.sub("store");
    {
      Bus bus = open_bus(path);
      auto t = bus.create_topic("t", durable(Durability::kSync));
      REQUIRE(t->producer()->publish(Message{.data = "precious"}).ok());
    }
    const std::string data = path + "/data.mdb";
    const auto size = std::filesystem::file_size(data);
    const std::string backup = dir.sub("backup.mdb");
    std::filesystem::copy_file(data, backup);
    auto restore = [&] { std::filesystem::copy_file(backup, data, std::filesystem::copy_options::overwrite_existing); };

    std::filesystem::resize_file(data, size / 2);  // truncated
    auto truncated = Bus::open(store_at(path));
    REQUIRE(!truncated.ok());
    CHECK(truncated.status().is_corruption());

    restore();
    {
      std::fstream f(data, std::ios::in | std::ios::out | std::ios::binary);
      const std::string garbage(8192, '\x5a');  // both meta pages
      f.write(garbage.data(), std::streamsize(garbage.size()));
    }
    auto garbled = Bus::open(store_at(path));
    REQUIRE(!garbled.ok());
    CHECK(garbled.status().is_corruption());

    restore();
    edit_raw(path, [](MDB_txn* txn) {  // an unknown format version
      char version[4] = {0, 0, 0, 99};
      MDB_val k{6, const_cast<char*>("format")}, v{4, version};
      REQUIRE(mdb_put(txn, open_dbi(txn, "meta"), &k, &v, 0) == 0);
    });
    auto future = Bus::open(store_at(path));
    REQUIRE(!future.ok());
    CHECK(future.status().is_corruption());
    CHECK(future.status().to_string().find("format version 99") != std::string::npos);

    // A damaged topic configuration (valid JSON, impossible values) must not
    // size rings: Corruption naming the topic and the value.
    auto config = [&](const std::string& from, const std::string& to) {
      restore();
      edit_raw(path, [&](MDB_txn* txn) {
        const MDB_dbi topics = open_dbi(txn, "topics");
        MDB_val k{1, const_cast<char*>("t")}, v;
        REQUIRE(mdb_get(txn, topics, &k, &v) == 0);
        std::string json(static_cast<const char*>(v.mv_data), v.mv_size);
        const std::size_t at = json.find(from);
        REQUIRE(at != std::string::npos);
        json.replace(at, from.size(), to);
        MDB_val nv{json.size(), json.data()};
        REQUIRE(mdb_put(txn, topics, &k, &nv, 0) == 0);
      });
      return Bus::open(store_at(path)).status();
    };
    Status odd = config("\"capacity\":1024", "\"capacity\":1023");
    CHECK(odd.is_corruption());
    CHECK(odd.to_string().find("capacity is 1023") != std::string::npos);
    CHECK(config("\"capacity\":1024", "\"capacity\":0").is_corruption());
    CHECK(config("\"max_consumers\":", "\"max_consumers\":0,\"x\":").is_corruption());
    CHECK(config("\"durability\":2", "\"durability\":0").is_corruption());
    CHECK(config("\"wait\":0", "\"wait\":7").is_corruption());

    restore();  // the intact store opens and kept its event
    Bus bus = open_bus(path);
    auto c = bus.consumer("t", {.name = "c", .position = Position::earliest()});
    CHECK(c->poll(1s)->data() == "precious");
  }
}

TEST_CASE("an event missing from a partition's log is Corruption, not an endless wait", "[durable][faults]") {
  TempDir dir;
  const std::string path = store_of_ten(dir);
  edit_raw(path, [](MDB_txn* txn) {
    char key[8] = {0, 0, 0, 0, 0, 0, 0, 5};  // offset 5, big-endian
    MDB_val k{8, key};
    REQUIRE(mdb_del(txn, first_log(txn), &k, nullptr) == 0);
  });
  Bus bus = open_bus(path);  // the newest record is intact: the open check passes
  auto c = bus.consumer("t", {.name = "c", .position = Position::earliest()});
  const auto [got, failed] = read_until_failure(*c);
  CHECK(got == std::vector<std::string>{"0", "1", "2", "3", "4"});  // everything before the hole
  CHECK(failed.is_corruption());
  CHECK(failed.to_string().find("offset 5") != std::string::npos);
  CHECK(c->poll(1s).status().is_corruption());  // stays there: no skipping, no TimedOut loop
}

TEST_CASE("a stored event whose key is over kMaxKeyBytes is Corruption, not a truncated key", "[durable][faults]") {
  TempDir dir;
  const std::string path = store_of_ten(dir);
  edit_raw(path, [](MDB_txn* txn) {
    // Offset 3 rewritten with consistent sizes (FORMAT.md): timestamp, key
    // size kMaxKeyBytes + 1, metadata size 0, data size 1; key; data.
    const std::uint32_t ks = std::uint32_t(kMaxKeyBytes) + 1;
    std::string rec(8, '\0');
    for (std::uint32_t v : {ks, 0u, 1u}) {
      for (int b = 3; b >= 0; --b) rec.push_back(char((v >> (8 * b)) & 0xff));
    }
    rec += std::string(ks, 'k') + "3";
    char key[8] = {0, 0, 0, 0, 0, 0, 0, 3};  // offset 3, big-endian
    MDB_val k{8, key}, v{rec.size(), rec.data()};
    REQUIRE(mdb_put(txn, first_log(txn), &k, &v, 0) == 0);
  });
  Bus bus = open_bus(path);
  auto c = bus.consumer("t", {.name = "c", .position = Position::earliest()});
  const auto [got, failed] = read_until_failure(*c);
  CHECK(got == std::vector<std::string>{"0", "1", "2"});
  CHECK(failed.is_corruption());
  CHECK(failed.to_string().find("size limit") != std::string::npos);
}

TEST_CASE("a reader of a deleted durable topic never reads the topic that reuses its databases",
          "[durable][faults]") {
  TempDir dir;
  Bus bus = open_bus(dir.sub("store"));
  auto a = bus.create_topic("a", durable(Durability::kSync, 1, 16));
  auto pa = a->producer();
  for (int i = 0; i < 100; ++i) REQUIRE(pa->publish(Message{.data = "a-" + std::to_string(i)}).ok());
  auto reader = a->consumer({.name = "r", .position = Position::earliest()});  // reads from disk
  CHECK(reader->poll(1s)->data() == "a-0");
  REQUIRE(bus.delete_topic("a").ok());
  auto b = bus.create_topic("b", durable(Durability::kSync, 1, 16));
  auto pb = b->producer();
  for (int i = 0; i < 100; ++i) REQUIRE(pb->publish(Message{.data = "b-" + std::to_string(i)}).ok());
  CHECK(reader->poll(100ms).status().is_closed());
  CHECK(reader->poll_batch(10, 100ms).status().is_closed());
}

namespace {
// A store on "a disk" of 4 MiB: the map starts at 1 MiB and may double twice.
BusOptions small_disk(const std::string& path) {
  BusOptions o = store_at(path);
  o.initial_map_size = 1 << 20;
  o.max_map_size = 4 << 20;
  return o;
}
}  // namespace

TEST_CASE("a full store fails publishes clearly and keeps everything committed", "[durable][faults]") {
  TempDir dir;
  const std::string path = dir.sub("store");
  std::uint64_t committed = 0;
  {
    auto bus = Bus::open(small_disk(path));
    REQUIRE(bus.ok());
    auto topic = bus->create_topic("big", durable(Durability::kSync, 1, 64));
    auto memory = bus->create_topic("memory");
    auto p = topic->producer();
    const std::string chunk(4000, 'd');
    Status failure;
    for (int i = 0; i < 10000; ++i) {
      auto id = p->publish(Message{.data = chunk});
      if (!id.ok()) {
        failure = id.status();
        break;
      }
    }
    REQUIRE(!failure.ok());
    INFO(failure.to_string());
    CHECK(failure.is_resource_exhausted());
    committed = topic->stats()[0].committed_offset;
    CHECK(committed > 100);  // the map grew from 1 MiB before it filled
    CHECK(p->publish(Message{.data = "more"}).status().is_resource_exhausted());
    // Memory-only topics keep working.
    auto mc = memory->consumer({.name = "c"});
    REQUIRE(memory->producer()->publish(Message{.data = "alive"}).ok());
    CHECK(mc->poll(1s)->data() == "alive");
  }
  Bus bus = open_bus(path);
  auto topic = bus.topic("big");
  CHECK(topic->stats()[0].next_offset == committed);
  auto c = topic->consumer({.name = "c", .position = Position::earliest()});
  CHECK(drain(*c).size() == committed);
}

TEST_CASE("closing a bus whose last commit cannot be made says so; what was committed stays", "[durable][faults]") {
  TempDir dir;
  const std::string path = dir.sub("store");
  std::uint64_t committed = 0;
  {
    auto bus = Bus::open(small_disk(path));
    REQUIRE(bus.ok());
    auto topic = bus->create_topic("big", durable(Durability::kAsync, 1, 64));
    auto p = topic->producer();
    const std::string chunk(4000, 'd');
    bool refused = false;
    for (int i = 0; i < 2000 && !refused; ++i) refused = !p->publish(Message{.data = chunk}, 2s).ok();
    REQUIRE(refused);  // the map filled: the writer holds the ring
    committed = topic->stats()[0].committed_offset;
    REQUIRE(topic->stats()[0].next_offset > committed);  // published, not stored
    const Status closed = bus->close();
    INFO(closed.to_string());
    CHECK(closed.is_resource_exhausted());
    CHECK(closed.message().find("closing the bus") != std::string::npos);
    CHECK(bus->close().is_resource_exhausted());  // the same answer again
  }
  Bus bus = open_bus(path);
  auto topic = bus.topic("big");
  CHECK(topic->stats()[0].next_offset == committed);
  auto c = topic->consumer({.name = "c", .position = Position::earliest()});
  CHECK(drain(*c).size() == committed);
  CHECK(bus.close().ok());
}

TEST_CASE("a full map stops durable publishes until a delete frees room; then they resume", "[durable][faults]") {
  TempDir dir;
  const std::string path = dir.sub("store");
  {
    auto bus = Bus::open(small_disk(path));
    REQUIRE(bus.ok());
    auto big = bus->create_topic("big", durable(Durability::kSync, 1, 64));
    auto small = bus->create_topic("small", durable(Durability::kSync, 1, 64));
    auto reader = small->consumer({.name = "r", .individual_acks = true});
    auto ps = small->producer();
    REQUIRE(ps->publish(Message{.data = "before"}).ok());
    auto before = reader->poll(1s);
    REQUIRE(before.ok());
    auto pb = big->producer();
    // Large events: the write that fails needs far more pages than the
    // delete below (in a map full to the last page even a delete fails).
    const std::string chunk(100000, 'd');
    Status failure;
    for (int i = 0; i < 1000 && failure.ok(); ++i) failure = pb->publish(Message{.data = chunk}).status();
    INFO(failure.to_string());
    REQUIRE(failure.is_resource_exhausted());
    CHECK(ps->publish(Message{.data = "refused"}).status().is_resource_exhausted());  // one map for all
    REQUIRE(reader->ack(*before).ok());  // an individual ack made while full: saved after the recovery
    std::this_thread::sleep_for(300ms);   // retries fail with it in their group meanwhile
    REQUIRE(bus->delete_topic("big").ok());
    // The writer retries every 100 ms: publishes succeed again once it has.
    Status again = Status::ResourceExhausted("not tried");
    for (int i = 0; i < 500 && !again.ok(); ++i) {
      again = ps->publish(Message{.data = "after"}).status();
      if (!again.ok()) {
        REQUIRE(again.is_resource_exhausted());
        std::this_thread::sleep_for(20ms);
      }
    }
    REQUIRE(again.ok());
    for (int i = 0; i < 20; ++i) REQUIRE(ps->publish(Message{.data = "more"}).ok());
  }
  Bus bus = open_bus(path);
  CHECK(bus.list_topics() == std::vector<std::string>{"small"});
  auto check = bus.consumer("small", {.name = "check", .position = Position::earliest()});
  std::vector<std::string> expect{"before", "after"};
  expect.insert(expect.end(), 20, "more");
  CHECK(drain(*check) == expect);
  auto r = bus.consumer("small", {.name = "r", .individual_acks = true});
  CHECK(r->poll(1s)->data() == "after");  // "before"'s ack was committed
}

TEST_CASE("durable stress: producers never wait for slow or reopening consumers, and none loses an event",
          "[durable][stress]") {
  TempDir dir;
  Bus bus = open_bus(dir.sub("store"));
  constexpr int kProducers = 3, kPerProducer = 20000;
  constexpr std::uint32_t kPartitions = 2;
  auto topic = bus.create_topic("t", durable(Durability::kAsync, kPartitions, 64));
  REQUIRE(topic.ok());
  // Consumers: a fast one, a slow one (falls out of the 64-slot window and
  // reads from disk), and one that closes and reopens under its name.
  auto fast = topic->consumer({.name = "fast"});
  auto slow = topic->consumer({.name = "slow"});
  auto reopening = topic->consumer({.name = "reopening"});
  REQUIRE((fast.ok() && slow.ok() && reopening.ok()));

  std::atomic<int> failures{0};  // Catch's macros are for the main thread only
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      auto producer = topic->producer();
      for (int i = 0; i < kPerProducer; ++i) {
        const std::string data = std::to_string(p) + ":" + std::to_string(i);
        if (!producer->publish(Message{.key = std::to_string(p), .data = data}, 10s).ok()) failures++;
      }
    });
  }
  constexpr int kTotal = kProducers * kPerProducer;
  // Reads until every producer's last event was seen; checks each
  // partition's offsets and each producer's sequence.
  struct Checker {
    std::vector<std::int64_t> next_offset = std::vector<std::int64_t>(kPartitions, -1);
    std::vector<int> next_seq = std::vector<int>(kProducers, 0);
    int errors = 0;
    int distinct = 0;
    void see(const Event& e, bool may_repeat) {
      std::int64_t& o = next_offset[e.partition()];
      if (o >= 0 && std::int64_t(e.offset()) != o && !(may_repeat && std::int64_t(e.offset()) < o)) errors++;
      o = std::int64_t(e.offset()) + 1;
      const std::string d(e.data());
      const int p = std::stoi(d.substr(0, d.find(':')));
      const int i = std::stoi(d.substr(d.find(':') + 1));
      if (i == next_seq[p]) {
        next_seq[p]++;
        distinct++;
      } else if (!(may_repeat && i < next_seq[p])) {
        errors++;  // a gap or a reordering
      }
    }
  };
  std::thread slow_reader([&] {
    Checker c;
    while (c.distinct < kTotal) {
      auto batch = slow->poll_batch(32, 10s);
      if (!batch.ok()) {
        failures++;
        return;
      }
      for (const Event& e : *batch) c.see(e, false);
      (void)slow->ack(batch->back());
      std::this_thread::sleep_for(200us);
    }
    if (c.errors) failures++;
  });
  std::thread reopening_reader([&] {
    Checker c;
    int polls = 0;
    while (c.distinct < kTotal) {
      auto batch = reopening->poll_batch(64, 10s);
      if (!batch.ok()) {
        failures++;
        return;
      }
      for (const Event& e : *batch) c.see(e, true);
      // Ack only every other batch: a reopen then redelivers the rest.
      if (++polls % 2 == 0) (void)reopening->ack(batch->back());
      if (polls % 50 == 0) {
        reopening->close();
        auto again = topic->consumer({.name = "reopening"});
        if (!again.ok()) {
          failures++;
          return;
        }
        reopening = std::move(*again);
      }
    }
    if (c.errors) failures++;
  });
  Checker c;
  while (c.distinct < kTotal) {
    auto batch = fast->poll_batch(256, 10s);
    REQUIRE(batch.ok());
    for (const Event& e : *batch) c.see(e, false);
    REQUIRE(fast->ack(batch->back()).ok());
  }
  for (auto& t : producers) t.join();
  slow_reader.join();
  reopening_reader.join();
  CHECK(c.errors == 0);
  CHECK(failures == 0);
  CHECK(fast->stats().skipped == 0);
  CHECK(slow->stats().skipped == 0);
  CHECK(slow->stats().from_disk > 0);  // it did fall out of the ring window
}

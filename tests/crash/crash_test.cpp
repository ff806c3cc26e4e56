// Crash torture: a child process (crash_child) publishes with sync
// durability and runs an exactly-once stage; it is SIGKILLed at random
// moments, and after each kill the store is reopened and checked:
//  * every event whose publish completed is present, at the offset the
//    child was told, exactly once;
//  * offsets are contiguous in every partition;
//  * the stage's cursor is never behind an ack the child reported;
//  * the stage produced exactly one output per acked input and none for
//    inputs not acked — both the hand-written stage and the same stage run
//    as a rill::Pipeline transform; a Pipeline window stage emits each
//    (key, window) result once; a Pipeline join emits each pair once;
//  * on the async topic, every event the child saw confirmed durable is
//    there, and its offsets are contiguous (a crash loses only a tail);
//  * the kShared consumer "shared", which acks individually and out of
//    order: after the restart it delivers every input it did not ack
//    (the acked set above its position is persisted), each once, and
//    nothing it never acked is treated as acked.
// While a child runs, a read-only open of the same store must work and a
// second writer must be refused with the child's pid.
// RILL_CRASH_CYCLES sets the number of cycles (default 100).
#include <catch2/catch.hpp>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "rill/rill.hpp"
#include "support/temp_dir.hpp"

extern char** environ;

using namespace rill;
using namespace std::chrono_literals;

namespace {

struct ChildReports {
  bool ready = false;
  std::map<std::pair<std::uint32_t, std::uint64_t>, std::string> published;  // (partition, offset) -> data
  std::map<std::uint32_t, std::uint64_t> acked_next;                         // partition -> highest ack + 1
  std::map<std::uint64_t, std::string> durable_async;                        // async offset -> data
  std::set<std::pair<std::uint32_t, std::uint64_t>> shared_acks;             // acks about to be made
};

void parse(const std::string& line, ChildReports& r) {
  std::istringstream in(line);
  char kind = 0;
  in >> kind;
  if (kind == 'R') {
    r.ready = true;
  } else if (kind == 'P') {
    std::uint32_t p;
    std::uint64_t o;
    std::string data;
    in >> p >> o >> data;
    r.published[{p, o}] = data;
  } else if (kind == 'D') {
    std::uint64_t o;
    std::string data;
    in >> o >> data;
    r.durable_async[o] = data;
  } else if (kind == 'S') {
    std::uint32_t p;
    std::uint64_t o;
    in >> p >> o;
    r.shared_acks.insert({p, o});
  } else if (kind == 'A') {
    std::uint32_t p;
    std::uint64_t o;
    in >> p >> o;
    r.acked_next[p] = std::max(r.acked_next[p], o + 1);
  }
}

// Runs one child on `path`, kills it after `run_for` (counted from its
// "ready" report), and returns what it reported.
ChildReports run_and_kill(const std::string& path, int cycle, std::chrono::milliseconds run_for,
                          bool check_read_only) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  const std::string cycle_arg = std::to_string(cycle);
  char* argv[] = {const_cast<char*>(RILL_CRASH_CHILD), const_cast<char*>(path.c_str()),
                  const_cast<char*>(cycle_arg.c_str()), nullptr};
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, RILL_CRASH_CHILD, &actions, nullptr, argv, environ) == 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);

  ChildReports r;
  std::string buffer;
  // Reads reports until `until` (or EOF with block_until_eof, or the first
  // "ready" with stop_when_ready).
  auto consume = [&](bool block_until_eof, std::chrono::steady_clock::time_point until, bool stop_when_ready) {
    char chunk[65536];
    for (;;) {
      int timeout_ms = -1;
      if (!block_until_eof) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0) return;
        timeout_ms = int(left.count());
      }
      pollfd pfd{fds[0], POLLIN, 0};
      if (::poll(&pfd, 1, timeout_ms) <= 0) {
        if (!block_until_eof) return;
        continue;
      }
      const ssize_t n = ::read(fds[0], chunk, sizeof chunk);
      if (n <= 0) return;  // EOF: the child is gone
      buffer.append(chunk, std::size_t(n));
      std::size_t nl;
      while ((nl = buffer.find('\n')) != std::string::npos) {
        parse(buffer.substr(0, nl), r);
        buffer.erase(0, nl + 1);
      }
      if (stop_when_ready && r.ready) return;
    }
  };
  // Wait (at most 20 s) for "ready", then let it run.
  const auto ready_deadline = std::chrono::steady_clock::now() + 20s;
  consume(false, ready_deadline, true);
  REQUIRE(r.ready);
  if (check_read_only) {
    // A tool may read the store while the child writes it.
    BusOptions ro;
    ro.path = path;
    ro.read_only = true;
    auto tool = Bus::open(ro);
    INFO(tool.status().to_string());
    REQUIRE(tool.ok());
    CHECK(tool->list_topics() == std::vector<std::string>{"async", "in", "join-out", "out", "pipeline-join.changelog",
                                                          "pipeline-out", "pipeline-window.changelog", "window-out"});
    // A second writer is refused, naming the child as the holder.
    BusOptions rw;
    rw.path = path;
    auto writer = Bus::open(rw);
    REQUIRE(!writer.ok());
    CHECK(writer.status().is_already_exists());
    CHECK(writer.status().to_string().find("process " + std::to_string(pid)) != std::string::npos);
  }
  consume(false, std::chrono::steady_clock::now() + run_for, false);
  REQUIRE(::kill(pid, SIGKILL) == 0);
  consume(true, {}, false);
  ::close(fds[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  INFO("the child must die by SIGKILL, not by its own failure");
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGKILL);
  return r;
}

// Reads a whole topic from disk: (partition, offset) -> (key, data).
std::map<std::pair<std::uint32_t, std::uint64_t>, std::pair<std::string, std::string>> read_all(Topic& topic) {
  std::map<std::pair<std::uint32_t, std::uint64_t>, std::pair<std::string, std::string>> out;
  auto c = topic.consumer({.name = "crash-checker", .position = Position::earliest(), .max_batch = 1024});
  REQUIRE(c.ok());
  std::uint64_t total = 0;
  for (const PartitionStats& s : topic.stats()) total += s.next_offset;
  while (out.size() < total) {
    auto batch = c->poll_batch(1024, 5s);
    REQUIRE(batch.ok());
    for (const Event& e : *batch) {
      const bool fresh = out.emplace(std::pair(e.partition(), e.offset()),
                                     std::pair(std::string(e.key()), std::string(e.data()))).second;
      REQUIRE(fresh);  // no offset delivered twice
    }
  }
  c->close();
  REQUIRE(topic.remove_consumer("crash-checker").ok());
  return out;
}

// A stage's durable cursor in each partition: where a consumer of that
// name resumes.
std::uint64_t stage_cursor(Topic& in, std::uint32_t partition, const char* name = "stage") {
  auto c = in.consumer({.name = name, .partitions = {partition}});
  REQUIRE(c.ok());
  auto e = c->poll(0ms);
  if (e.ok()) return e->offset();
  REQUIRE(e.status().is_timed_out());
  return in.stats()[partition].next_offset;
}

using Events = std::map<std::pair<std::uint32_t, std::uint64_t>, std::pair<std::string, std::string>>;

// One output (key "<partition>:<offset>" of its input, data "out-" + the
// input's data) per input below the stage's cursor, and none other.
void check_outputs(const Events& inputs, const Events& outputs, std::map<std::uint32_t, std::uint64_t>& cursor) {
  std::set<std::string> origins;
  for (const auto& [id, kd] : outputs) {
    REQUIRE(origins.insert(kd.first).second);  // one output per input
    const std::uint32_t p = std::uint32_t(std::stoul(kd.first.substr(0, kd.first.find(':'))));
    const std::uint64_t off = std::stoull(kd.first.substr(kd.first.find(':') + 1));
    REQUIRE(off < cursor[p]);  // an output exists only for an acked input
    REQUIRE(kd.second == "out-" + inputs.at({p, off}).second);
  }
  std::uint64_t acked_inputs = 0;
  for (auto& [p, c] : cursor) acked_inputs += c;
  REQUIRE(outputs.size() == acked_inputs);
}

}  // namespace

TEST_CASE("SIGKILL at random moments loses no completed publish and keeps the stage exactly-once", "[crash]") {
  const char* env = std::getenv("RILL_CRASH_CYCLES");
  const int cycles = env ? std::max(1, std::atoi(env)) : 100;
  testing::TempDir dir;
  const std::string path = dir.sub("store");
  std::mt19937 rng(20261122);
  std::map<std::pair<std::uint32_t, std::uint64_t>, std::string> all_published;
  std::map<std::uint32_t, std::uint64_t> all_acked;
  std::map<std::uint64_t, std::string> all_durable_async;
  std::set<std::pair<std::uint32_t, std::uint64_t>> all_shared_acks;
  std::size_t pipeline_outputs_seen = 0, window_results_seen = 0, joins_seen = 0, shared_redelivered = 0, last_inputs = 0;

  for (int cycle = 0; cycle < cycles; ++cycle) {
    const auto run_for = std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 60)(rng));
    ChildReports r = run_and_kill(path, cycle, run_for, cycle % 10 == 0);
    for (auto& [id, data] : r.published) all_published[id] = data;
    for (auto& [p, next] : r.acked_next) all_acked[p] = std::max(all_acked[p], next);
    for (auto& [o, data] : r.durable_async) all_durable_async[o] = data;
    all_shared_acks.insert(r.shared_acks.begin(), r.shared_acks.end());

    BusOptions o;
    o.path = path;
    auto bus = Bus::open(o);
    INFO("cycle " << cycle << ": " << bus.status().to_string());
    REQUIRE(bus.ok());
    auto in = bus->topic("in");
    auto out = bus->topic("out");
    REQUIRE((in.ok() && out.ok()));

    // Inputs: contiguous offsets (read_all delivers every offset below
    // next exactly once), and every completed publish is there, unchanged.
    const auto inputs = read_all(*in);
    for (const auto& [id, data] : all_published) {
      auto it = inputs.find(id);
      INFO("cycle " << cycle << ": completed publish " << id.first << "@" << id.second);
      REQUIRE(it != inputs.end());
      REQUIRE(it->second.second == data);
    }
    std::set<std::string> distinct;
    for (const auto& [id, kd] : inputs) REQUIRE(distinct.insert(kd.second).second);  // no event twice

    // The stage: its cursor covers every reported ack, and outputs match
    // the acked inputs one to one.
    std::map<std::uint32_t, std::uint64_t> cursor;
    for (std::uint32_t p = 0; p < in->partitions(); ++p) {
      cursor[p] = stage_cursor(*in, p);
      INFO("cycle " << cycle << ": partition " << p);
      REQUIRE(cursor[p] >= all_acked[p]);
    }
    check_outputs(inputs, read_all(*out), cursor);
    // The same stage run by a Pipeline: exactly-once too.
    auto pipeline_out = bus->topic("pipeline-out");
    REQUIRE(pipeline_out.ok());
    std::map<std::uint32_t, std::uint64_t> pipeline_cursor;
    for (std::uint32_t p = 0; p < in->partitions(); ++p) pipeline_cursor[p] = stage_cursor(*in, p, "pipeline-stage");
    const auto pipeline_outputs = read_all(*pipeline_out);
    check_outputs(inputs, pipeline_outputs, pipeline_cursor);
    pipeline_outputs_seen = pipeline_outputs.size();
    // The window stage: one result per key and window, whatever the kills
    // (outputs, window state and input acks commit together), and never
    // more events counted than it acked.
    auto window_out = bus->topic("window-out");
    REQUIRE(window_out.ok());
    std::set<std::string> windows;
    std::uint64_t counted = 0, window_acked = 0;
    for (const auto& [id, kd] : read_all(*window_out)) {
      REQUIRE(windows.insert(kd.first).second);
      counted += std::stoull(kd.second);
    }
    for (std::uint32_t p = 0; p < in->partitions(); ++p) window_acked += stage_cursor(*in, p, "pipeline-window");
    REQUIRE(counted <= window_acked);
    window_results_seen = windows.size();
    // The join of each input with its pipeline output: once per origin,
    // and only for inputs the pipeline stage processed.
    auto join_out = bus->topic("join-out");
    REQUIRE(join_out.ok());
    std::set<std::string> joined;
    for (const auto& [id, kd] : read_all(*join_out)) {
      REQUIRE(joined.insert(kd.first).second);
      const std::uint32_t p = std::uint32_t(std::stoul(kd.first.substr(0, kd.first.find(':'))));
      REQUIRE(std::stoull(kd.first.substr(kd.first.find(':') + 1)) < pipeline_cursor[p]);
    }
    joins_seen = joined.size();

    // The shared consumer: what comes again (read without acking, so the
    // name's state stays as the child left it) and what it acked cover
    // every input; nothing comes twice.
    {
      auto shared = in->consumer({.name = "shared", .mode = ConsumerMode::kShared});
      REQUIRE(shared.ok());
      std::set<std::pair<std::uint32_t, std::uint64_t>> again;
      for (;;) {
        auto batch = shared->poll_batch(256, 200ms);
        if (!batch.ok()) {
          REQUIRE(batch.status().is_timed_out());
          break;
        }
        for (const Event& e : *batch) REQUIRE(again.insert({e.partition(), e.offset()}).second);
      }
      for (const auto& [id, kd] : inputs) {
        INFO("cycle " << cycle << ": input " << id.first << "@" << id.second << " neither acked nor redelivered");
        REQUIRE((again.count(id) || all_shared_acks.count(id)));
      }
      shared_redelivered = again.size();
      last_inputs = inputs.size();
    }

    // The async topic: whatever was confirmed durable survived.
    auto async_topic = bus->topic("async");
    REQUIRE(async_topic.ok());
    const auto async_events = read_all(*async_topic);
    for (const auto& [offset, data] : all_durable_async) {
      auto it = async_events.find({0, offset});
      INFO("cycle " << cycle << ": confirmed async event at " << offset);
      REQUIRE(it != async_events.end());
      REQUIRE(it->second.second == data);
    }
  }
  INFO("completed publishes checked: " << all_published.size());
  CHECK(all_published.size() > std::size_t(cycles));  // the children did real work
  CHECK(!all_durable_async.empty());
  CHECK(pipeline_outputs_seen > 0);
  CHECK(window_results_seen > 0);
  CHECK(joins_seen > 0);
  CHECK(!all_shared_acks.empty());
  INFO("shared: acks reported " << all_shared_acks.size() << ", redelivered after the last kill " << shared_redelivered);
  CHECK(shared_redelivered < last_inputs);  // acks were persisted: not everything comes again
}

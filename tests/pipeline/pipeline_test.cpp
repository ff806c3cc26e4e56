// Pipelines: stages as threads wired by topics — no loss, no duplicate,
// per-key order and byte-exact data through source -> transforms -> sink,
// parallel stages, retries and dead letters, components added and removed
// while running, stop/restart without repeats, backpressure, and
// exactly-once stages on durable topics across bus restarts.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "rill/json.hpp"
#include "rill/rill.hpp"
#include "support/store.hpp"
#include "support/temp_dir.hpp"

using namespace rill;
using namespace std::chrono_literals;

namespace {

// What a sink saw, in arrival order (sinks may run on several threads).
class Collector {
 public:
  void add(const Event& e) {
    std::lock_guard<std::mutex> lock(mu_);
    seen_.push_back({std::string(e.key()), std::string(e.metadata()), std::string(e.data())});
  }
  struct Item {
    std::string key, metadata, data;
  };
  std::vector<Item> items() const {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }
  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_.size();
  }

 private:
  mutable std::mutex mu_;
  std::vector<Item> seen_;
};

// Adds sinks collecting topics "out" into `out` and "dead" into `dead`,
// starts the pipeline and waits until everything went through.
void run_with_sinks(Pipeline& pipeline, Collector& out, Collector& dead) {
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { out.add(e); }, {.input = "out"}).ok());
  REQUIRE(pipeline.sink("dlq", [&](const Event& e) { dead.add(e); }, {.input = "dead"}).ok());
  REQUIRE(pipeline.start().ok());
  REQUIRE(pipeline.wait(60s).ok());
}

// The data of every event a collector saw.
std::multiset<std::string> data_of(const Collector& c) {
  std::multiset<std::string> data;
  for (const auto& it : c.items()) data.insert(it.data);
  return data;
}

// Each dead letter's data (the input it came from) -> its reason.
std::map<std::string, std::string> reasons_of(const Collector& dead) {
  std::map<std::string, std::string> reasons;
  for (const auto& it : dead.items()) {
    auto md = parse_metadata(it.metadata);
    REQUIRE(md.ok());
    reasons[it.data] = (*md)["dead_letter"]["reason"].get<std::string>();
  }
  return reasons;
}

// A source emitting events "k<i % keys>" / "<i>" for i in [from, to), in
// batches of `batch`.
SourceFn counting_source(int from, int to, int keys, int batch = 16) {
  auto next = std::make_shared<int>(from);
  return [=](Emitter& out) {
    for (int j = 0; j < batch && *next < to; ++j, ++*next) {
      const std::string key = "k" + std::to_string(*next % keys), data = std::to_string(*next);
      out.emit(key, {}, data);
    }
    return *next < to;
  };
}

// Checks every value in [0, n) arrived exactly once, and per key in
// increasing order (the per-partition, hence per-key, order).
void check_exactly_once_in_key_order(const std::vector<Collector::Item>& items, int n,
                                     const std::string& suffix = "") {
  std::vector<int> count(n, 0);
  std::map<std::string, int> last;
  bool ordered = true, well_formed = true;
  for (const auto& it : items) {
    if (it.data.size() < suffix.size() || it.data.substr(it.data.size() - suffix.size()) != suffix) {
      well_formed = false;
      continue;
    }
    const int v = std::stoi(it.data.substr(0, it.data.size() - suffix.size()));
    if (v < 0 || v >= n) {
      well_formed = false;
      continue;
    }
    ++count[v];
    auto [pos, fresh] = last.emplace(it.key, v);
    if (!fresh) {
      ordered &= pos->second < v;
      pos->second = v;
    }
  }
  CHECK(well_formed);
  CHECK(ordered);
  int missing = 0, duplicated = 0;
  for (int c : count) {
    missing += c == 0;
    duplicated += c > 1;
  }
  CHECK(missing == 0);
  CHECK(duplicated == 0);
}

StageStats stats_of(const Pipeline& p, const char* name) {
  auto s = p.stats(name);
  REQUIRE(s.ok());
  return *s;
}

}  // namespace

TEST_CASE("source -> map -> filter -> sink: nothing lost, nothing repeated, per-key order, exact bytes", "[pipeline]") {
  Bus bus({.default_topic = {.partitions = 4, .capacity = 256}});
  Pipeline pipeline(bus);
  Collector sink;
  const int n = 20000;
  REQUIRE(pipeline.source("gen", counting_source(0, n, 13), {.output = "raw"}).ok());
  REQUIRE(pipeline
              .transform("tag", map([](const Event& e) {
                           return Output{std::string(e.key()), R"({"tagged":true})", std::string(e.data()) + "!"};
                         }),
                         {.input = "raw", .output = "tagged"})
              .ok());
  REQUIRE(pipeline.transform("even", filter([](const Event& e) { return std::stoi(std::string(e.data())) % 2 == 0; }),
                             {.input = "tagged", .output = "even"})
              .ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { sink.add(e); }, {.input = "even"}).ok());
  REQUIRE(pipeline.start().ok());
  REQUIRE(pipeline.wait(60s).ok());
  const auto items = sink.items();
  REQUIRE(items.size() == n / 2);
  std::vector<Collector::Item> halved;
  for (const auto& it : items) {
    CHECK(it.metadata == R"({"tagged":true})");
    const int v = std::stoi(it.data);
    CHECK(it.key == "k" + std::to_string(v % 13));
    halved.push_back({it.key, it.metadata, std::to_string(v / 2) + "!"});
  }
  check_exactly_once_in_key_order(halved, n / 2, "!");
  CHECK(stats_of(pipeline, "gen").processed == n);
  CHECK(stats_of(pipeline, "tag").processed == n);
  CHECK(stats_of(pipeline, "tag").emitted == n);
  CHECK(stats_of(pipeline, "even").emitted == n / 2);
  CHECK(stats_of(pipeline, "collect").processed == n / 2);
  CHECK(stats_of(pipeline, "collect").lag == 0);
  CHECK(stats_of(pipeline, "tag").errors == 0);
  pipeline.stop();
  CHECK(pipeline.wait(1ms).is_closed());
  for (const auto& s : pipeline.stats()) CHECK_FALSE(s.running);
}

TEST_CASE("flat_map emits zero or more events per input, all of them", "[pipeline]") {
  Bus bus;
  Pipeline pipeline(bus);
  Collector sink;
  const int n = 3000;
  REQUIRE(pipeline.source("gen", counting_source(0, n, 5), {.output = "in"}).ok());
  REQUIRE(pipeline
              .transform("split", flat_map([](const Event& e, Emitter& out) {
                           const int v = std::stoi(std::string(e.data()));
                           for (int c = 0; c < v % 3; ++c) out.emit(e.key(), {}, std::to_string(v) + "." + std::to_string(c));
                         }),
                         {.input = "in", .output = "out"})
              .ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { sink.add(e); }, {.input = "out"}).ok());
  REQUIRE(pipeline.start().ok());
  REQUIRE(pipeline.wait(60s).ok());
  std::set<std::string> got;
  for (const auto& it : sink.items()) CHECK(got.insert(it.data).second);
  std::size_t expected = 0;
  for (int v = 0; v < n; ++v) expected += v % 3;
  CHECK(got.size() == expected);
  CHECK(got.count("4.0") == 1);
  CHECK(got.count("3.0") == 0);
}

TEST_CASE("parallel stages keep per-key order: split by partitions and key_shared", "[pipeline]") {
  const Split split = GENERATE(Split::kPartitions, Split::kKeyShared);
  Bus bus({.default_topic = {.partitions = split == Split::kPartitions ? 4u : 1u, .capacity = 128}});
  Pipeline pipeline(bus);
  Collector sink;
  const int n = 20000;
  std::mutex mu;
  std::set<std::thread::id> threads;
  REQUIRE(pipeline.source("gen", counting_source(0, n, 31), {.output = "in"}).ok());
  REQUIRE(pipeline
              .transform("work", map([&](const Event& e) {
                           {
                             std::lock_guard<std::mutex> lock(mu);
                             threads.insert(std::this_thread::get_id());
                           }
                           return Output{std::string(e.key()), {}, std::string(e.data())};
                         }),
                         {.input = "in", .output = "out", .threads = 3, .split = split, .max_batch = 16})
              .ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { sink.add(e); }, {.input = "out"}).ok());
  REQUIRE(pipeline.start().ok());
  REQUIRE(pipeline.wait(60s).ok());
  check_exactly_once_in_key_order(sink.items(), n);
  CHECK(sink.size() == n);
  CHECK(threads.size() >= 2);  // the work really was shared
}

TEST_CASE("a failing stage retries, then dead-letters with error, stage and origin, and keeps running", "[pipeline]") {
  Bus bus({.default_topic = {.partitions = 2, .capacity = 256}});
  Pipeline pipeline(bus);
  Collector sink, dead;
  const int n = 1000;
  std::atomic<int> calls_on_7{0};
  std::mutex mu;
  std::map<int, int> attempts;
  REQUIRE(pipeline.source("gen", counting_source(0, n, 4), {.output = "in"}).ok());
  REQUIRE(pipeline
              .transform("fragile", flat_map([&](const Event& e, Emitter& out) {
                           const int v = std::stoi(std::string(e.data()));
                           out.emit(e.key(), {}, e.data());  // emitted, then thrown away when it throws
                           int attempt;
                           {
                             std::lock_guard<std::mutex> lock(mu);
                             attempt = attempts[v]++;
                           }
                           if (v == 7) {
                             calls_on_7.fetch_add(1);
                             throw std::runtime_error("seven is never welcome");
                           }
                           if (v % 100 == 3 && attempt == 0) throw std::runtime_error("transient");
                         }),
                         {.input = "in",
                          .output = "out",
                          .retry = {.max_retries = 2, .backoff = 1ms, .max_backoff = 4ms},
                          .dead_letter_topic = "dead"})
              .ok());
  run_with_sinks(pipeline, sink, dead);

  // Every value but 7 came out exactly once (the transient failures' first
  // attempts published nothing).
  const std::multiset<std::string> got = data_of(sink);
  CHECK(got.size() == n - 1);
  CHECK(got.count("7") == 0);
  CHECK(got.count("3") == 1);
  CHECK(got.count("103") == 1);
  CHECK(calls_on_7 == 3);  // first attempt + 2 retries

  const auto dl = dead.items();
  REQUIRE(dl.size() == 1);
  CHECK(dl[0].data == "7");
  CHECK(dl[0].key == "k3");
  auto md = parse_metadata(dl[0].metadata);
  REQUIRE(md.ok());
  const auto& info = (*md)["dead_letter"];
  CHECK(info["reason"] == "seven is never welcome");
  CHECK(info["stage"] == "fragile");
  CHECK(info["topic"] == "in");
  CHECK(info["attempts"] == 3);
  CHECK(info["partition"].get<std::uint32_t>() == key_partition("k3", 2));
  CHECK(info.contains("offset"));

  const StageStats s = stats_of(pipeline, "fragile");
  CHECK(s.errors == 1);
  CHECK(s.dead_lettered == 1);
  CHECK(s.retried == 2 + n / 100);
  CHECK(s.last_error == "seven is never welcome");
  CHECK(s.running);
}

TEST_CASE("a dead letter too large for its topic drops the data, not the stage", "[pipeline]") {
  Bus bus;
  auto in = *bus.create_topic("in", {.capacity = 64, .max_event_size = 4096});
  REQUIRE(bus.create_topic("dead", {.capacity = 64, .max_event_size = 1024}).ok());
  Pipeline pipeline(bus);
  REQUIRE(pipeline
              .transform("always", flat_map([](const Event&, Emitter&) { throw std::runtime_error("no"); }),
                         {.input = "in", .output = "out", .retry = {.max_retries = 0}, .dead_letter_topic = "dead"})
              .ok());
  Collector sink, dead;
  auto p = *in.producer();
  const std::string big(1000, 'x'), huge_key(2000, 'k');
  REQUIRE(p.publish(Message{.key = "small", .data = "fits"}).ok());
  REQUIRE(p.publish(Message{.key = "big", .metadata = R"({"unit":"C"})", .data = big}).ok());
  REQUIRE(p.publish(Message{.key = huge_key, .data = "x"}).ok());
  run_with_sinks(pipeline, sink, dead);
  const auto dl = dead.items();
  REQUIRE(dl.size() == 3);
  CHECK(dl[0].data == "fits");
  CHECK(dl[1].key == "big");
  CHECK(dl[1].data.empty());
  auto md = parse_metadata(dl[1].metadata);
  REQUIRE(md.ok());
  CHECK((*md)["unit"] == "C");
  CHECK((*md)["dead_letter"]["dropped_data_bytes"] == 1000);
  CHECK(dl[2].key.empty());
  CHECK((*parse_metadata(dl[2].metadata))["dead_letter"]["dropped_key"] == true);
  const StageStats s = stats_of(pipeline, "always");
  CHECK(s.dead_lettered == 3);
  CHECK(s.running);
}

TEST_CASE("a dead letter carries binary metadata and a reason that is not UTF-8", "[pipeline]") {
  Bus bus;
  auto in = *bus.create_topic("in", {.capacity = 64});
  Pipeline pipeline(bus);
  REQUIRE(pipeline
              .transform("binary", flat_map([](const Event&, Emitter&) { throw std::runtime_error("bad \xff byte"); }),
                         {.input = "in", .output = "out", .retry = {.max_retries = 0}, .dead_letter_topic = "dead"})
              .ok());
  Collector sink, dead;
  const std::string binary("\x80\x81\0\xfe", 4);
  REQUIRE(in.producer()->publish(Message{.key = "k", .metadata = binary, .data = "d"}).ok());
  run_with_sinks(pipeline, sink, dead);
  const auto dl = dead.items();
  REQUIRE(dl.size() == 1);
  CHECK(dl[0].data == "d");
  auto md = parse_metadata(dl[0].metadata);
  REQUIRE(md.ok());
  CHECK((*md)["original_metadata"].get<std::string>().size() > 0);   // kept as text, bad bytes replaced
  CHECK((*md)["dead_letter"]["reason"].get<std::string>().rfind("bad ", 0) == 0);
  CHECK(stats_of(pipeline, "binary").running);
}

TEST_CASE("a transform may re-emit what it already emitted", "[pipeline]") {
  Bus bus;
  auto in = *bus.create_topic("in", {.capacity = 64});
  Pipeline pipeline(bus);
  REQUIRE(pipeline
              .transform("echo", flat_map([](const Event& e, Emitter& out) {
                           out.emit(e.key(), "m", std::string(3000, e.data()[0]));
                           for (int i = 0; i < 4; ++i) out.emit(out.messages()[0]);  // views into the emitter, which grows
                         }),
                         {.input = "in", .output = "out"})
              .ok());
  Collector sink, dead;
  REQUIRE(in.producer()->publish(Message{.key = "k", .data = "q"}).ok());
  run_with_sinks(pipeline, sink, dead);
  const auto got = sink.items();
  REQUIRE(got.size() == 5);
  for (const auto& it : got) {
    CHECK(it.key == "k");
    CHECK(it.data == std::string(3000, 'q'));
  }
}

TEST_CASE("without a dead-letter topic failures are counted and skipped; bad outputs are failures too", "[pipeline]") {
  Bus bus({.default_topic = {.capacity = 64, .max_event_size = 64}});
  Pipeline pipeline(bus);
  Collector sink;
  REQUIRE(pipeline.source("gen", counting_source(0, 200, 1), {.output = "in"}).ok());
  REQUIRE(pipeline
              .transform("t", map([](const Event& e) {
                           const int v = std::stoi(std::string(e.data()));
                           if (v % 50 == 0) return Output{{}, {}, std::string(100, 'x')};  // too large for "out"
                           if (v % 50 == 1) return Output{{}, {}, "p", 5};                // no partition 5
                           if (v % 50 == 2) throw 42;                                     // not a std::exception
                           return Output{{}, {}, std::string(e.data())};
                         }),
                         {.input = "in", .output = "out", .retry = {.max_retries = 0}})
              .ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { sink.add(e); }, {.input = "out"}).ok());
  REQUIRE(pipeline.start().ok());
  REQUIRE(pipeline.wait(60s).ok());
  CHECK(sink.size() == 200 - 12);
  const StageStats s = stats_of(pipeline, "t");
  CHECK(s.errors == 12);
  CHECK(s.dead_lettered == 0);
  CHECK(s.running);
}

TEST_CASE("an attempt with one unfit output publishes none of its outputs; the reason names the limit", "[pipeline]") {
  // Each event's outputs are checked against "out" (64 bytes, 2 partitions)
  // as they are emitted; a failed attempt is rolled back whole, and the
  // outputs of the events around it still go out.
  Bus bus({.default_topic = {.partitions = 2, .capacity = 64, .max_event_size = 64}});
  REQUIRE(bus.create_topic("dead", {.capacity = 64}).ok());  // room for the dead-letter metadata
  Pipeline pipeline(bus);
  Collector sink, dead;
  const int n = 300;
  REQUIRE(pipeline.source("gen", counting_source(0, n, 1), {.output = "in"}).ok());
  REQUIRE(pipeline
              .transform("t", flat_map([](const Event& e, Emitter& out) {
                           const int v = std::stoi(std::string(e.data()));
                           const std::string d(e.data());
                           out.emit({}, {}, d + "a");
                           if (v % 10 == 3) out.emit({}, {}, std::string(65, 'x'));     // one byte too many
                           if (v % 10 == 5) out.emit(Output{{}, {}, d + "p", 2});        // no partition 2
                           if (v % 10 == 7) out.emit(Output{{}, {}, std::string(64, 'y'), 1});  // fits exactly
                           out.emit({}, {}, d + "b");
                         }),
                         {.input = "in", .output = "out", .retry = {.max_retries = 1, .backoff = 1ms}, .dead_letter_topic = "dead"})
              .ok());
  run_with_sinks(pipeline, sink, dead);

  const std::multiset<std::string> got = data_of(sink);
  std::multiset<std::string> want;
  for (int v = 0; v < n; ++v) {
    if (v % 10 == 3 || v % 10 == 5) continue;  // rolled back whole, twice
    want.insert(std::to_string(v) + "a");
    want.insert(std::to_string(v) + "b");
    if (v % 10 == 7) want.insert(std::string(64, 'y'));
  }
  CHECK(got == want);

  std::map<std::string, std::string> reasons = reasons_of(dead);
  CHECK(reasons.size() == std::size_t(2 * n / 10));
  CHECK(reasons["13"] == "emitted event of 65 bytes exceeds the output topic's max_event_size of 64");
  CHECK(reasons["25"] == "emitted event for partition 2 of an output topic with 2 partitions");
  const StageStats s = stats_of(pipeline, "t");
  CHECK(s.dead_lettered == std::uint64_t(2 * n / 10));
  CHECK(s.retried == std::uint64_t(2 * n / 10));
}

TEST_CASE("an emitted key or metadata over its limit is dead-lettered like any unfit output", "[pipeline]") {
  Bus bus({.default_topic = {.capacity = 64}});
  Pipeline pipeline(bus);
  Collector sink, dead;
  const int n = 50;
  REQUIRE(pipeline.source("gen", counting_source(0, n, 1), {.output = "in"}).ok());
  REQUIRE(pipeline
              .transform("t", flat_map([](const Event& e, Emitter& out) {
                           const int v = std::stoi(std::string(e.data()));
                           if (v % 10 == 3) out.emit(std::string(kMaxKeyBytes + 1, 'k'), {}, e.data());
                           if (v % 10 == 6) out.emit({}, std::string(kMaxMetadataBytes + 1, ' '), e.data());
                           out.emit({}, {}, e.data());
                         }),
                         {.input = "in", .output = "out", .retry = {.max_retries = 1, .backoff = 1ms}, .dead_letter_topic = "dead"})
              .ok());
  run_with_sinks(pipeline, sink, dead);
  std::multiset<std::string> want;
  for (int v = 0; v < n; ++v) {
    if (v % 10 != 3 && v % 10 != 6) want.insert(std::to_string(v));
  }
  CHECK(data_of(sink) == want);
  std::map<std::string, std::string> reasons = reasons_of(dead);
  CHECK(reasons.size() == std::size_t(2 * n / 10));
  CHECK(reasons["13"].find("kMaxKeyBytes") != std::string::npos);
  CHECK(reasons["16"].find("kMaxMetadataBytes") != std::string::npos);
  CHECK(stats_of(pipeline, "t").running);
}

TEST_CASE("stop finishes what is in hand; a new pipeline on the same names resumes with no repeat", "[pipeline]") {
  Bus bus({.default_topic = {.partitions = 3, .capacity = 64}});
  Collector sink;
  const int n = 5000;
  auto in = *bus.create_topic("in", {.partitions = 3, .capacity = 4096});  // holds all of it
  auto build = [&](Pipeline& pipeline, std::atomic<int>& seen) {
    REQUIRE(pipeline.transform("double", map([](const Event& e) { return Output{std::string(e.key()), {}, std::string(e.data())}; }),
                               {.input = "in", .output = "out", .max_batch = 8})
                .ok());
    REQUIRE(pipeline
                .sink("collect",
                      [&](const Event& e) {
                        sink.add(e);
                        seen.fetch_add(1);
                        std::this_thread::sleep_for(20us);
                      },
                      {.input = "out", .max_batch = 8})
                .ok());
  };
  {
    std::atomic<int> seen{0};
    Pipeline first(bus);
    build(first, seen);  // subscribes: from here on "in" keeps what "double" has not acked
    auto p = *in.producer();
    for (int i = 0; i < n; ++i) REQUIRE(p.publish(Message{.key = "k" + std::to_string(i % 7), .data = std::to_string(i)}).ok());
    REQUIRE(first.start().ok());
    while (seen < n / 3) std::this_thread::sleep_for(1ms);
    first.stop();
    CHECK(sink.size() < std::size_t(n));
  }
  {
    std::atomic<int> seen{0};
    Pipeline second(bus);
    build(second, seen);
    REQUIRE(second.start().ok());
    REQUIRE(second.wait(60s).ok());
  }
  check_exactly_once_in_key_order(sink.items(), n);
}

TEST_CASE("stop and remove_component end a stage blocked on a topic held full outside the pipeline",
          "[pipeline][lifecycle]") {
  Bus bus;
  auto raw = *bus.create_topic("raw", {.capacity = 16});
  auto out = *bus.create_topic("out", {.capacity = 16});
  auto in = *bus.create_topic("in", {.capacity = 256});
  auto holder_raw = *raw.consumer({.name = "outside"});  // never polls: the topics fill
  auto holder_out = *out.consumer({.name = "outside"});
  {
    Pipeline pipeline(bus);
    REQUIRE(pipeline.source("gen", counting_source(0, 1000000, 3), {.output = "raw"}).ok());
    REQUIRE(pipeline.start().ok());
    while (raw.stats()[0].next_offset < 16) std::this_thread::sleep_for(1ms);
    pipeline.stop();  // returns: the blocked publish gives up
    CHECK(raw.stats()[0].next_offset == 16);
  }
  Pipeline pipeline(bus);
  REQUIRE(pipeline
              .transform("t", map([](const Event& e) { return Output{std::string(e.key()), {}, std::string(e.data())}; }),
                         {.input = "in", .output = "out", .max_batch = 4})
              .ok());
  auto p = *in.producer();
  for (int i = 0; i < 100; ++i) REQUIRE(p.publish(Message{.data = std::to_string(i)}).ok());
  REQUIRE(pipeline.start().ok());
  while (out.stats()[0].next_offset < 16) std::this_thread::sleep_for(1ms);
  CHECK(pipeline.remove_component("t", 100ms).ok());  // returns at its deadline, mid-publish
  CHECK(*in.lag("t") > 0);  // what it could not publish stays unacked
  pipeline.stop();
}

TEST_CASE("a stage whose topic is deleted ends visibly; wait() says which", "[pipeline][lifecycle]") {
  for (const char* deleted : {"in", "out"}) {
    INFO("deleted: " << deleted);
    Bus bus;
    auto in = *bus.create_topic("in", {.capacity = 64});
    REQUIRE(bus.create_topic("out", {.capacity = 64}).ok());
    Pipeline pipeline(bus);
    REQUIRE(pipeline
                .transform("t", map([](const Event& e) { return Output{{}, {}, std::string(e.data())}; }),
                           {.input = "in", .output = "out"})
                .ok());
    REQUIRE(pipeline.start().ok());
    auto p = *in.producer();
    REQUIRE(p.publish(Message{.data = "1"}).ok());
    REQUIRE(bus.delete_topic(deleted).ok());
    if (deleted == std::string("out")) (void)p.publish(Message{.data = "2"});  // its publish meets the deleted topic
    const Status s = pipeline.wait(30s);
    INFO(s.to_string());
    CHECK(s.is_closed());
    CHECK(s.to_string().find("stage 't'") != std::string::npos);
    const StageStats st = stats_of(pipeline, "t");
    CHECK_FALSE(st.running);
    CHECK(st.last_error.find("stage ended") != std::string::npos);
  }
}

TEST_CASE("components are added, listed and removed (drained) while the pipeline runs", "[pipeline]") {
  Bus bus({.default_topic = {.partitions = 2, .capacity = 2048}});  // holds what "upper" misses while removed
  Pipeline pipeline(bus);
  Collector sink;
  REQUIRE(pipeline.start().ok());
  REQUIRE(pipeline.add_component("collect", StageKind::kSink, "out", "", SinkFn([&](const Event& e) { sink.add(e); })).ok());
  REQUIRE(pipeline
              .add_component("upper", StageKind::kTransform, "in", "out",
                             map([](const Event& e) { return Output{std::string(e.key()), {}, std::string(e.data())}; }))
              .ok());
  REQUIRE(pipeline.add_component("gen", StageKind::kSource, "", "in", counting_source(0, 2000, 5)).ok());
  auto list = pipeline.list_components();
  REQUIRE(list.size() == 3);
  CHECK(list[1].name == "upper");
  CHECK(list[1].kind == StageKind::kTransform);
  CHECK(list[1].input == "in");
  CHECK(list[1].output == "out");
  REQUIRE(pipeline.wait(60s).ok());
  CHECK(sink.size() == 2000);

  // Remove the transform while more input arrives: it drains what was
  // published before the removal; re-added, it resumes after its last ack.
  auto in = *bus.topic("in");
  auto p = *in.producer();
  for (int i = 2000; i < 3000; ++i) REQUIRE(p.publish(Message{.key = "k" + std::to_string(i % 5), .data = std::to_string(i)}).ok());
  REQUIRE(pipeline.remove_component("upper").ok());
  CHECK(*in.lag("upper") == 0);  // drained
  for (int i = 3000; i < 4000; ++i) REQUIRE(p.publish(Message{.key = "k" + std::to_string(i % 5), .data = std::to_string(i)}).ok());
  CHECK(*in.lag("upper") == 1000);
  CHECK(pipeline.list_components().size() == 2);
  CHECK(pipeline.remove_component("upper").is_not_found());
  REQUIRE(pipeline
              .add_component("upper", StageKind::kTransform, "in", "out",
                             map([](const Event& e) { return Output{std::string(e.key()), {}, std::string(e.data())}; }))
              .ok());
  REQUIRE(pipeline.wait(60s).ok());
  check_exactly_once_in_key_order(sink.items(), 4000);
}

TEST_CASE("bad stages are refused with a clear error and the pipeline keeps working", "[pipeline]") {
  Bus bus({.default_topic = {.partitions = 2}});
  REQUIRE(bus.create_topic("single", {.producers = ProducerMode::kSingle}).ok());
  Pipeline pipeline(bus, {.create_topics = false});
  REQUIRE(bus.create_topic("in", {.partitions = 2}).ok());
  REQUIRE(bus.create_topic("out").ok());
  auto pass = map([](const Event& e) { return Output{{}, {}, std::string(e.data())}; });
  CHECK(pipeline.transform("bad name", pass, {.input = "in", .output = "out"}).is_invalid_argument());
  CHECK(pipeline.transform("t", pass, {.input = "nope", .output = "out"}).is_not_found());
  CHECK(pipeline.transform("t", pass, {.input = "in"}).is_invalid_argument());
  CHECK(pipeline.sink("s", [](const Event&) {}, {.input = "in", .output = "out"}).is_invalid_argument());
  CHECK(pipeline.source("src", counting_source(0, 1, 1), {.input = "in", .output = "out"}).is_invalid_argument());
  CHECK(pipeline.transform("t", pass, {.input = "in", .output = "out", .threads = 3}).is_invalid_argument());
  CHECK(pipeline.transform("t", pass, {.input = "in", .output = "out", .threads = 0}).is_invalid_argument());
  CHECK(pipeline.transform("t", pass, {.input = "in", .output = "out", .delivery = Delivery::kExactlyOnce}).is_invalid_argument());
  CHECK(pipeline.transform("t", TransformFn{}, {.input = "in", .output = "out"}).is_invalid_argument());
  CHECK(pipeline.add_component("c", StageKind::kSink, "in", "", pass).is_invalid_argument());
  CHECK(pipeline.transform("t", pass, {.input = "in", .output = "out", .dead_letter_topic = "single"}).is_invalid_argument());
  REQUIRE(pipeline.transform("t", pass, {.input = "in", .output = "out"}).ok());
  CHECK(pipeline.transform("t", pass, {.input = "in", .output = "out"}).is_already_exists());
  CHECK(pipeline.stats("zzz").status().is_not_found());
  // Still works after the refusals.
  Collector sink;
  REQUIRE(pipeline.sink("s", [&](const Event& e) { sink.add(e); }, {.input = "out"}).ok());
  REQUIRE(pipeline.start().ok());
  auto p = *bus.producer("in");
  REQUIRE(p.publish({}, {}, "hello").ok());
  REQUIRE(pipeline.wait(30s).ok());
  REQUIRE(sink.size() == 1);
  CHECK(sink.items()[0].data == "hello");
  pipeline.stop();
  CHECK(pipeline.start().is_closed());
  CHECK(pipeline.transform("late", pass, {.input = "in", .output = "out"}).is_closed());
}

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif
#else
constexpr bool kAddressSanitizer = false;
#endif

std::size_t resident_bytes() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return std::size_t(resident) * std::size_t(::sysconf(_SC_PAGESIZE));
}

}  // namespace

TEST_CASE("backpressure: a slow sink holds the source back and memory stays bounded", "[pipeline]") {
  Bus bus({.default_topic = {.partitions = 1, .capacity = 256}});
  Pipeline pipeline(bus);
  std::atomic<long> sunk{0};
  std::atomic<long> max_gap{0};
  std::atomic<long> generated{0};
  const long n = 200000;
  auto next = std::make_shared<long>(0);
  REQUIRE(pipeline
              .source("gen",
                      [&, next](Emitter& out) {
                        // Checked before emitting: how far ahead of the sink the source got.
                        max_gap.store(std::max(max_gap.load(), generated.load() - sunk.load()));
                        for (int j = 0; j < 16 && *next < n; ++j, ++*next) out.emit({}, {}, std::string(48, 'd'));
                        generated.store(*next);
                        return *next < n;
                      },
                      {.output = "a"})
              .ok());
  REQUIRE(pipeline.transform("m", map([](const Event& e) { return Output{{}, {}, std::string(e.data())}; }),
                             {.input = "a", .output = "b", .max_batch = 32})
              .ok());
  std::size_t rss_early = 0;
  REQUIRE(pipeline
              .sink("slow",
                      [&](const Event&) {
                        const long k = sunk.fetch_add(1) + 1;
                        if (k % 64 == 0) std::this_thread::sleep_for(50us);
                        if (k == n / 10) rss_early = resident_bytes();
                      },
                      {.input = "b", .max_batch = 32})
              .ok());
  REQUIRE(pipeline.start().ok());
  REQUIRE(pipeline.wait(300s).ok());
  const std::size_t rss_late = resident_bytes();
  CHECK(sunk == n);
  // Two rings of 256, the batches in the stages' hands and one source call.
  CHECK(max_gap.load() <= 2 * 256 + 2 * 32 + 16 + 16);
  // Resident memory does not grow with the number of events (200k events
  // of ~48 bytes would be ~10 MB if they piled up).
  // (Not under AddressSanitizer: its quarantine keeps freed memory
  // resident on purpose; the gap check above holds there too.)
  INFO("rss at n/10: " << rss_early << ", at n: " << rss_late);
  if (!kAddressSanitizer) CHECK(rss_late < rss_early + (4u << 20));
}

TEST_CASE("durable topics make a transform exactly-once across bus restarts", "[pipeline][durable]") {
  testing::TempDir dir;
  const int n = 3000;
  Collector sink;
  auto open_stage = [&](Bus& bus, Pipeline& pipeline) {
    REQUIRE(bus.ensure_topic("in", testing::durable(Durability::kAsync, 2, 256)).ok());
    REQUIRE(bus.ensure_topic("out", testing::durable(Durability::kAsync, 2, 256)).ok());
    REQUIRE(pipeline
                .transform("enrich",
                           map([](const Event& e) { return Output{std::string(e.key()), {}, std::string(e.data()) + "+"}; }),
                           {.input = "in", .output = "out", .delivery = Delivery::kExactlyOnce, .max_batch = 64})
                .ok());
    CHECK(stats_of(pipeline, "enrich").exactly_once);
  };
  {
    Bus bus = testing::open_bus(dir.path());
    Pipeline pipeline(bus);
    open_stage(bus, pipeline);
    auto p = *bus.producer("in");
    for (int i = 0; i < n; ++i) REQUIRE(p.publish(Message{.key = "k" + std::to_string(i % 9), .data = std::to_string(i)}).ok());
    REQUIRE(pipeline.start().ok());
    auto out = *bus.topic("out");
    for (;;) {  // stop part-way through
      std::uint64_t total = 0;
      for (auto& s : out.stats()) total += s.next_offset;
      if (total >= std::uint64_t(n / 3)) break;
      std::this_thread::sleep_for(1ms);
    }
    pipeline.stop();
  }
  {
    Bus bus = testing::open_bus(dir.path());
    Pipeline pipeline(bus);
    open_stage(bus, pipeline);
    REQUIRE(pipeline.sink("collect", [&](const Event& e) { sink.add(e); }, {.input = "out", .position = Position::earliest()}).ok());
    REQUIRE(pipeline.start().ok());
    REQUIRE(pipeline.wait(60s).ok());
  }
  check_exactly_once_in_key_order(sink.items(), n, "+");
}

TEST_CASE("key_shared threads on a durable input: at-least-once, per-key order; exactly-once is refused",
          "[pipeline][durable]") {
  testing::TempDir dir;
  Bus bus = testing::open_bus(dir.path());
  // A 64-slot ring and 4000 events published first: the threads catch up from disk.
  REQUIRE(bus.ensure_topic("in", testing::durable(Durability::kAsync, 1, 64)).ok());
  REQUIRE(bus.ensure_topic("out", testing::durable(Durability::kAsync, 1, 256)).ok());
  const int n = 4000;
  {
    auto p = *bus.producer("in");
    for (int i = 0; i < n; ++i) REQUIRE(p.publish(Message{.key = "k" + std::to_string(i % 13), .data = std::to_string(i)}).ok());
  }
  Pipeline pipeline(bus);
  const auto pass = map([](const Event& e) { return Output{std::string(e.key()), {}, std::string(e.data())}; });
  CHECK(pipeline
            .transform("strict", pass,
                       {.input = "in", .output = "out", .threads = 2, .split = Split::kKeyShared,
                        .delivery = Delivery::kExactlyOnce})
            .is_invalid_argument());
  REQUIRE(pipeline
              .transform("shared", pass,
                         {.input = "in", .output = "out", .threads = 3, .split = Split::kKeyShared, .max_batch = 32,
                          .position = Position::earliest()})
              .ok());
  CHECK_FALSE(stats_of(pipeline, "shared").exactly_once);
  Collector sink;
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { sink.add(e); }, {.input = "out", .position = Position::earliest()}).ok());
  REQUIRE(pipeline.start().ok());
  REQUIRE(pipeline.wait(60s).ok());
  check_exactly_once_in_key_order(sink.items(), n);  // nothing failed, so nothing came twice
}

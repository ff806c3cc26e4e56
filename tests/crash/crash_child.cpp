// The process the crash test kills. It runs, until SIGKILLed, on the store
// at argv[1]:
//  * a producer publishing to "in" with sync durability; after each
//    publish completes it reports "P <partition> <offset> <data>";
//  * an exactly-once stage: consumer "stage" of "in", each event turned
//    into one event of "out" (key "<partition>:<offset>") and acked in the
//    same write batch; after each commit it reports "A <partition> <offset>";
//  * the same stage as a rill::Pipeline transform ("pipeline-stage", to
//    "pipeline-out"), exactly-once because both topics are durable;
//  * a window stage ("pipeline-window", to "window-out"): per key, counts
//    over 20 ms windows of append time, its state durable;
//  * an accumulate join ("pipeline-join", to "join-out") of each "in"
//    event with its "pipeline-out" output, by origin "<partition>:<offset>",
//    its table durable;
//  * a producer publishing to "async" (kAsync durability) that reports
//    "D <offset> <data>" for every event wait_durable has confirmed;
//  * two kShared instances of consumer "shared" of "in", acking
//    individually and out of order (a quarter of the events are held back
//    and acked later, in random order); each ack is reported as
//    "S <partition> <offset>" *before* it is made, so whatever the store
//    holds as acked was reported.
// Each report is one write(2) of one line to stdout (a pipe): atomic, so the
// parent reads whole lines even when the kill lands mid-run.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "rill/rill.hpp"

namespace {

void report(const std::string& line) {
  const std::string s = line + "\n";
  if (::write(1, s.data(), s.size()) != ssize_t(s.size())) std::_Exit(3);
}

[[noreturn]] void die(const std::string& what, const rill::Status& s) {
  std::fprintf(stderr, "crash_child: %s: %s\n", what.c_str(), s.to_string().c_str());
  std::_Exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: crash_child STORE_PATH CYCLE\n");
    return 1;
  }
  rill::BusOptions options;
  options.path = argv[1];
  options.commit_interval = std::chrono::milliseconds(1);
  const std::string cycle = argv[2];
  auto bus = rill::Bus::open(options);
  if (!bus.ok()) die("open", bus.status());
  rill::TopicOptions t;
  t.partitions = 2;
  t.capacity = 64;
  t.durability = rill::Durability::kSync;
  auto in = bus->ensure_topic("in", t);
  if (!in.ok()) die("topic in", in.status());
  auto out = bus->ensure_topic("out", t);
  if (!out.ok()) die("topic out", out.status());
  rill::TopicOptions a = t;
  a.partitions = 1;
  a.durability = rill::Durability::kAsync;
  auto async_topic = bus->ensure_topic("async", a);
  if (!async_topic.ok()) die("topic async", async_topic.status());
  auto stage = in->consumer({.name = "stage"});
  if (!stage.ok()) die("consumer", stage.status());
  if (auto po = bus->ensure_topic("pipeline-out", t); !po.ok()) die("topic pipeline-out", po.status());
  rill::Pipeline pipeline(*bus);
  auto to_output = rill::map([](const rill::Event& e) {
    return rill::Output{std::to_string(e.partition()) + ":" + std::to_string(e.offset()), {}, "out-" + std::string(e.data())};
  });
  if (auto s = pipeline.transform("pipeline-stage", to_output,
                                  {.input = "in", .output = "pipeline-out", .delivery = rill::Delivery::kExactlyOnce});
      !s.ok()) {
    die("pipeline stage", s);
  }
  if (auto wo = bus->ensure_topic("window-out", t); !wo.ok()) die("topic window-out", wo.status());
  rill::Aggregation<long> count{
      .aggregate = [](long& n, const rill::Event&) { ++n; },
      .emit = [](std::string_view key, const rill::Window& w, const long& n) {
        return rill::Output{std::string(key) + "@" + std::to_string(w.start_ns), {}, std::to_string(n)};
      }};
  if (auto s = pipeline.window("pipeline-window", count, {.size = std::chrono::milliseconds(20)},
                               {.input = "in", .output = "window-out"});
      !s.ok()) {
    die("pipeline window", s);
  }
  if (auto jo = bus->ensure_topic("join-out", t); !jo.ok()) die("topic join-out", jo.status());
  rill::AccumulateJoin<unsigned> pairs{
      .key = [](std::size_t input, const rill::Event& e) {
        return input == 0 ? std::to_string(e.partition()) + ":" + std::to_string(e.offset()) : std::string(e.key());
      },
      .merge = [](unsigned& seen, std::size_t input, const rill::Event&) { seen |= 1u << input; },
      .sufficient = [](const unsigned& seen) { return seen == 3; },
      .process = [](std::string_view key, const unsigned&, rill::Emitter& joined) { joined.emit(key, {}, "joined"); }};
  if (auto s = pipeline.accumulate_join("pipeline-join", pairs, {.output = "join-out", .inputs = {"in", "pipeline-out"}});
      !s.ok()) {
    die("pipeline join", s);
  }
  if (auto s = pipeline.start(); !s.ok()) die("pipeline start", s);
  report("R");  // ready

  std::thread producer([&] {
    auto p = in->producer();
    if (!p.ok()) die("producer", p.status());
    for (long i = 0;; ++i) {
      const std::string data = "c" + cycle + "-" + std::to_string(i);
      auto id = p->publish(rill::Message{.key = std::to_string(i % 7), .data = data});
      if (!id.ok()) die("publish", id.status());
      report("P " + std::to_string(id->partition) + " " + std::to_string(id->offset) + " " + data);
    }
  });

  std::thread async_producer([&] {
    auto p = async_topic->producer();
    if (!p.ok()) die("async producer", p.status());
    for (long i = 0;; ++i) {
      const std::string data = "c" + cycle + "-a" + std::to_string(i);
      auto id = p->publish(rill::Message{.data = data});
      if (!id.ok()) die("async publish", id.status());
      if (i % 16 == 15) {  // confirm now and then; everything up to here is durable
        if (auto s = p->wait_durable(*id); !s.ok()) die("wait_durable", s);
        report("D " + std::to_string(id->offset) + " " + data);
      }
    }
  });

  std::thread shared_worker([&] {
    rill::Consumer instances[2];
    for (rill::Consumer& c : instances) {
      auto made = in->consumer({.name = "shared", .mode = rill::ConsumerMode::kShared});
      if (!made.ok()) die("shared consumer", made.status());
      c = std::move(*made);
    }
    std::mt19937 rng(std::uint32_t(std::stoul(cycle)) + 1);
    std::vector<std::pair<int, rill::Event>> held;  // (instance, event) acked later
    auto ack = [&](int who, const rill::Event& e) {
      report("S " + std::to_string(e.partition()) + " " + std::to_string(e.offset()));
      if (auto s = instances[who].ack(e); !s.ok()) die("shared ack", s);
    };
    for (;;) {
      for (int who = 0; who < 2; ++who) {
        auto batch = instances[who].poll_batch(8, std::chrono::milliseconds(1));
        if (!batch.ok()) {
          if (!batch.status().is_timed_out()) die("shared poll", batch.status());
          continue;
        }
        for (const rill::Event& e : *batch) {
          if (rng() % 4 == 0) {
            held.emplace_back(who, e);
          } else {
            ack(who, e);
          }
        }
      }
      if (held.size() >= 16) {
        std::shuffle(held.begin(), held.end(), rng);
        for (auto& [who, e] : held) ack(who, e);
        held.clear();
      }
    }
  });

  for (;;) {
    auto e = stage->poll();
    if (!e.ok()) die("poll", e.status());
    rill::WriteBatch batch;
    const std::string origin = std::to_string(e->partition()) + ":" + std::to_string(e->offset());
    if (auto s = batch.publish(*out, rill::Message{.key = origin, .data = "out-" + std::string(e->data())});
        !s.ok()) {
      die("batch publish", s);
    }
    if (auto s = batch.ack(*stage, *e); !s.ok()) die("batch ack", s);
    if (auto s = bus->commit(batch); !s.ok()) die("commit", s);
    report("A " + std::to_string(e->partition()) + " " + std::to_string(e->offset()));
  }
}

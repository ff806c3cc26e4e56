// Windowed aggregation stages: one result per key and window with the
// right aggregate, tumbling and hopping windows, boundaries exactly at a
// window's end and at the lateness limit, late events counted or
// dead-lettered, and durable window state that survives a bus restart.
#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "rill/json.hpp"
#include "rill/rill.hpp"
#include "support/store.hpp"
#include "support/temp_dir.hpp"

using namespace rill;
using namespace std::chrono_literals;

namespace {

struct Stat {
  std::int64_t count = 0;
  std::int64_t sum = 0;
  std::int64_t min = 0;
  std::int64_t max = 0;
};

// Events carry "<event time ms> <value>" as data.
std::int64_t time_ms(const Event& e) { return std::stoll(std::string(e.data())); }
std::int64_t value(const Event& e) {
  const std::string d(e.data());
  return std::stoll(d.substr(d.find(' ') + 1));
}

Aggregation<Stat> stat_aggregation() {
  return {.aggregate =
              [](Stat& s, const Event& e) {
                const std::int64_t v = value(e);
                s.min = s.count ? std::min(s.min, v) : v;
                s.max = s.count ? std::max(s.max, v) : v;
                s.sum += v;
                ++s.count;
              },
          .emit =
              [](std::string_view key, const Window& w, const Stat& s) {
                return Output{std::string(key), {},
                              std::to_string(w.start_ns / 1000000) + " " + std::to_string(s.count) + " " +
                                  std::to_string(s.sum) + " " + std::to_string(s.min) + " " + std::to_string(s.max)};
              }};
}

WindowOptions windows(std::chrono::milliseconds size, std::chrono::milliseconds hop = 0ms,
                      std::chrono::milliseconds lateness = 0ms) {
  return {.size = size,
          .hop = hop,
          .allowed_lateness = lateness,
          .event_time = [](const Event& e) { return time_ms(e) * 1000000; }};
}

// The "reduce" stage of the failure tests: 1 s tumbling windows over "in"
// into "out", retried, dead letters to "dead".
Status add_reduce(Pipeline& pipeline, const Aggregation<Stat>& agg, std::uint32_t retries) {
  return pipeline.window("reduce", agg, windows(1000ms),
                         {.input = "in", .output = "out", .retry = {.max_retries = retries, .backoff = 1ms},
                          .dead_letter_topic = "dead"});
}

// (key, window start ms) -> "count sum min max"
using Results = std::map<std::pair<std::string, std::int64_t>, std::string>;

class ResultSink {
 public:
  void add(const Event& e) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string d(e.data());
    const auto sp = d.find(' ');
    const auto key = std::make_pair(std::string(e.key()), std::stoll(d.substr(0, sp)));
    duplicates_ += results_.count(key);
    results_[key] = d.substr(sp + 1);
  }
  Results results() const {
    std::lock_guard<std::mutex> lock(mu_);
    return results_;
  }
  int duplicates() const {
    std::lock_guard<std::mutex> lock(mu_);
    return duplicates_;
  }

 private:
  mutable std::mutex mu_;
  Results results_;
  int duplicates_ = 0;
};

struct Reading {
  std::string key;
  std::int64_t t_ms, v;
};

void publish(Topic& t, const std::vector<Reading>& rs) {
  auto p = *t.producer();
  for (const Reading& r : rs) {
    REQUIRE(p.publish(Message{.key = r.key, .data = std::to_string(r.t_ms) + " " + std::to_string(r.v)}).ok());
  }
}

// The reference: tumbling windows of size_ms over every reading.
Results expected_tumbling(const std::vector<Reading>& rs, std::int64_t size_ms) {
  std::map<std::pair<std::string, std::int64_t>, Stat> agg;
  for (const Reading& r : rs) {
    Stat& s = agg[{r.key, r.t_ms / size_ms * size_ms}];
    s.min = s.count ? std::min(s.min, r.v) : r.v;
    s.max = s.count ? std::max(s.max, r.v) : r.v;
    s.sum += r.v;
    ++s.count;
  }
  Results out;
  for (const auto& [k, s] : agg) {
    out[k] = std::to_string(s.count) + " " + std::to_string(s.sum) + " " + std::to_string(s.min) + " " + std::to_string(s.max);
  }
  return out;
}

std::vector<Reading> sensor_readings(int n, int sensors, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Reading> rs;
  for (int i = 0; i < n; ++i) {
    // Time advances ~7 ms per reading, with up to 30 ms of disorder.
    const std::int64_t t = std::int64_t(i) * 7 + std::int64_t(rng() % 30);
    rs.push_back({"s" + std::to_string(rng() % sensors), t, std::int64_t(rng() % 1000) - 500});
  }
  return rs;
}

}  // namespace

TEST_CASE("tumbling windows: one correct result per key and window", "[window]") {
  Bus bus({.default_topic = {.capacity = 8192}});
  auto in = *bus.create_topic("in", {.capacity = 8192});
  Pipeline pipeline(bus);
  ResultSink sink;
  REQUIRE(pipeline.window("reduce", stat_aggregation(), windows(1000ms, 0ms, 40ms), {.input = "in", .output = "out"}).ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { sink.add(e); }, {.input = "out"}).ok());
  std::vector<Reading> rs = sensor_readings(5000, 7, 1);
  const std::int64_t last = rs.back().t_ms;
  publish(in, rs);
  publish(in, {{"flush", last + 5000, 0}});  // closes every window of the readings
  REQUIRE(pipeline.start().ok());
  REQUIRE(pipeline.wait(60s).ok());
  CHECK(sink.duplicates() == 0);
  CHECK(sink.results() == expected_tumbling(rs, 1000));
  auto s = pipeline.stats("reduce");
  REQUIRE(s.ok());
  CHECK(s->late == 0);
  CHECK(s->processed == rs.size() + 1);
}

TEST_CASE("an aggregate that throws changes no window: retried once, dead-lettered always", "[window]") {
  Bus bus;
  auto in = *bus.create_topic("in", {.capacity = 64});
  Pipeline pipeline(bus);
  ResultSink sink;
  Aggregation<Stat> agg = stat_aggregation();
  auto flaky = std::make_shared<std::atomic<int>>(0);
  agg.aggregate = [inner = agg.aggregate, flaky](Stat& st, const Event& e) {
    if (e.key() == "poison") throw std::runtime_error("cannot aggregate");
    if (e.key() == "flaky" && flaky->fetch_add(1) == 0) throw std::runtime_error("once");
    inner(st, e);
  };
  REQUIRE(add_reduce(pipeline, agg, 2).ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { sink.add(e); }, {.input = "out"}).ok());
  std::atomic<int> dead{0};
  REQUIRE(pipeline.sink("dlq", [&](const Event&) { dead++; }, {.input = "dead"}).ok());
  // The poison and the flaky event each move the watermark past [0, 1000):
  // their failed attempts must neither lose those results nor count twice.
  publish(in, {{"a", 100, 1}, {"a", 200, 2}, {"b", 300, 5}, {"poison", 1500, 0}, {"flaky", 1600, 7},
               {"flush", 5000, 0}});
  REQUIRE(pipeline.start().ok());
  REQUIRE(pipeline.wait(60s).ok());
  const Results got = sink.results();
  CHECK(sink.duplicates() == 0);
  CHECK(got.at({"a", 0}) == "2 3 1 2");
  CHECK(got.at({"b", 0}) == "1 5 5 5");
  CHECK(got.at({"flaky", 1000}) == "1 7 7 7");  // aggregated once, after one failed attempt
  CHECK(got.count({"poison", 1000}) == 0);       // no window was made for it
  CHECK(dead == 1);
}

TEST_CASE("a window whose emit throws or whose result the output refuses fails only itself", "[window]") {
  Bus bus;
  auto in = *bus.create_topic("in", {.capacity = 64});
  REQUIRE(bus.create_topic("out", {.max_event_size = 256}).ok());
  Pipeline pipeline(bus);
  ResultSink sink;
  Aggregation<Stat> agg = stat_aggregation();
  auto flaky = std::make_shared<std::atomic<int>>(0);
  agg.emit = [inner = agg.emit, flaky](std::string_view key, const Window& w, const Stat& st) {
    if (key == "bad") throw std::runtime_error("cannot emit");
    if (key == "flaky" && flaky->fetch_add(1) == 0) throw std::runtime_error("once");
    Output o = inner(key, w, st);
    if (key == "huge") o.data += std::string(1000, 'x');  // past the output's max_event_size
    return o;
  };
  REQUIRE(add_reduce(pipeline, agg, 2).ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { sink.add(e); }, {.input = "out"}).ok());
  std::mutex mu;
  std::vector<nlohmann::json> dead;
  REQUIRE(pipeline
              .sink("dlq",
                    [&](const Event& e) {
                      auto md = parse_metadata(e);
                      std::lock_guard<std::mutex> lock(mu);
                      dead.push_back(md.ok() ? (*md)["dead_letter"] : nlohmann::json());
                    },
                    {.input = "dead"})
              .ok());
  // [0, 1000) holds a failing emit and a refused result beside good ones;
  // "c" closes it, and every later event must still be handled.
  publish(in, {{"a", 100, 1}, {"bad", 200, 2}, {"huge", 300, 3}, {"flaky", 350, 6}, {"b", 400, 5},
               {"c", 1500, 7}, {"bad", 1600, 1}, {"d", 1700, 9}, {"flush", 5000, 0}});
  REQUIRE(pipeline.start().ok());
  REQUIRE(pipeline.wait(60s).ok());
  const Results got = sink.results();
  CHECK(sink.duplicates() == 0);
  CHECK(got.at({"a", 0}) == "1 1 1 1");
  CHECK(got.at({"b", 0}) == "1 5 5 5");
  CHECK(got.at({"flaky", 0}) == "1 6 6 6");  // emitted on its retry, once
  CHECK(got.at({"c", 1000}) == "1 7 7 7");
  CHECK(got.at({"d", 1000}) == "1 9 9 9");
  CHECK(got.size() == 5);
  std::lock_guard<std::mutex> lock(mu);
  REQUIRE(dead.size() == 3);  // bad@0, huge@0, bad@1000: windows, not events
  std::multiset<std::string> why;
  for (const nlohmann::json& d : dead) {
    REQUIRE(d.is_object());
    CHECK(d["stage"] == "reduce");
    CHECK(d["attempts"] == 3);
    CHECK(d["window_end_ns"].get<std::int64_t>() - d["window_start_ns"].get<std::int64_t>() == 1000000000);
    CHECK_FALSE(d.contains("offset"));
    why.insert(d["reason"].get<std::string>().substr(0, 11) + "@" + std::to_string(d["window_start_ns"].get<std::int64_t>()));
  }
  CHECK(why == std::multiset<std::string>{"cannot emit@0", "cannot emit@1000000000", "emitted eve@0"});
  auto s = pipeline.stats("reduce");
  REQUIRE(s.ok());
  CHECK(s->dead_lettered == 3);
  CHECK(s->processed == 9);
}

TEST_CASE("a window dead-lettered on a durable input stays settled across a restart", "[window][durable]") {
  testing::TempDir dir;
  Aggregation<Stat> agg = stat_aggregation();
  agg.emit = [inner = agg.emit](std::string_view key, const Window& w, const Stat& st) {
    if (key == "bad") throw std::runtime_error("cannot emit");
    return inner(key, w, st);
  };
  agg.encode = [](const Stat& st) {
    return std::to_string(st.count) + " " + std::to_string(st.sum) + " " + std::to_string(st.min) + " " +
           std::to_string(st.max);
  };
  agg.decode = [](std::string_view b) {
    Stat st;
    std::istringstream text{std::string(b)};
    text >> st.count >> st.sum >> st.min >> st.max;
    return st;
  };
  ResultSink sink;
  std::atomic<int> dead{0};
  std::string dead_data;
  auto run = [&](std::vector<Reading> batch) {
    Bus bus = testing::open_bus(dir.path());
    auto in = *bus.ensure_topic("in", testing::durable(Durability::kAsync));
    for (const char* t : {"out", "dead"}) REQUIRE(bus.ensure_topic(t, testing::durable(Durability::kAsync)).ok());
    Pipeline pipeline(bus);
    REQUIRE(add_reduce(pipeline, agg, 1).ok());
    REQUIRE(pipeline.sink("collect", [&](const Event& e) { sink.add(e); }, {.input = "out"}).ok());
    REQUIRE(pipeline
                .sink("dlq",
                      [&](const Event& e) {
                        dead_data = std::string(e.data());
                        dead++;
                      },
                      {.input = "dead"})
                .ok());
    publish(in, batch);
    REQUIRE(pipeline.start().ok());
    REQUIRE(pipeline.wait(60s).ok());
    CHECK(pipeline.stats("reduce")->exactly_once);
    pipeline.stop();
  };
  run({{"a", 100, 1}, {"bad", 200, 2}, {"bad", 300, 3}, {"a", 1500, 4}});  // closes [0, 1000): bad's fails
  CHECK(dead == 1);
  run({{"bad", 1600, 5}, {"a", 1700, 6}, {"flush", 9000, 0}});  // the restored windows close again
  CHECK(dead == 2);
  CHECK(dead_data == "1 5 5 5");  // bad's [1000, 2000), its state as encode gave it
  CHECK(sink.duplicates() == 0);
  const Results got = sink.results();
  CHECK(got.at({"a", 0}) == "1 1 1 1");
  CHECK(got.at({"a", 1000}) == "2 10 4 6");
  CHECK(got.size() == 2);
}

TEST_CASE("window boundaries: end is exclusive; lateness decides what is late", "[window]") {
  Bus bus;
  auto in = *bus.create_topic("in");
  Pipeline pipeline(bus);
  ResultSink sink;
  std::vector<std::string> dead;
  std::mutex mu;
  WindowOptions w = windows(1000ms, 0ms, 500ms);
  w.dead_letter_late = true;
  REQUIRE(pipeline.window("reduce", stat_aggregation(), w, {.input = "in", .output = "out", .dead_letter_topic = "late"}).ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { sink.add(e); }, {.input = "out"}).ok());
  REQUIRE(pipeline
              .sink("late",
                    [&](const Event& e) {
                      auto md = parse_metadata(e);
                      std::lock_guard<std::mutex> lock(mu);
                      dead.push_back(std::string(e.data()) + "|" + (md.ok() ? (*md)["dead_letter"]["reason"].get<std::string>() : "?"));
                    },
                    {.input = "late"})
              .ok());
  publish(in, {{"a", 0, 1},
               {"a", 999, 2},     // last instant of [0, 1000)
               {"a", 1000, 4},    // first instant of [1000, 2000)
               {"a", 1499, 8},    // watermark 999: [0, 1000) still open
               {"a", 998, 16},    // within lateness: counted in [0, 1000)
               {"a", 1500, 32},   // watermark 1000: closes [0, 1000)
               {"a", 999, 64},    // late: its window closed
               {"a", 1000, 128},  // not late: [1000, 2000) is open
               {"a", 9000, 0}});  // closes [1000, 2000)
  REQUIRE(pipeline.start().ok());
  REQUIRE(pipeline.wait(60s).ok());
  const Results r = sink.results();
  CHECK(r.at({"a", 0}) == "3 19 1 16");
  CHECK(r.at({"a", 1000}) == "4 172 4 128");
  CHECK(r.size() == 2);
  REQUIRE(dead.size() == 1);
  CHECK(dead[0] == "999 64|late event");
  auto s = pipeline.stats("reduce");
  REQUIRE(s.ok());
  CHECK(s->late == 1);
  CHECK(s->dead_lettered == 1);
}

TEST_CASE("hopping windows: each event counts in every window that covers it", "[window]") {
  Bus bus;
  auto in = *bus.create_topic("in");
  Pipeline pipeline(bus);
  ResultSink sink;
  REQUIRE(pipeline.window("reduce", stat_aggregation(), windows(1000ms, 500ms), {.input = "in", .output = "out"}).ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { sink.add(e); }, {.input = "out"}).ok());
  publish(in, {{"k", 700, 1}, {"k", 1200, 2}, {"k", 1500, 4}, {"k", 10000, 0}});
  REQUIRE(pipeline.start().ok());
  REQUIRE(pipeline.wait(60s).ok());
  const Results r = sink.results();
  CHECK(r.at({"k", 0}) == "1 1 1 1");        // [0, 1000): 700
  CHECK(r.at({"k", 500}) == "2 3 1 2");      // [500, 1500): 700, 1200
  CHECK(r.at({"k", 1000}) == "2 6 2 4");     // [1000, 2000): 1200, 1500
  CHECK(r.at({"k", 1500}) == "1 4 4 4");     // [1500, 2500): 1500
  CHECK(r.size() == 4);
  CHECK(sink.duplicates() == 0);
}

TEST_CASE("window state on a durable input survives a restart: results as if it never stopped", "[window][durable]") {
  testing::TempDir dir;
  const std::vector<Reading> rs = sensor_readings(3000, 5, 2);
  const std::size_t half = rs.size() / 2;
  auto run = [&](std::vector<Reading> batch, bool collect, ResultSink& sink) {
    Bus bus = testing::open_bus(dir.path());
    auto in = *bus.ensure_topic("in", testing::durable(Durability::kAsync, 1, 4096));
    REQUIRE(bus.ensure_topic("out", testing::durable(Durability::kAsync, 1, 4096)).ok());
    Pipeline pipeline(bus);
    REQUIRE(pipeline.window("reduce", stat_aggregation(), windows(1000ms, 0ms, 40ms), {.input = "in", .output = "out"}).ok());
    if (collect) {
      REQUIRE(pipeline.sink("collect", [&](const Event& e) { sink.add(e); }, {.input = "out", .position = Position::earliest()}).ok());
    }
    publish(in, batch);
    REQUIRE(pipeline.start().ok());
    REQUIRE(pipeline.wait(60s).ok());
    auto s = pipeline.stats("reduce");
    REQUIRE(s.ok());
    CHECK(s->exactly_once);
    pipeline.stop();
  };
  ResultSink unused, sink;
  run({rs.begin(), rs.begin() + long(half)}, false, unused);  // leaves windows open
  std::vector<Reading> rest(rs.begin() + long(half), rs.end());
  rest.push_back({"flush", rs.back().t_ms + 5000, 0});
  run(rest, true, sink);
  CHECK(sink.duplicates() == 0);
  CHECK(sink.results() == expected_tumbling(rs, 1000));
}

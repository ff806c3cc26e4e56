// Join stages: the accumulate join (out-of-order arrival, duplicates, many
// keys, expiry, a bounded table under both overflow policies), N-way key
// matching under each duplicate policy, the stream-table join (updates,
// tombstones, inner and left), and joins on durable topics resuming across
// a bus restart with nothing lost or repeated.
#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "rill/json.hpp"
#include "rill/rill.hpp"
#include "support/store.hpp"
#include "support/temp_dir.hpp"

using namespace rill;
using namespace std::chrono_literals;

namespace {

class Seen {
 public:
  void add(const Event& e) {
    std::lock_guard<std::mutex> lock(mu_);
    items_.push_back({std::string(e.key()), std::string(e.metadata()), std::string(e.data())});
  }
  struct Item {
    std::string key, metadata, data;
  };
  std::vector<Item> items() const {
    std::lock_guard<std::mutex> lock(mu_);
    return items_;
  }
  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return items_.size();
  }

 private:
  mutable std::mutex mu_;
  std::vector<Item> items_;
};

// seed 003's partial: the parts from thing_one (input 0) and thing_two (1).
struct Parts {
  std::string one, two;
};

AccumulateJoin<Parts> two_part_join() {
  return {.merge = [](Parts& p, std::size_t input, const Event& e) { (input == 0 ? p.one : p.two) = std::string(e.data()); },
          .sufficient = [](const Parts& p) { return !p.one.empty() && !p.two.empty(); },
          .process = [](std::string_view key, const Parts& p, Emitter& out) { out.emit(key, {}, p.one + "+" + p.two); },
          .encode =
              [](const Parts& p) {
                const std::string_view parts[] = {p.one, p.two};
                return encode_tuple(parts);
              },
          .decode =
              [](std::string_view b) {
                auto parts = decode_tuple(b);
                if (!parts.ok() || parts->size() != 2) throw std::runtime_error("bad Parts");
                return Parts{std::string((*parts)[0]), std::string((*parts)[1])};
              }};
}

// Publishes (key, data) pairs; usable off the main thread (no Catch
// macros): false when a publish failed.
bool try_publish(Bus& bus, const std::string& topic, const std::vector<std::pair<std::string, std::string>>& events) {
  auto p = bus.producer(topic);
  if (!p.ok()) return false;
  for (const auto& [k, d] : events) {
    if (!p->publish(Message{.key = k, .data = d}).ok()) return false;
  }
  return true;
}

void publish(Bus& bus, const std::string& topic, const std::vector<std::pair<std::string, std::string>>& events) {
  REQUIRE(try_publish(bus, topic, events));
}

template <class Pred>
bool eventually(Pred pred, std::chrono::seconds limit = 30s) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

}  // namespace

TEST_CASE("accumulate join: every key merged once, in any arrival order, with duplicates, over many keys", "[join]") {
  Bus bus({.default_topic = {.partitions = 4, .capacity = 65536}});
  Pipeline pipeline(bus);
  Seen out;
  REQUIRE(pipeline.accumulate_join("join", two_part_join(), {.output = "merged", .inputs = {"one", "two"}, .threads = 2}).ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { out.add(e); }, {.input = "merged"}).ok());
  REQUIRE(pipeline.start().ok());
  const int keys = 20000;
  std::vector<int> order(keys);
  for (int i = 0; i < keys; ++i) order[i] = i;
  std::mt19937 rng(7);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<std::pair<std::string, std::string>> ones, twos;
  for (int i = 0; i < keys; ++i) {
    ones.push_back({"t" + std::to_string(order[i]), "a" + std::to_string(order[i])});
    twos.push_back({"t" + std::to_string(i), "b" + std::to_string(i)});
  }
  std::atomic<bool> second_ok{false};
  std::thread second([&] { second_ok = try_publish(bus, "two", twos); });
  publish(bus, "one", ones);
  second.join();
  REQUIRE(second_ok);
  REQUIRE(pipeline.wait(120s).ok());
  // A duplicate on input one before its match: the later part wins.
  publish(bus, "one", {{"t" + std::to_string(keys), "stale"}, {"t" + std::to_string(keys), "fresh"}});
  REQUIRE(pipeline.wait(30s).ok());
  publish(bus, "two", {{"t" + std::to_string(keys), "b" + std::to_string(keys)}});
  REQUIRE(pipeline.wait(30s).ok());
  std::map<std::string, std::string> merged;
  for (const auto& it : out.items()) CHECK(merged.emplace(it.key, it.data).second);  // once per key
  REQUIRE(merged.size() == std::size_t(keys) + 1);
  for (int i = 0; i < keys; ++i) {
    const std::string k = std::to_string(i);
    CHECK(merged["t" + k] == "a" + k + "+b" + k);
  }
  CHECK(merged["t" + std::to_string(keys)] == "fresh+b" + std::to_string(keys));
  auto s = pipeline.stats("join");
  REQUIRE(s.ok());
  CHECK(s->processed == ones.size() + twos.size() + 3);
  CHECK(s->emitted == std::size_t(keys) + 1);
  CHECK(s->inputs == std::vector<std::string>{"one", "two"});  // a join reports all of its inputs
  CHECK(s->input == "one");
  auto listed = pipeline.list_components();
  REQUIRE(listed.size() == 2);
  CHECK(listed[0].inputs == std::vector<std::string>{"one", "two"});
  CHECK(listed[1].inputs == std::vector<std::string>{"merged"});
}

TEST_CASE("a join whose process or combine throws once merges each event once", "[join]") {
  Bus bus;
  for (const char* t : {"one", "two", "three"}) REQUIRE(bus.create_topic(t, {.capacity = 64}).ok());
  Pipeline pipeline(bus);
  auto failures = std::make_shared<std::atomic<int>>(0);
  AccumulateJoin<int> counting{
      .merge = [](int& n, std::size_t, const Event&) { ++n; },
      .sufficient = [](const int& n) { return n >= 2; },
      .process =
          [failures](std::string_view key, const int& n, Emitter& out) {
            if (failures->fetch_add(1) == 0) throw std::runtime_error("once");
            out.emit(key, {}, std::to_string(n));
          }};
  REQUIRE(pipeline.accumulate_join("count", counting, {.output = "counted", .inputs = {"one", "two"},
                                                       .retry = {.max_retries = 2, .backoff = 1ms}})
              .ok());
  KeyMatchJoin strict{.on_duplicate = OnDuplicate::kReject};
  auto combine_failures = std::make_shared<std::atomic<int>>(0);
  strict.combine = [combine_failures](std::string_view key, std::span<const Event> parts, Emitter& out) {
    if (combine_failures->fetch_add(1) == 0) throw std::runtime_error("once");
    out.emit(key, {}, std::string(parts[0].data()) + std::string(parts[1].data()));
  };
  REQUIRE(pipeline.key_match_join("match", strict, {.output = "matched", .inputs = {"two", "three"},
                                                    .retry = {.max_retries = 2, .backoff = 1ms},
                                                    .dead_letter_topic = "dead"})
              .ok());
  Seen counted, matched, dead;
  REQUIRE(pipeline.sink("c1", [&](const Event& e) { counted.add(e); }, {.input = "counted"}).ok());
  REQUIRE(pipeline.sink("c2", [&](const Event& e) { matched.add(e); }, {.input = "matched"}).ok());
  REQUIRE(pipeline.sink("c3", [&](const Event& e) { dead.add(e); }, {.input = "dead"}).ok());
  REQUIRE(pipeline.start().ok());
  REQUIRE(bus.producer("one")->publish(Message{.key = "k", .data = "1"}).ok());
  REQUIRE(bus.producer("two")->publish(Message{.key = "k", .data = "2"}).ok());
  REQUIRE(bus.producer("three")->publish(Message{.key = "k", .data = "3"}).ok());
  REQUIRE(pipeline.wait(60s).ok());
  REQUIRE(counted.size() == 1);
  CHECK(counted.items()[0].data == "2");  // merged twice in all, not three times
  REQUIRE(matched.size() == 1);
  CHECK(matched.items()[0].data == "23");  // the retry is not a "duplicate key"
  CHECK(dead.size() == 0);
}

TEST_CASE("accumulate join: incomplete entries expire to incomplete() and the dead-letter topic", "[join]") {
  Bus bus;
  Pipeline pipeline(bus);
  Seen out, dead;
  std::mutex mu;
  std::set<std::string> incomplete;
  AccumulateJoin<Parts> join = two_part_join();
  join.incomplete = [&](std::string_view key, const Parts& p) {
    std::lock_guard<std::mutex> lock(mu);
    incomplete.insert(std::string(key) + "=" + p.one + "|" + p.two);
  };
  join.limits.ttl = 300ms;
  REQUIRE(pipeline.accumulate_join("join", join, {.output = "merged", .inputs = {"one", "two"}, .dead_letter_topic = "dead"}).ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { out.add(e); }, {.input = "merged"}).ok());
  REQUIRE(pipeline.sink("dlq", [&](const Event& e) { dead.add(e); }, {.input = "dead"}).ok());
  REQUIRE(pipeline.start().ok());
  publish(bus, "one", {{"k1", "a1"}, {"k2", "a2"}, {"k3", "a3"}});
  publish(bus, "two", {{"k2", "b2"}, {"k4", "b4"}});
  REQUIRE(eventually([&] { return dead.size() == 3; }));
  REQUIRE(pipeline.wait(30s).ok());
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(incomplete == std::set<std::string>{"k1=a1|", "k3=a3|", "k4=|b4"});
  }
  REQUIRE(out.size() == 1);
  CHECK(out.items()[0].data == "a2+b2");
  for (const auto& d : dead.items()) {
    auto md = parse_metadata(d.metadata);
    REQUIRE(md.ok());
    CHECK((*md)["dead_letter"]["reason"] == "join entry expired");
    CHECK((*md)["dead_letter"]["stage"] == "join");
    auto parts = decode_tuple(d.data);  // the partial, encoded
    REQUIRE(parts.ok());
    CHECK(parts->size() == 2);
  }
  // A key completed after its first part expired starts a new entry.
  publish(bus, "two", {{"k1", "b1"}});
  publish(bus, "one", {{"k1", "a1-again"}});
  REQUIRE(eventually([&] { return out.size() == 2; }));
  CHECK(out.items()[1].data == "a1-again+b1");
}

TEST_CASE("accumulate join: a bounded table evicts the oldest or rejects new keys", "[join]") {
  const JoinOverflow policy = GENERATE(JoinOverflow::kEvictOldest, JoinOverflow::kRejectNew);
  Bus bus;
  Pipeline pipeline(bus);
  Seen out, dead;
  AccumulateJoin<Parts> join = two_part_join();
  join.limits.max_entries = 10;
  join.limits.when_full = policy;
  REQUIRE(pipeline.accumulate_join("join", join, {.output = "merged", .inputs = {"one", "two"}, .dead_letter_topic = "dead"}).ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { out.add(e); }, {.input = "merged"}).ok());
  REQUIRE(pipeline.sink("dlq", [&](const Event& e) { dead.add(e); }, {.input = "dead"}).ok());
  std::vector<std::pair<std::string, std::string>> ones, twos;
  for (int i = 0; i < 15; ++i) ones.push_back({"k" + std::to_string(i), "a" + std::to_string(i)});
  // Second parts for the keys the table kept (a new key now would push
  // another out).
  const int kept_from = policy == JoinOverflow::kEvictOldest ? 5 : 0;
  for (int i = kept_from; i < kept_from + 10; ++i) twos.push_back({"k" + std::to_string(i), "b" + std::to_string(i)});
  publish(bus, "one", ones);  // 15 keys into a table of 10
  REQUIRE(pipeline.start().ok());
  REQUIRE(pipeline.wait(30s).ok());
  publish(bus, "two", twos);
  REQUIRE(pipeline.wait(30s).ok());
  std::set<std::string> dead_keys, merged_keys;
  for (const auto& d : dead.items()) dead_keys.insert(d.key);
  for (const auto& o : out.items()) merged_keys.insert(o.key);
  REQUIRE(dead_keys.size() == 5);
  CHECK(merged_keys.size() == 10);
  auto md = parse_metadata(dead.items()[0].metadata);
  REQUIRE(md.ok());
  if (policy == JoinOverflow::kEvictOldest) {
    CHECK(dead_keys == std::set<std::string>{"k0", "k1", "k2", "k3", "k4"});  // the oldest went
    CHECK((*md)["dead_letter"]["reason"] == "evicted: join table full");
    CHECK(merged_keys.count("k14") == 1);
  } else {
    CHECK(dead_keys == std::set<std::string>{"k10", "k11", "k12", "k13", "k14"});  // the newest were refused
    CHECK((*md)["dead_letter"]["reason"].get<std::string>().find("join table full") != std::string::npos);
    CHECK(merged_keys.count("k0") == 1);
  }
}

TEST_CASE("a join result the output refuses keeps the entry as it was; the event is dead-lettered", "[join]") {
  Bus bus;
  REQUIRE(bus.create_topic("merged", {.max_event_size = 64}).ok());
  Pipeline pipeline(bus);
  Seen out, dead;
  REQUIRE(pipeline
              .accumulate_join("join", two_part_join(),
                               {.output = "merged", .inputs = {"one", "two"},
                                .retry = {.max_retries = 1, .backoff = 1ms}, .dead_letter_topic = "dead"})
              .ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { out.add(e); }, {.input = "merged"}).ok());
  REQUIRE(pipeline.sink("dlq", [&](const Event& e) { dead.add(e); }, {.input = "dead"}).ok());
  REQUIRE(pipeline.start().ok());
  publish(bus, "one", {{"k", std::string(40, 'a')}});
  REQUIRE(pipeline.wait(30s).ok());
  publish(bus, "two", {{"k", std::string(40, 'b')}});  // "a..a+b..b" is 81 bytes: refused
  REQUIRE(pipeline.wait(30s).ok());
  REQUIRE(dead.size() == 1);
  CHECK(dead.items()[0].data == std::string(40, 'b'));
  CHECK(out.size() == 0);
  // The entry still holds only its first part: a short one replaces it and
  // a second part completes it.
  publish(bus, "one", {{"k", "s"}});
  publish(bus, "two", {{"k", "t"}});
  REQUIRE(pipeline.wait(30s).ok());
  REQUIRE(out.size() == 1);
  CHECK(out.items()[0].data == "s+t");
}

TEST_CASE("a bounded join evicts only for a key it keeps; an oversized eviction still reaches the dead-letter topic", "[join]") {
  Bus bus;
  REQUIRE(bus.create_topic("dead", {.max_event_size = 300}).ok());
  Pipeline pipeline(bus);
  Seen out, dead;
  AccumulateJoin<Parts> join = two_part_join();
  join.merge = [inner = join.merge](Parts& p, std::size_t input, const Event& e) {
    if (e.key() == "poison") throw std::runtime_error("cannot merge");
    inner(p, input, e);
  };
  join.limits.max_entries = 2;
  join.limits.when_full = JoinOverflow::kEvictOldest;
  REQUIRE(pipeline
              .accumulate_join("join", join,
                               {.output = "merged", .inputs = {"one", "two"}, .retry = {.max_retries = 1, .backoff = 1ms},
                                .dead_letter_topic = "dead"})
              .ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { out.add(e); }, {.input = "merged"}).ok());
  REQUIRE(pipeline.sink("dlq", [&](const Event& e) { dead.add(e); }, {.input = "dead"}).ok());
  REQUIRE(pipeline.start().ok());
  const std::string big(1000, 'x');
  publish(bus, "one", {{"k1", "a1"}, {"k2", "a2"}, {"poison", "p"}});  // poison is never kept: evicts nothing
  REQUIRE(pipeline.wait(30s).ok());
  publish(bus, "two", {{"k1", "b1"}, {"k2", "b2"}});
  REQUIRE(pipeline.wait(30s).ok());
  publish(bus, "one", {{"k3", big}, {"k4", "a4"}, {"k5", "a5"}});  // k5 evicts k3, whose partial is too big to carry
  REQUIRE(pipeline.wait(30s).ok());
  publish(bus, "two", {{"k5", "b5"}});
  REQUIRE(pipeline.wait(30s).ok());
  std::set<std::string> merged;
  for (const auto& o : out.items()) merged.insert(o.key + "=" + o.data);
  CHECK(merged == std::set<std::string>{"k1=a1+b1", "k2=a2+b2", "k5=a5+b5"});
  REQUIRE(dead.size() == 2);
  std::map<std::string, nlohmann::json> why;
  for (const auto& d : dead.items()) {
    auto md = parse_metadata(d.metadata);
    REQUIRE(md.ok());
    why[d.key] = (*md)["dead_letter"];
    CHECK(d.key.size() + d.metadata.size() + d.data.size() <= 300);
  }
  REQUIRE(why.count("poison") == 1);
  CHECK(why["poison"]["reason"] == "cannot merge");
  REQUIRE(why.count("k3") == 1);
  CHECK(why["k3"]["reason"] == "evicted: join table full");
  CHECK(why["k3"]["dropped_data_bytes"].get<std::size_t>() > 1000);
  auto s = pipeline.stats("join");
  REQUIRE(s.ok());
  CHECK(s->last_error.find("stage ended") == std::string::npos);
}

TEST_CASE("key-matching join over three inputs, under each duplicate policy", "[join]") {
  const OnDuplicate policy = GENERATE(OnDuplicate::kReplace, OnDuplicate::kQueue, OnDuplicate::kReject);
  Bus bus;
  Pipeline pipeline(bus);
  Seen out, dead;
  REQUIRE(pipeline
              .key_match_join("match", {.on_duplicate = policy},
                              {.output = "matched", .inputs = {"a", "b", "c"}, .dead_letter_topic = "dead"})
              .ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { out.add(e); }, {.input = "matched"}).ok());
  REQUIRE(pipeline.sink("dlq", [&](const Event& e) { dead.add(e); }, {.input = "dead"}).ok());
  REQUIRE(pipeline.start().ok());
  publish(bus, "a", {{"x", "a1"}, {"x", "a2"}, {"y", "ay"}});
  REQUIRE(pipeline.wait(30s).ok());
  publish(bus, "b", {{"x", "b1"}, {"x", "b2"}, {"y", "by"}});
  REQUIRE(pipeline.wait(30s).ok());
  publish(bus, "c", {{"x", "c1"}, {"y", "cy"}, {"x", "c2"}});
  REQUIRE(pipeline.wait(30s).ok());
  std::vector<std::string> got;
  for (const auto& it : out.items()) {
    auto parts = decode_tuple(it.data);
    REQUIRE(parts.ok());
    REQUIRE(parts->size() == 3);
    got.push_back(it.key + ":" + std::string((*parts)[0]) + "," + std::string((*parts)[1]) + "," + std::string((*parts)[2]));
  }
  std::sort(got.begin(), got.end());
  switch (policy) {
    case OnDuplicate::kReplace:  // the newest of each waits; c2 then waits alone
      CHECK(got == std::vector<std::string>{"x:a2,b2,c1", "y:ay,by,cy"});
      CHECK(dead.size() == 0);
      break;
    case OnDuplicate::kQueue:  // two full matches for x, oldest first
      CHECK(got == std::vector<std::string>{"x:a1,b1,c1", "x:a2,b2,c2", "y:ay,by,cy"});
      CHECK(dead.size() == 0);
      break;
    case OnDuplicate::kReject:  // a2 and b2 refused; c2 starts a new wait
      CHECK(got == std::vector<std::string>{"x:a1,b1,c1", "y:ay,by,cy"});
      REQUIRE(dead.size() == 2);
      CHECK(dead.items()[0].data == "a2");
      CHECK(dead.items()[1].data == "b2");
      break;
  }
}

TEST_CASE("stream-table join: latest value per key, tombstones delete, inner and left", "[join]") {
  const TableJoinKind kind = GENERATE(TableJoinKind::kInner, TableJoinKind::kLeft);
  Bus bus;
  Pipeline pipeline(bus);
  Seen out;
  REQUIRE(pipeline.table_join("enrich", {.kind = kind}, {.output = "enriched", .inputs = {"orders", "customers"}}).ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { out.add(e); }, {.input = "enriched"}).ok());
  REQUIRE(pipeline.start().ok());
  publish(bus, "customers", {{"c1", "Ada"}, {"c2", "Bob"}, {"c1", "Ada L."}});
  REQUIRE(pipeline.wait(30s).ok());
  publish(bus, "orders", {{"c1", "o1"}, {"c2", "o2"}, {"c3", "o3"}});
  REQUIRE(pipeline.wait(30s).ok());
  publish(bus, "customers", {{"c2", ""}});  // tombstone
  REQUIRE(pipeline.wait(30s).ok());
  publish(bus, "orders", {{"c2", "o4"}});
  REQUIRE(pipeline.wait(30s).ok());
  std::vector<std::string> got;
  for (const auto& it : out.items()) {
    auto parts = decode_tuple(it.data);
    REQUIRE(parts.ok());
    got.push_back(it.key + ":" + std::string((*parts)[0]) + "=" + std::string((*parts)[1]));
  }
  if (kind == TableJoinKind::kInner) {
    CHECK(got == std::vector<std::string>{"c1:o1=Ada L.", "c2:o2=Bob"});
  } else {
    CHECK(got == std::vector<std::string>{"c1:o1=Ada L.", "c2:o2=Bob", "c3:o3=", "c2:o4="});
  }
}

TEST_CASE("bad joins are refused with a clear error", "[join]") {
  Bus bus;
  Pipeline pipeline(bus);
  CHECK(pipeline.accumulate_join("j", two_part_join(), {.output = "o", .inputs = {"one"}}).is_invalid_argument());
  CHECK(pipeline.accumulate_join("j", two_part_join(), {.output = "o", .inputs = {"one", "one"}}).is_invalid_argument());
  CHECK(pipeline.accumulate_join("j", AccumulateJoin<Parts>{}, {.output = "o", .inputs = {"one", "two"}}).is_invalid_argument());
  CHECK(pipeline.table_join("t", {}, {.output = "o", .inputs = {"a", "b", "c"}}).is_invalid_argument());
  CHECK(pipeline.key_match_join("m", {}, {.input = "a", .output = "o", .inputs = {"b", "c"}}).is_invalid_argument());
  CHECK(pipeline.transform("t", map([](const Event& e) { return Output{{}, {}, std::string(e.data())}; }),
                           {.output = "o", .inputs = {"a", "b"}})
            .is_invalid_argument());
  REQUIRE(bus.create_topic("p3", {.partitions = 3}).ok());
  REQUIRE(bus.create_topic("p2", {.partitions = 2}).ok());
  CHECK(pipeline.key_match_join("m", {}, {.output = "o", .inputs = {"p3", "p2"}, .threads = 2}).is_invalid_argument());
}

TEST_CASE("a one-thread join of inputs with different partition counts drains on removal", "[join]") {
  Bus bus;
  auto a = *bus.create_topic("p4", {.partitions = 4});
  auto b = *bus.create_topic("p2", {.partitions = 2});
  Pipeline pipeline(bus);
  REQUIRE(pipeline.key_match_join("m", {}, {.output = "o", .inputs = {"p4", "p2"}}).ok());
  REQUIRE(pipeline.start().ok());
  auto pa = *a.producer();
  auto pb = *b.producer();
  for (int i = 0; i < 40; ++i) {
    REQUIRE(pa.publish(Message{.key = "k" + std::to_string(i), .data = "a"}).ok());
    REQUIRE(pb.publish(Message{.key = "k" + std::to_string(i), .data = "b"}).ok());
  }
  // The drain checks every partition of each input (ASan: none past the end).
  REQUIRE(pipeline.remove_component("m", 10s).ok());
  CHECK(*a.lag("m") == 0);
  CHECK(*b.lag("m") == 0);
}

TEST_CASE("joins on durable topics resume half-finished entries after a restart, nothing lost or repeated", "[join][durable]") {
  testing::TempDir dir;
  const int keys = 2000;
  Seen out;
  auto run = [&](const char* topic, bool collect) {
    Bus bus = testing::open_bus(dir.path());
    for (const char* t : {"one", "two", "merged"}) REQUIRE(bus.ensure_topic(t, testing::durable(Durability::kAsync, 2, 4096)).ok());
    Pipeline pipeline(bus);
    REQUIRE(pipeline.accumulate_join("join", two_part_join(), {.output = "merged", .inputs = {"one", "two"}}).ok());
    if (collect) {
      REQUIRE(pipeline.sink("collect", [&](const Event& e) { out.add(e); }, {.input = "merged", .position = Position::earliest()}).ok());
    }
    std::vector<std::pair<std::string, std::string>> events;
    for (int i = 0; i < keys; ++i) events.push_back({"t" + std::to_string(i), std::string(topic == std::string("one") ? "a" : "b") + std::to_string(i)});
    publish(bus, topic, events);
    REQUIRE(pipeline.start().ok());
    REQUIRE(pipeline.wait(60s).ok());
    auto s = pipeline.stats("join");
    REQUIRE(s.ok());
    CHECK(s->exactly_once);
    pipeline.stop();
  };
  run("one", false);  // every entry half-finished when the bus closes
  run("two", true);
  std::map<std::string, std::string> merged;
  for (const auto& it : out.items()) CHECK(merged.emplace(it.key, it.data).second);
  REQUIRE(merged.size() == std::size_t(keys));
  for (int i = 0; i < keys; ++i) CHECK(merged["t" + std::to_string(i)] == "a" + std::to_string(i) + "+b" + std::to_string(i));
}

namespace {

// Window-join events carry "<time ms> <name>" as data.
WindowJoin window_join(StreamJoinKind kind) {
  return {.kind = kind,
          .before = 100ms,
          .after = 100ms,
          .event_time = [](const Event& e) { return std::stoll(std::string(e.data())) * 1000000; }};
}

std::vector<std::string> pairs(const Seen& out) {
  std::vector<std::string> got;
  for (const auto& it : out.items()) {
    auto parts = decode_tuple(it.data);
    REQUIRE(parts.ok());
    REQUIRE(parts->size() == 2);
    auto name = [](std::string_view d) { return d.empty() ? std::string("-") : std::string(d.substr(d.find(' ') + 1)); };
    got.push_back(it.key + ":" + name((*parts)[0]) + "," + name((*parts)[1]));
  }
  std::sort(got.begin(), got.end());
  return got;
}

}  // namespace

TEST_CASE("windowed stream-stream join: bounds inclusive, unmatched results only when the window closes", "[join]") {
  const StreamJoinKind kind = GENERATE(StreamJoinKind::kInner, StreamJoinKind::kLeft, StreamJoinKind::kOuter);
  Bus bus;
  Pipeline pipeline(bus);
  Seen out;
  WindowJoin join = window_join(kind);
  join.grace = 300ms;  // r0 (900) arrives after r2 (1101) moved stream time: still in time
  REQUIRE(pipeline.window_join("wj", join, {.output = "joined", .inputs = {"left", "right"}}).ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { out.add(e); }, {.input = "joined"}).ok());
  REQUIRE(pipeline.start().ok());
  publish(bus, "left", {{"k", "1000 l1"}, {"j", "1000 lj"}});
  REQUIRE(pipeline.wait(30s).ok());
  publish(bus, "right", {{"k", "1100 r1"}, {"k", "1101 r2"}, {"k", "900 r0"}});
  REQUIRE(pipeline.wait(30s).ok());
  // Matches at once (exactly at t + after and t - before); nothing unmatched yet.
  CHECK(pairs(out) == std::vector<std::string>{"k:l1,r0", "k:l1,r1"});
  publish(bus, "left", {{"z", "10000 lz"}});  // stream time passes every window above
  REQUIRE(pipeline.wait(30s).ok());
  std::vector<std::string> want{"k:l1,r0", "k:l1,r1"};
  if (kind != StreamJoinKind::kInner) want.push_back("j:lj,-");
  if (kind == StreamJoinKind::kOuter) want.push_back("k:-,r2");
  std::sort(want.begin(), want.end());
  CHECK(pairs(out) == want);
  publish(bus, "right", {{"k", "5000 late"}});  // its window closed long ago
  REQUIRE(pipeline.wait(30s).ok());
  auto s = pipeline.stats("wj");
  REQUIRE(s.ok());
  CHECK(s->late == 1);
  CHECK(pairs(out) == want);
}

TEST_CASE("an unmatched window-join result that cannot be emitted fails only itself", "[join]") {
  Bus bus;
  Pipeline pipeline(bus);
  Seen out, dead;
  WindowJoin join = window_join(StreamJoinKind::kOuter);
  join.combine = [](std::string_view key, const Event* left, const Event* right, Emitter& o) {
    if (key == "bad" && !(left && right)) throw std::runtime_error("cannot combine");
    const std::string_view parts[] = {left ? left->data() : std::string_view(), right ? right->data() : std::string_view()};
    o.emit(key, {}, encode_tuple(parts));
  };
  REQUIRE(pipeline
              .window_join("wj", join,
                           {.output = "joined", .inputs = {"left", "right"}, .retry = {.max_retries = 1, .backoff = 1ms},
                            .dead_letter_topic = "dead"})
              .ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { out.add(e); }, {.input = "joined"}).ok());
  REQUIRE(pipeline.sink("dlq", [&](const Event& e) { dead.add(e); }, {.input = "dead"}).ok());
  REQUIRE(pipeline.start().ok());
  publish(bus, "left", {{"bad", "1000 lbad"}, {"a", "1000 la"}});
  publish(bus, "right", {{"b", "1000 rb"}});
  REQUIRE(pipeline.wait(30s).ok());
  // z closes every window above: lbad's unmatched result throws; la's and
  // rb's, and the events after, are unaffected.
  publish(bus, "left", {{"z", "5000 lz"}, {"y", "5000 ly"}});
  publish(bus, "right", {{"y", "5050 ry"}});
  REQUIRE(pipeline.wait(30s).ok());
  CHECK(pairs(out) == std::vector<std::string>{"a:la,-", "b:-,rb", "y:ly,ry"});
  REQUIRE(dead.size() == 1);
  CHECK(dead.items()[0].key == "bad");
  CHECK(dead.items()[0].data == "1000 lbad");
  auto md = parse_metadata(dead.items()[0].metadata);
  REQUIRE(md.ok());
  CHECK((*md)["dead_letter"]["reason"] == "cannot combine");
  CHECK((*md)["dead_letter"]["side"] == "left");
}

TEST_CASE("windowed stream-stream join: grace keeps windows open for late arrivals", "[join]") {
  Bus bus;
  Pipeline pipeline(bus);
  Seen out;
  WindowJoin join = window_join(StreamJoinKind::kInner);
  join.grace = 500ms;
  REQUIRE(pipeline.window_join("wj", join, {.output = "joined", .inputs = {"left", "right"}}).ok());
  REQUIRE(pipeline.sink("collect", [&](const Event& e) { out.add(e); }, {.input = "joined"}).ok());
  REQUIRE(pipeline.start().ok());
  publish(bus, "left", {{"k", "1000 l1"}, {"x", "1500 lx"}});  // stream time 1500
  REQUIRE(pipeline.wait(30s).ok());
  publish(bus, "right", {{"k", "1050 r1"}});  // within grace: 1050 + 100 + 500 >= 1500
  REQUIRE(pipeline.wait(30s).ok());
  CHECK(pairs(out) == std::vector<std::string>{"k:l1,r1"});
  publish(bus, "left", {{"x", "2000 lx2"}});  // stream time 2000
  REQUIRE(pipeline.wait(30s).ok());
  publish(bus, "right", {{"k", "1050 r2"}});  // after grace: late
  REQUIRE(pipeline.wait(30s).ok());
  CHECK(pairs(out) == std::vector<std::string>{"k:l1,r1"});
  CHECK(pipeline.stats("wj")->late == 1);
}

TEST_CASE("a windowed join on durable topics matches across a restart", "[join][durable]") {
  testing::TempDir dir;
  Seen out;
  auto run = [&](const char* topic, std::vector<std::pair<std::string, std::string>> events, bool collect) {
    Bus bus = testing::open_bus(dir.path());
    for (const char* t : {"left", "right", "joined"}) REQUIRE(bus.ensure_topic(t, testing::durable(Durability::kAsync, 1, 1024)).ok());
    Pipeline pipeline(bus);
    REQUIRE(pipeline.window_join("wj", window_join(StreamJoinKind::kLeft), {.output = "joined", .inputs = {"left", "right"}}).ok());
    if (collect) {
      REQUIRE(pipeline.sink("collect", [&](const Event& e) { out.add(e); }, {.input = "joined", .position = Position::earliest()}).ok());
    }
    publish(bus, topic, events);
    REQUIRE(pipeline.start().ok());
    REQUIRE(pipeline.wait(60s).ok());
    pipeline.stop();
  };
  run("left", {{"a", "1000 la"}, {"b", "1000 lb"}}, false);
  run("right", {{"a", "1050 ra"}, {"c", "9000 rc"}}, true);  // rc closes lb's window
  CHECK(pairs(out) == std::vector<std::string>{"a:la,ra", "b:lb,-"});
}

TEST_CASE("key-matching and stream-table joins on durable topics keep their tables across a restart", "[join][durable]") {
  testing::TempDir dir;
  Seen matched, enriched;
  auto run = [&](int round) {
    Bus bus = testing::open_bus(dir.path());
    for (const char* t : {"a", "b", "c", "matched", "orders", "customers", "enriched"}) {
      REQUIRE(bus.ensure_topic(t, testing::durable(Durability::kAsync, 2, 1024)).ok());
    }
    Pipeline pipeline(bus);
    REQUIRE(pipeline.key_match_join("match", {.on_duplicate = OnDuplicate::kQueue}, {.output = "matched", .inputs = {"a", "b", "c"}}).ok());
    REQUIRE(pipeline.table_join("enrich", {.kind = TableJoinKind::kLeft}, {.output = "enriched", .inputs = {"orders", "customers"}}).ok());
    if (round == 1) {
      // Waiting parts (one queued behind another, one large enough to live
      // in a block) and table rows, all left in the tables at close.
      publish(bus, "a", {{"x", "a1"}, {"x", "a2"}, {"y", std::string(300, 'A')}});
      publish(bus, "b", {{"x", "b1"}, {"x", "b2"}, {"y", "by"}});
      publish(bus, "customers", {{"c1", "Ada"}, {"c2", "Bob"}, {"c2", ""}});
    } else {
      REQUIRE(pipeline.sink("m", [&](const Event& e) { matched.add(e); }, {.input = "matched", .position = Position::earliest()}).ok());
      REQUIRE(pipeline.sink("e", [&](const Event& e) { enriched.add(e); }, {.input = "enriched", .position = Position::earliest()}).ok());
      publish(bus, "c", {{"x", "c1"}, {"y", "cy"}, {"x", "c2"}});
      publish(bus, "orders", {{"c1", "o1"}, {"c2", "o2"}});
    }
    REQUIRE(pipeline.start().ok());
    REQUIRE(pipeline.wait(60s).ok());
    pipeline.stop();
  };
  run(1);
  run(2);
  std::vector<std::string> got;
  for (const auto& it : matched.items()) {
    auto parts = decode_tuple(it.data);
    REQUIRE(parts.ok());
    REQUIRE(parts->size() == 3);
    got.push_back(it.key + ":" + std::string((*parts)[0].substr(0, 2)) + "," + std::string((*parts)[1]) + "," +
                  std::string((*parts)[2]));
    if (it.key == "y") CHECK((*parts)[0] == std::string(300, 'A'));  // byte-exact through the changelog
  }
  std::sort(got.begin(), got.end());
  CHECK(got == std::vector<std::string>{"x:a1,b1,c1", "x:a2,b2,c2", "y:AA,by,cy"});
  std::vector<std::string> rows;
  for (const auto& it : enriched.items()) {
    auto parts = decode_tuple(it.data);
    REQUIRE(parts.ok());
    rows.push_back(it.key + ":" + std::string((*parts)[0]) + "=" + std::string((*parts)[1]));
  }
  std::sort(rows.begin(), rows.end());
  CHECK(rows == std::vector<std::string>{"c1:o1=Ada", "c2:o2="});
}

TEST_CASE("an entry that expired on a durable join stays expired after a restart", "[join][durable]") {
  testing::TempDir dir;
  std::atomic<int> incomplete{0};
  auto run = [&](bool publish_part) {
    Bus bus = testing::open_bus(dir.path());
    for (const char* t : {"one", "two", "merged"}) REQUIRE(bus.ensure_topic(t, testing::durable(Durability::kAsync, 1, 256)).ok());
    Pipeline pipeline(bus);
    AccumulateJoin<Parts> join = two_part_join();
    join.limits.ttl = 20ms;
    join.incomplete = [&](std::string_view, const Parts&) { incomplete.fetch_add(1); };
    REQUIRE(pipeline.accumulate_join("join", join, {.output = "merged", .inputs = {"one", "two"}}).ok());
    if (publish_part) publish(bus, "one", {{"lonely", "a"}});
    REQUIRE(pipeline.start().ok());
    REQUIRE(pipeline.wait(30s).ok());
    if (publish_part) REQUIRE(eventually([&] { return incomplete == 1; }));
    // Idle polls (20 ms) tick the table; several pass here.
    std::this_thread::sleep_for(150ms);
    pipeline.stop();
  };
  run(true);
  REQUIRE(incomplete == 1);
  run(false);
  CHECK(incomplete == 1);  // its removal was committed: not restored, not expired twice
}

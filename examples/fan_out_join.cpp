// The faust_joins scenario in rill: requests carrying a thing_id fan out to
// two slow workers running on their own threads (thing_one, thing_two);
// an accumulate join by thing_id emits the merged record once both parts
// are there, and logs the ones that stay incomplete (thing_two fails on
// some requests: after a retry they go to a dead-letter topic, and their
// half-joined entries expire).
//
//   requests -> thing_one (2 threads) -> thing-one-done -+
//            -> thing_two (2 threads) -> thing-two-done -+-> join -> things -> print
#include <rill/rill.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

namespace {

void check(const char* what, const rill::Status& s) {
  if (s.ok()) return;
  std::fprintf(stderr, "fan_out_join: %s: %s\n", what, s.to_string().c_str());
  std::exit(1);
}

// The join's partial: what each worker said about one thing.
struct Thing {
  std::string one, two;
};

}  // namespace

int main() {
  constexpr int kRequests = 2000;
  rill::Bus bus({.default_topic = {.partitions = 4, .capacity = 4096}});
  rill::Pipeline pipeline(bus);

  auto next = std::make_shared<int>(0);
  check("requests", pipeline.source("requests", [next](rill::Emitter& out) {
    for (int j = 0; j < 50 && *next < kRequests; ++j, ++*next) out.emit("thing-" + std::to_string(*next), {}, "please");
    return *next < kRequests;
  }, {.output = "requests"}));

  auto slow = [] { std::this_thread::sleep_for(std::chrono::microseconds(50)); };
  check("thing_one", pipeline.transform("thing_one", rill::map([slow](const rill::Event& e) {
    slow();
    return rill::Output{std::string(e.key()), {}, "red fish"};
  }), {.input = "requests", .output = "thing-one-done", .threads = 2}));
  check("thing_two", pipeline.transform("thing_two", rill::map([slow](const rill::Event& e) {
    slow();
    if (std::stoi(std::string(e.key().substr(6))) % 97 == 0) throw std::runtime_error("thing two is out of blue fish");
    return rill::Output{std::string(e.key()), {}, "blue fish"};
  }), {.input = "requests", .output = "thing-two-done", .threads = 2, .retry = {.max_retries = 1},
       .dead_letter_topic = "failed-requests"}));

  std::atomic<int> incomplete{0};
  rill::AccumulateJoin<Thing> join{
      .merge = [](Thing& t, std::size_t input, const rill::Event& e) { (input == 0 ? t.one : t.two) = std::string(e.data()); },
      .sufficient = [](const Thing& t) { return !t.one.empty() && !t.two.empty(); },
      .process =
          [](std::string_view id, const Thing& t, rill::Emitter& out) {
            out.emit(id, {}, R"({"thing_id":")" + std::string(id) + R"(","thing_one":")" + t.one +
                                 R"(","thing_two":")" + t.two + R"("})");
          },
      .incomplete =
          [&](std::string_view id, const Thing& t) {
            if (incomplete.fetch_add(1) < 3) {
              std::printf("INSUFFICIENT: %.*s one=%s two=%s\n", int(id.size()), id.data(), t.one.c_str(),
                          t.two.empty() ? "(none)" : t.two.c_str());
            }
          },
      .limits = {.ttl = std::chrono::seconds(1)}};
  check("join", pipeline.accumulate_join("join", join, {.output = "things", .inputs = {"thing-one-done", "thing-two-done"}}));

  std::atomic<int> merged{0};
  check("print", pipeline.sink("print", [&](const rill::Event& e) {
    if (merged.fetch_add(1) < 3) std::printf("merged: %.*s\n", int(e.data().size()), e.data().data());
  }, {.input = "things"}));

  check("start", pipeline.start());
  check("wait", pipeline.wait(std::chrono::seconds(60)));
  const int failing = kRequests / 97 + 1;  // ids 0, 97, 194, ...
  for (int i = 0; i < 250 && incomplete.load() < failing; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const rill::StageStats two = *pipeline.stats("thing_two");
  pipeline.stop();
  std::printf("fan_out_join: %d requests, %d merged, %d incomplete (expired), thing_two: %llu failed, %llu retried\n",
              kRequests, merged.load(), incomplete.load(), (unsigned long long)two.errors, (unsigned long long)two.retried);
  return merged.load() == kRequests - failing && incomplete.load() == failing ? 0 : 1;
}

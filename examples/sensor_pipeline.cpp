// A sensor pipeline on durable topics, the volga/nodata way: readings are
// collected, normalized, refined (per sensor, 1-second windows of event
// time reduced to mean/min/max) and forwarded:
//
//   collect -> raw-sensor-data -> normalize -> normalized-data
//           -> refine (1 s windows) -> transformed-data -> report
//
// Every stage is a thread; normalize and refine are exactly-once (their
// topics are durable), refine's window state is durable too. A reading the
// normalizer cannot parse is retried, then dead-lettered to `dead-letters`.
// Run it twice on the same directory: the second run resumes — the source
// continues the sequence, the windows left open are completed, and nothing
// is processed twice.
//
//   sensor_pipeline [--data DIR] [--events N] [--sensors N] [--print N]
//   (default DIR: ./rill-data)
#include <rill/json.hpp>
#include <rill/rill.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace {

struct Args {
  std::string data = "rill-data";
  long events = 200000;
  long sensors = 10;
  long print = 5;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    auto next = [&] { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* arg = argv[i];
    const char* v = nullptr;
    if (!std::strcmp(arg, "--data") && (v = next())) {
      a.data = v;
    } else if (!std::strcmp(arg, "--events") && (v = next())) {
      a.events = std::atol(v);
    } else if (!std::strcmp(arg, "--sensors") && (v = next())) {
      a.sensors = std::max(1L, std::atol(v));
    } else if (!std::strcmp(arg, "--print") && (v = next())) {
      a.print = std::atol(v);
    } else {
      std::fprintf(stderr, "usage: %s [--data DIR] [--events N] [--sensors N] [--print N]\n", argv[0]);
      std::exit(2);
    }
  }
  return a;
}

[[noreturn]] void fail(const char* what, const rill::Status& s) {
  std::fprintf(stderr, "sensor_pipeline: %s: %s\n", what, s.to_string().c_str());
  std::exit(1);
}

// The refine step's per-sensor, per-window state (trivially copyable, so
// rill stores it as is in the durable window changelog).
struct Summary {
  long count = 0;
  double sum = 0, min = 0, max = 0;
};

std::uint64_t total_events(const rill::Topic& t) {
  std::uint64_t n = 0;
  for (const auto& p : t.stats()) n += p.next_offset;
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  rill::BusOptions options;
  options.path = args.data;
  options.default_topic = {.partitions = 4, .capacity = 4096, .durability = rill::Durability::kAsync};
  auto bus = rill::Bus::open(options);
  if (!bus.ok()) fail("open", bus.status());
  auto raw = bus->ensure_topic("raw-sensor-data");
  if (!raw.ok()) fail("raw-sensor-data", raw.status());

  // The source continues the sequence where the last run stopped: reading i
  // comes from sensor i % sensors at event time i ms.
  const long first = long(total_events(*raw));
  const long last = first + args.events;
  std::printf("sensor_pipeline: store %s; raw-sensor-data holds %ld readings from earlier runs\n", args.data.c_str(),
              first);

  rill::Pipeline pipeline(*bus);
  long next = first;
  auto collect = [&](rill::Emitter& out) {
    for (int j = 0; j < 64 && next < last; ++j, ++next) {
      const std::string sensor = "s" + std::to_string(next % args.sensors);
      // Every 50,000th reading is garbled, as real sensors do now and then.
      const std::string raw_value = next % 50000 == 49999 ? "\"n/a\"" : std::to_string(200 + (next * 37) % 150);
      out.emit(sensor, {}, R"({"t_ms":)" + std::to_string(next) + R"(,"raw":)" + raw_value + "}");
    }
    return next < last;
  };
  auto normalize = rill::map([](const rill::Event& e) {
    auto j = nlohmann::json::parse(e.data());
    const double celsius = j.at("raw").get<double>() / 10.0;  // throws on a garbled reading
    return rill::Output{std::string(e.key()), {}, std::to_string(j.at("t_ms").get<long>()) + " " + std::to_string(celsius)};
  });
  rill::Aggregation<Summary> refine{
      .aggregate =
          [](Summary& s, const rill::Event& e) {
            const std::string d(e.data());
            const double c = std::stod(d.substr(d.find(' ') + 1));
            s.min = s.count ? std::min(s.min, c) : c;
            s.max = s.count ? std::max(s.max, c) : c;
            s.sum += c;
            ++s.count;
          },
      .emit =
          [](std::string_view sensor, const rill::Window& w, const Summary& s) {
            char line[160];
            std::snprintf(line, sizeof line, R"({"sensor":"%.*s","window_s":%lld,"n":%ld,"mean":%.2f,"min":%.1f,"max":%.1f})",
                          int(sensor.size()), sensor.data(), (long long)(w.start_ns / 1000000000), s.count,
                          s.sum / double(s.count), s.min, s.max);
            return rill::Output{std::string(sensor), {}, line};
          }};
  rill::WindowOptions seconds{.size = std::chrono::seconds(1),
                              .allowed_lateness = std::chrono::milliseconds(100),
                              .event_time = [](const rill::Event& e) {
                                return std::stoll(std::string(e.data())) * 1000000;  // "t_ms celsius"
                              }};
  std::atomic<long> printed{0}, reported{0};
  auto report = [&](const rill::Event& e) {
    reported.fetch_add(1, std::memory_order_relaxed);
    if (printed.fetch_add(1, std::memory_order_relaxed) < args.print) {
      std::printf("transformed-data[%u@%llu] %.*s\n", e.partition(), (unsigned long long)e.offset(),
                  int(e.data().size()), e.data().data());
    }
  };

  rill::Status s = pipeline.source("collect", collect, {.output = "raw-sensor-data"});
  if (s.ok()) {
    s = pipeline.transform("normalize", normalize,
                           {.input = "raw-sensor-data",
                            .output = "normalized-data",
                            .retry = {.max_retries = 1},
                            .dead_letter_topic = "dead-letters"});
  }
  // One refine thread per partition pair; per-sensor order holds because a
  // sensor's readings stay in one partition.
  if (s.ok()) {
    s = pipeline.window("refine", refine, seconds, {.input = "normalized-data", .output = "transformed-data", .threads = 2});
  }
  if (s.ok()) s = pipeline.sink("report", report, {.input = "transformed-data"});
  if (!s.ok()) fail("building the pipeline", s);

  const auto start = std::chrono::steady_clock::now();
  if (auto st = pipeline.start(); !st.ok()) fail("start", st);
  for (;;) {
    const rill::Status done = pipeline.wait(std::chrono::seconds(1));
    const auto c = *pipeline.stats("collect");
    const auto r = *pipeline.stats("refine");
    std::printf("  progress: %llu readings in, %llu refined, %ld results out, refine lag %llu\n",
                (unsigned long long)c.processed, (unsigned long long)r.processed, reported.load(),
                (unsigned long long)r.lag);
    if (done.ok()) break;
    if (!done.is_timed_out()) fail("wait", done);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto c = *pipeline.stats("collect");
  const auto n = *pipeline.stats("normalize");
  const auto r = *pipeline.stats("refine");
  pipeline.stop();
  std::printf("sensor_pipeline: %llu readings in, %ld window results out, %llu dead-lettered, "
              "normalize %s, in %.3f s (%.0f events/s)\n",
              (unsigned long long)c.processed, reported.load(), (unsigned long long)n.dead_lettered,
              n.exactly_once ? "exactly-once" : "at-least-once", secs, double(c.processed) / secs);
  if (r.errors || !n.last_error.empty()) std::printf("  last normalize error: %s\n", n.last_error.c_str());
  return 0;
}

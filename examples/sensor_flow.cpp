// The data flow of a sensor pipeline, in one process: a generator publishes
// sensor readings like {"sensor": "s3", "temp": 10} on `raw-sensor-data`; a
// stage thread consumes each, adds "processed": true, publishes it on
// `transformed-data` and acks its input only then (at-least-once); a reader
// prints the transformed events and a one-line summary.
//
//   sensor_flow [--events N] [--print N] [--quiet]
#include <rill/json.hpp>
#include <rill/rill.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace {

struct Args {
  long events = 100000;
  long print = 10;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--events") && i + 1 < argc) {
      a.events = std::atol(argv[++i]);
    } else if (!std::strcmp(argv[i], "--print") && i + 1 < argc) {
      a.print = std::atol(argv[++i]);
    } else if (!std::strcmp(argv[i], "--quiet")) {
      a.print = 0;
    } else {
      std::fprintf(stderr, "usage: %s [--events N] [--print N] [--quiet]\n", argv[0]);
      std::exit(2);
    }
  }
  return a;
}

[[noreturn]] void die(const char* what, const rill::Status& s) {
  std::fprintf(stderr, "sensor_flow: %s: %s\n", what, s.to_string().c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  rill::Bus bus;
  const rill::TopicOptions topic_options{.partitions = 4, .capacity = 4096};
  for (const char* name : {"raw-sensor-data", "transformed-data"}) {
    if (auto t = bus.create_topic(name, topic_options); !t.ok()) die("create topic", t.status());
  }
  // Subscribe before producing: an in-memory topic holds events for the
  // consumer names it knows; a name created later starts at what the ring
  // still holds.
  auto stage_in = bus.consumer("raw-sensor-data", {.name = "demo-consumer"});
  auto reader_in = bus.consumer("transformed-data", {.name = "printer"});
  if (!stage_in.ok()) die("stage consumer", stage_in.status());
  if (!reader_in.ok()) die("reader consumer", reader_in.status());
  const auto start = std::chrono::steady_clock::now();

  // The stage: consume -> transform -> produce -> ack.
  std::thread stage([&] {
    rill::Consumer& in = *stage_in;
    auto out = bus.producer("transformed-data");
    if (!out.ok()) die("stage producer", out.status());
    for (long done = 0; done < args.events;) {
      auto batch = in.poll_batch(256, std::chrono::seconds(5));
      if (!batch.ok()) die("stage poll", batch.status());
      for (const rill::Event& e : *batch) {
        auto reading = rill::parse_metadata(e.data());  // the payload is a JSON object too
        if (!reading.ok()) die("stage parse", reading.status());
        (*reading)["processed"] = true;
        const std::string text = reading->dump();
        if (auto r = out->publish(e.key(), e.metadata(), text); !r.ok()) die("stage publish", r.status());
      }
      if (auto s = in.ack(batch->back()); !s.ok()) die("stage ack", s);  // outputs are published: safe to ack
      done += long(batch->size());
    }
  });

  // The reader of transformed data.
  long received = 0;
  std::thread reader([&] {
    rill::Consumer& in = *reader_in;
    while (received < args.events) {
      auto batch = in.poll_batch(256, std::chrono::seconds(5));
      if (!batch.ok()) die("reader poll", batch.status());
      for (const rill::Event& e : *batch) {
        if (received < args.print) {
          std::printf("transformed-data[%u@%llu] key=%.*s %.*s\n", e.partition(), (unsigned long long)e.offset(),
                      int(e.key().size()), e.key().data(), int(e.data().size()), e.data().data());
        }
        ++received;
      }
      if (auto s = in.ack(batch->back()); !s.ok()) die("reader ack", s);
    }
  });

  // The generator: sensor readings on raw-sensor-data, keyed by sensor.
  {
    auto out = bus.producer("raw-sensor-data");
    if (!out.ok()) die("generator producer", out.status());
    char key[16];
    char reading[64];
    for (long i = 0; i < args.events; ++i) {
      const int sensor = int(i % 8);
      std::snprintf(key, sizeof key, "s%d", sensor);
      const int n = std::snprintf(reading, sizeof reading, R"({"sensor":"s%d","temp":%ld})", sensor, 10 + i % 25);
      if (auto r = out->publish(key, "", std::string_view(reading, std::size_t(n))); !r.ok()) {
        die("generator publish", r.status());
      }
    }
  }
  stage.join();
  reader.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("sensor_flow: %ld events through raw-sensor-data -> stage -> transformed-data in %.3f s (%.0f events/s)\n",
              received, secs, double(received) / secs);
  return received == args.events ? 0 : 1;
}

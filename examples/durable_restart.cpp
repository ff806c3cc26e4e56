// Durable restart: publish 10 events to a sync topic, read them all but ack
// only the first half, close the bus; reopen the same directory and resume
// exactly after the last ack (events 5..9 are delivered again, 0..4 not).
//
//   durable_restart [DIR]     (default: a fresh directory under /tmp)
#include <rill/rill.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

[[noreturn]] void fail(const char* what, const rill::Status& s) {
  std::fprintf(stderr, "durable_restart: %s: %s\n", what, s.to_string().c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  if (argc > 1) {
    dir = argv[1];
  } else {
    char tmpl[] = "/tmp/rill-durable-restart-XXXXXX";
    if (!::mkdtemp(tmpl)) return 1;
    dir = std::string(tmpl) + "/store";
  }
  rill::BusOptions options;
  options.path = dir;

  {  // First run: publish, consume everything, ack half.
    auto bus = rill::Bus::open(options);
    if (!bus.ok()) fail("open", bus.status());
    auto topic = bus->ensure_topic("orders", {.partitions = 1, .durability = rill::Durability::kSync});
    if (!topic.ok()) fail("topic", topic.status());
    auto consumer = topic->consumer({.name = "billing"});
    auto producer = topic->producer();
    for (int i = 0; i < 10; ++i) {
      // Returns once the event is committed and fsynced.
      auto id = producer->publish("order-" + std::to_string(i), R"({"currency":"EUR"})", std::to_string(10 * i));
      if (!id.ok()) fail("publish", id.status());
    }
    for (int i = 0; i < 10; ++i) {
      auto e = consumer->poll(std::chrono::seconds(1));
      if (!e.ok()) fail("poll", e.status());
      std::printf("run 1: got %.*s (offset %llu)%s\n", int(e->key().size()), e->key().data(),
                  (unsigned long long)e->offset(), i < 5 ? ", acked" : "");
      if (i == 4) {
        if (auto s = consumer->ack(*e); !s.ok()) fail("ack", s);  // cumulative: 0..4 are done
      }
    }
  }  // closing the bus commits the ack

  {  // Second run: the same name resumes right after its last ack.
    auto bus = rill::Bus::open(options);
    if (!bus.ok()) fail("reopen", bus.status());
    auto consumer = bus->consumer("orders", {.name = "billing"});
    if (!consumer.ok()) fail("consumer", consumer.status());
    int resumed = 0;
    for (;;) {
      auto e = consumer->poll(std::chrono::milliseconds(200));
      if (!e.ok()) break;
      std::printf("run 2: got %.*s (offset %llu)\n", int(e->key().size()), e->key().data(),
                  (unsigned long long)e->offset());
      if (auto s = consumer->ack(*e); !s.ok()) fail("ack", s);
      ++resumed;
    }
    std::printf("durable_restart: resumed after the last ack, %d events delivered again (store: %s)\n", resumed,
                dir.c_str());
    return resumed == 5 ? 0 : 1;
  }
}

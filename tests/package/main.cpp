// Publishes one event and reads it back: the smallest complete rill program.
#include <rill/rill.hpp>

#include <cstdio>

int main() {
  rill::Bus bus;
  auto topic = bus.create_topic("hello");
  if (!topic.ok()) return 1;
  auto producer = topic->producer();
  auto consumer = topic->consumer({.name = "reader"});
  if (!producer.ok() || !consumer.ok()) return 1;
  if (!producer->publish("key", R"({"greeting": true})", "hello, rill").ok()) return 1;
  auto event = consumer->poll(std::chrono::seconds(1));
  if (!event.ok() || event->data() != "hello, rill") return 1;
  if (!consumer->ack(*event).ok()) return 1;
  std::printf("package test: %.*s\n", int(event->data().size()), event->data().data());
  return 0;
}

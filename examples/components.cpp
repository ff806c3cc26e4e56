// nodata-style components: a running pipeline gets a sink, a transformation
// and a source added between named topics, lists them, and has them removed
// again (each drains first) — no restart, nothing lost.
//
//   thermometer -> readings -> threshold -> alerts -> pager
#include <rill/rill.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

namespace {

const char* kind_name(rill::StageKind k) {
  switch (k) {
    case rill::StageKind::kSource: return "source";
    case rill::StageKind::kTransform: return "transform";
    default: return "sink";
  }
}

void check(const char* what, const rill::Status& s) {
  if (s.ok()) return;
  std::fprintf(stderr, "components: %s: %s\n", what, s.to_string().c_str());
  std::exit(1);
}

}  // namespace

int main() {
  rill::Bus bus;
  rill::Pipeline pipeline(bus);
  check("start", pipeline.start());  // empty: components come while it runs

  std::atomic<int> pages{0};
  check("add pager", pipeline.add_component("pager", rill::StageKind::kSink, "alerts", "",
                                            rill::SinkFn([&](const rill::Event& e) {
                                              if (pages.fetch_add(1) < 3) {
                                                std::printf("page: %.*s is hot (%.*s C)\n", int(e.key().size()),
                                                            e.key().data(), int(e.data().size()), e.data().data());
                                              }
                                            })));
  check("add threshold", pipeline.add_component("threshold", rill::StageKind::kTransform, "readings", "alerts",
                                                rill::filter([](const rill::Event& e) {
                                                  return std::stoi(std::string(e.data())) >= 90;
                                                })));
  auto next = std::make_shared<int>(0);
  check("add thermometer", pipeline.add_component("thermometer", rill::StageKind::kSource, "", "readings",
                                                  rill::SourceFn([next](rill::Emitter& out) {
                                                    for (int j = 0; j < 32 && *next < 10000; ++j, ++*next) {
                                                      out.emit("room-" + std::to_string(*next % 4), {},
                                                               std::to_string(60 + (*next * 7) % 40));
                                                    }
                                                    return *next < 10000;
                                                  })));
  for (const rill::ComponentInfo& c : pipeline.list_components()) {
    std::printf("component %-12s %-9s %s -> %s\n", c.name.c_str(), kind_name(c.kind),
                c.input.empty() ? "-" : c.input.c_str(), c.output.empty() ? "-" : c.output.c_str());
  }
  check("wait", pipeline.wait(std::chrono::seconds(60)));
  for (const rill::StageStats& s : pipeline.stats()) {
    std::printf("%-12s processed %6llu emitted %6llu errors %llu\n", s.name.c_str(),
                (unsigned long long)s.processed, (unsigned long long)s.emitted, (unsigned long long)s.errors);
  }
  check("remove thermometer", pipeline.remove_component("thermometer"));
  check("remove threshold", pipeline.remove_component("threshold"));
  check("remove pager", pipeline.remove_component("pager"));
  std::printf("components: %d alerts paged; %zu components left\n", pages.load(), pipeline.list_components().size());
  return pages.load() == 2500 ? 0 : 1;
}

// Pipeline: the stage registry, start/stop in data-flow order, drain waits.
#include "rill/pipeline.hpp"

#include <algorithm>
#include <mutex>
#include <thread>

#include "common/clock.hpp"
#include "pipeline/join_table.hpp"
#include "pipeline/stage.hpp"
#include "pipeline/stream_join.hpp"
#include "pipeline/window_table.hpp"

namespace rill::detail {

class PipelineCore {
 public:
  PipelineCore(Bus& bus, PipelineOptions options) : bus_(bus), options_(std::move(options)) {}

  Status add(std::string name, StageKind kind, StageFn fn, StageOptions options, std::shared_ptr<const StateSpec> state) {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return Status::Closed("pipeline is stopped");
    if (find(name) != stages_.end()) return Status::AlreadyExists("pipeline already has a stage named '" + name + "'");
    auto stage = std::make_unique<Stage>(bus_, options_, std::move(name), kind, std::move(fn), std::move(options),
                                         std::move(state));
    if (Status s = stage->open(); !s.ok()) return s;
    if (running_) stage->start();
    stages_.push_back(std::move(stage));
    return Status::Ok();
  }

  Status remove(std::string_view name, Timeout drain_timeout) {
    std::unique_ptr<Stage> stage;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = find(name);
      if (it == stages_.end()) return Status::NotFound("pipeline has no stage named '" + std::string(name) + "'");
      stage = std::move(*it);
      stages_.erase(it);
    }
    if (stage->started()) {
      stage->request_drain(deadline_after(drain_timeout));
      stage->join();
    }
    return Status::Ok();  // ~Stage stops what is left and closes its handles
  }

  std::vector<ComponentInfo> list() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<ComponentInfo> out;
    for (const auto& s : stages_) {
      const std::vector<std::string>& inputs = s->input_names();
      out.push_back({s->name(), s->kind(), inputs.empty() ? std::string() : inputs[0], s->options().output, inputs,
                     s->running()});
    }
    return out;
  }

  Status start() {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return Status::Closed("pipeline is stopped");
    if (running_) return Status::Ok();
    running_ = true;
    for (auto& s : stages_) s->start();
    return Status::Ok();
  }

  // Stops stages upstream first, so a stopping stage's last publish always
  // has a running reader downstream; stages in a cycle stop together.
  void stop() {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    running_ = false;
    std::vector<Stage*> left;
    for (auto& s : stages_) left.push_back(s.get());
    while (!left.empty()) {
      std::vector<Stage*> layer;
      for (Stage* s : left) {
        const bool fed = s->kind() != StageKind::kSource &&
                         std::any_of(left.begin(), left.end(), [&](Stage* up) {
                           if (up == s || up->kind() == StageKind::kSink) return false;
                           const std::vector<std::string>& in = s->input_names();
                           return std::find(in.begin(), in.end(), up->options().output) != in.end();
                         });
        if (!fed) layer.push_back(s);
      }
      const bool cycle = layer.empty();
      if (cycle) layer = left;
      for (Stage* s : layer) s->request_stop(/*hard=*/cycle);
      for (Stage* s : layer) s->join();
      std::erase_if(left, [&](Stage* s) { return std::find(layer.begin(), layer.end(), s) != layer.end(); });
    }
  }

  Status wait(Timeout timeout) {
    const Deadline deadline = deadline_after(timeout);
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopped_) return Status::Closed("pipeline was stopped");
        for (const auto& s : stages_) {
          if (s->failed()) return Status::Closed("stage '" + s->name() + "': " + s->stats().last_error);
        }
        if (running_ && drained_locked()) return Status::Ok();
      }
      if (SteadyClock::now() >= deadline) return Status::TimedOut("pipeline has not drained");
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

  std::vector<StageStats> stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<StageStats> out;
    for (const auto& s : stages_) out.push_back(s->stats());
    return out;
  }

  Result<StageStats> stats(std::string_view name) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = std::find_if(stages_.begin(), stages_.end(), [&](const auto& s) { return s->name() == name; });
    if (it == stages_.end()) return Status::NotFound("pipeline has no stage named '" + std::string(name) + "'");
    return (*it)->stats();
  }

 private:
  std::vector<std::unique_ptr<Stage>>::iterator find(std::string_view name) {
    return std::find_if(stages_.begin(), stages_.end(), [&](const auto& s) { return s->name() == name; });
  }

  // Every source ended and every stage acked all of its input, with nothing
  // published between the first and last look (a stage publishes before it
  // acks, so an event in flight shows as lag or as a new offset).
  bool drained_locked() const {
    auto published = [&] {
      std::uint64_t n = 0;
      for (const auto& s : stages_) n += s->published();
      return n;
    };
    const std::uint64_t before = published();
    for (const auto& s : stages_) {
      if (!s->idle()) return false;
    }
    return published() == before;
  }

  Bus& bus_;
  const PipelineOptions options_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Stage>> stages_;  // in the order added
  bool running_ = false;
  bool stopped_ = false;
};

}  // namespace rill::detail

namespace rill {

Pipeline::Pipeline(Bus& bus, PipelineOptions options)
    : core_(std::make_unique<detail::PipelineCore>(bus, std::move(options))) {}

Pipeline::~Pipeline() { stop(); }

Status Pipeline::source(std::string name, SourceFn fn, StageOptions options) {
  return core_->add(std::move(name), StageKind::kSource, std::move(fn), std::move(options), nullptr);
}

Status Pipeline::transform(std::string name, TransformFn fn, StageOptions options) {
  return core_->add(std::move(name), StageKind::kTransform, std::move(fn), std::move(options), nullptr);
}

Status Pipeline::sink(std::string name, SinkFn fn, StageOptions options) {
  return core_->add(std::move(name), StageKind::kSink, std::move(fn), std::move(options), nullptr);
}

Status Pipeline::add_window(std::string name, detail::WindowFns fns, StageOptions options) {
  return core_->add(std::move(name), StageKind::kTransform, TransformFn{}, std::move(options),
                    std::make_shared<detail::WindowSpec>(std::move(fns)));
}

Status Pipeline::add_join(std::string name, detail::JoinFns fns, StageOptions options) {
  auto spec = std::make_shared<detail::JoinSpec>(std::move(fns), name, !options.dead_letter_topic.empty());
  return core_->add(std::move(name), StageKind::kTransform, TransformFn{}, std::move(options), std::move(spec));
}

Status Pipeline::key_match_join(std::string name, KeyMatchJoin join, StageOptions options) {
  const std::size_t inputs = options.inputs.size();
  return add_join(std::move(name), detail::key_match_fns(std::move(join), inputs), std::move(options));
}

Status Pipeline::table_join(std::string name, TableJoin join, StageOptions options) {
  return core_->add(std::move(name), StageKind::kTransform, TransformFn{}, std::move(options),
                    std::make_shared<detail::TableJoinSpec>(std::move(join)));
}

Status Pipeline::window_join(std::string name, WindowJoin join, StageOptions options) {
  return core_->add(std::move(name), StageKind::kTransform, TransformFn{}, std::move(options),
                    std::make_shared<detail::StreamJoinSpec>(std::move(join)));
}

Status Pipeline::add_component(std::string name, StageKind kind, std::string input, std::string output, StageFn fn,
                               StageOptions options) {
  options.input = std::move(input);
  options.output = std::move(output);
  return core_->add(std::move(name), kind, std::move(fn), std::move(options), nullptr);
}

Status Pipeline::remove_component(std::string_view name, Timeout drain_timeout) {
  return core_->remove(name, drain_timeout);
}

std::vector<ComponentInfo> Pipeline::list_components() const { return core_->list(); }
Status Pipeline::start() { return core_->start(); }
void Pipeline::stop() { core_->stop(); }
Status Pipeline::wait(Timeout timeout) { return core_->wait(timeout); }
std::vector<StageStats> Pipeline::stats() const { return core_->stats(); }
Result<StageStats> Pipeline::stats(std::string_view stage) const { return core_->stats(stage); }

}  // namespace rill

// Stage: one pipeline component — its topics, its consumers and producers
// (one set per thread), its threads and its counters.
//
// Life: open() on the adding thread (resolves topics, opens consumers, so
// errors surface at add time), start() spawns the threads, request_stop()
// asks them to finish the batch in hand, join() waits. Thread-safe: the
// control calls may come from any thread; stats() reads relaxed counters.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "rill/pipeline.hpp"

namespace rill::detail {

class StageState;
class StateSpec;

class Stage {
 public:
  // `state`: a stateful stage (window, join), whose kind is kTransform and
  // whose function is unused; null otherwise.
  Stage(Bus& bus, const PipelineOptions& pipeline, std::string name, StageKind kind, StageFn fn,
        StageOptions options, std::shared_ptr<const StateSpec> state = nullptr);
  ~Stage();  // request_stop() + join()

  // Resolves topics and opens every thread's consumer and producer.
  Status open();
  void start();
  // Finish the batch in hand (publish, ack) and end. hard: also give up a
  // publish that cannot progress (its input stays unacked).
  void request_stop(bool hard = false);
  // Handle the input published before this call, ack it, then end (at most
  // until `deadline`, then as request_stop).
  void request_drain(std::chrono::steady_clock::time_point deadline);
  void join();

  const std::string& name() const noexcept { return name_; }
  StageKind kind() const noexcept { return kind_; }
  const StageOptions& options() const noexcept { return options_; }
  // The input topics: options().input, or options().inputs (joins).
  const std::vector<std::string>& input_names() const noexcept { return input_names_; }
  // Unacked events over the stage's inputs.
  std::uint64_t lag() const;
  // Sources: every thread has ended. Others: the input's lag is 0.
  bool idle() const;
  bool running() const noexcept { return started() && !finished(); }
  bool started() const noexcept { return started_.load(std::memory_order_acquire); }
  bool finished() const noexcept { return started() && live_threads_.load(std::memory_order_acquire) == 0; }
  // A worker ended on a failure (its topic deleted, a refused publish):
  // the pipeline cannot drain. stats().last_error says so.
  bool failed() const noexcept { return ended_early_.load(std::memory_order_acquire); }
  StageStats stats() const;
  // Events ever published to the stage's input and output topics.
  std::uint64_t published() const;

 private:
  struct Worker;
  struct Polled {
    std::size_t input;  // index into inputs_
    std::span<const Event> events;
  };

  Status open_topic(const std::string& topic_name, std::optional<Topic>& out) const;
  Status decide_delivery();
  Status open_worker(Worker& w, std::uint32_t index);
  Status restore_state(Worker& w);
  // Reading and acking, over one input (a Consumer) or several (a
  // MultiConsumer under the same name).
  Result<Polled> poll(Worker& w);
  Status ack(Worker& w, std::size_t input, const Event& e);
  Status batch_ack(Worker& w, std::size_t input, const Event& e);
  // Queues `e` for the dead-letter topic with why and where it came from.
  void dead_letter(Worker& w, std::size_t input, const Event& e, const std::string& reason, std::uint32_t attempts);
  // The stage function of a stateless stage (transform or sink) on one event.
  void call_fn(Worker& w, const Event& e);

  void run(Worker& w);
  void run_source(Worker& w);
  void run_reader(Worker& w);
  // Runs the stage function on one input event (with retries; dead-letters
  // it when they are spent). False: stopping during a retry's backoff.
  // first_error: the first attempt was made (run_reader tries a stateless
  // stage's event once with no retry frame around it) and failed so; the
  // retries go on from the second attempt.
  bool handle(Worker& w, std::size_t input, const Event& e, std::optional<std::string> first_error = std::nullopt);
  // One attempt: runs `call`, checks what it emitted fits the output; on
  // failure rolls its outputs back and says why (nullopt: it succeeded).
  template <class Call>
  std::optional<std::string> attempt(Worker& w, Call&& call);
  // Runs `call` (user code writing to w.outputs) until it neither throws nor
  // emits an event the output cannot take, at most 1 + max_retries times,
  // with backoff; a failed attempt's outputs are rolled back. Returns the
  // last error, or nullopt. `attempts`: how many ran; `stopped`: a stop came
  // during a backoff (the work is not done).
  template <class Call>
  std::optional<std::string> with_retries(Worker& w, Call&& call, std::uint32_t& attempts, bool& stopped,
                                          std::optional<std::string> first_error = std::nullopt);
  // Emits what the state owes outside any one event (windows the watermark
  // passed), each in its own retry frame; one whose retries are spent is
  // dead-lettered and forgotten, failing no event. False: a stop came
  // during a backoff.
  bool settle_due(Worker& w);
  // Publishes (or commits) what the worker holds for the handled events of
  // `input` and acks them. False: stopping before it could.
  bool deliver(Worker& w, std::size_t input, std::span<const Event> handled);
  bool publish_all(Producer& p, std::span<const Message> messages);
  // A publish blocked on a full topic gives up (its input stays unacked):
  // on a hard stop, kStopGrace after a stop, or past a drain's deadline.
  bool give_up_publishing() const;
  static constexpr std::chrono::seconds kStopGrace{1};
  bool drained(const Worker& w) const;
  // The wait before retry number attempt + 1 (RetryPolicy).
  std::chrono::nanoseconds backoff(std::uint32_t attempt) const;
  // Sleeps, waking early on stop. False: stop requested.
  bool pause(std::chrono::nanoseconds d);
  void note_error(const std::string& what);
  // A worker ended on a failure it cannot retry (not a stop or a drain):
  // recorded in last_error and ended_early().
  void ended_early();
  std::string consumer_name() const;
  bool stopping() const noexcept { return stop_.load(std::memory_order_acquire); }

  Bus& bus_;
  const PipelineOptions& pipeline_;
  const std::string name_;
  const StageKind kind_;
  StageFn fn_;
  StageOptions options_;
  std::shared_ptr<const StateSpec> state_;

  std::vector<std::string> input_names_;  // options.input, or options.inputs
  std::vector<Topic> inputs_;
  std::optional<Topic> output_, dead_letter_, changelog_;  // each only when the stage has one
  bool exactly_once_ = false;  // outputs + ack in one write batch
  bool use_batch_ = false;     // acks go through write batches (exactly-once or durable window state)
  bool individual_acks_ = false;

  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::atomic<bool> started_{false};
  std::atomic<std::uint32_t> live_threads_{0};

  std::atomic<bool> stop_{false};
  std::atomic<bool> hard_stop_{false};
  std::atomic<bool> ended_early_{false};
  // When request_stop came (steady_clock ticks), for give_up_publishing.
  std::atomic<std::chrono::steady_clock::rep> stop_requested_ns_{0};
  std::atomic<bool> draining_{false};
  std::vector<std::vector<std::uint64_t>> drain_target_;  // per input, next offsets at request_drain; set before draining_
  std::chrono::steady_clock::time_point drain_deadline_{};
  std::mutex pause_mu_;
  std::condition_variable pause_cv_;

  std::chrono::steady_clock::time_point started_at_{};
  std::atomic<std::uint64_t> processed_{0}, emitted_{0}, errors_{0}, retried_{0}, dead_lettered_{0}, late_{0};
  mutable std::mutex error_mu_;
  std::string last_error_;
};

}  // namespace rill::detail

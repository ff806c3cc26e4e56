// rill/pipeline.hpp — sources, transforms and sinks as threads wired by
// topics.
//
// A Pipeline runs stages ("components") on their own threads. A stage reads
// its input topic through a named consumer (the stage's name) and publishes
// to its output topic:
//
//   rill::Pipeline pipeline(bus);
//   pipeline.source("generate", [&](rill::Emitter& out) { ...; return more; }, {.output = "raw"});
//   pipeline.transform("normalize", rill::map([](const rill::Event& e) { return rill::Output{...}; }),
//                      {.input = "raw", .output = "clean"});
//   pipeline.sink("print", [](const rill::Event& e) { ... }, {.input = "clean"});
//   pipeline.start();
//   pipeline.wait();   // until the source ended and everything went through
//   pipeline.stop();
//
// Delivery. A stage acks an input event only after the outputs it made from
// it are published (at-least-once): a crash or stop delivers unacked input
// again, so outputs may repeat, never go missing. When the input and output
// topics are durable (and multi-producer), a stage is exactly-once: its
// outputs, window state and input ack commit in one atomic, fsynced write
// batch (rill/write_batch.hpp), so a crash neither loses nor repeats an
// output. Delivery::kAuto (the default) picks exactly-once where it can.
//
// Errors. An exception from a stage function never escapes: the attempt's
// outputs are discarded and the event is retried with exponential backoff
// (StageOptions::retry); when the retries are spent, the event goes to the
// stage's dead-letter topic with the error text, the stage name and its
// origin EventId in its metadata (under "dead_letter"), or — without a
// dead-letter topic — is counted and skipped. The stage keeps running; the
// counts and the last error are in its StageStats.
//
// Backpressure. Topics of kBlock overflow (the default) make a stage wait
// for space downstream, so a slow sink slows the source and memory stays
// bounded by the rings.
//
// Thread-safety: a Pipeline's methods may be called from any thread (one
// lock guards the stage registry; stage threads never take it per event).
// Stage functions run on the stage's threads: a function shared by several
// threads (StageOptions::threads) must be thread-safe.
// Lifetime: the Bus must outlive the Pipeline; ~Pipeline stops it.
#pragma once

#include <any>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "rill/bus.hpp"
#include "rill/event.hpp"
#include "rill/join.hpp"
#include "rill/options.hpp"
#include "rill/producer.hpp"
#include "rill/status.hpp"

namespace rill {

// An output event that owns its bytes (rill::map's return type).
struct Output {
  std::string key{};
  std::string metadata{};
  std::string data{};
  std::int64_t partition = kAnyPartition;
};

// Where a stage function puts its output events. Each emit copies the
// message into storage the stage reuses from batch to batch (no allocation
// once warm). What a call emitted is published only after the function
// returns; when it throws, its emits are discarded.
// Not thread-safe: one per stage thread, used by that thread's calls.
class Emitter {
 public:
  void emit(const Message& m);
  void emit(const Output& o) { emit(Message{o.key, o.metadata, o.data, {}, o.partition}); }
  void emit(std::string_view key, std::string_view metadata, std::string_view data) {
    emit(Message{key, metadata, data, {}, kAnyPartition});
  }
  // Events emitted and not yet handed to the output.
  std::size_t size() const noexcept { return views_.size(); }

  // ---- used by the stage that owns it
  // The events emitted since the last clear(), as views valid until the next
  // emit or clear. One may be emitted again: emit() copies it first.
  std::span<const Message> messages() const noexcept { return views_; }
  std::size_t mark() const noexcept { return views_.size(); }
  void rollback(std::size_t mark) noexcept;  // forgets the emits after mark()
  void clear() noexcept;
  // The shape of the topic the events go to (until then: any size, any
  // partition). emit() checks each event against it as it copies it.
  void set_target(std::uint32_t max_event_size, std::uint32_t partitions) noexcept;
  std::uint32_t max_event_size() const noexcept { return max_event_size_; }
  // True when every event emitted after `mark` fits the target. O(1).
  bool fits_since(std::size_t mark) const noexcept { return unfit_end_ <= mark; }
  // Ok when fits_since(mark); otherwise which event does not fit, and why.
  Status check_since(std::size_t mark) const;

 private:
  // Whether one emitted event fits the target (and any topic's key and
  // metadata limits).
  bool fits(const Message& m) const noexcept {
    if (std::uint64_t(m.key.size()) + m.metadata.size() + m.data.size() > max_event_size_) return false;
    if (m.key.size() > kMaxKeyBytes || m.metadata.size() > kMaxMetadataBytes) return false;
    return m.partition == kAnyPartition || (m.partition >= 0 && m.partition < std::int64_t(partitions_));
  }
  // unfit_end_ from scratch (after a rollback or a new target).
  void recount_unfit() noexcept;
  // Makes room for `more` bytes past used_; the views move with the bytes.
  // Returns the old bytes (the caller frees them when it has copied).
  std::unique_ptr<char[]> grow(std::size_t more);
  std::uint32_t max_event_size_ = ~std::uint32_t{0};
  std::uint32_t partitions_ = ~std::uint32_t{0};
  // One past the last event that does not fit the target; 0 when all do.
  std::size_t unfit_end_ = 0;
  // The emitted bytes: a buffer grown by doubling and never zero-filled
  // (kept across clear()). Each event's key, metadata and data lie
  // back to back in it, in emit order.
  std::unique_ptr<char[]> bytes_;
  std::size_t used_ = 0, capacity_ = 0;
  // One message per event, viewing its bytes (no Buffer): what the stage
  // publishes, built as it is emitted.
  std::vector<Message> views_;
};

// A source is called again and again on its thread; each call emits zero,
// one or a batch of events and returns true while more may come, false when
// the source is exhausted (its thread then ends).
using SourceFn = std::function<bool(Emitter&)>;
// One input event in, zero or more out.
using TransformFn = std::function<void(const Event&, Emitter&)>;
using SinkFn = std::function<void(const Event&)>;

// Transform builders. map: f(event) returns an Output (or a Message whose
// views stay valid until f returns, e.g. into the event or f's own buffer).
template <class F>
TransformFn map(F f) {
  return [f = std::move(f)](const Event& e, Emitter& out) mutable { out.emit(f(e)); };
}
// filter: forwards the event (key, metadata, data) when pred(event) is true.
template <class F>
TransformFn filter(F pred) {
  return [pred = std::move(pred)](const Event& e, Emitter& out) mutable {
    if (pred(e)) out.emit(Message{e.key(), e.metadata(), e.data(), {}, kAnyPartition});
  };
}
// flat_map: f(event, emitter) emits zero or more events.
template <class F>
TransformFn flat_map(F f) {
  return TransformFn(std::move(f));
}

enum class StageKind : std::uint8_t { kSource, kTransform, kSink };
using StageFn = std::variant<SourceFn, TransformFn, SinkFn>;

enum class Delivery : std::uint8_t {
  // Exactly-once when the input and output topics are durable and
  // multi-producer, at-least-once otherwise.
  kAuto,
  kAtLeastOnce,
  // As kAuto, but a stage that cannot be exactly-once is refused.
  kExactlyOnce,
};

// How a stage with several threads divides its input.
enum class Split : std::uint8_t {
  // Thread i reads the partitions p with p % threads == i: per-partition
  // (hence per-key) order holds. Needs threads <= partitions.
  kPartitions,
  // The threads share the input in ConsumerMode::kKeyShared: any number of
  // threads, per-key order holds. At-least-once: exactly-once and durable
  // state on durable inputs need kPartitions (their commits ack
  // cumulatively) and refuse kKeyShared with InvalidArgument.
  kKeyShared,
};

struct RetryPolicy {
  // Attempts after the first failure of an event; 0: dead-letter at once.
  std::uint32_t max_retries = 3;
  // Wait before the first retry; doubles per retry up to max_backoff.
  std::chrono::milliseconds backoff{1};
  std::chrono::milliseconds max_backoff{1000};
};

struct StageOptions {
  // Topic read (transforms and sinks) and topic written (sources and
  // transforms). Created with the bus's default topic options when missing
  // and PipelineOptions::create_topics is on.
  std::string input{};
  std::string output{};
  // Several topics read together under the stage's name (joins), instead
  // of `input`. With threads > 1, window or join state on durable topics,
  // they must have equal partition counts (keys co-partitioned).
  std::vector<std::string> inputs{};
  std::uint32_t threads = 1;
  Split split = Split::kPartitions;
  Delivery delivery = Delivery::kAuto;
  RetryPolicy retry{};
  // Empty: an event whose retries are spent is counted (StageStats::errors)
  // and skipped. Otherwise a multi-producer topic of the bus (created when
  // missing, like input and output).
  std::string dead_letter_topic{};
  // Input events handled per poll; one publish (or one write batch) and one
  // ack per batch.
  std::uint32_t max_batch = 256;
  // Where the stage's consumer starts when its name has no acked position.
  Position position = Position::unread();
};

// Windows over event time (Pipeline::window).
struct Window {
  std::int64_t start_ns = 0;  // inclusive
  std::int64_t end_ns = 0;    // exclusive
};

struct WindowOptions {
  // Window length; hop = 0 (or = size) makes tumbling windows, a smaller hop
  // overlapping (hopping) windows starting every hop.
  std::chrono::milliseconds size{1000};
  std::chrono::milliseconds hop{0};
  // A window closes — its result is emitted, once — when the stage's
  // watermark passes its end. The watermark of a stage thread is the
  // smallest, over the input partitions it has received events from, of
  // the largest event time seen there, minus allowed_lateness: so a
  // partition whose batches arrive later does not make its events late,
  // and one that falls silent holds windows open until it speaks again.
  // An event all of whose windows are closed is late.
  std::chrono::milliseconds allowed_lateness{0};
  // Event time in ns since the epoch; empty: the event's append timestamp.
  std::function<std::int64_t(const Event&)> event_time{};
  // Late events go to the stage's dead-letter topic (true, when it has one)
  // or are only counted (StageStats::late).
  bool dead_letter_late = false;
};

// A windowed aggregation: per key and window, state = aggregate(state,
// event) over the window's events, then emit(key, window, state) once.
// When the input topic is durable the window state is durable too, kept in
// the topic "<stage>.changelog" and committed with the input acks; encode
// and decode then turn State into bytes and back (default for trivially
// copyable State: its bytes).
template <class State>
struct Aggregation {
  std::function<void(State&, const Event&)> aggregate;
  std::function<Output(std::string_view key, const Window&, const State&)> emit;
  std::function<std::string(const State&)> encode{};
  std::function<State(std::string_view)> decode{};
};

namespace detail {
// Aggregation<State> with State erased (std::any), as the stage runs it.
struct WindowFns {
  WindowOptions options;
  std::function<std::any()> init;
  std::function<void(std::any&, const Event&)> aggregate;
  std::function<Output(std::string_view, const Window&, const std::any&)> emit;
  std::function<std::string(const std::any&)> encode;                 // empty: state not durable-capable
  std::function<std::any(std::string_view)> decode;
};
}  // namespace detail

struct StageStats {
  std::string name;
  StageKind kind = StageKind::kTransform;
  std::string input, output;        // input: the first (joins: of several)
  std::vector<std::string> inputs;  // every input topic, in order
  bool running = false;
  bool exactly_once = false;       // the delivery the stage actually runs with
  std::uint64_t processed = 0;     // input events handled (sources: calls that emitted)
  std::uint64_t emitted = 0;       // output events published
  std::uint64_t errors = 0;        // events (or window results) whose retries were spent
  std::uint64_t retried = 0;       // retries
  std::uint64_t dead_lettered = 0; // dead letters sent (events, window results, join entries)
  std::uint64_t late = 0;          // windows: late events
  std::uint64_t lag = 0;           // input events not yet acked
  double events_per_second = 0;    // processed over the time since start
  std::string last_error;
};

struct ComponentInfo {
  std::string name;
  StageKind kind;
  std::string input, output;        // input: the first (joins: of several)
  std::vector<std::string> inputs;  // every input topic, in order
  bool running;
};

struct PipelineOptions {
  // Prefix of the stages' consumer names ("<name>.<stage>"); empty: none.
  std::string name{};
  // Create missing input, output and dead-letter topics with the bus's
  // BusOptions::default_topic; off: a missing topic is NotFound.
  bool create_topics = true;
  // How often an idle stage thread looks at its stop flag (a poll timeout).
  std::chrono::milliseconds idle_poll{20};
};

namespace detail {
class PipelineCore;
}

class Pipeline {
 public:
  // REQUIRES: `bus` outlives the Pipeline.
  explicit Pipeline(Bus& bus, PipelineOptions options = {});
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;
  ~Pipeline();  // stop()

  // Adds a stage; it starts at once when the pipeline runs, else at
  // start(). Stage names: as consumer names ([A-Za-z0-9._-], 1-249).
  // Fails: InvalidArgument (name, options, kind and function disagree, a
  // split or delivery the topics cannot give), AlreadyExists (name in use),
  // NotFound (missing topic without create_topics), Closed; what opening
  // the stage's topics and consumers fails with.
  Status source(std::string name, SourceFn fn, StageOptions options);
  Status transform(std::string name, TransformFn fn, StageOptions options);
  Status sink(std::string name, SinkFn fn, StageOptions options);
  // A windowed aggregation stage (the "reduce" step): reads options.input,
  // publishes one result per key and window to options.output. A window
  // whose emit throws, or whose result the output refuses, is retried on
  // its own, then dead-lettered ("window_start_ns", "window_end_ns"; data:
  // the encoded state, when encode is given) and dropped: it fails no
  // event and no other window.
  template <class State>
  Status window(std::string name, Aggregation<State> agg, WindowOptions window, StageOptions options);

  // Join stages (rill/join.hpp), reading options.inputs (stream-table:
  // {stream, table}) and publishing to options.output.
  template <class Partial>
  Status accumulate_join(std::string name, AccumulateJoin<Partial> join, StageOptions options);
  Status key_match_join(std::string name, KeyMatchJoin join, StageOptions options);
  Status table_join(std::string name, TableJoin join, StageOptions options);
  Status window_join(std::string name, WindowJoin join, StageOptions options);

  // The nodata spelling: a component is a stage added or removed while the
  // pipeline runs. `kind` must match fn's alternative. remove_component
  // drains it first: it handles the input published before the call, acks
  // it and stops (at most `drain_timeout`; then it stops where it is, and
  // its unacked input is delivered again to whoever next reads the name).
  Status add_component(std::string name, StageKind kind, std::string input, std::string output, StageFn fn,
                       StageOptions options = {});
  Status remove_component(std::string_view name, Timeout drain_timeout = kForever);
  std::vector<ComponentInfo> list_components() const;

  // Starts every stage added so far. Fails: Closed (stopped already).
  Status start();
  // Stops sources, then every other stage in the order of the data flow,
  // each finishing (publishing and acking) the batch in hand; events still
  // in the topics stay there for the next run. A stage whose publish stays
  // blocked on a full topic (a reader outside the pipeline holds it) gives
  // up after a second, leaving that batch unacked (delivered again to the
  // next run). Idempotent.
  void stop();
  // Waits until the pipeline has drained: every source ended and every
  // stage acked everything in its input. Ok, or TimedOut, or Closed when
  // stop() ran first or a stage ended on a failure it cannot retry (a topic
  // of it deleted, a publish refused; the message names the stage, and its
  // stats' last_error says so too).
  Status wait(Timeout timeout = kForever);

  std::vector<StageStats> stats() const;
  Result<StageStats> stats(std::string_view stage) const;

 private:
  Status add_window(std::string name, detail::WindowFns fns, StageOptions options);
  Status add_join(std::string name, detail::JoinFns fns, StageOptions options);
  std::unique_ptr<detail::PipelineCore> core_;
};

template <class State>
Status Pipeline::window(std::string name, Aggregation<State> agg, WindowOptions window, StageOptions options) {
  if (!agg.aggregate || !agg.emit) return Status::InvalidArgument("window '" + name + "': aggregate and emit are required");
  detail::WindowFns fns;
  fns.options = std::move(window);
  fns.init = [] { return std::any(State{}); };
  fns.aggregate = [f = std::move(agg.aggregate)](std::any& s, const Event& e) { f(*std::any_cast<State>(&s), e); };
  fns.emit = [f = std::move(agg.emit)](std::string_view key, const Window& w, const std::any& s) {
    return f(key, w, *std::any_cast<State>(&s));
  };
  detail::default_codec(agg.encode, agg.decode);
  if (agg.encode && agg.decode) {
    fns.encode = [f = std::move(agg.encode)](const std::any& s) { return f(*std::any_cast<State>(&s)); };
    fns.decode = [f = std::move(agg.decode)](std::string_view b) { return std::any(f(b)); };
  }
  return add_window(std::move(name), std::move(fns), std::move(options));
}

template <class Partial>
Status Pipeline::accumulate_join(std::string name, AccumulateJoin<Partial> join, StageOptions options) {
  if (!join.merge || !join.sufficient) {
    return Status::InvalidArgument("join '" + name + "': merge and sufficient are required");
  }
  detail::default_codec(join.encode, join.decode);
  if (!join.process && !join.encode) {
    return Status::InvalidArgument("join '" + name + "': without process, the partial needs encode");
  }
  detail::JoinFns fns;
  fns.key = std::move(join.key);
  fns.init = [] { return std::any(Partial{}); };
  fns.merge = [f = std::move(join.merge)](std::any& p, std::size_t input, const Event& e) {
    f(*std::any_cast<Partial>(&p), input, e);
    return std::string();
  };
  fns.ready = [f = std::move(join.sufficient)](const std::any& p) { return f(*std::any_cast<Partial>(&p)); };
  if (join.process) {
    fns.fire = [f = std::move(join.process)](std::string_view key, std::any& p, Emitter& out) {
      f(key, *std::any_cast<Partial>(&p), out);
      return true;
    };
  } else {
    fns.fire = [enc = join.encode](std::string_view key, std::any& p, Emitter& out) {
      const std::string data = enc(*std::any_cast<Partial>(&p));
      out.emit(key, {}, data);
      return true;
    };
  }
  if (join.incomplete) {
    fns.incomplete = [f = std::move(join.incomplete)](std::string_view key, const std::any& p) {
      f(key, *std::any_cast<Partial>(&p));
    };
  }
  if (join.encode && join.decode) {
    fns.encode = [f = std::move(join.encode)](const std::any& p) { return f(*std::any_cast<Partial>(&p)); };
    fns.decode = [f = std::move(join.decode)](std::string_view b) { return std::any(f(b)); };
  }
  fns.limits = join.limits;
  return add_join(std::move(name), std::move(fns), std::move(options));
}

}  // namespace rill

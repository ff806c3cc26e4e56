#include "pipeline/stage.hpp"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "common/dead_letter.hpp"
#include "common/names.hpp"
#include "common/user_code.hpp"
#include "pipeline/stage_state.hpp"
#include "rill/write_batch.hpp"

namespace rill::detail {

namespace {

const char* kind_name(StageKind k) {
  switch (k) {
    case StageKind::kSource: return "source";
    case StageKind::kTransform: return "transform";
    default: return "sink";
  }
}

bool durable(const Topic& t) { return t.options().durability != Durability::kNone; }
bool batchable(const Topic& t) { return durable(t) && t.options().producers == ProducerMode::kMulti; }

// Outputs kept in memory before a publish, when no write batch bounds them.
constexpr std::size_t kMaxChunk = 4096;

}  // namespace

struct Stage::Worker {
  std::uint32_t index = 0;
  std::vector<std::uint32_t> partitions;  // input partitions it reads (of every input)
  Consumer consumer;                      // one input
  MultiConsumer multi;                    // several inputs
  Producer out, dead;
  Emitter outputs, dead_letters, changes;
  std::unique_ptr<StageState> table;
  WriteBatch batch;
};

Stage::Stage(Bus& bus, const PipelineOptions& pipeline, std::string name, StageKind kind, StageFn fn,
             StageOptions options, std::shared_ptr<const StateSpec> state)
    : bus_(bus),
      pipeline_(pipeline),
      name_(std::move(name)),
      kind_(kind),
      fn_(std::move(fn)),
      options_(std::move(options)),
      state_(std::move(state)) {}

Stage::~Stage() {
  request_stop(/*hard=*/true);
  join();
}

std::string Stage::consumer_name() const { return pipeline_.name.empty() ? name_ : pipeline_.name + "." + name_; }

Status Stage::open_topic(const std::string& topic_name, std::optional<Topic>& out) const {
  Result<Topic> t = pipeline_.create_topics ? bus_.ensure_topic(topic_name) : bus_.topic(topic_name);
  if (!t.ok()) return t.status().with_context("stage '" + name_ + "': topic '" + topic_name + "'");
  out.emplace(*t);
  return Status::Ok();
}

Status Stage::open() {
  const std::string what = "stage '" + name_ + "'";
  if (Status s = validate_name("stage name", name_); !s.ok()) return s;
  if (Status s = validate_name("stage consumer name", consumer_name()); !s.ok()) return s;
  const std::size_t want = kind_ == StageKind::kSource ? 0 : kind_ == StageKind::kTransform ? 1 : 2;
  if (fn_.index() != want) return Status::InvalidArgument(what + ": a " + kind_name(kind_) + " needs a matching function");
  if (std::visit([](const auto& f) { return !f; }, fn_) && !state_) {
    return Status::InvalidArgument(what + ": the function is empty");
  }
  if (options_.threads == 0) return Status::InvalidArgument(what + ": threads must be >= 1");
  if (options_.max_batch == 0) return Status::InvalidArgument(what + ": max_batch must be >= 1");
  if (!options_.input.empty() && !options_.inputs.empty()) {
    return Status::InvalidArgument(what + ": give input or inputs, not both");
  }
  input_names_ = options_.input.empty() ? options_.inputs : std::vector<std::string>{options_.input};
  const bool wants_input = kind_ != StageKind::kSource, wants_output = kind_ != StageKind::kSink;
  if (wants_input == input_names_.empty()) {
    return Status::InvalidArgument(what + (wants_input ? ": needs an input topic" : ": a source has no input topic"));
  }
  if (wants_output == options_.output.empty()) {
    return Status::InvalidArgument(what + (wants_output ? ": needs an output topic" : ": a sink has no output topic"));
  }
  if (state_) {
    if (Status s = state_->validate(input_names_.size()); !s.ok()) return s.with_context(what);
  } else if (input_names_.size() > 1) {
    return Status::InvalidArgument(what + ": only join stages read several topics");
  }
  for (std::size_t i = 0; i < input_names_.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (input_names_[i] == input_names_[j]) return Status::InvalidArgument(what + ": topic '" + input_names_[i] + "' is listed twice");
    }
    std::optional<Topic> t;
    if (Status s = open_topic(input_names_[i], t); !s.ok()) return s;
    inputs_.push_back(*t);
  }
  if (wants_output) {
    if (Status s = open_topic(options_.output, output_); !s.ok()) return s;
  }
  if (!options_.dead_letter_topic.empty()) {
    if (Status s = open_topic(options_.dead_letter_topic, dead_letter_); !s.ok()) return s;
    if (dead_letter_->options().producers == ProducerMode::kSingle) {
      return Status::InvalidArgument(what + ": dead-letter topic '" + options_.dead_letter_topic + "' is single-producer");
    }
  }
  const std::uint32_t n = options_.threads;
  if (!inputs_.empty()) {
    const std::uint32_t partitions = inputs_[0].partitions();
    const bool co_partitioned = std::all_of(inputs_.begin(), inputs_.end(), [&](const Topic& t) { return t.partitions() == partitions; });
    const bool needs_co = n > 1 || (state_ && std::any_of(inputs_.begin(), inputs_.end(), durable));
    if (inputs_.size() > 1 && needs_co && !co_partitioned) {
      return Status::InvalidArgument(what + ": its input topics need equal partition counts (several threads or durable state)");
    }
    if (options_.split == Split::kPartitions && n > partitions) {
      return Status::InvalidArgument(what + ": " + std::to_string(n) + " threads need at least as many partitions (topic '" +
                                     input_names_[0] + "' has " + std::to_string(partitions) +
                                     "); use Split::kKeyShared");
    }
    if (options_.split == Split::kKeyShared && inputs_.size() > 1) {
      return Status::InvalidArgument(what + ": Split::kKeyShared reads one input topic");
    }
  }
  if (Status s = decide_delivery(); !s.ok()) return s;
  individual_acks_ = !inputs_.empty() && options_.split == Split::kKeyShared;
  for (std::uint32_t i = 0; i < n; ++i) {
    auto w = std::make_unique<Worker>();
    if (Status s = open_worker(*w, i); !s.ok()) {
      workers_.clear();
      return s;
    }
    workers_.push_back(std::move(w));
  }
  return Status::Ok();
}

Status Stage::decide_delivery() {
  const std::string what = "stage '" + name_ + "'";
  const bool in_durable = !inputs_.empty() && std::all_of(inputs_.begin(), inputs_.end(), durable);
  // Write batches ack cumulatively: key-shared threads ack one by one.
  const bool key_shared = options_.split == Split::kKeyShared;
  const bool possible = kind_ == StageKind::kTransform && in_durable && !key_shared && batchable(*output_) &&
                        (!dead_letter_ || batchable(*dead_letter_));
  if (options_.delivery == Delivery::kExactlyOnce && !possible) {
    return Status::InvalidArgument(what + ": exactly-once needs a transform split by partitions whose input, "
                                          "output (and dead-letter) topics are durable and multi-producer");
  }
  if (state_ && in_durable && key_shared) {
    return Status::InvalidArgument(what + ": durable state needs Split::kPartitions (its commits ack cumulatively)");
  }
  exactly_once_ = possible && options_.delivery != Delivery::kAtLeastOnce;
  const bool durable_state = state_ && in_durable;
  if (durable_state) {
    if (!state_->persistable()) {
      return Status::InvalidArgument(what + ": state on durable inputs needs encode and decode");
    }
    TopicOptions t;
    t.partitions = inputs_[0].partitions();
    t.capacity = 4096;
    t.durability = Durability::kAsync;
    Result<Topic> c = bus_.ensure_topic(consumer_name() + ".changelog", t);
    if (!c.ok()) return c.status().with_context(what + ": state changelog");
    if (c->partitions() != t.partitions || !batchable(*c)) {
      return Status::InvalidArgument(what + ": topic '" + c->name() + "' is not this stage's state changelog");
    }
    changelog_.emplace(*c);
  }
  use_batch_ = exactly_once_ || durable_state;
  return Status::Ok();
}

Status Stage::open_worker(Worker& w, std::uint32_t index) {
  w.index = index;
  if (!inputs_.empty()) {
    const bool key_shared = options_.split == Split::kKeyShared;
    for (std::uint32_t p = key_shared ? 0 : index; p < inputs_[0].partitions(); p += key_shared ? 1 : options_.threads) {
      w.partitions.push_back(p);
    }
    if (inputs_.size() == 1) {
      ConsumerOptions c;
      c.name = consumer_name();
      c.position = options_.position;
      c.max_batch = options_.max_batch;
      if (key_shared) {
        c.mode = ConsumerMode::kKeyShared;
      } else {
        c.partitions = w.partitions;
      }
      Result<Consumer> consumer = inputs_[0].consumer(c);
      if (!consumer.ok()) return consumer.status().with_context("stage '" + name_ + "'");
      w.consumer = std::move(*consumer);
    } else {
      MultiConsumerOptions c;
      c.name = consumer_name();
      c.position = options_.position;
      c.max_batch = options_.max_batch;
      for (const Topic& t : inputs_) {
        for (std::uint32_t p = index; p < t.partitions(); p += options_.threads) c.assignment.push_back({t.name(), p});
      }
      Result<MultiConsumer> consumer = bus_.multi_consumer(c);
      if (!consumer.ok()) return consumer.status().with_context("stage '" + name_ + "'");
      w.multi = std::move(*consumer);
    }
  }
  if (output_) {
    Result<Producer> p = output_->producer();
    if (!p.ok()) return p.status().with_context("stage '" + name_ + "'");
    w.out = std::move(*p);
    w.outputs.set_target(output_->options().max_event_size, output_->partitions());
  }
  if (dead_letter_) {
    Result<Producer> p = dead_letter_->producer();
    if (!p.ok()) return p.status().with_context("stage '" + name_ + "'");
    w.dead = std::move(*p);
    w.dead_letters.set_target(dead_letter_->options().max_event_size, dead_letter_->partitions());
  }
  if (state_) {
    w.table = state_->make(/*durable=*/changelog_.has_value());
    if (Status s = restore_state(w); !s.ok()) return s;
  }
  return Status::Ok();
}

Status Stage::restore_state(Worker& w) {
  if (!changelog_) return Status::Ok();
  const std::string what = "stage '" + name_ + "': restoring its state";
  const std::string reader = consumer_name() + ".restore";
  std::vector<std::uint64_t> read_to, end;  // per partition: next offset to read, and where the log ends
  for (const PartitionStats& p : changelog_->stats()) {
    read_to.push_back(p.earliest_offset);
    end.push_back(p.next_offset);
  }
  Status result = Status::Ok();
  {
    Result<Consumer> c = changelog_->consumer({.name = reader, .position = Position::earliest(), .partitions = w.partitions});
    if (!c.ok()) return c.status().with_context(what);
    auto done = [&] {
      for (std::uint32_t p : w.partitions) {
        if (read_to[p] < end[p]) return false;
      }
      return true;
    };
    while (!done()) {
      Result<std::span<const Event>> batch = c->poll_batch(256, std::chrono::seconds(5));
      if (!batch.ok()) {
        result = batch.status().with_context(what);
        break;
      }
      for (const Event& e : *batch) {
        Status s = Status::Ok();
        if (auto threw = user_code_threw([&] { s = w.table->restore(e.key(), e.data(), w.partitions); })) {
          s = Status::Corruption("decode threw: " + *threw);
        }
        if (!s.ok()) {
          result = s.with_context(what);
          break;
        }
        read_to[e.partition()] = e.offset() + 1;
      }
      if (!result.ok()) break;
    }
  }
  (void)changelog_->remove_consumer(reader);
  w.table->finish_restore();
  return result;
}

void Stage::start() {
  started_at_ = std::chrono::steady_clock::now();
  live_threads_.store(std::uint32_t(workers_.size()), std::memory_order_release);
  started_.store(true, std::memory_order_release);
  for (auto& w : workers_) threads_.emplace_back([this, wp = w.get()] { run(*wp); });
}

void Stage::request_stop(bool hard) {
  {
    std::lock_guard<std::mutex> lock(pause_mu_);
    if (hard) hard_stop_.store(true, std::memory_order_release);
    stop_requested_ns_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
    stop_.store(true, std::memory_order_release);
  }
  pause_cv_.notify_all();
}

bool Stage::give_up_publishing() const {
  if (hard_stop_.load(std::memory_order_acquire)) return true;
  const auto now = std::chrono::steady_clock::now();
  if (stopping()) {
    // Downstream stages stop after this one, so a blocked publish usually
    // completes; one whose topic a reader outside the pipeline holds full
    // would never end the stop.
    const std::chrono::steady_clock::time_point asked{
        std::chrono::steady_clock::duration(stop_requested_ns_.load(std::memory_order_relaxed))};
    if (now - asked >= kStopGrace) return true;
  }
  return draining_.load(std::memory_order_acquire) && now >= drain_deadline_;
}

void Stage::request_drain(std::chrono::steady_clock::time_point deadline) {
  for (const Topic& t : inputs_) {
    drain_target_.emplace_back();
    for (const PartitionStats& p : t.stats()) drain_target_.back().push_back(p.next_offset);
  }
  drain_deadline_ = deadline;
  draining_.store(true, std::memory_order_release);
}

void Stage::join() {
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void Stage::run(Worker& w) {
  if (kind_ == StageKind::kSource) {
    run_source(w);
  } else {
    run_reader(w);
    // A reader ends by itself only on a stop, a finished drain, or a
    // failure it cannot retry.
    if (!stopping() && !draining_.load(std::memory_order_acquire)) ended_early();
  }
  w.consumer.close();  // frees the name for whoever reads it next
  w.multi.close();
  w.out.close();
  w.dead.close();
  live_threads_.fetch_sub(1, std::memory_order_acq_rel);
}

void Stage::run_source(Worker& w) {
  const SourceFn& fn = std::get<SourceFn>(fn_);
  while (!stopping() && !draining_.load(std::memory_order_acquire)) {
    bool more = true;
    std::uint32_t attempts = 0;
    bool stopped = false;
    const std::optional<std::string> threw = with_retries(w, [&] { more = fn(w.outputs); }, attempts, stopped);
    if (stopped) return;
    if (threw) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      note_error(*threw);
    }
    processed_.fetch_add(w.outputs.size(), std::memory_order_relaxed);
    if (!deliver(w, 0, {})) {
      ended_early();
      return;
    }
    if (!more) return;
  }
}

void Stage::run_reader(Worker& w) {
  // A chunk's outputs, dead letters and window changes go out in one
  // publish (or one write batch: at most half of each target's ring).
  std::size_t chunk_limit = kMaxChunk;
  if (use_batch_) {
    auto bound = [&](const Topic& t) {
      if (batchable(t)) chunk_limit = std::min<std::size_t>(chunk_limit, std::max<std::uint32_t>(1, t.options().capacity / 2));
    };
    if (output_) bound(*output_);
    if (dead_letter_) bound(*dead_letter_);
    if (changelog_) bound(*changelog_);
  }
  auto chunk_full = [&] {
    const std::size_t changes = w.table ? w.table->pending_changes() : 0;
    return w.outputs.size() + w.dead_letters.size() + changes >= chunk_limit;
  };
  // Stateless stages first try each event with no retry frame around it;
  // a throw (or an output the topic cannot take) falls back to handle().
  const bool fast = !w.table;
  while (!stopping()) {
    if (draining_.load(std::memory_order_acquire) && drained(w)) return;
    if (w.table) {
      // Timers (join expiry): their outputs go out with the next delivery.
      w.table->tick(std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::system_clock::now().time_since_epoch()).count(),
                    w.outputs, w.dead_letters);
    }
    Result<Polled> batch = poll(w);
    if (!batch.ok()) {
      if (batch.status().code() == Status::Code::kTimedOut) {
        // What the timers produced (expiries, and their changelog records).
        const bool changed = changelog_ && w.table->pending_changes() > 0;
        if ((w.outputs.size() + w.dead_letters.size() > 0 || changed) && !deliver(w, 0, {})) return;
        continue;
      }
      if (batch.status().code() == Status::Code::kClosed) return;
      note_error("poll: " + batch.status().to_string());  // storage trouble: retry later
      if (!pause(options_.retry.max_backoff)) return;
      continue;
    }
    const std::size_t input = batch->input;
    const std::span<const Event> events = batch->events;
    std::size_t begin = 0;
    while (begin < events.size()) {
      std::size_t end = begin;
      bool stopped = false;
      while (end < events.size()) {
        std::optional<std::string> first_error;
        if (fast) first_error = attempt(w, [&] { call_fn(w, events[end]); });
        const bool done = fast && !first_error;
        if (!done && !handle(w, input, events[end], std::move(first_error))) {
          stopped = true;
          break;
        }
        // A stop during a due result's retries leaves the state ahead of
        // what could be acked: deliver nothing, the events come again.
        if (w.table && !settle_due(w)) return;
        ++end;
        if (chunk_full()) break;
      }
      processed_.fetch_add(end - begin, std::memory_order_relaxed);  // one RMW per chunk, not per event
      if (end > begin && !deliver(w, input, events.subspan(begin, end - begin))) return;
      if (stopped) return;  // the rest stays unacked: delivered again next time
      begin = end;
    }
  }
}

Result<Stage::Polled> Stage::poll(Worker& w) {
  if (inputs_.size() == 1) {
    Result<std::span<const Event>> b = w.consumer.poll_batch(options_.max_batch, pipeline_.idle_poll);
    if (!b.ok()) return b.status();
    return Polled{0, *b};
  }
  Result<TopicBatch> b = w.multi.poll_batch(options_.max_batch, pipeline_.idle_poll);
  if (!b.ok()) return b.status();
  std::size_t input = 0;
  while (input + 1 < input_names_.size() && input_names_[input] != b->topic) ++input;
  return Polled{input, b->events};
}

Status Stage::ack(Worker& w, std::size_t input, const Event& e) {
  if (inputs_.size() == 1) return w.consumer.ack(e);
  return w.multi.ack(input_names_[input], e);
}

Status Stage::batch_ack(Worker& w, std::size_t input, const Event& e) {
  if (inputs_.size() == 1) return w.batch.ack(w.consumer, e);
  return w.batch.ack(w.multi, input_names_[input], e);
}

template <class Call>
std::optional<std::string> Stage::attempt(Worker& w, Call&& call) {
  const std::size_t mark = w.outputs.mark();
  std::optional<std::string> failed = user_code_threw(call);
  if (!failed && !w.outputs.fits_since(mark)) failed = std::string(w.outputs.check_since(mark).message());
  if (failed) w.outputs.rollback(mark);
  return failed;
}

void Stage::call_fn(Worker& w, const Event& e) {
  if (kind_ == StageKind::kTransform) {
    std::get<TransformFn>(fn_)(e, w.outputs);
  } else {
    std::get<SinkFn>(fn_)(e);
  }
}

template <class Call>
std::optional<std::string> Stage::with_retries(Worker& w, Call&& call, std::uint32_t& attempts, bool& stopped,
                                               std::optional<std::string> first_error) {
  std::optional<std::string> threw;
  for (attempts = 1;; ++attempts) {
    // The first attempt may have been run_reader's.
    threw = attempts == 1 && first_error ? std::move(first_error) : attempt(w, call);
    if (!threw) return threw;
    if (attempts > options_.retry.max_retries) return threw;
    retried_.fetch_add(1, std::memory_order_relaxed);
    if (!pause(backoff(attempts - 1))) {
      stopped = true;
      return threw;
    }
  }
}

bool Stage::handle(Worker& w, std::size_t input, const Event& e, std::optional<std::string> first_error) {
  StageState::Verdict verdict = StageState::Verdict::kTaken;
  std::string reason;
  std::uint32_t attempts = 0;
  bool stopped = false;
  const std::optional<std::string> threw = with_retries(w, [&] {
    if (w.table) {
      verdict = w.table->add(input, e, w.outputs, reason);
    } else {
      call_fn(w, e);
    }
  }, attempts, stopped, std::move(first_error));
  if (stopped) return false;
  if (threw) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    note_error(*threw);
    if (dead_letter_) dead_letter(w, input, e, *threw, attempts);
    return true;
  }
  switch (verdict) {
    case StageState::Verdict::kTaken:
      if (w.table) w.table->commit(w.dead_letters);
      return true;
    case StageState::Verdict::kLate:
      late_.fetch_add(1, std::memory_order_relaxed);
      if (dead_letter_ && state_->dead_letter_late()) dead_letter(w, input, e, "late event", 1);
      return true;
    case StageState::Verdict::kRejected:
      errors_.fetch_add(1, std::memory_order_relaxed);
      note_error(reason);
      if (dead_letter_) dead_letter(w, input, e, reason, 1);
      return true;
  }
  return true;
}

bool Stage::settle_due(Worker& w) {
  while (w.table->due()) {
    std::uint32_t attempts = 0;
    bool stopped = false;
    const std::optional<std::string> threw = with_retries(w, [&] { w.table->emit_due(w.outputs); }, attempts, stopped);
    if (stopped) return false;
    if (threw) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      note_error(*threw);
      if (dead_letter_) {
        DueItem item = w.table->describe_due();
        nlohmann::json info = {{"reason", *threw}, {"stage", name_}, {"attempts", attempts}};
        info.update(item.info);
        emit_dead_letter(w.dead_letters, item.key, {}, item.data, std::move(info));
      }
    }
    w.table->finish_due();
  }
  return true;
}

void Stage::dead_letter(Worker& w, std::size_t input, const Event& e, const std::string& reason, std::uint32_t attempts) {
  nlohmann::json info = {{"reason", reason},
                         {"stage", name_},
                         {"topic", input_names_[input]},
                         {"partition", e.partition()},
                         {"offset", e.offset()},
                         {"attempts", attempts}};
  // It must fit the dead-letter topic: a publish refused there would end the stage.
  emit_dead_letter(w.dead_letters, e.key(), e.metadata(), e.data(), std::move(info));
}

bool Stage::publish_all(Producer& p, std::span<const Message> messages) {
  std::size_t done = 0;
  while (done < messages.size()) {
    Result<std::size_t> n = p.publish_batch(messages.subspan(done), pipeline_.idle_poll);
    if (n.ok()) {
      done += *n;
      continue;
    }
    const Status::Code code = n.status().code();
    if (code == Status::Code::kTimedOut || code == Status::Code::kFull) {
      if (give_up_publishing()) return false;  // input stays unacked
      continue;
    }
    if (code != Status::Code::kClosed) note_error("publish: " + n.status().to_string());
    return false;
  }
  return true;
}

bool Stage::deliver(Worker& w, std::size_t input, std::span<const Event> handled) {
  const std::size_t outputs = w.outputs.size(), dead = w.dead_letters.size();
  if (use_batch_) {
    w.batch.clear();
    auto into_batch = [&](const Topic& t, Emitter& emitter) {
      for (const Message& m : emitter.messages()) {
        if (Status s = w.batch.publish(t, m); !s.ok()) {
          note_error("write batch to '" + t.name() + "': " + s.to_string());
          return false;
        }
      }
      return true;
    };
    // Memory-only targets are published before the commit.
    auto add = [&](const Topic& t, Producer& p, Emitter& emitter) {
      if (emitter.size() == 0) return true;
      return batchable(t) ? into_batch(t, emitter) : publish_all(p, emitter.messages());
    };
    if (output_ && !add(*output_, w.out, w.outputs)) return false;
    if (dead_letter_ && !add(*dead_letter_, w.dead, w.dead_letters)) return false;
    if (changelog_) {
      w.changes.clear();
      w.table->take_changes(w.changes);
      if (!into_batch(*changelog_, w.changes)) return false;
    }
    if (!handled.empty()) {
      if (Status s = batch_ack(w, input, handled.back()); !s.ok()) {
        if (s.code() != Status::Code::kClosed) note_error("ack: " + s.to_string());
        return false;
      }
    }
    for (std::uint32_t attempt = 0; !w.batch.empty(); ++attempt) {
      Status s = bus_.commit(w.batch);
      if (s.ok()) break;
      note_error("commit: " + s.to_string());
      const Status::Code code = s.code();
      if (code == Status::Code::kClosed || code == Status::Code::kInvalidArgument) return false;
      if (!pause(backoff(attempt))) return false;
    }
  } else {
    if (outputs && !publish_all(w.out, w.outputs.messages())) return false;
    if (dead && !publish_all(w.dead, w.dead_letters.messages())) return false;
    if (!handled.empty()) {
      if (individual_acks_) {
        for (const Event& e : handled) {
          if (!ack(w, input, e).ok()) return false;
        }
      } else if (!ack(w, input, handled.back()).ok()) {
        return false;
      }
    }
  }
  emitted_.fetch_add(outputs, std::memory_order_relaxed);
  dead_lettered_.fetch_add(dead, std::memory_order_relaxed);
  w.outputs.clear();
  w.dead_letters.clear();
  return true;
}

bool Stage::drained(const Worker& w) const {
  if (std::chrono::steady_clock::now() >= drain_deadline_) return true;
  for (std::size_t i = 0; i < inputs_.size(); ++i) {
    Result<std::vector<std::uint64_t>> at = inputs_[i].positions(consumer_name());
    if (!at.ok()) continue;
    auto behind = [&](std::uint32_t p) {
      const std::uint64_t next = (*at)[p] == Topic::kNotRead ? 0 : (*at)[p];
      return next < drain_target_[i][p];
    };
    // One worker reads every partition of every input (inputs of a
    // one-thread join may differ in partitions); several read their share
    // of co-partitioned inputs.
    const std::size_t parts = std::min(drain_target_[i].size(), at->size());
    if (workers_.size() == 1) {
      for (std::uint32_t p = 0; p < parts; ++p) {
        if (behind(p)) return false;
      }
    } else {
      for (std::uint32_t p : w.partitions) {
        if (p < parts && behind(p)) return false;
      }
    }
  }
  return true;
}

std::chrono::nanoseconds Stage::backoff(std::uint32_t attempt) const {
  const auto grown = options_.retry.backoff * (std::uint64_t{1} << std::min(attempt, 20u));
  return std::min<std::chrono::nanoseconds>(options_.retry.max_backoff, grown);
}

bool Stage::pause(std::chrono::nanoseconds d) {
  std::unique_lock<std::mutex> lock(pause_mu_);
  pause_cv_.wait_for(lock, d, [&] { return stopping(); });
  return !stopping();
}

void Stage::note_error(const std::string& what) {
  std::lock_guard<std::mutex> lock(error_mu_);
  last_error_ = what;
}

void Stage::ended_early() {
  if (stopping()) return;  // a stop, not a failure
  {
    std::lock_guard<std::mutex> lock(error_mu_);
    // Closed paths note nothing on their own (they are also how a stop
    // ends), so the last error may or may not be the cause.
    last_error_ = "stage ended (a topic closed or deleted, or a publish refused); last error: " +
                  (last_error_.empty() ? std::string("none") : last_error_);
  }
  ended_early_.store(true, std::memory_order_release);
}

std::uint64_t Stage::lag() const {
  std::uint64_t n = 0;
  for (const Topic& t : inputs_) {
    Result<std::uint64_t> lag = t.lag(consumer_name());
    if (lag.ok()) n += *lag;
  }
  return n;
}

bool Stage::idle() const {
  if (kind_ == StageKind::kSource) return finished();
  return lag() == 0;
}

std::uint64_t Stage::published() const {
  std::uint64_t n = 0;
  for (const Topic& t : inputs_) {
    for (const PartitionStats& p : t.stats()) n += p.next_offset;
  }
  if (output_) {
    for (const PartitionStats& p : output_->stats()) n += p.next_offset;
  }
  return n;
}

StageStats Stage::stats() const {
  StageStats s;
  s.name = name_;
  s.kind = kind_;
  s.inputs = input_names_;
  s.input = input_names_.empty() ? std::string() : input_names_[0];
  s.output = options_.output;
  s.running = running();
  s.exactly_once = exactly_once_;
  s.processed = processed_.load(std::memory_order_relaxed);
  s.emitted = emitted_.load(std::memory_order_relaxed);
  s.errors = errors_.load(std::memory_order_relaxed);
  s.retried = retried_.load(std::memory_order_relaxed);
  s.dead_lettered = dead_lettered_.load(std::memory_order_relaxed);
  s.late = late_.load(std::memory_order_relaxed);
  s.lag = lag();
  if (started_.load(std::memory_order_acquire)) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at_).count();
    if (secs > 0) s.events_per_second = double(s.processed) / secs;
  }
  std::lock_guard<std::mutex> lock(error_mu_);
  s.last_error = last_error_;
  return s;
}

}  // namespace rill::detail

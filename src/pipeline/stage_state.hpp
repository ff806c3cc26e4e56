// StageState: the keyed state a stage thread keeps between events — window
// tables and join tables — behind one interface, so the stage's loop,
// delivery and durability (a changelog topic committed with the outputs
// and input acks) are written once.
//
// Not thread-safe: each stage thread owns one. Calls throw what the user's
// functions throw; the stage retries or dead-letters the event.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "rill/json.hpp"
#include "rill/pipeline.hpp"

namespace rill::detail {

// Event time as a stateful stage sees it: the largest event time seen in
// each input partition, and the stream's time, the smallest of those (so a
// partition whose batches come later holds the stream back rather than
// making its events late). kNone before any event.
class PartitionClock {
 public:
  static constexpr std::int64_t kNone = std::numeric_limits<std::int64_t>::min();
  // The largest time seen in partition p (kNone: none yet).
  std::int64_t seen(std::uint32_t p) const noexcept {
    auto it = max_.find(p);
    return it == max_.end() ? kNone : it->second;
  }
  // The stream's time if partition p's largest time were t.
  std::int64_t low_with(std::uint32_t p, std::int64_t t) const noexcept {
    std::int64_t low = t;
    for (const auto& [partition, max] : max_) {
      if (partition != p) low = std::min(low, max);
    }
    return low;
  }
  std::int64_t low() const noexcept { return max_.empty() ? kNone : low_with(max_.begin()->first, max_.begin()->second); }
  void raise(std::uint32_t p, std::int64_t t) {
    if (t == kNone) return;
    auto [it, fresh] = max_.emplace(p, t);
    if (!fresh) it->second = std::max(it->second, t);
  }

 private:
  std::map<std::uint32_t, std::int64_t> max_;
};

// Whether a changelog record's input partition is one a stage thread reads.
inline bool mine(std::uint32_t partition, const std::vector<std::uint32_t>& partitions) {
  return std::find(partitions.begin(), partitions.end(), partition) != partitions.end();
}

// A result a state owes outside any one event (a window the watermark
// passed, a window join's unmatched event whose window closed), described
// for a dead letter when it cannot be emitted.
struct DueItem {
  std::string key;
  nlohmann::json info = nlohmann::json::object();  // what it is: window bounds, join side, ...
  std::string data;     // its state's bytes, when the state can say them
};

// The stage drives a state transactionally:
//   add(e) -> [the stage checks the outputs fit the output topic] -> commit()
// then settles what became due, one item at a time, each in its own retry
// frame: emit_due() -> finish_due(), or a dead letter -> finish_due(). So a
// user function that throws, or an output the topic refuses, loses neither
// the state nor an event's place, and one failing window fails only itself.
class StageState {
 public:
  enum class Verdict : std::uint8_t {
    kTaken,     // handled: its outputs, if any, are in `out`; commit() applies it
    kLate,      // too late for any open window: counted (StageStats::late)
    kRejected,  // refused by the state's policy: a failure with `reason`
  };
  virtual ~StageState() = default;

  // One event of input `input` (an index into the stage's inputs). Changes
  // nothing: emits the event's outputs into `out` and keeps its change for
  // commit(); the next add() drops a change not committed (a failed
  // attempt). kLate and kRejected emit nothing. Throws what the user's
  // functions throw.
  virtual Verdict add(std::size_t input, const Event& e, Emitter& out, std::string& reason) = 0;
  // Applies the change of the last add() (which returned kTaken). Entries
  // it pushes out (a full join table) go to `expired`, dead letters for
  // the stage. Does not throw (user code it calls is contained).
  virtual void commit(Emitter& expired) = 0;

  // Results owed outside any one event, oldest first.
  virtual bool due() const { return false; }
  // Emits the first due result into `out`; throws what the user's function
  // throws, and then the item stays due.
  virtual void emit_due(Emitter& out) { (void)out; }
  // The first due item, for a dead letter.
  virtual DueItem describe_due() const { return {}; }
  // Forgets the first due item (emitted, or dead-lettered).
  virtual void finish_due() {}

  // Time passes (each batch, and when the input is idle): expiries go to
  // `out` or `expired` (events for the dead-letter topic).
  virtual void tick(std::int64_t now_ns, Emitter& out, Emitter& expired) {
    (void)now_ns, (void)out, (void)expired;
  }

  // Durable state (the stage keeps a changelog topic).
  virtual std::size_t pending_changes() const noexcept = 0;
  // Appends a changelog record per entry changed since the last call.
  virtual void take_changes(Emitter& changelog) = 0;
  // Applies one changelog record when its partition is in `partitions`.
  // Fails: Corruption.
  virtual Status restore(std::string_view key, std::string_view data, const std::vector<std::uint32_t>& partitions) = 0;
  virtual void finish_restore() {}
};

// What a stateful stage is made of: checks and a factory per thread.
class StateSpec {
 public:
  virtual ~StateSpec() = default;
  // Ok when the spec is usable; `inputs` is the stage's input count.
  virtual Status validate(std::size_t inputs) const = 0;
  // Whether the state can be written to a changelog (encode/decode given).
  virtual bool persistable() const = 0;
  // Late and rejected events go to the dead-letter topic (when the stage
  // has one) rather than only being counted.
  virtual bool dead_letter_late() const { return false; }
  // durable: the stage will call take_changes().
  virtual std::unique_ptr<StageState> make(bool durable) const = 0;
};

}  // namespace rill::detail

// WindowTable: one stage thread's open windows (key x window start -> state)
// and its watermark, for Pipeline::window.
//
// The watermark is the smallest, over the input partitions that have
// delivered events, of the largest event time seen in that partition, minus
// the allowed lateness: a partition that is behind (its batches came later)
// holds windows open rather than making its events late.
//
// Not thread-safe: each stage thread owns one (its partitions' keys).
// Allocates: a state and a key copy per new window, none per event.
#pragma once

#include <any>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pipeline/stage_state.hpp"
#include "rill/pipeline.hpp"

namespace rill::detail {

class WindowTable final : public StageState {
 public:
  // REQUIRES: fns outlives the table; size > 0, 0 <= hop <= size.
  // track_changes: the state is durable (take_changes is called).
  WindowTable(const WindowFns& fns, bool track_changes);

  // Aggregates the event into each of its windows still open (on copies:
  // commit() keeps them and raises the event's partition clock). Returns
  // kLate when every window of the event is already closed. Throws what the
  // user's init/aggregate throw.
  Verdict add(std::size_t input, const Event& e, Emitter& out, std::string& reason) override;
  void commit(Emitter& expired) override;
  // Due: the (window, key) pairs the watermark has passed, oldest window
  // first; emit_due calls the user's emit for the first one.
  bool due() const override;
  void emit_due(Emitter& out) override;
  DueItem describe_due() const override;
  void finish_due() override;

  // Durable state: appends a changelog record (key, data) for every window
  // changed since the last call, and forgets the changes.
  void take_changes(Emitter& changelog) override;
  // Durable state: applies one changelog record (later records win) when
  // its partition is among `partitions`; finish_restore() then drops the
  // windows the restored watermark had closed (their results were
  // committed with it). Fails: Corruption (a malformed record).
  Status restore(std::string_view key, std::string_view data, const std::vector<std::uint32_t>& partitions) override;
  void finish_restore() override;

  std::size_t pending_changes() const noexcept override { return changed_.size(); }
  std::size_t open_windows() const noexcept;
  std::int64_t watermark() const noexcept;

 private:
  struct Entry {
    std::any state;
    std::uint32_t partition = 0;
  };
  using Keys = std::map<std::string, Entry, std::less<>>;

  const WindowFns& fns_;
  const bool track_changes_;
  const std::int64_t size_ns_, hop_ns_, lateness_ns_;
  PartitionClock clock_;  // the watermark is its time minus the lateness
  // The watermark for a stream time (kNone stays kNone).
  std::int64_t watermark_at(std::int64_t stream_time) const noexcept;
  std::map<std::int64_t, Keys> windows_;  // by start; equal sizes, so also by end
  std::set<std::pair<std::int64_t, std::string>, std::less<>> changed_;
  // The last add(): its key, partition and time, and its windows' new states.
  struct Staged {
    std::string key;
    std::uint32_t partition = 0;
    std::int64_t max_time = 0;
    std::vector<std::pair<std::int64_t, std::any>> windows;  // start -> state
  } staged_;
};

// Pipeline::window's spec: a WindowTable per stage thread.
class WindowSpec final : public StateSpec {
 public:
  explicit WindowSpec(WindowFns fns) : fns_(std::move(fns)) {}
  Status validate(std::size_t inputs) const override;
  bool persistable() const override { return fns_.encode && fns_.decode; }
  bool dead_letter_late() const override { return fns_.options.dead_letter_late; }
  std::unique_ptr<StageState> make(bool durable) const override { return std::make_unique<WindowTable>(fns_, durable); }

 private:
  WindowFns fns_;
};

}  // namespace rill::detail

// StreamJoinState: a windowed stream-stream join's buffers (rill/join.hpp,
// WindowJoin): per key, the left and right events still joinable, and an
// index of when each one's window closes.
//
// Not thread-safe: one per stage thread. Allocates: map nodes per buffered
// event (its bytes are kept inline or shared, not copied).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "pipeline/join_table.hpp"
#include "pipeline/stage_state.hpp"
#include "rill/join.hpp"

namespace rill::detail {

class StreamJoinState final : public StageState {
 public:
  // REQUIRES: join outlives the state.
  StreamJoinState(const WindowJoin& join, bool track_changes);

  // Emits the event's matches; commit() buffers it (and marks what it
  // matched). Due: buffered events whose window the stream time closed,
  // in closing order; emit_due emits one unmatched as the kind says.
  Verdict add(std::size_t input, const Event& e, Emitter& out, std::string& reason) override;
  void commit(Emitter& expired) override;
  bool due() const override;
  void emit_due(Emitter& out) override;
  DueItem describe_due() const override;
  void finish_due() override;
  std::size_t pending_changes() const noexcept override { return changed_.size(); }
  void take_changes(Emitter& changelog) override;
  Status restore(std::string_view key, std::string_view data, const std::vector<std::uint32_t>& partitions) override;
  void finish_restore() override;

 private:
  struct Item {
    std::int64_t t = 0;
    bool matched = false;
    Event event;  // small events inline, large ones share their block
  };
  struct Buffers {
    std::map<std::uint64_t, Item> side[2];  // by arrival sequence: 0 left, 1 right
    std::uint32_t partition = 0;
  };
  // When an item of `side` at time t stops being joinable.
  std::int64_t closes_at(int side, std::int64_t t) const noexcept;
  void emit(std::string_view key, const Event* left, const Event* right, Emitter& out) const;
  const Item& first_due() const;

  const WindowJoin& join_;
  const bool track_changes_;
  const std::int64_t before_, after_, grace_;
  std::map<std::string, Buffers, std::less<>> keys_;
  PartitionClock clock_;
  std::multimap<std::int64_t, std::tuple<std::string, int, std::uint64_t>> closing_;  // close time -> item
  std::uint64_t next_seq_ = 0;
  ChangedKeys changed_;
  // The last add(), for commit().
  struct Staged {
    bool active = false;
    int side = 0;
    std::int64_t t = 0, max_time = 0;
    Event event;
    std::vector<std::uint64_t> matched;  // sequences on the other side
  } staged_;
};

class StreamJoinSpec final : public StateSpec {
 public:
  explicit StreamJoinSpec(WindowJoin join) : join_(std::move(join)) {}
  Status validate(std::size_t inputs) const override;
  bool persistable() const override { return true; }
  bool dead_letter_late() const override { return join_.dead_letter_late; }
  std::unique_ptr<StageState> make(bool durable) const override {
    return std::make_unique<StreamJoinState>(join_, durable);
  }

 private:
  WindowJoin join_;
};

}  // namespace rill::detail

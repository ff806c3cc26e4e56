// Join tables: the keyed state of join stages.
//
// JoinTable runs a JoinFns (accumulate and key-matching joins): per key a
// partial, its creation time and input partition, in creation order for
// expiry and eviction. TableJoinState keeps a table topic's latest value
// per key for stream-table joins. Both implement StageState, so the stage
// persists them through its changelog like window tables.
//
// Not thread-safe: one per stage thread. Allocates: a key copy and a
// partial per new entry.
#pragma once

#include <any>
#include <cstdint>
#include <cstring>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "pipeline/stage_state.hpp"
#include "rill/join.hpp"
#include "rill/pipeline.hpp"

namespace rill::detail {

// Changelog helpers shared by the join states.
// Every join changelog record starts with whether its entry is present
// (absent: removed) and the entry's input partition.
// Fixed-size fields of the records, in native byte order (a changelog is
// read back by the build that wrote it); get_field advances `in` (false:
// cut short).
template <class T>
void put_field(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
template <class T>
bool get_field(std::string_view& in, T& v) {
  if (in.size() < sizeof(T)) return false;
  std::memcpy(&v, in.data(), sizeof(T));
  in.remove_prefix(sizeof(T));
  return true;
}
void begin_record(std::string& out, bool present, std::uint32_t partition);
bool read_record_head(std::string_view& in, bool& present, std::uint32_t& partition);
// An event as bytes (key, metadata, data, id, timestamp), appended to
// `out`; read_event rebuilds one and advances `in` (false: malformed).
void append_event(std::string& out, const Event& e);
bool read_event(std::string_view& in, Event& e);

// Keys changed since the last changelog emit, with their input partition.
using ChangedKeys = std::map<std::string, std::uint32_t, std::less<>>;
// Emits one changelog record per changed key — the record head, then what
// `body(data, partition, entry)` appends (entry: the key's value in
// `table`, null when it was removed) — and forgets the changes.
template <class Table, class Body>
void emit_changes(ChangedKeys& changed, const Table& table, Emitter& changelog, Body&& body) {
  std::string data;
  for (const auto& [key, partition] : changed) {
    auto it = table.find(key);
    const bool present = it != table.end();
    begin_record(data, present, partition);
    body(data, partition, present ? &it->second : nullptr);
    changelog.emit(Message{key, {}, data, {}, std::int64_t(partition)});
  }
  changed.clear();
}

class JoinTable final : public StageState {
 public:
  // REQUIRES: fns outlives the table.
  JoinTable(const JoinFns& fns, bool track_changes, bool dead_letters, std::string stage);

  // merge and fire run on a copy of the key's partial; commit() keeps it
  // (or erases a completed entry, or adds a new key, evicting the oldest
  // from a full table). A full kRejectNew table refuses a new key before
  // any user code runs.
  Verdict add(std::size_t input, const Event& e, Emitter& out, std::string& reason) override;
  void commit(Emitter& expired) override;
  void tick(std::int64_t now_ns, Emitter& out, Emitter& expired) override;
  std::size_t pending_changes() const noexcept override { return changed_.size(); }
  void take_changes(Emitter& changelog) override;
  Status restore(std::string_view key, std::string_view data, const std::vector<std::uint32_t>& partitions) override;
  void finish_restore() override;

  std::size_t entries() const noexcept { return entries_.size(); }

 private:
  struct Entry {
    std::any partial;
    std::int64_t created_ns = 0;
    std::uint32_t partition = 0;
    std::list<const std::string*>::iterator age;  // into by_age_ (when aged_)
  };
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  using Entries = std::unordered_map<std::string, Entry, Hash, std::equal_to<>>;

  // Removes an entry that leaves incomplete: incomplete() and a dead letter.
  void leave(Entries::iterator it, const char* why, Emitter& expired);
  void erase(Entries::iterator it);

  const JoinFns& fns_;
  const bool track_changes_, dead_letters_;
  const bool aged_;  // a TTL or a bound: entries are kept in creation order
  const std::string stage_;
  Entries entries_;
  std::list<const std::string*> by_age_;  // entries_' keys (stable in its nodes), oldest first
  ChangedKeys changed_;  // key -> partition, since take_changes
  // The last add(), for commit().
  struct Staged {
    bool active = false;
    Entries::iterator entry;  // the key's entry, or end(): a new key
    std::string key;          // a new key
    std::any partial;
    std::uint32_t partition = 0;
    bool done = false;  // fired and finished: the entry goes
  } staged_;
};

class JoinSpec final : public StateSpec {
 public:
  JoinSpec(JoinFns fns, std::string stage, bool dead_letters)
      : fns_(std::move(fns)), stage_(std::move(stage)), dead_letters_(dead_letters) {}
  Status validate(std::size_t inputs) const override;
  bool persistable() const override { return fns_.encode && fns_.decode; }
  std::unique_ptr<StageState> make(bool durable) const override {
    return std::make_unique<JoinTable>(fns_, durable, dead_letters_, stage_);
  }

 private:
  JoinFns fns_;
  std::string stage_;
  bool dead_letters_;
};

// The JoinFns of a key-matching join over `inputs` topics.
JoinFns key_match_fns(KeyMatchJoin join, std::size_t inputs);

class TableJoinState final : public StageState {
 public:
  TableJoinState(const TableJoin& join, bool track_changes) : join_(join), track_changes_(track_changes) {}
  Verdict add(std::size_t input, const Event& e, Emitter& out, std::string& reason) override;
  void commit(Emitter& expired) override;
  std::size_t pending_changes() const noexcept override { return changed_.size(); }
  void take_changes(Emitter& changelog) override;
  Status restore(std::string_view key, std::string_view data, const std::vector<std::uint32_t>& partitions) override;

 private:
  struct Value {
    std::string bytes;
    std::uint32_t partition = 0;
  };
  const TableJoin& join_;
  const bool track_changes_;
  std::map<std::string, Value, std::less<>> table_;
  ChangedKeys changed_;
  std::optional<std::pair<std::string, Value>> staged_;  // the last add()'s table update
};

class TableJoinSpec final : public StateSpec {
 public:
  explicit TableJoinSpec(TableJoin join) : join_(std::move(join)) {}
  Status validate(std::size_t inputs) const override {
    return inputs == 2 ? Status::Ok() : Status::InvalidArgument("a stream-table join reads two topics: {stream, table}");
  }
  bool persistable() const override { return true; }
  std::unique_ptr<StageState> make(bool durable) const override { return std::make_unique<TableJoinState>(join_, durable); }

 private:
  TableJoin join_;
};

}  // namespace rill::detail

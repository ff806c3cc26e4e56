// rill/join.hpp — join operators as pipeline stages.
//
// A join stage reads several topics (StageOptions::inputs) under its name
// and keeps a table of partial results by key. It is a pipeline stage like
// any other: its threads, lifecycle, stats, retries and dead letters are the
// stage's; with durable inputs its table is durable (the topic
// "<stage>.changelog", committed in the same write batch as the outputs and
// the input acks), so a crash or restart resumes half-finished joins with
// nothing lost or repeated.
//
//   // seed 003: two slow workers' results joined back by thing_id
//   rill::AccumulateJoin<Parts> join{
//       .merge = [](Parts& p, std::size_t input, const rill::Event& e) { p.part[input] = e.data(); p.have |= 1u << input; },
//       .sufficient = [](const Parts& p) { return p.have == 3; },
//       .process = [](std::string_view id, const Parts& p, rill::Emitter& out) { out.emit(id, {}, merged(p)); }};
//   pipeline.accumulate_join("join", join, {.inputs = {"thing-one", "thing-two"}, .output = "merged"});
//
// Keys: by default an event's key; `key` may compute another. With several
// threads, or durable state, a key's events must land in the same partition
// index of every input (the default key-hash partitioning does that for
// topics of equal partition counts).
#pragma once

#include <any>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "rill/event.hpp"
#include "rill/status.hpp"

namespace rill {

class Emitter;  // rill/pipeline.hpp
struct Output;

// What a join table does when it holds max_entries keys and an event brings
// a new one.
enum class JoinOverflow : std::uint8_t {
  // The oldest entry leaves as incomplete (incomplete(), and the dead-letter
  // topic when the stage has one) to make room.
  kEvictOldest,
  // The event is refused: dead-lettered (or counted) as a failure.
  kRejectNew,
};

struct JoinLimits {
  // Entries older than this (since their first event, wall clock) leave as
  // incomplete. 0: never.
  std::chrono::milliseconds ttl{0};
  // Most keys held at once. 0: no bound.
  std::size_t max_entries = 0;
  JoinOverflow when_full = JoinOverflow::kEvictOldest;
};

// The faust_joins accumulate join: per key, partial = merge(partial, event)
// over events of any input until sufficient(partial); then process(key,
// partial) emits the results and the entry is done. merge and process run
// on a copy of the partial: when either throws, or process emits what the
// output topic refuses, the entry stays as it was and the event is retried
// (then dead-lettered).
template <class Partial>
struct AccumulateJoin {
  std::function<std::string(std::size_t input, const Event&)> key{};  // the join key of input i's event; empty: its key
  std::function<void(Partial&, std::size_t input, const Event&)> merge;
  std::function<bool(const Partial&)> sufficient;
  // Empty: one event with the key and encode(partial) as data.
  std::function<void(std::string_view key, const Partial&, Emitter&)> process{};
  // Called (on the stage's thread) for an entry that expires or is evicted.
  std::function<void(std::string_view key, const Partial&)> incomplete{};
  // Durable state and the default process: Partial to bytes and back.
  // Defaults for std::string and trivially copyable Partial.
  std::function<std::string(const Partial&)> encode{};
  std::function<Partial(std::string_view)> decode{};
  JoinLimits limits{};
};

// What a key-matching join does with a second event of a key on an input
// before that key matched on every input.
enum class OnDuplicate : std::uint8_t {
  kReplace,  // the newer event replaces the older
  kQueue,    // both wait; matches take the oldest of each input
  kReject,   // the newer event is refused (dead-lettered or counted)
};

// N-way key matching (as oneTBB's join_node<key_matching>): when every
// input (at most 64) has an event with the same key, one combined event is
// emitted.
struct KeyMatchJoin {
  std::function<std::string(std::size_t input, const Event&)> key{};  // the join key of input i's event; empty: its key
  OnDuplicate on_duplicate = OnDuplicate::kReplace;
  // The combined event; parts[i] came from input i (the events themselves:
  // no copy of their bytes). Empty: key, no metadata, data =
  // encode_tuple(the parts' data).
  std::function<void(std::string_view key, std::span<const Event> parts, Emitter&)> combine{};
  // An entry that expired or was evicted: parts[i] is null for an input
  // that had no event.
  std::function<void(std::string_view key, std::span<const Event* const> parts)> incomplete{};
  JoinLimits limits{};
};

// Stream-table join: inputs {stream, table}. The table topic is kept as
// the latest value per key (an event with empty data deletes its key);
// each stream event is enriched with its key's current value.
enum class TableJoinKind : std::uint8_t {
  kInner,  // stream events whose key has no value are dropped
  kLeft,   // they are emitted with no value
};
struct TableJoin {
  TableJoinKind kind = TableJoinKind::kInner;
  // Empty: the stream event's key and metadata, data = encode_tuple({stream
  // data, value}) (value empty when absent).
  std::function<void(const Event& stream, std::optional<std::string_view> value, Emitter&)> enrich{};
};

// Windowed stream-stream join (as Kafka Streams' JoinWindows): inputs
// {left, right}; a left event at time t and a right event at t' with the
// same key match when t - before <= t' <= t + after. Each match is emitted
// once, as soon as both are there. An event stays joinable until the
// stage's stream time (per input partition, its largest event time; the
// smallest over partitions) passes its window's end plus `grace`; then it
// is dropped — and, unmatched, emitted alone by kLeft (left events) and
// kOuter (both sides): when its window closes, never early. An unmatched
// result whose combine throws, or that the output refuses, is retried on
// its own, then dead-lettered ("side", "event_time_ns"; data: the event's)
// and dropped, failing no other event. An event arriving after its own
// window closed is late (counted, or dead-lettered with dead_letter_late).
enum class StreamJoinKind : std::uint8_t { kInner, kLeft, kOuter };
struct WindowJoin {
  StreamJoinKind kind = StreamJoinKind::kInner;
  std::chrono::milliseconds before{0};
  std::chrono::milliseconds after{0};
  std::chrono::milliseconds grace{0};
  // Event time in ns since the epoch; empty: the append timestamp.
  std::function<std::int64_t(const Event&)> event_time{};
  // A result: both parts, or one (the other null) for unmatched events.
  // Empty: the key, data = encode_tuple({left data, right data}) with an
  // absent side empty.
  std::function<void(std::string_view key, const Event* left, const Event* right, Emitter&)> combine{};
  bool dead_letter_late = false;
};

// A portable encoding of several byte strings in one event's data: for each
// part a 4-byte little-endian length, then its bytes.
std::string encode_tuple(std::span<const std::string_view> parts);
// Fails: Corruption (a length past the end).
Result<std::vector<std::string_view>> decode_tuple(std::string_view data);

namespace detail {
// A join with its types erased, as the stage runs it (see join_table.hpp).
struct JoinFns {
  std::function<std::string(std::size_t input, const Event&)> key;  // empty: the event's key
  std::function<std::any()> init;
  // Adds the event to the partial; returns an empty string, or why the
  // event is refused (the partial unchanged).
  std::function<std::string(std::any&, std::size_t input, const Event&)> merge;
  std::function<bool(const std::any&)> ready;
  // Emits a ready entry's results; true when the entry is done.
  std::function<bool(std::string_view key, std::any&, Emitter&)> fire;
  std::function<void(std::string_view key, const std::any&)> incomplete;  // may be empty
  std::function<std::string(const std::any&)> encode;                      // may be empty
  std::function<std::any(std::string_view)> decode;
  JoinLimits limits;
  std::size_t inputs = 0;  // 0: any number >= 2
};
// Encodes / decodes std::string and trivially copyable values.
template <class T>
void default_codec(std::function<std::string(const T&)>& encode, std::function<T(std::string_view)>& decode) {
  if (encode && decode) return;
  if constexpr (std::is_same_v<T, std::string>) {
    encode = [](const T& v) { return v; };
    decode = [](std::string_view b) { return T(b); };
  } else if constexpr (std::is_trivially_copyable_v<T>) {
    encode = [](const T& v) { return std::string(reinterpret_cast<const char*>(&v), sizeof(T)); };
    decode = [](std::string_view b) {
      T v{};
      if (b.size() != sizeof(T)) throw std::length_error("state of " + std::to_string(b.size()) + " bytes, expected " + std::to_string(sizeof(T)));
      std::memcpy(&v, b.data(), sizeof(T));
      return v;
    };
  }
}
}  // namespace detail

}  // namespace rill

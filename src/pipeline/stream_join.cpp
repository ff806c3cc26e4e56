#include "pipeline/stream_join.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "pipeline/join_table.hpp"
#include "rill/pipeline.hpp"

namespace rill::detail {

namespace {

std::int64_t ns(std::chrono::milliseconds d) { return std::chrono::nanoseconds(d).count(); }

}  // namespace

Status StreamJoinSpec::validate(std::size_t inputs) const {
  if (inputs != 2) return Status::InvalidArgument("a windowed stream-stream join reads two topics: {left, right}");
  if (join_.before.count() < 0 || join_.after.count() < 0 || join_.grace.count() < 0) {
    return Status::InvalidArgument("window join before, after and grace must be >= 0");
  }
  return Status::Ok();
}

StreamJoinState::StreamJoinState(const WindowJoin& join, bool track_changes)
    : join_(join), track_changes_(track_changes), before_(ns(join.before)), after_(ns(join.after)), grace_(ns(join.grace)) {}

std::int64_t StreamJoinState::closes_at(int side, std::int64_t t) const noexcept {
  return t + (side == 0 ? after_ : before_) + grace_;
}

void StreamJoinState::emit(std::string_view key, const Event* left, const Event* right, Emitter& out) const {
  if (join_.combine) {
    join_.combine(key, left, right, out);
    return;
  }
  const std::string_view parts[] = {left ? left->data() : std::string_view(), right ? right->data() : std::string_view()};
  out.emit(key, {}, encode_tuple(parts));
}

StageState::Verdict StreamJoinState::add(std::size_t input, const Event& e, Emitter& out, std::string&) {
  staged_.active = false;
  const int side = input == 0 ? 0 : 1;
  const std::int64_t t = join_.event_time ? join_.event_time(e) : e.timestamp_ns();
  const std::int64_t new_max = std::max(clock_.seen(e.partition()), t);
  const std::int64_t now = clock_.low_with(e.partition(), new_max);
  if (closes_at(side, t) < now) return Verdict::kLate;

  // The matches' outputs now; the buffers change at commit().
  staged_.matched.clear();
  if (auto key_it = keys_.find(e.key()); key_it != keys_.end()) {
    for (auto& [seq, other] : key_it->second.side[1 - side]) {
      const std::int64_t lt = side == 0 ? t : other.t, rt = side == 0 ? other.t : t;
      if (rt < lt - before_ || rt > lt + after_) continue;
      if (side == 0) {
        emit(e.key(), &e, &other.event, out);
      } else {
        emit(e.key(), &other.event, &e, out);
      }
      staged_.matched.push_back(seq);
    }
  }
  staged_.active = true;
  staged_.side = side;
  staged_.t = t;
  staged_.max_time = new_max;
  staged_.event = e;
  return Verdict::kTaken;
}

void StreamJoinState::commit(Emitter&) {
  if (!std::exchange(staged_.active, false)) return;
  const Event& e = staged_.event;
  const int side = staged_.side;
  clock_.raise(e.partition(), staged_.max_time);
  auto key_it = keys_.find(e.key());
  if (key_it == keys_.end()) {
    key_it = keys_.emplace(std::string(e.key()), Buffers{}).first;
    key_it->second.partition = e.partition();
  }
  for (std::uint64_t seq : staged_.matched) key_it->second.side[1 - side].at(seq).matched = true;
  const std::uint64_t seq = next_seq_++;
  key_it->second.side[side].emplace(seq, Item{staged_.t, !staged_.matched.empty(), std::move(staged_.event)});
  closing_.emplace(closes_at(side, staged_.t), std::make_tuple(key_it->first, side, seq));
  if (track_changes_) changed_.insert_or_assign(key_it->first, key_it->second.partition);
}

bool StreamJoinState::due() const { return !closing_.empty() && closing_.begin()->first < clock_.low(); }

const StreamJoinState::Item& StreamJoinState::first_due() const {
  const auto& [key, s, seq] = closing_.begin()->second;
  return keys_.find(key)->second.side[s].at(seq);
}

void StreamJoinState::emit_due(Emitter& out) {
  // An event whose window closed unmatched leaves as the join's kind says.
  const auto& [key, s, seq] = closing_.begin()->second;
  const Item& item = first_due();
  const bool alone = !item.matched && (join_.kind == StreamJoinKind::kOuter || (join_.kind == StreamJoinKind::kLeft && s == 0));
  if (alone) emit(key, s == 0 ? &item.event : nullptr, s == 1 ? &item.event : nullptr, out);
}

DueItem StreamJoinState::describe_due() const {
  const auto& [key, s, seq] = closing_.begin()->second;
  const Item& item = first_due();
  return DueItem{key, {{"side", s == 0 ? "left" : "right"}, {"event_time_ns", item.t}}, std::string(item.event.data())};
}

void StreamJoinState::finish_due() {
  auto c = closing_.begin();
  const auto& [key, s, seq] = c->second;
  auto k = keys_.find(key);
  k->second.side[s].erase(seq);
  if (track_changes_) changed_.insert_or_assign(key, k->second.partition);
  if (k->second.side[0].empty() && k->second.side[1].empty()) keys_.erase(k);
  closing_.erase(c);
}

void StreamJoinState::take_changes(Emitter& changelog) {
  emit_changes(changed_, keys_, changelog, [&](std::string& data, std::uint32_t partition, const auto* entry) {
    put_field(data, clock_.seen(partition));
    if (!entry) return;
    for (const auto& side : entry->side) {
      put_field(data, std::uint32_t(side.size()));
      for (const auto& [seq, item] : side) {
        put_field(data, seq);
        put_field(data, item.t);
        put_field(data, char(item.matched));
        append_event(data, item.event);
      }
    }
  });
}

Status StreamJoinState::restore(std::string_view key, std::string_view data, const std::vector<std::uint32_t>& partitions) {
  const Status bad = Status::Corruption("window-join changelog record for key '" + std::string(key) + "' is malformed");
  bool present = false;
  std::uint32_t partition = 0;
  std::int64_t max_time = 0;
  if (!read_record_head(data, present, partition) || !get_field(data, max_time)) return bad;
  if (!mine(partition, partitions)) return Status::Ok();
  clock_.raise(partition, max_time);
  if (!present) {
    if (auto it = keys_.find(key); it != keys_.end()) keys_.erase(it);
    return Status::Ok();
  }
  Buffers b;
  b.partition = partition;
  for (auto& side : b.side) {
    std::uint32_t n = 0;
    if (!get_field(data, n)) return bad;
    for (std::uint32_t i = 0; i < n; ++i) {
      std::uint64_t seq = 0;
      Item item;
      char matched = 0;
      if (!get_field(data, seq) || !get_field(data, item.t) || !get_field(data, matched) || !read_event(data, item.event)) return bad;
      item.matched = matched != 0;
      side.emplace(seq, std::move(item));
    }
  }
  keys_.insert_or_assign(std::string(key), std::move(b));
  return Status::Ok();
}

void StreamJoinState::finish_restore() {
  changed_.clear();
  closing_.clear();
  for (const auto& [key, b] : keys_) {
    for (int s = 0; s < 2; ++s) {
      for (const auto& [seq, item] : b.side[s]) {
        closing_.emplace(closes_at(s, item.t), std::make_tuple(key, s, seq));
        next_seq_ = std::max(next_seq_, seq + 1);
      }
    }
  }
}

}  // namespace rill::detail

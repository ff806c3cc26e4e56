#include "pipeline/join_table.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/clock.hpp"
#include "common/dead_letter.hpp"
#include "common/user_code.hpp"
#include "event/record_writer.hpp"

namespace rill {

std::string encode_tuple(std::span<const std::string_view> parts) {
  std::size_t size = 0;
  for (std::string_view p : parts) size += 4 + p.size();
  std::string out;
  out.reserve(size);
  for (std::string_view p : parts) {
    const std::uint32_t n = std::uint32_t(p.size());
    const char len[4] = {char(n & 0xff), char((n >> 8) & 0xff), char((n >> 16) & 0xff), char((n >> 24) & 0xff)};
    out.append(len, 4).append(p);
  }
  return out;
}

Result<std::vector<std::string_view>> decode_tuple(std::string_view data) {
  std::vector<std::string_view> parts;
  std::size_t at = 0;
  while (at < data.size()) {
    if (data.size() - at < 4) return Status::Corruption("tuple: a length cut short at byte " + std::to_string(at));
    const auto* b = reinterpret_cast<const unsigned char*>(data.data() + at);
    const std::size_t n = std::size_t(b[0]) | std::size_t(b[1]) << 8 | std::size_t(b[2]) << 16 | std::size_t(b[3]) << 24;
    at += 4;
    if (data.size() - at < n) return Status::Corruption("tuple: a part of " + std::to_string(n) + " bytes past the end");
    parts.push_back(data.substr(at, n));
    at += n;
  }
  return parts;
}

}  // namespace rill

namespace rill::detail {

namespace {

// Changelog records: a tag, then the entry's fields.
constexpr char kPresent = 'P', kRemoved = 'X';

}  // namespace

void begin_record(std::string& out, bool present, std::uint32_t partition) {
  out.clear();
  out += present ? kPresent : kRemoved;
  put_field(out, partition);
}

bool read_record_head(std::string_view& in, bool& present, std::uint32_t& partition) {
  char tag = 0;
  if (!get_field(in, tag) || !get_field(in, partition) || (tag != kPresent && tag != kRemoved)) return false;
  present = tag == kPresent;
  return true;
}

void append_event(std::string& out, const Event& e) {
  const std::string_view fields[] = {e.key(), e.metadata(), e.data()};
  const std::string tuple = encode_tuple(fields);
  const std::uint32_t size = std::uint32_t(tuple.size());
  const EventId id = e.id();
  const std::int64_t ts = e.timestamp_ns();
  put_field(out, size);
  out += tuple;
  put_field(out, id.partition);
  put_field(out, id.offset);
  put_field(out, ts);
}

bool read_event(std::string_view& in, Event& e) {
  std::uint32_t size = 0;
  if (!get_field(in, size) || in.size() < size) return false;
  Result<std::vector<std::string_view>> fields = decode_tuple(in.substr(0, size));
  in.remove_prefix(size);
  EventId id;
  std::int64_t ts = 0;
  if (!fields.ok() || fields->size() != 3 || !get_field(in, id.partition) || !get_field(in, id.offset) ||
      !get_field(in, ts)) {
    return false;
  }
  const Message m{(*fields)[0], (*fields)[1], (*fields)[2], {}, kAnyPartition};
  PreparedEvent prepared;
  if (!prepare_event(m, ~std::uint32_t{0}, prepared).ok()) return false;
  Event rebuilt;
  write_record(rebuilt.record(), prepared, ts);
  rebuilt.set_origin(id, 0);
  e = std::move(rebuilt);
  return true;
}

// ------------------------------------------------------------------ JoinTable

JoinTable::JoinTable(const JoinFns& fns, bool track_changes, bool dead_letters, std::string stage)
    : fns_(fns),
      track_changes_(track_changes),
      dead_letters_(dead_letters),
      aged_(fns.limits.ttl.count() > 0 || fns.limits.max_entries > 0),
      stage_(std::move(stage)) {}

StageState::Verdict JoinTable::add(std::size_t input, const Event& e, Emitter& out, std::string& reason) {
  staged_ = Staged{};
  std::string computed;
  if (fns_.key) computed = fns_.key(input, e);
  const std::string_view key = fns_.key ? std::string_view(computed) : e.key();
  // merge and fire run on a copy of the partial (a new one for a new key):
  // a throw leaves the table as it was, so the retry merges the event once.
  auto it = entries_.find(key);
  if (it == entries_.end() && fns_.limits.max_entries && entries_.size() >= fns_.limits.max_entries &&
      fns_.limits.when_full == JoinOverflow::kRejectNew) {
    reason = "join table full (" + std::to_string(entries_.size()) + " keys)";
    return Verdict::kRejected;
  }
  std::any partial = it == entries_.end() ? fns_.init() : it->second.partial;
  std::string refused = fns_.merge(partial, input, e);
  if (!refused.empty()) {
    reason = std::move(refused);
    return Verdict::kRejected;
  }
  bool done = false;
  while (!done && fns_.ready(partial)) done = fns_.fire(key, partial, out);
  staged_.active = true;
  staged_.entry = it;
  if (it == entries_.end()) staged_.key = fns_.key ? std::move(computed) : std::string(key);
  staged_.partial = std::move(partial);
  staged_.partition = e.partition();
  staged_.done = done;
  return Verdict::kTaken;
}

void JoinTable::commit(Emitter& expired) {
  if (!std::exchange(staged_.active, false)) return;
  auto it = staged_.entry;
  if (it != entries_.end()) {
    if (staged_.done) {
      erase(it);
    } else {
      it->second.partial = std::move(staged_.partial);
      if (track_changes_) changed_.insert_or_assign(it->first, it->second.partition);
    }
    return;
  }
  if (staged_.done) return;  // a new key that completed at once: never kept
  if (fns_.limits.max_entries && entries_.size() >= fns_.limits.max_entries) {
    leave(entries_.find(*by_age_.front()), "evicted: join table full", expired);
  }
  Entry entry{std::move(staged_.partial), now_ns(false), staged_.partition, {}};
  it = entries_.emplace(std::move(staged_.key), std::move(entry)).first;
  if (aged_) it->second.age = by_age_.insert(by_age_.end(), &it->first);
  if (track_changes_) changed_.insert_or_assign(it->first, it->second.partition);
}

void JoinTable::tick(std::int64_t now, Emitter&, Emitter& expired) {
  if (fns_.limits.ttl.count() <= 0) return;
  const std::int64_t ttl = std::chrono::nanoseconds(fns_.limits.ttl).count();
  while (!by_age_.empty()) {
    auto it = entries_.find(*by_age_.front());
    if (it->second.created_ns + ttl > now) break;
    leave(it, "join entry expired", expired);
  }
}

void JoinTable::leave(Entries::iterator it, const char* why, Emitter& expired) {
  if (fns_.incomplete) (void)user_code_threw([&] { fns_.incomplete(it->first, it->second.partial); });
  if (dead_letters_) {
    std::string data;
    if (fns_.encode) (void)user_code_threw([&] { data = fns_.encode(it->second.partial); });
    emit_dead_letter(expired, it->first, {}, data, {{"reason", why}, {"stage", stage_}});
  }
  erase(it);
}

void JoinTable::erase(Entries::iterator it) {
  if (track_changes_) changed_.insert_or_assign(it->first, it->second.partition);
  if (aged_) by_age_.erase(it->second.age);
  entries_.erase(it);
}

void JoinTable::take_changes(Emitter& changelog) {
  emit_changes(changed_, entries_, changelog, [&](std::string& data, std::uint32_t, const auto* entry) {
    if (!entry) return;
    put_field(data, entry->created_ns);
    data += fns_.encode(entry->partial);
  });
}

Status JoinTable::restore(std::string_view key, std::string_view data, const std::vector<std::uint32_t>& partitions) {
  bool present = false;
  std::uint32_t partition = 0;
  std::int64_t created = 0;
  if (!read_record_head(data, present, partition) || (present && !get_field(data, created))) {
    return Status::Corruption("join changelog record for key '" + std::string(key) + "' is malformed");
  }
  if (!mine(partition, partitions)) return Status::Ok();
  auto it = entries_.find(key);
  if (!present) {
    if (it != entries_.end()) erase(it);
    return Status::Ok();
  }
  if (it == entries_.end()) {
    it = entries_.emplace(std::string(key), Entry{}).first;
    if (aged_) it->second.age = by_age_.insert(by_age_.end(), &it->first);
  }
  it->second.partial = fns_.decode(data);
  it->second.created_ns = created;
  it->second.partition = partition;
  return Status::Ok();
}

void JoinTable::finish_restore() {
  changed_.clear();  // restoring is not a change
  by_age_.sort([&](const std::string* a, const std::string* b) {
    return entries_.find(*a)->second.created_ns < entries_.find(*b)->second.created_ns;
  });
  for (auto age = by_age_.begin(); age != by_age_.end(); ++age) entries_.find(**age)->second.age = age;
}

Status JoinSpec::validate(std::size_t inputs) const {
  if (inputs < 2) return Status::InvalidArgument("a join reads at least two topics (StageOptions::inputs)");
  if (inputs > 64) return Status::InvalidArgument("a join reads at most 64 topics");
  if (fns_.inputs && inputs != fns_.inputs) return Status::InvalidArgument("this join reads " + std::to_string(fns_.inputs) + " topics");
  return Status::Ok();
}

// ------------------------------------------------------------ key matching

namespace {

// A key-matching join's partial: per input, the event waiting for a match
// (heads[i], valid when bit i of `present` is set) and, under kQueue, the
// ones queued behind it. Events are kept as Events: small ones inline, large
// ones sharing their block, no copy of the bytes.
struct Slots {
  std::vector<Event> heads;
  std::uint64_t present = 0;
  std::vector<std::vector<Event>> queued;  // empty until something queues
};

std::string encode_slots(const Slots& s) {
  std::string out;
  const std::uint32_t inputs = std::uint32_t(s.heads.size());
  put_field(out, inputs);
  for (std::uint32_t i = 0; i < inputs; ++i) {
    const std::uint32_t queued = s.queued.empty() ? 0 : std::uint32_t(s.queued[i].size());
    const std::uint32_t n = (s.present >> i & 1) ? 1 + queued : 0;
    put_field(out, n);
    if (n == 0) continue;
    append_event(out, s.heads[i]);
    for (std::uint32_t q = 0; q < queued; ++q) append_event(out, s.queued[i][q]);
  }
  return out;
}

Slots decode_slots(std::string_view in) {
  Slots s;
  std::uint32_t inputs = 0;
  if (!get_field(in, inputs) || inputs > 64) throw std::runtime_error("key-match state malformed");
  s.heads.resize(inputs);
  for (std::uint32_t i = 0; i < inputs; ++i) {
    std::uint32_t n = 0;
    if (!get_field(in, n)) throw std::runtime_error("key-match state cut short");
    for (std::uint32_t k = 0; k < n; ++k) {
      Event e;
      if (!read_event(in, e)) throw std::runtime_error("key-match state malformed");
      if (k == 0) {
        s.heads[i] = std::move(e);
        s.present |= std::uint64_t{1} << i;
      } else {
        if (s.queued.empty()) s.queued.resize(inputs);
        s.queued[i].push_back(std::move(e));
      }
    }
  }
  return s;
}

}  // namespace

JoinFns key_match_fns(KeyMatchJoin join, std::size_t inputs) {
  JoinFns fns;
  fns.inputs = inputs;
  fns.key = std::move(join.key);
  fns.limits = join.limits;
  fns.init = [inputs] { return std::any(Slots{std::vector<Event>(inputs), 0, {}}); };
  fns.merge = [policy = join.on_duplicate, inputs](std::any& a, std::size_t input, const Event& e) -> std::string {
    Slots& s = *std::any_cast<Slots>(&a);
    const std::uint64_t bit = std::uint64_t{1} << input;
    if (s.present & bit) {
      if (policy == OnDuplicate::kReject) return "duplicate key on input " + std::to_string(input) + " before a match";
      if (policy == OnDuplicate::kQueue) {
        if (s.queued.empty()) s.queued.resize(inputs);
        s.queued[input].push_back(e);
        return {};
      }
    }
    s.heads[input] = e;  // new, or kReplace
    s.present |= bit;
    return {};
  };
  const std::uint64_t all = inputs >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << inputs) - 1;
  fns.ready = [all](const std::any& a) { return std::any_cast<Slots>(&a)->present == all; };
  fns.fire = [combine = std::move(join.combine)](std::string_view key, std::any& a, Emitter& out) {
    Slots& s = *std::any_cast<Slots>(&a);
    if (combine) {
      combine(key, s.heads, out);
    } else {
      std::vector<std::string_view> data;
      data.reserve(s.heads.size());
      for (const Event& e : s.heads) data.push_back(e.data());
      out.emit(key, {}, encode_tuple(data));
    }
    for (std::size_t i = 0; i < s.heads.size(); ++i) {
      if (!s.queued.empty() && !s.queued[i].empty()) {
        s.heads[i] = std::move(s.queued[i].front());
        s.queued[i].erase(s.queued[i].begin());
      } else {
        s.heads[i] = Event();  // lets a shared block go
        s.present &= ~(std::uint64_t{1} << i);
      }
    }
    return s.present == 0;
  };
  if (join.incomplete) {
    fns.incomplete = [f = std::move(join.incomplete)](std::string_view key, const std::any& a) {
      const Slots& s = *std::any_cast<Slots>(&a);
      std::vector<const Event*> parts;
      for (std::size_t i = 0; i < s.heads.size(); ++i) parts.push_back((s.present >> i & 1) ? &s.heads[i] : nullptr);
      f(key, parts);
    };
  }
  fns.encode = [](const std::any& a) { return encode_slots(*std::any_cast<Slots>(&a)); };
  fns.decode = [](std::string_view b) { return std::any(decode_slots(b)); };
  return fns;
}

// ------------------------------------------------------------- stream-table

StageState::Verdict TableJoinState::add(std::size_t input, const Event& e, Emitter& out, std::string&) {
  staged_ = std::nullopt;
  if (input == 1) {  // the table: commit() applies the update
    staged_.emplace(std::string(e.key()), Value{std::string(e.data()), e.partition()});
    return Verdict::kTaken;
  }
  auto it = table_.find(e.key());
  if (it == table_.end() && join_.kind == TableJoinKind::kInner) return Verdict::kTaken;
  const std::optional<std::string_view> value =
      it == table_.end() ? std::nullopt : std::optional<std::string_view>(it->second.bytes);
  if (join_.enrich) {
    join_.enrich(e, value, out);
  } else {
    const std::string_view parts[] = {e.data(), value.value_or(std::string_view())};
    out.emit(Message{e.key(), e.metadata(), encode_tuple(parts), {}, kAnyPartition});
  }
  return Verdict::kTaken;
}

void TableJoinState::commit(Emitter&) {
  if (!staged_) return;
  auto& [key, value] = *staged_;
  if (track_changes_) changed_.insert_or_assign(key, value.partition);
  if (value.bytes.empty()) {  // a tombstone
    if (auto it = table_.find(key); it != table_.end()) table_.erase(it);
  } else {
    table_.insert_or_assign(std::move(key), std::move(value));
  }
  staged_ = std::nullopt;
}

void TableJoinState::take_changes(Emitter& changelog) {
  emit_changes(changed_, table_, changelog, [](std::string& data, std::uint32_t, const auto* entry) {
    if (entry) data += entry->bytes;
  });
}

Status TableJoinState::restore(std::string_view key, std::string_view data, const std::vector<std::uint32_t>& partitions) {
  bool present = false;
  std::uint32_t partition = 0;
  if (!read_record_head(data, present, partition)) {
    return Status::Corruption("table-join changelog record for key '" + std::string(key) + "' is malformed");
  }
  if (!mine(partition, partitions)) return Status::Ok();
  if (!present) {
    if (auto it = table_.find(key); it != table_.end()) table_.erase(it);
  } else {
    table_.insert_or_assign(std::string(key), Value{std::string(data), partition});
  }
  return Status::Ok();
}

}  // namespace rill::detail

#include "pipeline/join_table.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/clock.hpp"
#include "common/user_code.hpp"
#include "rill/json.hpp"

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

void put(std::string& s, const void* p, std::size_t n) { s.append(static_cast<const char*>(p), n); }
template <class T>
bool get(std::string_view& s, T& v) {
  if (s.size() < sizeof(T)) return false;
  std::memcpy(&v, s.data(), sizeof(T));
  s.remove_prefix(sizeof(T));
  return true;
}

}  // namespace

bool mine(std::uint32_t partition, const std::vector<std::uint32_t>& partitions) {
  return std::find(partitions.begin(), partitions.end(), partition) != partitions.end();
}

JoinPart part_of(const Event& e) {
  return {std::string(e.key()), std::string(e.metadata()), std::string(e.data()), e.id(), e.timestamp_ns()};
}

void append_part(std::string& out, const JoinPart& p) {
  const std::string_view fields[] = {p.key, p.metadata, p.data};
  const std::string tuple = encode_tuple(fields);
  const std::uint32_t size = std::uint32_t(tuple.size());
  put(out, &size, 4);
  out += tuple;
  put(out, &p.id.partition, 4);
  put(out, &p.id.offset, 8);
  put(out, &p.timestamp_ns, 8);
}

bool read_part(std::string_view& in, JoinPart& p) {
  std::uint32_t size = 0;
  if (!get(in, size) || in.size() < size) return false;
  Result<std::vector<std::string_view>> fields = decode_tuple(in.substr(0, size));
  in.remove_prefix(size);
  if (!fields.ok() || fields->size() != 3) return false;
  p.key = std::string((*fields)[0]);
  p.metadata = std::string((*fields)[1]);
  p.data = std::string((*fields)[2]);
  return get(in, p.id.partition) && get(in, p.id.offset) && get(in, p.timestamp_ns);
}

// ------------------------------------------------------------------ JoinTable

JoinTable::JoinTable(const JoinFns& fns, bool track_changes, bool dead_letters, std::string stage)
    : fns_(fns),
      track_changes_(track_changes),
      dead_letters_(dead_letters),
      aged_(fns.limits.ttl.count() > 0 || fns.limits.max_entries > 0),
      stage_(std::move(stage)) {}

StageState::Verdict JoinTable::add(std::size_t input, const Event& e, Emitter& out, Emitter& expired, std::string& reason) {
  std::string computed;
  if (fns_.key) computed = fns_.key(input, e);
  const std::string_view key = fns_.key ? std::string_view(computed) : e.key();
  auto it = entries_.find(key);
  const bool fresh = it == entries_.end();
  if (fresh) {
    if (fns_.limits.max_entries && entries_.size() >= fns_.limits.max_entries) {
      if (fns_.limits.when_full == JoinOverflow::kRejectNew) {
        reason = "join table full (" + std::to_string(entries_.size()) + " keys)";
        return Verdict::kRejected;
      }
      leave(entries_.find(*by_age_.front()), "evicted: join table full", expired);
    }
    Entry entry{fns_.init(), now_ns(false), e.partition(), {}};
    it = entries_.emplace(std::string(key), std::move(entry)).first;
    if (aged_) it->second.age = by_age_.insert(by_age_.end(), &it->first);
  }
  std::string refused;
  try {
    refused = fns_.merge(it->second.partial, input, e);
  } catch (...) {
    if (fresh) erase(it);
    throw;
  }
  if (!refused.empty()) {
    if (fresh) erase(it);
    reason = std::move(refused);
    return Verdict::kRejected;
  }
  if (track_changes_) changed_.insert_or_assign(it->first, it->second.partition);
  while (fns_.ready(it->second.partial)) {
    if (fns_.fire(it->first, it->second.partial, out)) {
      erase(it);
      break;
    }
  }
  return Verdict::kTaken;
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
    const nlohmann::json md = {{"dead_letter", {{"reason", why}, {"stage", stage_}}}};
    expired.emit(it->first, md.dump(), data);
  }
  erase(it);
}

void JoinTable::erase(Entries::iterator it) {
  if (track_changes_) changed_.insert_or_assign(it->first, it->second.partition);
  if (aged_) by_age_.erase(it->second.age);
  entries_.erase(it);
}

void JoinTable::take_changes(Emitter& changelog) {
  std::string data;
  for (const auto& [key, partition] : changed_) {
    auto it = entries_.find(key);
    data.clear();
    data += it == entries_.end() ? kRemoved : kPresent;
    const std::int64_t created = it == entries_.end() ? 0 : it->second.created_ns;
    put(data, &created, 8);
    put(data, &partition, 4);
    if (it != entries_.end()) data += fns_.encode(it->second.partial);
    changelog.emit(Message{key, {}, data, {}, std::int64_t(partition)});
  }
  changed_.clear();
}

Status JoinTable::restore(std::string_view key, std::string_view data, const std::vector<std::uint32_t>& partitions) {
  char tag = 0;
  std::int64_t created = 0;
  std::uint32_t partition = 0;
  if (!get(data, tag) || !get(data, created) || !get(data, partition) || (tag != kPresent && tag != kRemoved)) {
    return Status::Corruption("join changelog record for key '" + std::string(key) + "' is malformed");
  }
  if (!mine(partition, partitions)) return Status::Ok();
  auto it = entries_.find(key);
  if (tag == kRemoved) {
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
  if (fns_.inputs && inputs != fns_.inputs) return Status::InvalidArgument("this join reads " + std::to_string(fns_.inputs) + " topics");
  return Status::Ok();
}

// ------------------------------------------------------------ key matching

namespace {

// A key-matching join's partial: per input, the events waiting for a match.
// (Vectors, not deques: a key rarely waits with more than one event per
// input, and a deque allocates a whole block up front.)
struct Slots {
  std::vector<std::vector<JoinPart>> waiting;
};

std::string encode_slots(const Slots& s) {
  std::string out;
  const std::uint32_t inputs = std::uint32_t(s.waiting.size());
  put(out, &inputs, 4);
  for (const auto& q : s.waiting) {
    const std::uint32_t n = std::uint32_t(q.size());
    put(out, &n, 4);
    for (const JoinPart& p : q) append_part(out, p);
  }
  return out;
}

Slots decode_slots(std::string_view in) {
  Slots s;
  std::uint32_t inputs = 0;
  if (!get(in, inputs)) throw std::runtime_error("key-match state cut short");
  s.waiting.resize(inputs);
  for (auto& q : s.waiting) {
    std::uint32_t n = 0;
    if (!get(in, n)) throw std::runtime_error("key-match state cut short");
    for (std::uint32_t i = 0; i < n; ++i) {
      JoinPart p;
      if (!read_part(in, p)) throw std::runtime_error("key-match state malformed");
      q.push_back(std::move(p));
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
  fns.init = [inputs] { return std::any(Slots{std::vector<std::vector<JoinPart>>(inputs)}); };
  fns.merge = [policy = join.on_duplicate](std::any& a, std::size_t input, const Event& e) -> std::string {
    Slots& s = *std::any_cast<Slots>(&a);
    auto& q = s.waiting[input];
    if (!q.empty()) {
      if (policy == OnDuplicate::kReject) return "duplicate key on input " + std::to_string(input) + " before a match";
      if (policy == OnDuplicate::kReplace) q.clear();
    }
    q.push_back(part_of(e));
    return {};
  };
  // Ready once every input has an event waiting.
  fns.ready = [](const std::any& a) {
    const Slots& s = *std::any_cast<Slots>(&a);
    return !s.waiting.empty() && std::all_of(s.waiting.begin(), s.waiting.end(), [](const auto& q) { return !q.empty(); });
  };
  fns.fire = [combine = std::move(join.combine)](std::string_view key, std::any& a, Emitter& out) {
    Slots& s = *std::any_cast<Slots>(&a);
    std::vector<JoinPart> parts;
    parts.reserve(s.waiting.size());
    for (auto& q : s.waiting) parts.push_back(q.front());  // copies: combine may throw, then nothing changed
    if (combine) {
      combine(key, parts, out);
    } else {
      std::vector<std::string_view> data;
      for (const JoinPart& p : parts) data.push_back(p.data);
      out.emit(key, {}, encode_tuple(data));
    }
    for (auto& q : s.waiting) q.erase(q.begin());
    return std::all_of(s.waiting.begin(), s.waiting.end(), [](const auto& q) { return q.empty(); });
  };
  if (join.incomplete) {
    fns.incomplete = [f = std::move(join.incomplete)](std::string_view key, const std::any& a) {
      const Slots& s = *std::any_cast<Slots>(&a);
      std::vector<std::optional<JoinPart>> parts;
      for (const auto& q : s.waiting) parts.push_back(q.empty() ? std::nullopt : std::optional<JoinPart>(q.front()));
      f(key, parts);
    };
  }
  fns.encode = [](const std::any& a) { return encode_slots(*std::any_cast<Slots>(&a)); };
  fns.decode = [](std::string_view b) { return std::any(decode_slots(b)); };
  return fns;
}

// ------------------------------------------------------------- stream-table

StageState::Verdict TableJoinState::add(std::size_t input, const Event& e, Emitter& out, Emitter&, std::string&) {
  if (input == 1) {  // the table
    if (e.data().empty()) {
      if (auto it = table_.find(e.key()); it != table_.end()) table_.erase(it);
    } else {
      table_.insert_or_assign(std::string(e.key()), Value{std::string(e.data()), e.partition()});
    }
    if (track_changes_) changed_.insert_or_assign(std::string(e.key()), e.partition());
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

void TableJoinState::take_changes(Emitter& changelog) {
  std::string data;
  for (const auto& [key, partition] : changed_) {
    auto it = table_.find(key);
    data.clear();
    data += it == table_.end() ? kRemoved : kPresent;
    put(data, &partition, 4);
    if (it != table_.end()) data += it->second.bytes;
    changelog.emit(Message{key, {}, data, {}, std::int64_t(partition)});
  }
  changed_.clear();
}

Status TableJoinState::restore(std::string_view key, std::string_view data, const std::vector<std::uint32_t>& partitions) {
  char tag = 0;
  std::uint32_t partition = 0;
  if (!get(data, tag) || !get(data, partition) || (tag != kPresent && tag != kRemoved)) {
    return Status::Corruption("table-join changelog record for key '" + std::string(key) + "' is malformed");
  }
  if (!mine(partition, partitions)) return Status::Ok();
  if (tag == kRemoved) {
    if (auto it = table_.find(key); it != table_.end()) table_.erase(it);
  } else {
    table_.insert_or_assign(std::string(key), Value{std::string(data), partition});
  }
  return Status::Ok();
}

}  // namespace rill::detail

#include "pipeline/window_table.hpp"

#include <cstring>

#include "common/user_code.hpp"

namespace rill::detail {

namespace {

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// A changelog record's data: window start, the largest event time of the
// key's input partition, that partition, then the encoded state.
constexpr std::size_t kHeader = 8 + 8 + 4;

}  // namespace

WindowTable::WindowTable(const WindowFns& fns, bool track_changes)
    : fns_(fns),
      track_changes_(track_changes),
      size_ns_(std::chrono::nanoseconds(fns.options.size).count()),
      hop_ns_(fns.options.hop.count() > 0 ? std::chrono::nanoseconds(fns.options.hop).count() : size_ns_),
      lateness_ns_(std::chrono::nanoseconds(fns.options.allowed_lateness).count()) {}

std::int64_t WindowTable::watermark_at(std::int64_t stream_time) const noexcept {
  return stream_time == PartitionClock::kNone ? stream_time : stream_time - lateness_ns_;
}

std::int64_t WindowTable::watermark() const noexcept { return watermark_at(clock_.low()); }

std::size_t WindowTable::open_windows() const noexcept {
  std::size_t n = 0;
  for (const auto& [start, keys] : windows_) n += keys.size();
  return n;
}

Status WindowSpec::validate(std::size_t inputs) const {
  const WindowOptions& w = fns_.options;
  if (inputs != 1) return Status::InvalidArgument("a window stage reads one input topic");
  if (!fns_.aggregate || !fns_.emit) return Status::InvalidArgument("a window stage needs aggregate and emit");
  if (w.size.count() <= 0 || w.hop.count() < 0 || w.hop > w.size || w.allowed_lateness.count() < 0) {
    return Status::InvalidArgument("window size must be > 0, 0 <= hop <= size, lateness >= 0");
  }
  return Status::Ok();
}

StageState::Verdict WindowTable::add(std::size_t, const Event& e, Emitter&, std::string&) {
  staged_.windows.clear();
  const std::int64_t t = fns_.options.event_time ? fns_.options.event_time(e) : e.timestamp_ns();
  const std::int64_t new_max = std::max(clock_.seen(e.partition()), t);
  const std::int64_t wm = watermark_at(clock_.low_with(e.partition(), new_max));
  // The event's windows: starts s = k * hop with s <= t < s + size.
  const std::int64_t last_start = floor_div(t, hop_ns_) * hop_ns_;
  if (last_start + size_ns_ <= wm) return Verdict::kLate;  // even its newest window is closed

  // The event's windows still open, aggregated on copies: a throw from init
  // or aggregate changes nothing, so the retry aggregates once.
  for (std::int64_t s = last_start; s > t - size_ns_ && s + size_ns_ > wm; s -= hop_ns_) {
    const Entry* current = nullptr;
    if (auto w = windows_.find(s); w != windows_.end()) {
      if (auto k = w->second.find(e.key()); k != w->second.end()) current = &k->second;
    }
    std::any state = current ? current->state : fns_.init();
    fns_.aggregate(state, e);
    staged_.windows.emplace_back(s, std::move(state));
  }
  staged_.key.assign(e.key());
  staged_.partition = e.partition();
  staged_.max_time = new_max;
  return Verdict::kTaken;
}

void WindowTable::commit(Emitter&) {
  clock_.raise(staged_.partition, staged_.max_time);
  for (auto& [start, state] : staged_.windows) {
    Keys& keys = windows_[start];
    auto it = keys.find(staged_.key);
    if (it == keys.end()) {
      it = keys.emplace(staged_.key, Entry{std::move(state), staged_.partition}).first;
    } else {
      it->second.state = std::move(state);
    }
    if (track_changes_) changed_.emplace(start, it->first);
  }
  staged_.windows.clear();
}

bool WindowTable::due() const { return !windows_.empty() && windows_.begin()->first + size_ns_ <= watermark(); }

void WindowTable::emit_due(Emitter& out) {
  const auto& [start, keys] = *windows_.begin();
  const auto& [key, entry] = *keys.begin();
  out.emit(fns_.emit(key, Window{start, start + size_ns_}, entry.state));
}

DueItem WindowTable::describe_due() const {
  const std::int64_t start = windows_.begin()->first;
  const auto& first = *windows_.begin()->second.begin();  // key -> entry (a lambda below reads it: no binding)
  DueItem item{first.first, {{"window_start_ns", start}, {"window_end_ns", start + size_ns_}}, {}};
  if (fns_.encode) (void)user_code_threw([&] { item.data = fns_.encode(first.second.state); });
  return item;
}

void WindowTable::finish_due() {
  auto w = windows_.begin();
  auto k = w->second.begin();
  changed_.erase(std::pair<std::int64_t, std::string>(w->first, k->first));
  w->second.erase(k);
  if (w->second.empty()) windows_.erase(w);
}

void WindowTable::take_changes(Emitter& changelog) {
  std::string data;
  for (const auto& [start, key] : changed_) {
    auto w = windows_.find(start);
    if (w == windows_.end()) continue;
    auto k = w->second.find(key);
    if (k == w->second.end()) continue;
    const std::string state = fns_.encode(k->second.state);
    data.resize(kHeader);
    std::memcpy(data.data(), &start, 8);
    const std::int64_t max_time = clock_.seen(k->second.partition);
    std::memcpy(data.data() + 8, &max_time, 8);
    std::memcpy(data.data() + 16, &k->second.partition, 4);
    data += state;
    changelog.emit(Message{key, {}, data, {}, std::int64_t(k->second.partition)});
  }
  changed_.clear();
}

Status WindowTable::restore(std::string_view key, std::string_view data, const std::vector<std::uint32_t>& partitions) {
  if (data.size() < kHeader) return Status::Corruption("window changelog record of " + std::to_string(data.size()) + " bytes");
  std::int64_t start, max_time;
  std::uint32_t partition;
  std::memcpy(&start, data.data(), 8);
  std::memcpy(&max_time, data.data() + 8, 8);
  std::memcpy(&partition, data.data() + 16, 4);
  if (!mine(partition, partitions)) return Status::Ok();
  clock_.raise(partition, max_time);
  windows_[start].insert_or_assign(std::string(key), Entry{fns_.decode(data.substr(kHeader)), partition});
  return Status::Ok();
}

void WindowTable::finish_restore() {
  const std::int64_t wm = watermark();
  while (!windows_.empty() && windows_.begin()->first + size_ns_ <= wm) windows_.erase(windows_.begin());
}

}  // namespace rill::detail

// Dead letters — the events rill routes to a dead-letter topic: consumers'
// nacks past max_redeliveries, pipeline stages' exhausted retries, join
// entries that expire incomplete, window results that cannot be emitted.
// One place for their metadata and for making them fit the topic.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

#include "rill/json.hpp"
#include "rill/pipeline.hpp"

namespace rill::detail {

// The original metadata object with "dead_letter": info added; metadata
// that is not a JSON object is kept as text under "original_metadata".
// Bytes that are not UTF-8 (binary metadata, a reason thrown by user code)
// become U+FFFD rather than failing the dead letter.
inline std::string dead_letter_metadata(std::string_view original, nlohmann::json info) {
  Result<nlohmann::json> md = parse_metadata(original);
  nlohmann::json out = md.ok() ? std::move(*md) : nlohmann::json{{"original_metadata", std::string(original)}};
  out["dead_letter"] = std::move(info);
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A dead letter's parts, made to fit a topic whose events hold at most
// `limit` bytes, and the key and metadata limits (a publish refused there
// would leave the failure with nowhere to go): a key over kMaxKeyBytes
// goes at once; past `limit` the data goes first, then the original
// metadata, then the key, then the end of a long reason; metadata past
// kMaxMetadataBytes loses the original, then the end of the reason. `info`
// records what was dropped. Views point into the arguments.
struct DeadLetter {
  std::string_view key;
  std::string metadata;
  std::string_view data;
};
inline DeadLetter fit_dead_letter(std::string_view key, std::string_view original_metadata, std::string_view data,
                                  nlohmann::json info, std::size_t limit) {
  if (key.size() > kMaxKeyBytes) {  // a computed key (a join's, a window's); an event's always fits
    info["dropped_key"] = true;
    key = {};
  }
  DeadLetter d{key, dead_letter_metadata(original_metadata, info), data};
  auto total_fits = [&] { return d.key.size() + d.metadata.size() + d.data.size() <= limit; };
  auto fits = [&] { return d.metadata.size() <= kMaxMetadataBytes && total_fits(); };
  if (!total_fits() && !d.data.empty()) {
    info["dropped_data_bytes"] = d.data.size();
    d.data = {};
    d.metadata = dead_letter_metadata(original_metadata, info);
  }
  if (!fits()) d.metadata = dead_letter_metadata({}, info);
  if (!total_fits() && !d.key.empty()) {
    info["dropped_key"] = true;
    d.key = {};
    d.metadata = dead_letter_metadata({}, info);
  }
  if (!fits() && info.contains("reason") && info["reason"].is_string()) {
    // Only a reason longer than the limit is left: keep its start.
    info["reason"] = info["reason"].get<std::string>().substr(0, std::min<std::size_t>(limit, kMaxMetadataBytes) / 2);
    d.metadata = dead_letter_metadata({}, info);
  }
  if (!fits()) d.metadata.clear();
  return d;
}

// A pipeline stage's dead letter, fitted to the topic its emitter targets
// (Emitter::set_target) and emitted there.
inline void emit_dead_letter(Emitter& dead, std::string_view key, std::string_view original_metadata,
                             std::string_view data, nlohmann::json info) {
  const DeadLetter d = fit_dead_letter(key, original_metadata, data, std::move(info), dead.max_event_size());
  dead.emit(Message{d.key, d.metadata, d.data, {}, kAnyPartition});
}

}  // namespace rill::detail

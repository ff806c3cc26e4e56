// The metadata rill gives an event it routes to a dead-letter topic — one
// place, for consumers' nacks and pipeline stages' exhausted retries.
#pragma once

#include <string>
#include <string_view>

#include "rill/json.hpp"

namespace rill::detail {

// The original metadata object with "dead_letter": info added; metadata
// that is not a JSON object is kept as text under "original_metadata".
inline std::string dead_letter_metadata(std::string_view original, nlohmann::json info) {
  Result<nlohmann::json> md = parse_metadata(original);
  nlohmann::json out = md.ok() ? std::move(*md) : nlohmann::json{{"original_metadata", std::string(original)}};
  out["dead_letter"] = std::move(info);
  return out.dump();
}

}  // namespace rill::detail

// rill/json.hpp — lazy access to an event's metadata as JSON.
//
// Metadata travels as serialized text; it is parsed only when asked, here.
// Uses nlohmann::json (Debian package nlohmann-json3-dev).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "rill/event.hpp"
#include "rill/options.hpp"
#include "rill/status.hpp"

namespace rill {

// Parses the metadata. Empty metadata is the empty object.
// Fails: InvalidArgument when the text is not a JSON object.
inline Result<nlohmann::json> parse_metadata(std::string_view text) {
  if (text.empty()) return nlohmann::json::object();
  auto j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument("metadata is not valid JSON");
  if (!j.is_object()) return Status::InvalidArgument("metadata is JSON but not an object");
  return j;
}
inline Result<nlohmann::json> parse_metadata(const Event& e) { return parse_metadata(e.metadata()); }

// A metadata serializer (ProducerOptions::metadata_serializer) that
// accepts only a JSON object (or empty metadata) and publishes it in
// compact form: malformed metadata is refused before it is published.
inline MetadataSerializer json_object_metadata() {
  return [](std::string_view text, std::string& out) -> Status {
    if (text.empty()) return Status::Ok();
    Result<nlohmann::json> j = parse_metadata(text);
    if (!j.ok()) return j.status();
    out = j->dump();
    return Status::Ok();
  };
}

}  // namespace rill

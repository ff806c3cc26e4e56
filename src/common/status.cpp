#include "rill/status.hpp"

namespace rill {

std::string_view to_string(Status::Code code) noexcept {
  switch (code) {
    case Status::Code::kOk: return "Ok";
    case Status::Code::kInvalidArgument: return "InvalidArgument";
    case Status::Code::kNotFound: return "NotFound";
    case Status::Code::kAlreadyExists: return "AlreadyExists";
    case Status::Code::kFull: return "Full";
    case Status::Code::kTimedOut: return "TimedOut";
    case Status::Code::kClosed: return "Closed";
    case Status::Code::kResourceExhausted: return "ResourceExhausted";
    case Status::Code::kIOError: return "IOError";
    case Status::Code::kCorruption: return "Corruption";
    case Status::Code::kOutOfRange: return "OutOfRange";
  }
  return "Unknown";
}

std::string Status::to_string() const {
  std::string s(rill::to_string(code_));
  if (!message().empty()) {
    s += ": ";
    s += message();
  }
  return s;
}

}  // namespace rill

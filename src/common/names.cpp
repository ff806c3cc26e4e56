#include "common/names.hpp"

#include <string>

namespace rill::detail {

namespace {
bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}
}  // namespace

Status validate_name(std::string_view what, std::string_view name) {
  if (name.empty()) return Status::InvalidArgument(std::string(what) + " is empty");
  if (name.size() > kMaxNameLength) {
    return Status::InvalidArgument(std::string(what) + " has " + std::to_string(name.size()) +
                                   " characters; at most " + std::to_string(kMaxNameLength) + " are allowed");
  }
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!name_char(name[i])) {
      return Status::InvalidArgument(std::string(what) + " '" + std::string(name) + "' has a character outside " +
                                     "[A-Za-z0-9._-] at position " + std::to_string(i));
    }
  }
  return Status::Ok();
}

}  // namespace rill::detail

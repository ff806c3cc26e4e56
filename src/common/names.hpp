// Validation of user-supplied names (topics, consumers).
#pragma once

#include <string_view>

#include "rill/status.hpp"

namespace rill::detail {

inline constexpr std::size_t kMaxNameLength = 249;

// Ok when `name` is 1-249 characters of [A-Za-z0-9._-]; otherwise an
// InvalidArgument naming `what` ("topic name", "consumer name") and the fault.
Status validate_name(std::string_view what, std::string_view name);

}  // namespace rill::detail

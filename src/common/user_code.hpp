// Running user code (hooks, handlers) without letting its exceptions
// unwind through rill: the one place that catches them.
#pragma once

#include <exception>
#include <optional>
#include <string>

namespace rill::detail {

// Runs f(). Returns nullopt when it returned, or the text of what it threw
// (for the caller's error message). Allocates: only when f throws.
template <class F>
std::optional<std::string> user_code_threw(F&& f) {
  try {
    f();
    return std::nullopt;
  } catch (const std::exception& ex) {
    return std::string(ex.what());
  } catch (...) {
    return std::string("a value that is not a std::exception");
  }
}

}  // namespace rill::detail

// rill/status.hpp — the outcome of every fallible call.
//
// Runtime conditions come back as a Status (or a Result<T> carrying a value
// on success). Each code says how the caller should react. Contract
// violations (using a moved-from handle, ...) are bugs and assert instead.
//
// Thread-safety: Status and Result are plain values; copy them freely.
#pragma once

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace rill {

class [[nodiscard]] Status {
 public:
  enum class Code : std::uint8_t {
    kOk = 0,
    // The input is wrong (bad name, capacity, size, foreign event, ...).
    // Nothing was changed. Fix the input; retrying the same call fails again.
    kInvalidArgument,
    // The named topic does not exist. Create it, or fix the name.
    kNotFound,
    // A topic with that name exists already, or the consumer name (or the
    // single-producer right) is held by a live handle. Close the other
    // handle, pick another name, or open the existing topic instead.
    kAlreadyExists,
    // The ring has no room (overflow policy `fail`, or a try_* call).
    // Nothing was published. Retry later, or use a blocking call.
    kFull,
    // Nothing happened within the timeout. Call again.
    kTimedOut,
    // The handle, its topic or the bus was closed. Reopen to continue.
    kClosed,
    // A resource limit was reached (too many consumers on a topic, ...).
    // Release something, or configure a larger limit.
    kResourceExhausted,
    // Storage failed (I/O error, disk full, unwritable directory). What
    // was committed before is intact; fix the environment and reopen.
    kIOError,
    // Stored data is damaged or of an unknown format. Nothing was changed.
    kCorruption,
    // The position asked for no longer exists: retention deleted it. Reopen
    // at Position::earliest(), or configure the consumer to jump there.
    kOutOfRange,
  };

  Status() noexcept = default;
  Status(const Status& o) : code_(o.code_), literal_(o.literal_), owned_(o.owned_ ? new std::string(*o.owned_) : nullptr) {}
  // A moved-from Status keeps its code (and a literal message); an owned
  // message moves.
  Status(Status&& o) noexcept : code_(o.code_), literal_(o.literal_), owned_(std::exchange(o.owned_, nullptr)) {}
  Status& operator=(const Status& o) {
    if (this != &o) *this = Status(o);
    return *this;
  }
  Status& operator=(Status&& o) noexcept {
    if (this != &o) {
      delete owned_;
      code_ = o.code_;
      literal_ = o.literal_;
      owned_ = std::exchange(o.owned_, nullptr);
    }
    return *this;
  }
  ~Status() { delete owned_; }

  static Status Ok() noexcept { return Status(); }
  static Status InvalidArgument(std::string msg) { return {Code::kInvalidArgument, std::move(msg)}; }
  static Status NotFound(std::string msg) { return {Code::kNotFound, std::move(msg)}; }
  static Status AlreadyExists(std::string msg) { return {Code::kAlreadyExists, std::move(msg)}; }
  static Status Full(std::string msg) { return {Code::kFull, std::move(msg)}; }
  static Status TimedOut(std::string msg) { return {Code::kTimedOut, std::move(msg)}; }
  static Status Closed(std::string msg) { return {Code::kClosed, std::move(msg)}; }

  // Hot-path forms: the message is a string literal (static storage), so
  // building the Status never allocates.
  template <std::size_t N>
  static Status Full(const char (&literal)[N]) noexcept { return Status(Code::kFull, literal); }
  template <std::size_t N>
  static Status TimedOut(const char (&literal)[N]) noexcept { return Status(Code::kTimedOut, literal); }
  template <std::size_t N>
  static Status Closed(const char (&literal)[N]) noexcept { return Status(Code::kClosed, literal); }
  static Status Full() noexcept { return Status(Code::kFull, "ring full"); }
  static Status TimedOut() noexcept { return Status(Code::kTimedOut, "timed out"); }
  static Status Closed() noexcept { return Status(Code::kClosed, "closed"); }
  static Status ResourceExhausted(std::string msg) { return {Code::kResourceExhausted, std::move(msg)}; }
  static Status IOError(std::string msg) { return {Code::kIOError, std::move(msg)}; }
  static Status Corruption(std::string msg) { return {Code::kCorruption, std::move(msg)}; }
  static Status OutOfRange(std::string msg) { return {Code::kOutOfRange, std::move(msg)}; }

  bool ok() const noexcept { return code_ == Code::kOk; }
  explicit operator bool() const noexcept { return ok(); }
  Code code() const noexcept { return code_; }
  std::string_view message() const noexcept {
    if (literal_) return literal_;
    return owned_ ? std::string_view(*owned_) : std::string_view();
  }

  bool is_invalid_argument() const noexcept { return code_ == Code::kInvalidArgument; }
  bool is_not_found() const noexcept { return code_ == Code::kNotFound; }
  bool is_already_exists() const noexcept { return code_ == Code::kAlreadyExists; }
  bool is_full() const noexcept { return code_ == Code::kFull; }
  bool is_timed_out() const noexcept { return code_ == Code::kTimedOut; }
  bool is_closed() const noexcept { return code_ == Code::kClosed; }
  bool is_resource_exhausted() const noexcept { return code_ == Code::kResourceExhausted; }
  bool is_io_error() const noexcept { return code_ == Code::kIOError; }
  bool is_corruption() const noexcept { return code_ == Code::kCorruption; }
  bool is_out_of_range() const noexcept { return code_ == Code::kOutOfRange; }

  // The same code with "context: " before the message (Ok stays Ok).
  Status with_context(std::string_view context) const {
    if (ok()) return *this;
    return Status(code_, std::string(context) + ": " + std::string(message()));
  }

  // "InvalidArgument: topic name 'a b' has a character outside [A-Za-z0-9._-]"
  std::string to_string() const;

  friend bool operator==(const Status& a, const Status& b) noexcept { return a.code_ == b.code_; }

 private:
  Status(Code code, std::string msg) : code_(code), owned_(new std::string(std::move(msg))) {}
  Status(Code code, const char* literal) noexcept : code_(code), literal_(literal) {}

  // Three words, none of them a std::string: an Ok Status (every call on
  // the hot path returns one) is built, moved and destroyed without
  // touching a string. An error's message is a literal (static storage) or
  // one heap string the Status owns.
  Code code_ = Code::kOk;
  const char* literal_ = nullptr;  // static message, when set
  std::string* owned_ = nullptr;   // owned message, when set
};

std::string_view to_string(Status::Code code) noexcept;

// A value or the Status that explains why there is none.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  // A value built in place from `args` (no copy or move of T at all).
  template <class... Args>
  explicit Result(std::in_place_t, Args&&... args) : value_(std::in_place, std::forward<Args>(args)...) {}
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    assert(!status_.ok() && "a Result built from a Status needs an error status");
  }

  bool ok() const noexcept { return value_.has_value(); }
  explicit operator bool() const noexcept { return ok(); }
  const Status& status() const noexcept { return status_; }

  // REQUIRES: ok().
  T& value() & {
    assert(ok() && "Result::value() called on an error; check ok() first");
    return *value_;
  }
  const T& value() const& {
    assert(ok() && "Result::value() called on an error; check ok() first");
    return *value_;
  }
  T&& value() && {
    assert(ok() && "Result::value() called on an error; check ok() first");
    return std::move(*value_);
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  Status status_;  // Ok when value_ holds a value
  std::optional<T> value_;
};

}  // namespace rill

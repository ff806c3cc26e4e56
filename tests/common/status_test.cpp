#include <catch2/catch.hpp>
#include <string>

#include "rill/status.hpp"

using rill::Result;
using rill::Status;

TEST_CASE("Status carries a named code and a message", "[status]") {
  Status ok = Status::Ok();
  CHECK(ok.ok());
  CHECK(ok.to_string() == "Ok");

  Status s = Status::InvalidArgument("bad name");
  CHECK_FALSE(s.ok());
  CHECK(s.is_invalid_argument());
  CHECK_FALSE(s.is_full());
  CHECK(s.message() == "bad name");
  CHECK(s.to_string() == "InvalidArgument: bad name");

  CHECK(Status::Full().is_full());
  CHECK(Status::TimedOut().is_timed_out());
  CHECK(Status::Closed().is_closed());
  CHECK(Status::NotFound("x").is_not_found());
  CHECK(Status::AlreadyExists("x").is_already_exists());
  CHECK(Status::ResourceExhausted("x").is_resource_exhausted());
  CHECK(Status::IOError("x").is_io_error());
  CHECK(Status::Corruption("x").is_corruption());
}

TEST_CASE("Result holds a value or the status explaining its absence", "[status]") {
  Result<std::string> good = std::string("hello");
  REQUIRE(good.ok());
  CHECK(*good == "hello");
  CHECK(good->size() == 5);

  Result<std::string> bad = Status::NotFound("no topic 'x'");
  CHECK_FALSE(bad.ok());
  CHECK(bad.status().is_not_found());
  CHECK(bad.status().message() == "no topic 'x'");
}

TEST_CASE("Status copies own their message; moves hand it over and keep the code", "[status]") {
  Status a = Status::IOError("disk full at /var/lib/rill/data.mdb (a message longer than SSO)");
  Status b = a;  // deep copy
  CHECK(b.is_io_error());
  CHECK(b.message() == a.message());
  CHECK(b.message().data() != a.message().data());
  Status c = std::move(a);
  CHECK(c.message() == b.message());
  CHECK(a.is_io_error());  // a moved-from Status keeps its code (callers may still test it)
  CHECK(a.message().empty());
  const Status& same = c;
  c = same;  // self-assignment keeps the message
  CHECK(c.message() == b.message());
  c = Status::Full();  // a literal replaces an owned message
  CHECK(c.is_full());
  CHECK(c.message() == "ring full");
  b = std::move(c);
  CHECK(b.is_full());
  CHECK(b.message() == "ring full");
  CHECK(c.is_full());
  Status ok;
  ok = b;
  CHECK(ok.is_full());
  CHECK(Status::Ok().message().empty());
}

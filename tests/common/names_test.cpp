#include <catch2/catch.hpp>
#include <string>

#include "common/names.hpp"

using rill::detail::validate_name;

TEST_CASE("names are 1-249 characters of [A-Za-z0-9._-]", "[names]") {
  CHECK(validate_name("topic name", "raw-sensor-data").ok());
  CHECK(validate_name("topic name", "a").ok());
  CHECK(validate_name("topic name", "A.b_c-9").ok());
  CHECK(validate_name("topic name", std::string(249, 'x')).ok());

  auto empty = validate_name("topic name", "");
  CHECK(empty.is_invalid_argument());
  CHECK(empty.message().find("empty") != std::string::npos);

  auto longer = validate_name("topic name", std::string(250, 'x'));
  CHECK(longer.is_invalid_argument());
  CHECK(longer.message().find("250") != std::string::npos);

  for (const char* bad : {"a b", "a/b", "é", "a\n", "x*", "topic:1"}) {
    INFO(bad);
    auto s = validate_name("consumer name", bad);
    CHECK(s.is_invalid_argument());
    CHECK(s.message().find("consumer name") != std::string::npos);
  }
}

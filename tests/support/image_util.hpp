// Opening images and asserting on Status in unit tests.
#pragma once

#include <doctest/doctest.h>

#include <string>
#include <utility>

#include "qcow/image.hpp"

namespace qtest {

inline void require_ok(const qcow::Status& s) {
  INFO(s.message());
  REQUIRE(s.is_ok());
}

inline qcow::Image open_rw(const std::string& path, qcow::OpenOptions o = {}) {
  o.writable = true;
  auto r = qcow::Image::open(path, o);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

inline qcow::Image open_ro(const std::string& path) {
  auto r = qcow::Image::open(path);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

}  // namespace qtest

#pragma once
#include "pure.hpp"

namespace dfend {
// This library's version: default_version in dfend.control
// (test/meta-test.py checks that they agree).
constexpr const char *kVersion = "0.5.0";
// The extension's SQL versions this library serves: every version from
// which ALTER EXTENSION dfend UPDATE leads here, so a new library keeps
// working with the old objects until the update is run.
constexpr const char *kServedSqlVersions[] = {"0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0"};
} // namespace dfend

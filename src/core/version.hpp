#pragma once
#include "pure.hpp"

namespace dfend {
// Keep in step with default_version in dfend.control.
constexpr const char *kVersion = "0.1.0";
} // namespace dfend

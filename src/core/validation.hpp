// Local checks run before any network call, so bad input costs no request and
// gets a precise message. Each function throws Error(InvalidArgument).
#pragma once
#include "pure.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace dfend {

constexpr std::size_t kMaxUserIdBytes = 256;
constexpr std::size_t kMaxEmailBytes = 254;   // RFC 5321 path limit
constexpr std::size_t kMaxEmailLocalBytes = 64;

void validate_user_id(std::string_view user_id);
// Rule: local@domain, one '@'; local part 1-64 bytes of letters, digits and
// !#$%&'*+-/=?^_`{|}~ in dot-separated runs; domain of two or more labels of
// letters, digits and inner hyphens (1-63 bytes each), the last a 2+ letter
// word; 254 bytes in all. Quoted local parts and IP literals are refused.
void validate_email(std::string_view email);
// E.164: '+', then 2 to 15 digits, the first 1-9.
void validate_phone(std::string_view phone);
// An identity id as DFend returns it: non-empty, bounded, printable ASCII.
void validate_identity_id(std::string_view id);

// Returns why an API key cannot be sent in a header, or nothing when it can.
// Never echoes the key.
std::optional<std::string> api_key_problem(std::string_view key) noexcept;
// Returns why a URL cannot be the API base, or nothing when it can: only
// http and https; plain http only to a loopback host, so the key never
// crosses a network in clear text; no credentials, query or fragment.
std::optional<std::string> api_url_problem(std::string_view url) noexcept;

} // namespace dfend

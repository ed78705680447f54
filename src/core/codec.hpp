// JSON requests and responses of the Identity endpoint. Decoders treat the
// body as untrusted input: any deviation from the documented shape becomes
// Error(BadResponse), never a crash (fuzzed by test/fuzz/fuzz_decoder.cpp).
#pragma once
#include "pure.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace dfend {

constexpr std::size_t kMaxResponseBytes = 1 << 20;
constexpr int kMaxJsonDepth = 64;

struct RegisterRequest {
    std::string user_id;
    std::optional<std::string> email;
    std::optional<std::string> phone;
    bool merge = false;
    std::optional<std::string> metadata_json; // must be a JSON object
};

struct RegisterResult {
    std::string id;
    bool created = false;
    bool merged = false;
};

// A request from the nullable UTF-8 strings the SQL layer holds; nullptr
// means the field is absent.
RegisterRequest make_register_request(const char *user_id, const char *email,
                                      const char *phone, const char *metadata_json,
                                      bool merge);

enum class LookupKey { UserId, Id };

// Validates every field (Error(InvalidArgument)) and encodes the POST body,
// leaving out absent fields.
std::string encode_register(const RegisterRequest &request);
// The GET /identity body: {"userId": ...} or {"id": ...}.
std::string encode_lookup(LookupKey key, std::string_view value);

RegisterResult decode_register_response(std::string_view body);
// Checks the body is one JSON object that PostgreSQL's jsonb accepts and
// returns it unchanged, so fields this code does not know survive.
std::string decode_identity_response(std::string_view body);
// Best effort: DFend's own words from an error body ("error" or "message"),
// cut to a readable length; empty when there are none.
// Any occurrence of `secret` in the decoded text is redacted before the cut,
// so neither an escaped (\u0073k_...) nor a cut key survives.
std::string extract_error_message(std::string_view body, std::string_view secret = {});

} // namespace dfend

// JSON requests and responses of the Identity endpoint. Decoders treat the
// body as untrusted input: any deviation from the documented shape becomes
// Error(BadResponse), never a crash (fuzzed by test/fuzz/fuzz_decoder.cpp).
#pragma once
#include "pure.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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

// A field left out of a registration because it failed local validation.
struct DroppedField {
    std::string field;  // "email", "phone" or "metadata"
    std::string reason; // the validation error: message, then ": " and detail
};

// Removes from `request` each email, phone and metadata value that
// encode_register would refuse, and says which and why, in that order. The
// user id is never removed: without it there is no registration at all, so
// encode_register still refuses a bad one.
std::vector<DroppedField> drop_invalid_fields(RegisterRequest &request);
// The GET /identity body: {"userId": ...} or {"id": ...}.
std::string encode_lookup(LookupKey key, std::string_view value);

// The id must be a non-empty token of printable ASCII without spaces, at
// most kMaxUserIdBytes long, that does not contain `secret`.
RegisterResult decode_register_response(std::string_view body, std::string_view secret = {});
// Checks the body is one JSON object that PostgreSQL's jsonb accepts and
// returns it written again: every field kept (unknown ones too), numbers as
// the reply spelled them, and `secret` redacted from every string and object
// key in decoded form, so no JSON escape (\u0073k_...) hides it. The result
// is valid UTF-8 without \u0000.
std::string decode_identity_response(std::string_view body, std::string_view secret = {});
// Best effort: DFend's own words from an error body ("error" or "message"),
// made safe by safe_reply_text (valid UTF-8, no control characters, `secret`
// redacted in decoded form) and cut to about 300 bytes; empty when there are
// none.
std::string extract_error_message(std::string_view body, std::string_view secret = {});

} // namespace dfend

#include "codec.hpp"

#include "error.hpp"
#include "validation.hpp"

#include <nlohmann/json.hpp>

namespace dfend {

using nlohmann::json;

namespace {

Error bad_response(std::string message, std::string detail = {})
{
    return Error(ErrorKind::BadResponse, std::move(message), std::move(detail));
}

// Parses untrusted JSON with a depth limit; nullopt when it is not valid.
std::optional<json> parse_bounded(std::string_view text, std::string *why)
{
    if (text.size() > kMaxResponseBytes) {
        *why = "The body is larger than " + std::to_string(kMaxResponseBytes) + " bytes.";
        return std::nullopt;
    }
    // nlohmann's lexer takes a NUL byte for the end of input, which would
    // accept `{...}\0<anything>` as valid JSON.
    if (text.find('\0') != std::string_view::npos) {
        *why = "The body contains a NUL byte.";
        return std::nullopt;
    }
    // Depth first, in one pass that skips strings: much cheaper than a parser
    // callback on every token, and it keeps nlohmann's recursion bounded.
    int depth = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\')
                ++i; // the escaped character cannot end the string
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > kMaxJsonDepth) {
                *why = "The body nests deeper than " + std::to_string(kMaxJsonDepth) +
                       " levels.";
                return std::nullopt;
            }
        } else if (c == '}' || c == ']') {
            --depth;
        }
    }
    try {
        return json::parse(text.begin(), text.end());
    } catch (const json::exception &e) {
        *why = e.what();
        return std::nullopt;
    }
}

// PostgreSQL text and jsonb cannot hold NUL, which JSON allows as \u0000.
bool contains_nul(const json &value)
{
    switch (value.type()) {
    case json::value_t::string:
        return value.get_ref<const std::string &>().find('\0') != std::string::npos;
    case json::value_t::object:
        for (auto it = value.begin(); it != value.end(); ++it)
            if (it.key().find('\0') != std::string::npos || contains_nul(it.value()))
                return true;
        return false;
    case json::value_t::array:
        for (const auto &item : value)
            if (contains_nul(item))
                return true;
        return false;
    default:
        return false;
    }
}

json parse_response_object(std::string_view body)
{
    std::string why;
    std::optional<json> value = parse_bounded(body, &why);
    if (!value)
        throw bad_response("invalid JSON in response from DFend", why);
    if (!value->is_object())
        throw bad_response("unexpected response from DFend",
                           "The body is not a JSON object.");
    if (contains_nul(*value))
        throw bad_response("unexpected response from DFend",
                           "The body contains a \\u0000 character.");
    return std::move(*value);
}

// Text from a SQL_ASCII database reaches us unconverted and may not be UTF-8,
// which JSON (and nlohmann's dump) requires.
std::string dump_request(const json &body)
{
    try {
        return body.dump();
    } catch (const json::type_error &) {
        throw Error(ErrorKind::InvalidArgument, "argument is not valid UTF-8",
                    "DFend's API takes JSON, which must be UTF-8.");
    }
}

} // namespace

RegisterRequest make_register_request(const char *user_id, const char *email,
                                      const char *phone, const char *metadata_json, bool merge)
{
    RegisterRequest request;
    request.user_id = user_id ? user_id : "";
    if (email)
        request.email = email;
    if (phone)
        request.phone = phone;
    if (metadata_json)
        request.metadata_json = metadata_json;
    request.merge = merge;
    return request;
}

std::string encode_register(const RegisterRequest &request)
{
    validate_user_id(request.user_id);
    json body = json::object();
    body["userId"] = request.user_id;
    if (request.email) {
        validate_email(*request.email);
        body["email"] = *request.email;
    }
    if (request.phone) {
        validate_phone(*request.phone);
        body["phone"] = *request.phone;
    }
    body["merge"] = request.merge;
    if (request.metadata_json) {
        std::string why;
        std::optional<json> metadata = parse_bounded(*request.metadata_json, &why);
        if (!metadata)
            throw Error(ErrorKind::InvalidArgument, "metadata is not valid JSON", why);
        if (!metadata->is_object())
            throw Error(ErrorKind::InvalidArgument, "metadata must be a JSON object",
                        std::string("The value is a JSON ") + metadata->type_name() + ".");
        body["metadata"] = std::move(*metadata);
    }
    return dump_request(body);
}

std::string encode_lookup(LookupKey key, std::string_view value)
{
    json body = json::object();
    if (key == LookupKey::UserId) {
        validate_user_id(value);
        body["userId"] = std::string(value);
    } else {
        validate_identity_id(value);
        body["id"] = std::string(value);
    }
    return dump_request(body);
}

RegisterResult decode_register_response(std::string_view body)
{
    json object = parse_response_object(body);
    auto id = object.find("id");
    if (id == object.end() || !id->is_string() || id->get_ref<const std::string &>().empty())
        throw bad_response("unexpected response from DFend",
                           "The field \"id\" is missing or not a non-empty string.");
    RegisterResult result;
    result.id = id->get<std::string>();
    if (result.id.size() > kMaxUserIdBytes)
        throw bad_response("unexpected response from DFend",
                           "The field \"id\" is longer than " +
                               std::to_string(kMaxUserIdBytes) + " bytes.");
    for (auto [name, target] : {std::pair{"created", &result.created},
                                std::pair{"merged", &result.merged}}) {
        auto field = object.find(name);
        if (field == object.end() || field->is_null())
            continue; // absent flags read as false
        if (!field->is_boolean())
            throw bad_response("unexpected response from DFend",
                               std::string("The field \"") + name + "\" is not a boolean.");
        *target = field->get<bool>();
    }
    return result;
}

std::string decode_identity_response(std::string_view body)
{
    json object = parse_response_object(body);
    auto id = object.find("id");
    if (id != object.end() && !id->is_string())
        throw bad_response("unexpected response from DFend",
                           "The field \"id\" is not a string.");
    return std::string(body);
}

std::string extract_error_message(std::string_view body, std::string_view secret)
{
    constexpr std::size_t kLimit = 300;
    std::string why;
    std::optional<json> value = parse_bounded(body, &why);
    std::string message;
    if (value && value->is_object()) {
        for (const char *name : {"error", "message", "detail"}) {
            auto field = value->find(name);
            if (field == value->end())
                continue;
            if (field->is_string()) {
                message = field->get<std::string>();
                break;
            }
            if (field->is_object()) {
                auto inner = field->find("message");
                if (inner != field->end() && inner->is_string()) {
                    message = inner->get<std::string>();
                    break;
                }
            }
        }
    }
    redact_secret(message, secret);
    // Keep only printable text so a hostile body cannot forge log lines.
    std::string clean;
    for (unsigned char c : message) {
        bool starts_character = (c & 0xC0) != 0x80;
        if (starts_character && clean.size() >= kLimit) {
            clean += "...";
            break;
        }
        clean += (c < 0x20 || c == 0x7f) ? ' ' : static_cast<char>(c);
    }
    return clean;
}

} // namespace dfend

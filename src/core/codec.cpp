#include "codec.hpp"

#include "error.hpp"
#include "validation.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <vector>

namespace dfend {

using nlohmann::json;

namespace {

Error bad_response(std::string message, std::string detail = {})
{
    return Error(ErrorKind::BadResponse, std::move(message), std::move(detail));
}

// nlohmann's message without its "last read: '...'" part, which quotes the
// body (bytes that are not UTF-8, a part of an echoed key).
std::string parse_error_text(const json::parse_error &e)
{
    std::string text = e.what();
    std::size_t quote = text.find("; last read:");
    if (quote != std::string::npos)
        text.erase(quote);
    std::size_t tag = text.find("] ");
    if (text.rfind("[json.exception", 0) == 0 && tag != std::string::npos)
        text.erase(0, tag + 2);
    if (!text.empty()) {
        text[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[0])));
        text += '.';
    }
    return text;
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
    } catch (const json::parse_error &e) {
        *why = parse_error_text(e);
        return std::nullopt;
    } catch (const json::exception &e) {
        *why = "The body is not valid JSON.";
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

// Writes the JSON it is fed back as text, with the secret redacted from
// every string (object keys too) in decoded form, so no escape
// ("\u0073k_...") hides it. Numbers that are not integers are written as
// the reply spelled them: a double would round 0.1000000000000000055511 and
// integers past 2^64, which PostgreSQL's jsonb keeps exactly.
class RedactingWriter : public nlohmann::json_sax<json> {
  public:
    explicit RedactingWriter(std::string_view secret) : secret_(secret) {}
    std::string take() { return std::move(out_); }

    bool null() override { return literal("null"); }
    bool boolean(bool value) override { return literal(value ? "true" : "false"); }
    bool number_integer(number_integer_t value) override
    {
        return literal(std::to_string(value));
    }
    bool number_unsigned(number_unsigned_t value) override
    {
        return literal(std::to_string(value));
    }
    bool number_float(number_float_t, const string_t &spelled) override
    {
        return literal(spelled);
    }
    bool string(string_t &value) override
    {
        before_value();
        write_string(value);
        return true;
    }
    bool binary(binary_t &) override { return false; }
    bool start_object(std::size_t) override { return open('{'); }
    bool key(string_t &name) override
    {
        before_value();
        write_string(name);
        out_ += ':';
        after_key_ = true;
        return true;
    }
    bool end_object() override { return close('}'); }
    bool start_array(std::size_t) override { return open('['); }
    bool end_array() override { return close(']'); }
    bool parse_error(std::size_t, const std::string &, const nlohmann::detail::exception &) override
    {
        return false;
    }

  private:
    // A comma before every element but the first; none after a key.
    void before_value()
    {
        if (after_key_) {
            after_key_ = false;
        } else if (!first_.empty()) {
            if (!first_.back())
                out_ += ',';
            first_.back() = false;
        }
    }
    bool literal(const std::string &text)
    {
        before_value();
        out_ += text;
        return true;
    }
    bool open(char bracket)
    {
        before_value();
        out_ += bracket;
        first_.push_back(true);
        return true;
    }
    bool close(char bracket)
    {
        out_ += bracket;
        first_.pop_back();
        return true;
    }
    void write_string(std::string &value)
    {
        redact_secret(value, secret_);
        out_ += json(std::move(value)).dump(); // escapes quotes, backslashes, controls
    }

    std::string_view secret_;
    std::string out_;
    std::vector<bool> first_;
    bool after_key_ = false;
};

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

namespace {

// The value of each optional field as the body carries it; each throws
// Error(InvalidArgument) when the field cannot be sent.
json email_value(const std::string &email)
{
    validate_email(email);
    return email;
}

json phone_value(const std::string &phone)
{
    validate_phone(phone);
    return phone;
}

json metadata_value(const std::string &metadata_json)
{
    std::string why;
    std::optional<json> metadata = parse_bounded(metadata_json, &why);
    if (!metadata)
        throw Error(ErrorKind::InvalidArgument, "metadata is not valid JSON", why);
    if (!metadata->is_object())
        throw Error(ErrorKind::InvalidArgument, "metadata must be a JSON object",
                    std::string("The value is a JSON ") + metadata->type_name() + ".");
    return std::move(*metadata);
}

} // namespace

std::string encode_register(const RegisterRequest &request)
{
    validate_user_id(request.user_id);
    json body = json::object();
    body["userId"] = request.user_id;
    if (request.email)
        body["email"] = email_value(*request.email);
    if (request.phone)
        body["phone"] = phone_value(*request.phone);
    body["merge"] = request.merge;
    if (request.metadata_json)
        body["metadata"] = metadata_value(*request.metadata_json);
    return dump_request(body);
}

std::vector<DroppedField> drop_invalid_fields(RegisterRequest &request)
{
    std::vector<DroppedField> dropped;
    auto check = [&](const char *name, std::optional<std::string> &value,
                     json (*to_json)(const std::string &)) {
        if (!value)
            return;
        try {
            to_json(*value);
        } catch (const Error &error) {
            std::string reason = error.message();
            if (!error.detail().empty())
                reason += ": " + error.detail();
            dropped.push_back(DroppedField{name, std::move(reason)});
            value.reset();
        }
    };
    check("email", request.email, email_value);
    check("phone", request.phone, phone_value);
    check("metadata", request.metadata_json, metadata_value);
    return dropped;
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

RegisterResult decode_register_response(std::string_view body, std::string_view secret)
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
    // An id is stored in users' rows and compared as text: a plain token.
    for (unsigned char c : result.id)
        if (c < 0x21 || c > 0x7e)
            throw bad_response("unexpected response from DFend",
                               "The field \"id\" may contain only printable ASCII "
                               "characters without spaces.");
    if (!secret.empty() && result.id.find(secret) != std::string::npos)
        throw bad_response("unexpected response from DFend",
                           "The field \"id\" contains the API key.");
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

std::string decode_identity_response(std::string_view body, std::string_view secret)
{
    json object = parse_response_object(body);
    auto id = object.find("id");
    if (id != object.end() && !id->is_string())
        throw bad_response("unexpected response from DFend",
                           "The field \"id\" is not a string.");
    RedactingWriter writer(secret);
    // The body parsed above, so a second pass cannot fail on the syntax.
    if (!json::sax_parse(body.begin(), body.end(), &writer))
        throw bad_response("invalid JSON in response from DFend");
    return writer.take();
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
    // Printable text only, so a hostile body cannot forge log lines; the key
    // redacted as the text reads, before the cut.
    return safe_reply_text(message, secret, kLimit);
}

} // namespace dfend

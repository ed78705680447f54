// JSON bodies: encoding requests, decoding responses, DFend's error messages.
#include "utf8_check.hpp"
#include "core/codec.hpp"
#include "core/error.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

using namespace dfend;
using nlohmann::json;

namespace {

template <typename Fn>
Error expect_error(Fn fn, ErrorKind kind, const std::string &what)
{
    try {
        fn();
    } catch (const Error &e) {
        EXPECT_EQ(e.kind(), kind) << what << ": " << e.message() << " / " << e.detail();
        return e;
    } catch (const std::exception &e) {
        ADD_FAILURE() << what << ": non-dfend exception " << e.what();
        return Error(ErrorKind::Internal, "unexpected");
    }
    ADD_FAILURE() << what << ": no error";
    return Error(ErrorKind::Internal, "no error");
}

Error expect_bad_response(std::string_view body, const std::string &what)
{
    return expect_error([&] { decode_register_response(body); }, ErrorKind::BadResponse,
                        what);
}

std::string nested_arrays(int levels, const std::string &inner)
{
    return std::string(levels, '[') + inner + std::string(levels, ']');
}

std::string nested_objects(int levels, const std::string &inner)
{
    std::string s;
    for (int i = 0; i < levels; ++i)
        s += "{\"a\":";
    s += inner;
    s += std::string(levels, '}');
    return s;
}


} // namespace

// ---------------------------------------------------------------- encode_register

TEST(EncodeRegister, MinimalBodyLeavesOutAbsentFields)
{
    RegisterRequest r;
    r.user_id = "user-1";
    json body = json::parse(encode_register(r));
    ASSERT_TRUE(body.is_object());
    EXPECT_EQ(body["userId"], "user-1");
    EXPECT_EQ(body["merge"], false); // merge is always sent
    EXPECT_FALSE(body.contains("email"));
    EXPECT_FALSE(body.contains("phone"));
    EXPECT_FALSE(body.contains("metadata"));
    EXPECT_EQ(body.size(), 2u);
}

TEST(EncodeRegister, AllFields)
{
    RegisterRequest r;
    r.user_id = "u\"ser\n";
    r.email = "user@example.com";
    r.phone = "+14155550123";
    r.merge = true;
    r.metadata_json = R"({"plan":"pro","tags":["a","b"],"nested":{"deep":{"n":1.5,"ok":true}}})";
    std::string text = encode_register(r);
    json body = json::parse(text);
    EXPECT_EQ(body["userId"], "u\"ser\n"); // escaped properly, round-trips
    EXPECT_EQ(body["email"], "user@example.com");
    EXPECT_EQ(body["phone"], "+14155550123");
    EXPECT_EQ(body["merge"], true);
    ASSERT_TRUE(body["metadata"].is_object()); // embedded, not a string
    EXPECT_EQ(body["metadata"]["plan"], "pro");
    EXPECT_EQ(body["metadata"]["tags"], json::array({"a", "b"}));
    EXPECT_EQ(body["metadata"]["nested"]["deep"]["n"], 1.5);
    EXPECT_EQ(body["metadata"]["nested"]["deep"]["ok"], true);
    EXPECT_EQ(text.find('\n'), std::string::npos); // one line, newline escaped
}

TEST(EncodeRegister, EmptyMetadataObjectIsKept)
{
    RegisterRequest r;
    r.user_id = "u";
    r.metadata_json = " {} ";
    json body = json::parse(encode_register(r));
    ASSERT_TRUE(body.contains("metadata"));
    EXPECT_EQ(body["metadata"], json::object());
}

TEST(EncodeRegister, MetadataMustBeAnObject)
{
    for (const char *metadata : {"[]", "[1,2]", "1", "\"text\"", "true", "null"}) {
        RegisterRequest r;
        r.user_id = "u";
        r.metadata_json = metadata;
        Error e = expect_error([&] { encode_register(r); }, ErrorKind::InvalidArgument,
                               metadata);
        EXPECT_EQ(e.message(), "metadata must be a JSON object") << metadata;
    }
}

TEST(EncodeRegister, MetadataMustBeValidJson)
{
    for (const char *metadata : {"", "{", "{\"a\":}", "{'a':1}", "{\"a\":1} x", "{\"a\":1}{}",
                                 "{\"a\":\"\xff\"}", "{\"a\":NaN}"}) {
        RegisterRequest r;
        r.user_id = "u";
        r.metadata_json = metadata;
        Error e = expect_error([&] { encode_register(r); }, ErrorKind::InvalidArgument,
                               metadata);
        EXPECT_EQ(e.message(), "metadata is not valid JSON") << metadata;
    }
    RegisterRequest r;
    r.user_id = "u";
    r.metadata_json = nested_objects(kMaxJsonDepth + 10, "1");
    expect_error([&] { encode_register(r); }, ErrorKind::InvalidArgument, "deep metadata");
}

TEST(EncodeRegister, ValidatesEveryField)
{
    RegisterRequest r;
    expect_error([&] { encode_register(r); }, ErrorKind::InvalidArgument, "empty user_id");
    r.user_id = std::string(257, 'u');
    expect_error([&] { encode_register(r); }, ErrorKind::InvalidArgument, "long user_id");
    r.user_id = "u";
    r.email = "not-an-email";
    expect_error([&] { encode_register(r); }, ErrorKind::InvalidArgument, "bad email");
    r.email = "";
    expect_error([&] { encode_register(r); }, ErrorKind::InvalidArgument, "empty email");
    r.email.reset();
    r.phone = "+1 415 555 0123";
    expect_error([&] { encode_register(r); }, ErrorKind::InvalidArgument, "bad phone");
    r.phone = "";
    expect_error([&] { encode_register(r); }, ErrorKind::InvalidArgument, "empty phone");
}

TEST(EncodeRegister, InvalidUtf8IsAnInvalidArgument)
{
    // A SQL_ASCII database passes bytes through unconverted.
    RegisterRequest r;
    r.user_id = "caf\xE9";
    expect_error([&] { encode_register(r); }, ErrorKind::InvalidArgument, "latin-1 user_id");
    expect_error([&] { encode_lookup(LookupKey::UserId, "caf\xE9"); },
                 ErrorKind::InvalidArgument, "latin-1 lookup");
    expect_error([&] { encode_lookup(LookupKey::Id, "\xC3"); }, ErrorKind::InvalidArgument,
                 "truncated UTF-8 id");
}

// ---------------------------------------------------------------- drop_invalid_fields

TEST(DropInvalidFields, LeavesOutEachBadFieldWithItsReason)
{
    RegisterRequest r;
    r.user_id = "u1";
    r.email = "jos\xC3\xA9@example.com";
    r.phone = "+1 415 555 0100";
    r.metadata_json = "[1, 2]";
    r.merge = true;
    std::vector<DroppedField> dropped = drop_invalid_fields(r);
    ASSERT_EQ(dropped.size(), 3u);
    EXPECT_EQ(dropped[0].field, "email");
    EXPECT_EQ(dropped[0].reason.rfind("invalid email address: An email address is", 0), 0u)
        << dropped[0].reason;
    EXPECT_EQ(dropped[1].field, "phone");
    EXPECT_EQ(dropped[1].reason.rfind("invalid phone number: A phone number must be in E.164", 0),
              0u)
        << dropped[1].reason;
    EXPECT_EQ(dropped[2].field, "metadata");
    EXPECT_EQ(dropped[2].reason, "metadata must be a JSON object: The value is a JSON array.");
    EXPECT_FALSE(r.email);
    EXPECT_FALSE(r.phone);
    EXPECT_FALSE(r.metadata_json);
    EXPECT_EQ(json::parse(encode_register(r)),
              json::parse(R"({"userId": "u1", "merge": true})"));
}

TEST(DropInvalidFields, KeepsValidAndAbsentFields)
{
    RegisterRequest r;
    r.user_id = "u2";
    r.email = "ok@example.com";
    r.metadata_json = "{\"plan\": \"pro\"}";
    RegisterRequest before = r;
    EXPECT_TRUE(drop_invalid_fields(r).empty());
    EXPECT_EQ(encode_register(r), encode_register(before));
    // Only the bad one goes.
    r.phone = "555-0100";
    std::vector<DroppedField> dropped = drop_invalid_fields(r);
    ASSERT_EQ(dropped.size(), 1u);
    EXPECT_EQ(dropped[0].field, "phone");
    EXPECT_EQ(r.email, before.email);
    EXPECT_EQ(r.metadata_json, before.metadata_json);
    EXPECT_FALSE(r.phone);
}

TEST(DropInvalidFields, NeverDropsTheUserId)
{
    RegisterRequest r;
    r.user_id = std::string(257, 'u');
    r.email = "bad";
    std::vector<DroppedField> dropped = drop_invalid_fields(r);
    ASSERT_EQ(dropped.size(), 1u);
    EXPECT_EQ(dropped[0].field, "email");
    EXPECT_EQ(r.user_id.size(), 257u);
    expect_error([&] { encode_register(r); }, ErrorKind::InvalidArgument, "long user_id");
}

TEST(DropInvalidFields, MetadataThatIsNotJsonOrNotUtf8)
{
    for (const char *metadata : {"{\"a\": ", "{\"a\": \"caf\xE9\"}"}) {
        RegisterRequest r;
        r.user_id = "u3";
        r.metadata_json = metadata;
        std::vector<DroppedField> dropped = drop_invalid_fields(r);
        ASSERT_EQ(dropped.size(), 1u) << metadata;
        EXPECT_EQ(dropped[0].field, "metadata");
        EXPECT_EQ(dropped[0].reason.rfind("metadata is not valid JSON: ", 0), 0u)
            << dropped[0].reason;
        EXPECT_TRUE(dfend_test::is_valid_utf8(dropped[0].reason)) << dropped[0].reason;
        EXPECT_NO_THROW(encode_register(r));
    }
}

// ---------------------------------------------------------------- encode_lookup

TEST(EncodeLookup, ByUserIdOrId)
{
    json by_user = json::parse(encode_lookup(LookupKey::UserId, "user-7"));
    EXPECT_EQ(by_user, json({{"userId", "user-7"}}));
    json by_id = json::parse(encode_lookup(LookupKey::Id, "idn_42"));
    EXPECT_EQ(by_id, json({{"id", "idn_42"}}));
    expect_error([] { encode_lookup(LookupKey::UserId, ""); }, ErrorKind::InvalidArgument,
                 "empty user id");
    expect_error([] { encode_lookup(LookupKey::Id, ""); }, ErrorKind::InvalidArgument,
                 "empty id");
    expect_error([] { encode_lookup(LookupKey::Id, std::string(300, 'i')); },
                 ErrorKind::InvalidArgument, "long id");
}

// ---------------------------------------------------------------- decode_register_response

TEST(DecodeRegister, Ok)
{
    RegisterResult r = decode_register_response(
        R"({"id":"idn_1","created":true,"merged":false,"extra":[1,2,{}]})");
    EXPECT_EQ(r.id, "idn_1");
    EXPECT_TRUE(r.created);
    EXPECT_FALSE(r.merged);
    r = decode_register_response(" \n{\"merged\":true,\"id\":\"x\",\"created\":false}\n");
    EXPECT_EQ(r.id, "x");
    EXPECT_FALSE(r.created);
    EXPECT_TRUE(r.merged);
}

TEST(DecodeRegister, AbsentOrNullFlagsReadFalse)
{
    RegisterResult r = decode_register_response(R"({"id":"a"})");
    EXPECT_EQ(r.id, "a");
    EXPECT_FALSE(r.created);
    EXPECT_FALSE(r.merged);
    r = decode_register_response(R"({"id":"a","created":null,"merged":null})");
    EXPECT_FALSE(r.created);
    EXPECT_FALSE(r.merged);
}

TEST(DecodeRegister, IdMustBeANonEmptyString)
{
    for (const char *body : {R"({})", R"({"created":true})", R"({"id":1})", R"({"id":null})",
                             R"({"id":true})", R"({"id":["a"]})", R"({"id":{"v":"a"}})",
                             R"({"id":""})", R"({"ID":"a"})"}) {
        Error e = expect_bad_response(body, body);
        EXPECT_NE(e.detail().find("\"id\""), std::string::npos) << body;
    }
    expect_bad_response("{\"id\":\"" + std::string(257, 'x') + "\"}", "id too long");
    EXPECT_NO_THROW(decode_register_response("{\"id\":\"" + std::string(256, 'x') + "\"}"));
}

TEST(DecodeRegister, FlagsMustBeBooleans)
{
    for (const char *body : {R"({"id":"a","created":"true"})", R"({"id":"a","created":1})",
                             R"({"id":"a","merged":0})", R"({"id":"a","merged":[]})",
                             R"({"id":"a","merged":{}})"}) {
        Error e = expect_bad_response(body, body);
        EXPECT_NE(e.detail().find("boolean"), std::string::npos) << body;
    }
}

TEST(DecodeRegister, NotAnObject)
{
    for (const char *body : {"[]", R"([{"id":"a"}])", "\"id\"", "1", "true", "null"}) {
        Error e = expect_bad_response(body, body);
        EXPECT_NE(e.detail().find("not a JSON object"), std::string::npos) << body;
    }
}

TEST(DecodeRegister, NotJsonAtAll)
{
    const std::vector<std::string> bodies = {
        "",
        " ",
        "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>",
        "<html>",
        R"({"id":"a","created":tr)",             // truncated
        R"({"id":"a")",
        R"({"id":"a",})",                        // trailing comma
        R"({"id":"a"} {"id":"b"})",              // two documents
        R"({"id":"a"}x)",
        "{'id':'a'}",
        "{\"id\":\"a\xff\"}",                    // invalid UTF-8 in a string
        "{\"id\":\"\xC3\x28\"}",                 // bad continuation byte
        "{\"id\":\"\xED\xA0\x80\"}",             // UTF-16 surrogate encoded in UTF-8
        "{\"id\":\"\xF0\x9F\x98\"}",             // truncated 4-byte sequence
        "{\"id\":\"\xC0\xAF\"}",                 // overlong encoding
        "\xEF\xBB\xBF{\"id\":\"a\"}x",           // BOM then garbage
        R"({"id":"\ud800"})",                    // lone surrogate escape
        "{\"id\":\"a\nb\"}",                     // raw control character
        R"({"id":NaN})",
    };
    for (const std::string &body : bodies)
        expect_bad_response(body, "body: " + body);
}

TEST(DecodeRegister, NulCharacterRefused)
{
    Error e = expect_bad_response(R"({"id":"a\u0000b"})", "nul in id");
    EXPECT_NE(e.detail().find("\\u0000"), std::string::npos);
    expect_bad_response(R"({"id":"a","x":{"y":["\u0000"]}})", "nul deep inside");
    expect_bad_response(R"({"id":"a","k\u0000":1})", "nul in a key");
    // The same in a lookup reply, which PostgreSQL would store as jsonb.
    expect_error([] { decode_identity_response(R"({"metadata":{"note":"\u0000"}})"); },
                 ErrorKind::BadResponse, "nul in identity");
}

TEST(DecodeRegister, RawNulByteRefused)
{
    // Found by the fuzzer: the JSON lexer stopped at a NUL byte, so anything
    // after it was accepted unchecked (and handed to PostgreSQL as text).
    const std::string after = std::string("{\"id\":\"a\"}\0{\"id\":\"b\"}", 21);
    const std::string trailing = std::string("{\"id\":\"a\"}\0", 11);
    const std::string inside = std::string("{\"id\":\"a\0b\"}", 12);
    for (const std::string &body : {after, trailing, inside}) {
        expect_bad_response(body, "raw NUL");
        expect_error([&] { decode_identity_response(body); }, ErrorKind::BadResponse,
                     "raw NUL in identity");
    }
    RegisterRequest r;
    r.user_id = "u";
    r.metadata_json = std::string("{}\0[]", 5);
    expect_error([&] { encode_register(r); }, ErrorKind::InvalidArgument, "raw NUL in metadata");
}

TEST(DecodeRegister, DepthLimit)
{
    // kMaxJsonDepth levels of nesting, counting the outer object, are fine...
    std::string ok_objects = nested_objects(kMaxJsonDepth - 1, "1");
    ok_objects.insert(1, "\"id\":\"a\",");
    EXPECT_NO_THROW(decode_register_response(ok_objects));
    EXPECT_NO_THROW(decode_register_response(
        "{\"id\":\"a\",\"x\":" + nested_arrays(kMaxJsonDepth - 1, "") + "}"));
    EXPECT_NO_THROW(decode_register_response(
        "{\"id\":\"a\",\"x\":" + nested_arrays(kMaxJsonDepth - 1, "7") + "}"));
    // ... one more is not, whatever the innermost value.
    for (const std::string &inner : {std::string(""), std::string("1"), std::string("[]")}) {
        Error e = expect_bad_response(
            "{\"id\":\"a\",\"x\":" + nested_arrays(kMaxJsonDepth, inner) + "}",
            "depth + 1, inner " + inner);
        EXPECT_NE(e.detail().find("deeper"), std::string::npos) << e.detail();
    }
    Error e = expect_bad_response(nested_objects(kMaxJsonDepth + 1, "1"), "objects");
    EXPECT_NE(e.detail().find("deeper"), std::string::npos);
    // Very deep input is refused without exhausting the stack.
    expect_bad_response(nested_arrays(200000, ""), "200000 arrays");
    expect_bad_response(std::string(500000, '['), "unclosed arrays");
    expect_bad_response(nested_objects(100000, "1"), "100000 objects");
}

TEST(DecodeRegister, SizeLimit)
{
    // Exactly kMaxResponseBytes is accepted, one byte more is not.
    const std::string head = R"({"id":"a","pad":")";
    const std::string tail = "\"}";
    std::string body = head + std::string(kMaxResponseBytes - head.size() - tail.size(), 'p') + tail;
    ASSERT_EQ(body.size(), kMaxResponseBytes);
    EXPECT_EQ(decode_register_response(body).id, "a");
    body.insert(head.size(), "p");
    Error e = expect_bad_response(body, "1 MiB + 1");
    EXPECT_NE(e.detail().find("larger"), std::string::npos);
    expect_error([&] { decode_identity_response(body); }, ErrorKind::BadResponse,
                 "identity 1 MiB + 1");
    EXPECT_EQ(extract_error_message("{\"error\":\"x\",\"pad\":\"" +
                                    std::string(kMaxResponseBytes, 'p') + "\"}"),
              "");
}

// ---------------------------------------------------------------- decode_identity_response

TEST(DecodeIdentity, KeepsEveryFieldAndNumberSpelling)
{
    const std::string body =
        "{ \"id\" : \"idn_1\",\n  \"account\":\"acc\", \"futureField\": {\"x\": [1, 2.50, "
        "1e3, -0, true, null, 12345678901234567890123, 0.1000000000000000055511, "
        "-9223372036854775808, 18446744073709551615]}, \"identifiers\":{\"emails\":[\"a@b.co\"]},"
        "\"name\":\"J\\u00f6rg \\ud83d\\ude00\", \"time\": 1700000000000,"
        "\"dup\":1, \"dup\":2, \"esc\":\"q\\\"b\\\\n\\n\\u0001\", \"\":[] }  ";
    std::string kept = decode_identity_response(body, "sk_test_emulator");
    EXPECT_EQ(kept,
              "{\"id\":\"idn_1\",\"account\":\"acc\",\"futureField\":{\"x\":[1,2.50,1e3,0,true,"
              "null,12345678901234567890123,0.1000000000000000055511,-9223372036854775808,"
              "18446744073709551615]},\"identifiers\":{\"emails\":[\"a@b.co\"]},"
              "\"name\":\"J\xC3\xB6rg \xF0\x9F\x98\x80\",\"time\":1700000000000,\"dup\":1,"
              "\"dup\":2,\"esc\":\"q\\\"b\\\\n\\n\\u0001\",\"\":[]}");
    EXPECT_TRUE(dfend_test::is_valid_utf8(kept));
    // The same value as the reply (nlohmann keeps the last duplicate).
    EXPECT_EQ(json::parse(kept), json::parse(body));
    // No id at all is fine for a lookup (DFend echoes what it has).
    EXPECT_EQ(decode_identity_response("{}"), "{}");
    EXPECT_EQ(decode_identity_response(R"({"a":{},"b":[[],{}]})"), R"({"a":{},"b":[[],{}]})");
}

TEST(DecodeIdentity, KeyRedactedHoweverItIsEscaped)
{
    const std::string key = "sk_test_emulator";
    for (const std::string &spelled :
         {std::string("sk_test_emulator"), std::string("\\u0073k_test_emulator"),
          std::string("\\u0073\\u006b\\u005f\\u0074\\u0065\\u0073\\u0074_emulator"),
          std::string("sk_te\\u0001st_emulator"), std::string("sk_te\\u200bst_emulator"),
          std::string("sk_test\\n_emulator"), std::string("sk_test_em\\ufffdulator"),
          std::string("sk_test\\u005femulator")}) {
        const std::string body = "{\"id\":\"idn_1\",\"metadata\":{\"note\":\"key " + spelled +
                                 " here\",\"" + spelled + "\":[\"" + spelled + "\"]}}";
        std::string kept = decode_identity_response(body, key);
        EXPECT_EQ(kept.find(key), std::string::npos) << kept;
        EXPECT_EQ(kept.find("sk_te"), std::string::npos) << kept;
        json value = json::parse(kept);
        EXPECT_EQ(value["metadata"]["note"], "key [redacted] here") << kept;
        EXPECT_EQ(value["metadata"]["[redacted]"], json::array({"[redacted]"})) << kept;
        EXPECT_EQ(value["id"], "idn_1");
    }
}

TEST(DecodeIdentity, RefusesWhatJsonbWouldNot)
{
    for (const char *body : {"", "[]", "null", "\"x\"", "{", "<html></html>",
                             R"({"id":5})", R"({"id":null})", R"({"id":{}})"})
        expect_error([&] { decode_identity_response(body); }, ErrorKind::BadResponse, body);
    expect_error([] { decode_identity_response("{\"a\":\"\xff\"}"); }, ErrorKind::BadResponse,
                 "invalid UTF-8");
    expect_error([] { decode_identity_response(nested_arrays(kMaxJsonDepth + 1, "")); },
                 ErrorKind::BadResponse, "too deep");
}

// ---------------------------------------------------------------- extract_error_message

TEST(ExtractErrorMessage, KnownShapes)
{
    EXPECT_EQ(extract_error_message(R"({"error":"bad email"})"), "bad email");
    EXPECT_EQ(extract_error_message(R"({"message":"bad phone"})"), "bad phone");
    EXPECT_EQ(extract_error_message(R"({"error":{"message":"nested","code":7}})"), "nested");
    EXPECT_EQ(extract_error_message(R"({"detail":"from detail"})"), "from detail");
    // "error" wins over "message"; an unusable "error" falls through.
    EXPECT_EQ(extract_error_message(R"({"message":"m","error":"e"})"), "e");
    EXPECT_EQ(extract_error_message(R"({"error":42,"message":"m"})"), "m");
    EXPECT_EQ(extract_error_message(R"({"error":{"code":1},"message":"m"})"), "m");
    EXPECT_EQ(extract_error_message("{\"error\":\"J\\u00f6rg \xE2\x9C\x93\"}"),
              "J\xC3\xB6rg \xE2\x9C\x93");
}

TEST(ExtractErrorMessage, NothingUsableGivesEmpty)
{
    for (const char *body : {"", "Internal Server Error", "<html><body>oops</body></html>",
                             "{", "[\"error\"]", "\"error\"", "{}", R"({"error":null})",
                             R"({"error":[1]})", R"({"errors":["x"]})",
                             R"({"error":{"msg":"x"}})", "{\"error\":\"\xff\"}"})
        EXPECT_EQ(extract_error_message(body), "") << body;
}

TEST(ExtractErrorMessage, ControlCharactersReplaced)
{
    std::string m = extract_error_message(
        R"({"error":"line1\nERROR:  forged\r\tx\u0000y\u001bz\u007f!"})");
    EXPECT_EQ(m, "line1 ERROR:  forged  x y z !");
    for (char c : m)
        EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 || c == 0x7f);
}

TEST(ExtractErrorMessage, TruncatedWithoutSplittingACharacter)
{
    // Exactly 300 bytes is kept whole; 301 is cut to 300 plus "...".
    std::string exact(300, 'a');
    EXPECT_EQ(extract_error_message(json({{"error", exact}}).dump()), exact);
    std::string m = extract_error_message(json({{"error", exact + "b"}}).dump());
    EXPECT_EQ(m, exact + "...");

    // Multi-byte characters straddling the limit, at every alignment.
    for (const std::string &ch : {std::string("\xC3\xA9"), std::string("\xE2\x82\xAC"),
                                  std::string("\xF0\x9F\x98\x80")}) {
        for (std::size_t prefix = 290; prefix <= 300; ++prefix) {
            std::string original = std::string(prefix, 'x');
            while (original.size() < 400)
                original += ch;
            std::string out = extract_error_message(json({{"error", original}}).dump());
            ASSERT_GE(out.size(), 3u);
            EXPECT_EQ(out.substr(out.size() - 3), "...");
            std::string kept = out.substr(0, out.size() - 3);
            EXPECT_TRUE(dfend_test::is_valid_utf8(kept)) << "prefix " << prefix << " char " << ch.size();
            EXPECT_EQ(original.compare(0, kept.size(), kept), 0);
            EXPECT_GE(kept.size(), 300u);
            EXPECT_LT(kept.size(), 300u + ch.size());
        }
    }
}

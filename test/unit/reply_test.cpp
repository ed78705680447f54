// Text from a reply: safe_reply_text, redact_secret, and the decoders that
// use them. Whatever DFend (or anything in its place) sends, what dfend
// stores or shows is valid UTF-8 without control characters or the key.
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

const std::string kKey = "sk_test_emulator";

void expect_safe(const std::string &text, const std::string &what)
{
    EXPECT_TRUE(dfend_test::is_valid_utf8(text)) << what << ": " << text;
    EXPECT_EQ(text.find(kKey), std::string::npos) << what << ": " << text;
    for (unsigned char c : text)
        EXPECT_FALSE(c < 0x20 || c == 0x7f) << what << ": " << text;
}

} // namespace

// ---------------------------------------------------------------- safe_reply_text

TEST(SafeReplyText, PlainTextUnchanged)
{
    EXPECT_EQ(safe_reply_text("email must be valid", kKey), "email must be valid");
    EXPECT_EQ(safe_reply_text("J\xC3\xB6rg \xE2\x9C\x93 \xF0\x9F\x98\x80", kKey),
              "J\xC3\xB6rg \xE2\x9C\x93 \xF0\x9F\x98\x80");
    EXPECT_EQ(safe_reply_text("", kKey), "");
    EXPECT_EQ(safe_reply_text("no secret given", ""), "no secret given");
}

TEST(SafeReplyText, InvalidUtf8BecomesReplacementCharacters)
{
    const std::string fffd = "\xEF\xBF\xBD";
    EXPECT_EQ(safe_reply_text("a\xFF" "b", kKey), "a" + fffd + "b");
    EXPECT_EQ(safe_reply_text("cut \xE2\x82", kKey), "cut " + fffd + fffd);
    EXPECT_EQ(safe_reply_text("\xC0\xAF", kKey), fffd + fffd);              // overlong "/"
    EXPECT_EQ(safe_reply_text("\xED\xA0\x80", kKey), fffd + fffd + fffd);   // a surrogate
    EXPECT_EQ(safe_reply_text("\xF4\x90\x80\x80", kKey), fffd + fffd + fffd + fffd); // > U+10FFFF
    EXPECT_EQ(safe_reply_text("\x80\xBF", kKey), fffd + fffd);              // lone continuations
    for (const char *bytes : {"\xFE\xFF", "Latin-1 caf\xE9", "\xE0\x80\x80", "\xF8\x88\x80\x80\x80"})
        expect_safe(safe_reply_text(bytes, kKey), bytes);
}

TEST(SafeReplyText, ControlCharactersBecomeSpacesAndInvisibleOnesGo)
{
    EXPECT_EQ(safe_reply_text("line1\nERROR:  forged\r\tx", kKey), "line1 ERROR:  forged  x");
    EXPECT_EQ(safe_reply_text(std::string("a\0b", 3), kKey), "a b");
    EXPECT_EQ(safe_reply_text("a\x1b[31mred\x7f", kKey), "a [31mred ");
    EXPECT_EQ(safe_reply_text("c1 \xC2\x85 \xC2\x9B", kKey), "c1    ");
    // Bidi overrides and zero-width characters show as nothing.
    EXPECT_EQ(safe_reply_text("a\xE2\x80\xAE" "b\xE2\x80\x8B" "c\xEF\xBB\xBF", kKey), "abc");
}

TEST(SafeReplyText, KeyRedactedWhenSplit)
{
    for (const std::string &split :
         {std::string("sk_te\x01st_emulator"), std::string("sk_te\nst_emulator"),
          std::string("s\x01k\x02_\x03t\x04" "e\x05s\x06t\x07_\x08" "e\x0bm\x0cu\x0el\x0f" "a\x1ft\x7fo\x1br"),
          std::string("sk_te\xE2\x80\x8Bst_emulator"), std::string("sk_te\xC2\xADst_emulator"),
          std::string("sk_te st_emulator"), std::string("sk_te\xC2\xA0st_emulator"),
          std::string("sk_te\xFFst_emulator"), std::string("sk_te\xEF\xBF\xBDst_emulator"),
          std::string("sk_te\t\r\n \x01\xE2\x80\x8F" "st_emulator"),
          std::string("sk_test_emulator")}) {
        std::string out = safe_reply_text("key " + split + " is wrong", kKey);
        EXPECT_EQ(out, "key [redacted] is wrong") << split;
        expect_safe(out, split);
    }
    // Twice, adjacent, and a near miss that stays.
    EXPECT_EQ(safe_reply_text(kKey + kKey + " " + kKey, kKey), "[redacted][redacted] [redacted]");
    EXPECT_EQ(safe_reply_text("sk_test_emulato", kKey), "sk_test_emulato");
    EXPECT_EQ(safe_reply_text("ssk_test_emulatorr", kKey), "s[redacted]r");
    EXPECT_EQ(safe_reply_text("sk_test-emulator", kKey), "sk_test-emulator");
}

TEST(SafeReplyText, CutAfterRedactionAtACharacterBoundary)
{
    // A key that straddles the cut is redacted whole before the cut.
    for (std::size_t prefix = 280; prefix <= 300; ++prefix) {
        std::string out = safe_reply_text(std::string(prefix, 'x') + kKey + " tail", kKey, 300);
        EXPECT_EQ(out.find("sk_"), std::string::npos) << prefix << ": " << out;
        if (prefix < 300) { // the marker starts before the cut
            EXPECT_NE(out.find('['), std::string::npos) << prefix << ": " << out;
        }
        expect_safe(out, "prefix " + std::to_string(prefix));
    }
    // The cut never ends inside a character, also one built from a bad byte.
    for (std::size_t prefix = 296; prefix <= 300; ++prefix) {
        std::string out = safe_reply_text(std::string(prefix, 'x') + "\xFF\xF0\x9F\x98\x80\xE2\x82", kKey, 300);
        expect_safe(out, "prefix " + std::to_string(prefix));
        EXPECT_EQ(out.substr(out.size() - 3), "...");
        EXPECT_LE(out.size(), 300u + 3 + 3);
    }
    EXPECT_EQ(safe_reply_text(std::string(300, 'a'), kKey, 300), std::string(300, 'a'));
    EXPECT_EQ(safe_reply_text(std::string(301, 'a'), kKey, 300), std::string(300, 'a') + "...");
}

TEST(RedactSecret, WorksOnRawBytes)
{
    std::string raw = "{\"error\":\"sk_te\x01st_emulator \xFF sk_test_emulator\"}";
    redact_secret(raw, kKey);
    EXPECT_EQ(raw, "{\"error\":\"[redacted] \xFF [redacted]\"}");
    std::string unchanged = "nothing here";
    redact_secret(unchanged, kKey);
    EXPECT_EQ(unchanged, "nothing here");
    redact_secret(unchanged, "");
    EXPECT_EQ(unchanged, "nothing here");
}

TEST(ErrorRedact, EveryTextMadeSafe)
{
    Error e(ErrorKind::BadResponse, "m sk_te\x01st_emulator", "d \xFF\n", "h sk_test_emulator");
    e.redact(kKey);
    EXPECT_EQ(e.message(), "m [redacted]");
    EXPECT_EQ(e.detail(), "d \xEF\xBF\xBD ");
    EXPECT_EQ(e.hint(), "h [redacted]");
}

// ---------------------------------------------------------------- extract_error_message

TEST(ReplyErrorMessage, EscapedSplitAndInvalidKeyForms)
{
    for (const char *body :
         {R"({"error":"bad key \u0073k_test_emulator"})",
          R"({"error":"bad key sk_te\u0001st_emulator"})",
          R"({"error":"bad key sk_te\u0000st_emulator"})",
          R"({"error":"bad key s\u0001k\u0002_\u0003t\u0004e\u0005s\u0006t\u0007_\u0008e\u000bm\u000cu\u000el\u000fa\u001ft\u007fo\u001br"})",
          R"({"error":"bad key sk_te\u200bst_emulator"})",
          R"({"error":"bad key sk_te\u202est_emulator"})",
          R"({"error":{"message":"bad key sk_te\r\nst_emulator"}})"}) {
        std::string m = extract_error_message(body, kKey);
        EXPECT_EQ(m, "bad key [redacted]") << body;
        expect_safe(m, body);
    }
}

TEST(ReplyErrorMessage, InvalidUtf8InTheBody)
{
    // nlohmann refuses invalid UTF-8 inside a JSON string: no words at all.
    EXPECT_EQ(extract_error_message("{\"error\":\"caf\xE9\"}", kKey), "");
    // A body that is not JSON gives no words either, so no raw byte leaks.
    EXPECT_EQ(extract_error_message("<html>\xFF\xFE sk_test_emulator</html>", kKey), "");
}

TEST(ReplyErrorMessage, KeyAtTheCutBoundary)
{
    for (std::size_t prefix = 280; prefix <= 300; ++prefix) {
        for (const std::string &spelled : {std::string("sk_test_emulator"),
                                           std::string("\\u0073k_te\\u0001st_emulator")}) {
            std::string m = extract_error_message(
                "{\"error\":\"" + std::string(prefix, 'x') + spelled + "\"}", kKey);
            EXPECT_EQ(m.find("sk_"), std::string::npos) << m;
            if (prefix < 300) {
                EXPECT_NE(m.find('['), std::string::npos) << m;
            }
            expect_safe(m, spelled);
        }
    }
}

TEST(ReplyErrorMessage, ParseErrorsDoNotQuoteTheBody)
{
    // nlohmann's "last read: '...'" would quote the start of an echoed key.
    for (const std::string &body :
         {std::string("{\"id\":\"sk_te\x01st_emulator\"}"), std::string("{\"id\":\"sk_te\xFF"),
          std::string("{\"id\": sk_test_emulator}")}) {
        try {
            decode_register_response(body, kKey);
            ADD_FAILURE() << "accepted " << body;
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), ErrorKind::BadResponse);
            EXPECT_EQ(e.detail().find("sk_te"), std::string::npos) << e.detail();
            EXPECT_EQ(e.detail().find("last read"), std::string::npos) << e.detail();
            EXPECT_NE(e.detail().find("column"), std::string::npos) << e.detail();
            expect_safe(e.detail(), body);
        }
    }
}

// ---------------------------------------------------------------- the id of a register reply

TEST(ReplyId, OnlyPrintableAsciiWithoutSpaces)
{
    EXPECT_EQ(decode_register_response(R"({"id":"idn_0123abcdef"})", kKey).id, "idn_0123abcdef");
    EXPECT_EQ(decode_register_response(R"({"id":"!~:/-._"})", kKey).id, "!~:/-._");
    for (const std::string &id :
         {std::string("idn 1"), std::string("idn\\t1"), std::string("idn\\u0001"),
          std::string("idn\\u007f"), std::string("J\\u00f6rg"), std::string("idn\xC3\xA9"),
          std::string("\\ud83d\\ude00"), std::string("idn\\u200b1"), std::string(" "),
          std::string("idn\\n")}) {
        try {
            decode_register_response("{\"id\":\"" + id + "\"}", kKey);
            ADD_FAILURE() << "accepted id " << id;
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), ErrorKind::BadResponse) << id;
            EXPECT_EQ(e.message(), "unexpected response from DFend");
            EXPECT_EQ(e.detail(), "The field \"id\" may contain only printable ASCII characters "
                                  "without spaces.") << id;
        }
    }
}

TEST(ReplyId, TheKeyIsNeverAnId)
{
    for (const std::string &id : {kKey, "idn_" + kKey, std::string("\\u0073k_test_emulator")}) {
        try {
            decode_register_response("{\"id\":\"" + id + "\"}", kKey);
            ADD_FAILURE() << "accepted id " << id;
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), ErrorKind::BadResponse);
            EXPECT_EQ(e.detail(), "The field \"id\" contains the API key.");
        }
    }
    EXPECT_EQ(decode_register_response(R"({"id":"sk_test_emulato"})", kKey).id, "sk_test_emulato");
}

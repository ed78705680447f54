// Local input rules: user_id, email, phone, API key and API URL.
#include "core/error.hpp"
#include "core/validation.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

using namespace dfend;

namespace {

// Runs `fn`, expecting Error(InvalidArgument); returns the error for more checks.
Error expect_invalid(const std::function<void()> &fn, const std::string &what)
{
    try {
        fn();
    } catch (const Error &e) {
        EXPECT_EQ(e.kind(), ErrorKind::InvalidArgument) << what;
        EXPECT_FALSE(e.message().empty()) << what;
        return e;
    } catch (const std::exception &e) {
        ADD_FAILURE() << what << ": unexpected exception " << e.what();
        return Error(ErrorKind::Internal, "unexpected");
    }
    ADD_FAILURE() << what << ": accepted, expected InvalidArgument";
    return Error(ErrorKind::Internal, "accepted");
}

std::string repeat(char c, std::size_t n) { return std::string(n, c); }

} // namespace

// ---------------------------------------------------------------- user_id

TEST(ValidateUserId, EmptyIsRefused)
{
    Error e = expect_invalid([] { validate_user_id(""); }, "empty user_id");
    EXPECT_NE(e.message().find("empty"), std::string::npos);
}

TEST(ValidateUserId, LimitIs256Bytes)
{
    EXPECT_NO_THROW(validate_user_id("u"));
    EXPECT_NO_THROW(validate_user_id(repeat('a', 256)));
    Error e = expect_invalid([] { validate_user_id(repeat('a', 257)); }, "257 bytes");
    EXPECT_NE(e.detail().find("257"), std::string::npos);
    EXPECT_NE(e.detail().find("256"), std::string::npos);
}

TEST(ValidateUserId, CountsBytesNotCharacters)
{
    // 128 two-byte characters = 256 bytes: accepted; one more byte refused.
    std::string s;
    for (int i = 0; i < 128; ++i)
        s += "\xC3\xA9";
    EXPECT_NO_THROW(validate_user_id(s));
    s += "a";
    expect_invalid([&] { validate_user_id(s); }, "257 bytes of UTF-8");
}

// ---------------------------------------------------------------- email

TEST(ValidateEmail, AcceptsOrdinaryAddresses)
{
    const std::vector<std::string> good = {
        "a@b.co",
        "user@example.com",
        "first.last@example.com",
        "first.middle.last@mail.example.co.uk",
        "user+tag@example.com",
        "o'brien@example.ie",
        "x!#$%&'*+-/=?^_`{|}~y@example.com",
        "user@my-host.example.com",
        "user@a-b-c.example.org",
        "USER@EXAMPLE.COM",
        "123@456.example.io",
        "u@xn--bcher-kva.example", // punycode label, letters-only TLD
    };
    for (const std::string &email : good)
        EXPECT_NO_THROW(validate_email(email)) << email;
}

TEST(ValidateEmail, RefusesMalformedAddresses)
{
    const std::vector<std::string> bad = {
        "",
        "plainaddress",
        "@example.com",           // empty local part
        "user@",                  // empty domain
        "user@@example.com",      // two '@'
        "a@b@example.com",        // two '@'
        ".user@example.com",      // leading dot
        "user.@example.com",      // trailing dot
        "us..er@example.com",     // consecutive dots
        "\"quoted\"@example.com", // quoted local part
        "\"a b\"@example.com",
        "user@[192.168.0.1]",     // IP literal
        "user@[IPv6:::1]",
        "user@192.168.0.1",       // last label not letters
        "user@localhost",         // one label
        "user@example",           // one label
        "user@example.c",         // TLD of one letter
        "user@example.c0m",       // TLD with a digit
        "user@example.123",
        "user@-example.com",      // label starts with hyphen
        "user@example-.com",      // label ends with hyphen
        "user@example.-com",
        "user@example..com",      // empty label
        "user@.example.com",
        "user@example.com.",      // trailing dot
        "user@exa_mple.com",      // underscore in domain
        "us er@example.com",      // space
        "user@exa mple.com",
        "user@example.com ",
        " user@example.com",
        "user\n@example.com",
        "us(er)@example.com",     // comment characters
        "us,er@example.com",
        "us\\er@example.com",
        "j\xC3\xB6rg@example.com",     // non-ASCII local part
        "user@b\xC3\xBC" "cher.de",    // non-ASCII domain
        std::string("us\0er@example.com", 17),
    };
    for (const std::string &email : bad)
        expect_invalid([&] { validate_email(email); }, "email \"" + email + "\"");
}

TEST(ValidateEmail, LocalPartLimitIs64Bytes)
{
    EXPECT_NO_THROW(validate_email(repeat('a', 64) + "@example.com"));
    expect_invalid([] { validate_email(repeat('a', 65) + "@example.com"); }, "65-byte local");
}

TEST(ValidateEmail, LabelLimitIs63Bytes)
{
    EXPECT_NO_THROW(validate_email("a@" + repeat('b', 63) + ".com"));
    expect_invalid([] { validate_email("a@" + repeat('b', 64) + ".com"); }, "64-byte label");
}

TEST(ValidateEmail, TotalLimitIs254Bytes)
{
    // local (64) + '@' + 63 + '.' + 63 + '.' + n + ".com"
    auto address_of_length = [](std::size_t total) {
        std::size_t middle = total - 64 - 1 - 63 - 1 - 63 - 1 - 4;
        return repeat('l', 64) + "@" + repeat('d', 63) + "." + repeat('d', 63) + "." +
               repeat('d', middle) + ".com";
    };
    std::string ok = address_of_length(254);
    ASSERT_EQ(ok.size(), 254u);
    EXPECT_NO_THROW(validate_email(ok));
    std::string long_one = address_of_length(255);
    ASSERT_EQ(long_one.size(), 255u);
    Error e = expect_invalid([&] { validate_email(long_one); }, "255-byte address");
    EXPECT_NE(e.message().find("too long"), std::string::npos);
}

TEST(ValidateEmail, ErrorExplainsTheRule)
{
    Error e = expect_invalid([] { validate_email("nope"); }, "no @");
    EXPECT_EQ(e.message(), "invalid email address");
    EXPECT_NE(e.detail().find("@"), std::string::npos);
}

// ---------------------------------------------------------------- phone

TEST(ValidatePhone, E164Edges)
{
    EXPECT_NO_THROW(validate_phone("+12"));
    EXPECT_NO_THROW(validate_phone("+14155550123"));
    EXPECT_NO_THROW(validate_phone("+" + repeat('9', 15)));
    EXPECT_NO_THROW(validate_phone("+100000000000000"));

    const std::vector<std::string> bad = {
        "",
        "+",
        "+1",                       // one digit
        "+" + repeat('9', 16),      // 16 digits
        "+0123456789",              // leading zero
        "+00",
        "14155550123",              // missing '+'
        "001 4155550123",
        "+1 415 555 0123",          // spaces
        "+1-415-555-0123",          // dashes
        "+1(415)5550123",
        "++14155550123",
        "+14155550123 ",
        " +14155550123",
        "+1415555012a",
        "+\xD9\xA1\xD9\xA2\xD9\xA3", // Arabic-Indic digits
        std::string("+1415\0" "5550123", 12),
    };
    for (const std::string &phone : bad) {
        Error e = expect_invalid([&] { validate_phone(phone); }, "phone \"" + phone + "\"");
        EXPECT_NE(e.detail().find("E.164"), std::string::npos);
    }
}

// ---------------------------------------------------------------- identity id

TEST(ValidateIdentityId, EmptyAndLongRefused)
{
    EXPECT_NO_THROW(validate_identity_id("idn_123"));
    EXPECT_NO_THROW(validate_identity_id(repeat('x', 256)));
    expect_invalid([] { validate_identity_id(""); }, "empty id");
    expect_invalid([] { validate_identity_id(repeat('x', 257)); }, "long id");
}

// ---------------------------------------------------------------- api key

TEST(ApiKeyProblem, AcceptsPrintableAscii)
{
    EXPECT_FALSE(api_key_problem("sk_live_0123456789abcdefABCDEF"));
    EXPECT_FALSE(api_key_problem("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"));
    EXPECT_FALSE(api_key_problem(repeat('k', 4096)));
}

TEST(ApiKeyProblem, RefusesWhatCannotGoInAHeader)
{
    const std::string secret = "sk_live_SECRET";
    const std::vector<std::string> bad = {
        secret + " tail",                          // space
        secret + "\ttab",
        secret + "\r\nX-Injected: 1",              // header injection
        secret + "\n",
        secret + "\r",
        std::string("sk_live_SECRET\0x", 16),      // NUL
        secret + "\x7f",                           // DEL
        secret + "\x01",
        secret + "\xC3\xA9",                       // non-ASCII
        repeat('k', 4097),                         // too long
    };
    for (const std::string &key : bad) {
        std::optional<std::string> problem = api_key_problem(key);
        ASSERT_TRUE(problem) << "accepted key of " << key.size() << " bytes";
        EXPECT_EQ(problem->find(secret), std::string::npos) << *problem;
        EXPECT_EQ(problem->find("kkkk"), std::string::npos) << *problem;
    }
}

// ---------------------------------------------------------------- api url

TEST(ApiUrlProblem, AcceptsHttpsAndLoopbackHttp)
{
    const std::vector<std::string> good = {
        "https://api.dfend.app",
        "https://api.dfend.app/",
        "https://api.dfend.app:8443/v1",
        "https://10.0.0.1",
        "http://127.0.0.1:8080",
        "http://127.0.0.1",
        "http://127.1.2.3:9/",
        "http://localhost",
        "http://localhost:5432/prefix",
        "http://[::1]",
        "http://[::1]:8080/",
        "HTTPS://api.dfend.app",
    };
    for (const std::string &url : good)
        EXPECT_FALSE(api_url_problem(url)) << url << ": " << api_url_problem(url).value_or("");
}

TEST(ApiUrlProblem, RefusesEverythingElse)
{
    const std::vector<std::string> bad = {
        "",
        "garbage",
        "api.dfend.app",                         // no scheme
        "//api.dfend.app",
        "https://",
        "http://example.com",                    // clear text to a real host
        "http://10.0.0.1:8080",
        "http://192.168.1.1",
        "http://127.0.0.1.example.com",          // looks like loopback, is not
        "http://localhost.example.com",
        "http://[::2]",
        "ftp://api.dfend.app",
        "file:///etc/passwd",
        "gopher://127.0.0.1",
        "ws://127.0.0.1",
        "https://user:pass@api.dfend.app",       // credentials
        "https://user@api.dfend.app",
        "http://127.0.0.1:80@example.com",       // credentials that hide the host
        "https://api.dfend.app/?x=1",            // query
        "https://api.dfend.app?",
        "https://api.dfend.app/#frag",           // fragment
        "https://api.dfend.app/ path",           // space
        "https://api.dfend.app/\r\nHost: evil",
        "https://api.dfend.app:99999",
    };
    for (const std::string &url : bad) {
        std::optional<std::string> problem = api_url_problem(url);
        EXPECT_TRUE(problem) << "accepted \"" << url << "\"";
    }
}

TEST(ApiUrlProblem, ExplainsWhy)
{
    EXPECT_NE(api_url_problem("http://example.com")->find("loopback"), std::string::npos);
    EXPECT_NE(api_url_problem("ftp://x.example")->find("http"), std::string::npos);
    EXPECT_NE(api_url_problem("https://u:p@x.example")->find("credentials"),
              std::string::npos);
    EXPECT_NE(api_url_problem("https://x.example/?q")->find("query"), std::string::npos);
    // The password is never echoed.
    EXPECT_EQ(api_url_problem("https://u:hunter2@x.example")->find("hunter2"),
              std::string::npos);
}

// ---------------------------------------------------------------- error kinds

TEST(ErrorKinds, NamesAndTransience)
{
    EXPECT_STREQ(kind_name(ErrorKind::InvalidArgument), "invalid argument");
    EXPECT_STREQ(kind_name(ErrorKind::Timeout), "timeout");
    for (ErrorKind kind : {ErrorKind::RateLimited, ErrorKind::Upstream,
                           ErrorKind::ConnectFailed, ErrorKind::ConnectionLost,
                           ErrorKind::Timeout})
        EXPECT_TRUE(is_transient(kind)) << kind_name(kind);
    for (ErrorKind kind : {ErrorKind::InvalidArgument, ErrorKind::Configuration,
                           ErrorKind::Unauthorized, ErrorKind::BadResponse,
                           ErrorKind::TlsVerification, ErrorKind::Cancelled,
                           ErrorKind::Internal})
        EXPECT_FALSE(is_transient(kind)) << kind_name(kind);
}

TEST(ErrorRedact, ReplacesEveryOccurrenceEverywhere)
{
    Error e(ErrorKind::Upstream, "k=SEC", "SEC and SEC", "hint SEC");
    e.redact("SEC");
    EXPECT_EQ(e.message(), "k=[redacted]");
    EXPECT_EQ(e.detail(), "[redacted] and [redacted]");
    EXPECT_EQ(e.hint(), "hint [redacted]");
    e.redact(""); // no-op, must not loop
    EXPECT_EQ(e.message(), "k=[redacted]");
    e.append_detail("More.");
    EXPECT_EQ(e.detail(), "[redacted] and [redacted] More.");
}

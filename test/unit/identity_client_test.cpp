// IdentityClient: status classification, retries, deadlines, cancellation,
// local checks before any request, and redaction of the key.
#include "core/identity_client.hpp"
#include "test_server.hpp"
#include "utf8_check.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

using namespace dfend;
using dfend_test::TestServer;
using nlohmann::json;
using Steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

std::atomic<bool> g_abort{false};
bool abort_requested() noexcept { return g_abort.load(); }
bool never_abort() noexcept { return false; }

long elapsed_ms(Steady::time_point since)
{
    return static_cast<long>(
        std::chrono::duration_cast<milliseconds>(Steady::now() - since).count());
}

HttpResponse reply(long status, std::string body = {}, long retry_after = -1)
{
    HttpResponse r;
    r.status = status;
    r.body = std::move(body);
    r.retry_after_seconds = retry_after;
    return r;
}

void expect_no_secret(const Error &e, const std::string &secret)
{
    EXPECT_EQ(e.message().find(secret), std::string::npos) << e.message();
    EXPECT_EQ(e.detail().find(secret), std::string::npos) << e.detail();
    EXPECT_EQ(e.hint().find(secret), std::string::npos) << e.hint();
}

} // namespace

// ---------------------------------------------------------------- classify_response

TEST(ClassifyResponse, SuccessIsNothing)
{
    for (long status : {200L, 201L, 202L, 204L, 299L})
        EXPECT_FALSE(classify_response(reply(status, "{}"), false)) << status;
}

TEST(ClassifyResponse, NotFoundOnlyWhenAllowed)
{
    EXPECT_FALSE(classify_response(reply(404, R"({"error":"no such identity"})"), true));
    auto e = classify_response(reply(404, R"({"error":"no route"})"), false);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->kind(), ErrorKind::BadResponse);
    EXPECT_EQ(e->http_status(), 404);
    EXPECT_NE(e->detail().find("404"), std::string::npos);
    EXPECT_NE(e->detail().find("no route"), std::string::npos);
}

TEST(ClassifyResponse, OtherClientErrorsAreNotTheRowsFault)
{
    // A setup problem answers every row the same way: never a dead letter.
    for (long status : {405L, 407L, 410L, 415L, 426L, 451L}) {
        auto e = classify_response(reply(status, R"({"error":"nope"})"), false);
        ASSERT_TRUE(e) << status;
        EXPECT_EQ(e->kind(), ErrorKind::BadResponse) << status;
        EXPECT_FALSE(is_transient(e->kind())) << status;
        EXPECT_NE(e->detail().find("HTTP " + std::to_string(status)), std::string::npos);
    }
}

TEST(ClassifyResponse, ClientErrorsBlameTheRequest)
{
    for (long status : {400L, 409L, 413L, 422L}) {
        auto e = classify_response(reply(status, R"({"error":"email is not valid"})"), true);
        ASSERT_TRUE(e) << status;
        EXPECT_EQ(e->kind(), ErrorKind::InvalidArgument) << status;
        EXPECT_EQ(e->message(), "DFend rejected the request");
        EXPECT_EQ(e->http_status(), status);
        EXPECT_NE(e->detail().find("HTTP " + std::to_string(status)), std::string::npos);
        EXPECT_NE(e->detail().find("DFend said: email is not valid"), std::string::npos)
            << e->detail();
        EXPECT_EQ(e->retry_after_seconds(), -1);
    }
    // Without a usable body the status alone is reported.
    auto e = classify_response(reply(400, "<html>Bad Request</html>"), false);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->detail(), "DFend answered HTTP 400.");
}

TEST(ClassifyResponse, RejectedKey)
{
    for (long status : {401L, 403L}) {
        auto e = classify_response(reply(status, R"({"message":"invalid api key"})"), true);
        ASSERT_TRUE(e);
        EXPECT_EQ(e->kind(), ErrorKind::Unauthorized);
        EXPECT_EQ(e->http_status(), status);
        EXPECT_NE(e->hint().find("secret key"), std::string::npos) << e->hint();
        EXPECT_NE(e->hint().find("dfend.api_key"), std::string::npos) << e->hint();
        EXPECT_NE(e->detail().find("invalid api key"), std::string::npos);
    }
}

TEST(ClassifyResponse, TransientStatuses)
{
    auto e = classify_response(reply(429, R"({"error":"slow down"})", 30), false);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->kind(), ErrorKind::RateLimited);
    EXPECT_EQ(e->retry_after_seconds(), 30);
    EXPECT_NE(e->detail().find("slow down"), std::string::npos);
    e = classify_response(reply(429), false);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->retry_after_seconds(), -1);

    for (long status : {500L, 502L, 503L, 504L, 599L}) {
        e = classify_response(reply(status, "", 2), true);
        ASSERT_TRUE(e) << status;
        EXPECT_EQ(e->kind(), ErrorKind::Upstream) << status;
        EXPECT_EQ(e->retry_after_seconds(), 2);
        EXPECT_EQ(e->http_status(), status);
    }
    e = classify_response(reply(408), false);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->kind(), ErrorKind::Timeout);
    EXPECT_TRUE(is_transient(e->kind()));
}

TEST(ClassifyResponse, RedirectsAreBadResponses)
{
    for (long status : {300L, 301L, 302L, 303L, 304L, 307L, 308L}) {
        auto e = classify_response(reply(status), false);
        ASSERT_TRUE(e) << status;
        EXPECT_EQ(e->kind(), ErrorKind::BadResponse) << status;
        EXPECT_EQ(e->message(), "unexpected redirect from DFend");
        EXPECT_NE(e->hint().find("dfend.api_url"), std::string::npos);
        EXPECT_FALSE(is_transient(e->kind()));
    }
}

TEST(ClassifyResponse, OddStatusesAreBadResponses)
{
    for (long status : {0L, 1L, 100L, 101L, 103L, 199L, 600L, 700L, 999L, -1L}) {
        auto e = classify_response(reply(status), true);
        ASSERT_TRUE(e) << status;
        EXPECT_EQ(e->kind(), ErrorKind::BadResponse) << status;
        EXPECT_EQ(e->message(), "unexpected response from DFend") << status;
    }
}

TEST(ClassifyResponse, ControlCharactersFromTheBodyAreNeutralised)
{
    auto e = classify_response(reply(400, R"({"error":"x\nERROR: forged"})"), false);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->detail().find('\n'), std::string::npos);
    EXPECT_NE(e->detail().find("x ERROR: forged"), std::string::npos);
}

// ---------------------------------------------------------------- helpers

TEST(IdentityUrl, JoinsThePath)
{
    EXPECT_EQ(identity_url("https://api.dfend.app"), "https://api.dfend.app/identity");
    EXPECT_EQ(identity_url("https://api.dfend.app/"), "https://api.dfend.app/identity");
    EXPECT_EQ(identity_url("https://api.dfend.app///"), "https://api.dfend.app/identity");
    EXPECT_EQ(identity_url("http://127.0.0.1:8080/v1"), "http://127.0.0.1:8080/v1/identity");
}

TEST(SleepUnlessAborted, SleepsTheWholeDelay)
{
    auto start = Steady::now();
    EXPECT_TRUE(sleep_unless_aborted(Millis(60), nullptr));
    long took = elapsed_ms(start);
    EXPECT_GE(took, 60);
    EXPECT_LT(took, 500);
    start = Steady::now();
    EXPECT_TRUE(sleep_unless_aborted(Millis(30), &never_abort));
    EXPECT_GE(elapsed_ms(start), 30);
    EXPECT_TRUE(sleep_unless_aborted(Millis(0), nullptr));
}

TEST(SleepUnlessAborted, StopsWhenAborted)
{
    g_abort = true;
    auto start = Steady::now();
    EXPECT_FALSE(sleep_unless_aborted(Millis(5000), &abort_requested));
    EXPECT_FALSE(sleep_unless_aborted(Millis(0), &abort_requested));
    EXPECT_LT(elapsed_ms(start), 100);
    g_abort = false;

    std::thread canceller([] {
        std::this_thread::sleep_for(milliseconds(50));
        g_abort = true;
    });
    start = Steady::now();
    EXPECT_FALSE(sleep_unless_aborted(Millis(5000), &abort_requested));
    long took = elapsed_ms(start);
    canceller.join();
    g_abort = false;
    EXPECT_GE(took, 45);
    EXPECT_LT(took, 300);
}

TEST(CheckSettings, ConfigurationErrors)
{
    ClientSettings s;
    s.api_url = "https://api.dfend.app";
    s.api_key = "sk_live_GOODKEY";
    EXPECT_NO_THROW(check_settings(s));

    auto expect_configuration = [](const ClientSettings &settings, const std::string &what) {
        try {
            check_settings(settings);
            ADD_FAILURE() << what << ": accepted";
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), ErrorKind::Configuration) << what;
            return e;
        }
        return Error(ErrorKind::Internal, "accepted");
    };
    ClientSettings bad = s;
    bad.api_key.clear();
    Error e = expect_configuration(bad, "no key");
    EXPECT_EQ(e.message(), "DFend API key is not configured");
    EXPECT_NE(e.hint().find("dfend.api_key_file"), std::string::npos);

    bad = s;
    bad.api_key = "sk_live_SECRETKEY\r\nX-Evil: 1";
    e = expect_configuration(bad, "CRLF key");
    expect_no_secret(e, "sk_live_SECRETKEY");

    bad = s;
    bad.api_key = "sk_live_SECRETKEY with space";
    e = expect_configuration(bad, "space in key");
    expect_no_secret(e, "SECRETKEY");

    bad = s;
    bad.api_url = "http://api.dfend.app";
    e = expect_configuration(bad, "plain http");
    EXPECT_EQ(e.message(), "invalid value for dfend.api_url");
    bad.api_url = "";
    expect_configuration(bad, "empty url");
}

// ---------------------------------------------------------------- against a server

namespace {

class ClientTest : public ::testing::Test {
  protected:
    void SetUp() override
    {
        g_abort = false;
        settings_.api_key = kKey;
        settings_.connect_timeout_ms = 1000;
        settings_.request_timeout_ms = 2000;
        settings_.retry.max_retries = 3;
        settings_.retry.base_delay = Millis(5);
        settings_.retry.max_delay = Millis(2000);
    }
    void TearDown() override
    {
        g_abort = false;
        server_.stop();
    }

    void start()
    {
        server_.start();
        settings_.api_url = server_.base_url();
    }

    // Answers every request with the statuses in turn (the last one repeats).
    void answer(std::vector<std::pair<int, std::string>> replies,
                std::string retry_after = {})
    {
        server_.on_identity([this, replies, retry_after](const httplib::Request &,
                                                         httplib::Response &res) {
            std::size_t i = std::min(calls_++, replies.size() - 1);
            res.status = replies[i].first;
            if (!retry_after.empty())
                res.set_header("Retry-After", retry_after);
            res.set_content(replies[i].second, "application/json");
        });
        start();
    }

    RegisterRequest request()
    {
        RegisterRequest r;
        r.user_id = "user-1";
        r.email = "user@example.com";
        return r;
    }

    Error register_error(ErrorKind kind, const RegisterRequest &r, CallControl control = {})
    {
        try {
            RegisterResult result = client_.register_identity(r, settings_, control);
            ADD_FAILURE() << "no error; id " << result.id;
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), kind) << kind_name(e.kind()) << ": " << e.message() << " / "
                                      << e.detail();
            return e;
        }
        return Error(ErrorKind::Internal, "no error");
    }
    Error register_error(ErrorKind kind) { return register_error(kind, request()); }

    static constexpr const char *kKey = "sk_test_SeCrEt0123456789";
    TestServer server_;
    IdentityClient client_;
    ClientSettings settings_;
    std::atomic<std::size_t> calls_{0};
};

} // namespace

TEST_F(ClientTest, RegisterSendsTheEncodedBody)
{
    answer({{201, R"({"id":"idn_1","created":true,"merged":false})"}});
    RegisterRequest r = request();
    r.phone = "+14155550123";
    r.merge = true;
    r.metadata_json = R"({"plan":"pro"})";
    RegisterResult result = client_.register_identity(r, settings_, {});
    EXPECT_EQ(result.id, "idn_1");
    EXPECT_TRUE(result.created);
    EXPECT_FALSE(result.merged);

    auto requests = server_.requests();
    ASSERT_EQ(requests.size(), 1u);
    EXPECT_EQ(requests[0].method, "POST");
    EXPECT_EQ(requests[0].path, "/identity");
    EXPECT_EQ(requests[0].header("x-api-key"), kKey);
    EXPECT_EQ(json::parse(requests[0].body),
              json({{"userId", "user-1"}, {"email", "user@example.com"},
                    {"phone", "+14155550123"}, {"merge", true},
                    {"metadata", {{"plan", "pro"}}}}));
}

TEST_F(ClientTest, BaseUrlWithTrailingSlash)
{
    answer({{200, R"({"id":"idn_2"})"}});
    settings_.api_url += "/";
    EXPECT_EQ(client_.register_identity(request(), settings_, {}).id, "idn_2");
    EXPECT_EQ(server_.requests().at(0).path, "/identity");
}

TEST_F(ClientTest, GetIdentityReturnsTheBodyAndNullForNotFound)
{
    const std::string identity =
        R"({"id":"idn_7","account":"acc","newField":[1,{"x":null}],"metadata":{}})";
    server_.on_identity([&](const httplib::Request &req, httplib::Response &res) {
        json body = json::parse(req.body, nullptr, false);
        if (body.value("userId", "") == "known" || body.value("id", "") == "idn_7")
            res.set_content(identity, "application/json");
        else {
            res.status = 404;
            res.set_content(R"({"error":"not found"})", "application/json");
        }
    });
    start();
    EXPECT_EQ(client_.get_identity(LookupKey::UserId, "known", settings_, {}), identity);
    EXPECT_EQ(client_.get_identity(LookupKey::Id, "idn_7", settings_, {}), identity);
    EXPECT_EQ(client_.get_identity(LookupKey::UserId, "unknown", settings_, {}), std::nullopt);

    auto requests = server_.requests();
    ASSERT_EQ(requests.size(), 3u);
    for (const auto &r : requests) {
        EXPECT_EQ(r.method, "GET");
        EXPECT_EQ(r.header("x-api-key"), kKey);
    }
    EXPECT_EQ(requests[0].body, R"({"userId":"known"})");
    EXPECT_EQ(requests[1].body, R"({"id":"idn_7"})");
    EXPECT_EQ(requests[2].body, R"({"userId":"unknown"})");
    // All three over one connection.
    EXPECT_EQ(requests[0].remote_port, requests[2].remote_port);
}

TEST_F(ClientTest, RegisterNotFoundIsABadResponse)
{
    answer({{404, R"({"error":"no such route"})"}});
    Error e = register_error(ErrorKind::BadResponse);
    EXPECT_NE(e.detail().find("no such route"), std::string::npos);
    EXPECT_EQ(server_.request_count(), 1u);
}

TEST_F(ClientTest, SuccessWithABadBodyIsABadResponse)
{
    answer({{200, "<html>maintenance</html>"}});
    register_error(ErrorKind::BadResponse);
    EXPECT_EQ(server_.request_count(), 1u); // not transient: no retry
}

TEST_F(ClientTest, RedirectIsRefusedAndNotFollowed)
{
    TestServer target;
    target.on_identity([](const httplib::Request &, httplib::Response &res) {
        res.set_content(R"({"id":"stolen"})", "application/json");
    });
    target.start();
    server_.on_identity([&target](const httplib::Request &, httplib::Response &res) {
        res.status = 301;
        res.set_header("Location", target.base_url() + "/identity");
    });
    start();
    Error e = register_error(ErrorKind::BadResponse);
    EXPECT_EQ(e.message(), "unexpected redirect from DFend");
    EXPECT_EQ(e.http_status(), 301);
    try {
        client_.get_identity(LookupKey::UserId, "u", settings_, {});
        ADD_FAILURE() << "GET followed or accepted a redirect";
    } catch (const Error &error) {
        EXPECT_EQ(error.kind(), ErrorKind::BadResponse);
    }
    EXPECT_EQ(server_.request_count(), 2u);
    EXPECT_EQ(target.request_count(), 0u);
    target.stop();
}

TEST_F(ClientTest, RetriesUpstreamFailuresThenSucceeds)
{
    answer({{503, R"({"error":"busy"})"}, {502, ""}, {201, R"({"id":"idn_3","created":true})"}});
    RegisterResult result = client_.register_identity(request(), settings_, {});
    EXPECT_EQ(result.id, "idn_3");
    auto requests = server_.requests();
    ASSERT_EQ(requests.size(), 3u);
    // Every attempt sends the same request.
    EXPECT_EQ(requests[0].body, requests[2].body);
    EXPECT_EQ(requests[2].header("x-api-key"), kKey);
}

TEST_F(ClientTest, RetriesGetToo)
{
    answer({{500, ""}, {200, R"({"id":"idn_4"})"}});
    EXPECT_EQ(client_.get_identity(LookupKey::Id, "idn_4", settings_, {}), R"({"id":"idn_4"})");
    EXPECT_EQ(server_.request_count(), 2u);
}

TEST_F(ClientTest, MaxRetriesIsRespectedExactly)
{
    answer({{503, R"({"error":"down"})"}});
    for (int max_retries : {0, 1, 4}) {
        calls_ = 0;
        std::size_t before = server_.request_count();
        settings_.retry.max_retries = max_retries;
        Error e = register_error(ErrorKind::Upstream);
        EXPECT_EQ(server_.request_count() - before, static_cast<std::size_t>(max_retries + 1));
        EXPECT_EQ(e.http_status(), 503);
        EXPECT_NE(e.detail().find("down"), std::string::npos);
        if (max_retries > 0) {
            EXPECT_NE(e.detail().find("Gave up after " + std::to_string(max_retries + 1) +
                                      " attempts."),
                      std::string::npos)
                << e.detail();
        }
    }
}

TEST_F(ClientTest, NoRetryOnClientErrors)
{
    answer({{400, R"({"error":"phone is not E.164"})"}});
    auto start_time = Steady::now();
    Error e = register_error(ErrorKind::InvalidArgument);
    EXPECT_EQ(server_.request_count(), 1u);
    EXPECT_EQ(e.http_status(), 400);
    EXPECT_NE(e.detail().find("DFend said: phone is not E.164"), std::string::npos);
    EXPECT_EQ(e.detail().find("Gave up"), std::string::npos);
    EXPECT_LT(elapsed_ms(start_time), 500);
}

TEST_F(ClientTest, NoRetryOnRejectedKey)
{
    answer({{401, R"({"error":"unknown key"})"}});
    Error e = register_error(ErrorKind::Unauthorized);
    EXPECT_EQ(server_.request_count(), 1u);
    EXPECT_FALSE(e.hint().empty());
}

TEST_F(ClientTest, RetryAfterIsHonoured)
{
    answer({{429, R"({"error":"rate limited"})"}, {201, R"({"id":"idn_5"})"}}, "1");
    settings_.retry.base_delay = Millis(1);
    auto start_time = Steady::now();
    EXPECT_EQ(client_.register_identity(request(), settings_, {}).id, "idn_5");
    long took = elapsed_ms(start_time);
    EXPECT_GE(took, 1000) << "came back before Retry-After";
    EXPECT_EQ(server_.request_count(), 2u);
}

TEST_F(ClientTest, RetryAfterBeyondThePolicyFailsAtOnce)
{
    answer({{429, R"({"error":"rate limited"})"}}, "10");
    settings_.retry.max_delay = Millis(1000);
    auto start_time = Steady::now();
    Error e = register_error(ErrorKind::RateLimited);
    EXPECT_LT(elapsed_ms(start_time), 500);
    EXPECT_EQ(server_.request_count(), 1u);
    EXPECT_EQ(e.retry_after_seconds(), 10);
    EXPECT_NE(e.detail().find("retry after 10 s"), std::string::npos) << e.detail();
    EXPECT_EQ(e.retry_wait_ms(), 10000);
}

TEST_F(ClientTest, GivingUpOnATransientFailureSuggestsAWait)
{
    answer({{503, R"({"error":"down"})"}});
    settings_.retry.max_retries = 2;
    settings_.retry.base_delay = Millis(5);
    settings_.retry.max_delay = Millis(1000);
    Error e = register_error(ErrorKind::Upstream);
    EXPECT_EQ(server_.request_count(), 3u);
    EXPECT_EQ(e.retry_wait_ms(), 20); // the next step: 5 ms doubled twice
}

TEST_F(ClientTest, TheSuggestedWaitHonoursRetryAfter)
{
    answer({{429, R"({"error":"slow down"})"}}, "1");
    settings_.retry.max_retries = 0;
    Error e = register_error(ErrorKind::RateLimited);
    EXPECT_EQ(e.retry_wait_ms(), 1000);
}

TEST_F(ClientTest, PermanentFailuresSuggestNoWait)
{
    answer({{400, R"({"error":"bad phone"})"}});
    EXPECT_EQ(register_error(ErrorKind::InvalidArgument).retry_wait_ms(), -1);
}

TEST_F(ClientTest, RejectedKeySuggestsNoWait)
{
    answer({{401, R"({"error":"unknown key"})"}});
    EXPECT_EQ(register_error(ErrorKind::Unauthorized).retry_wait_ms(), -1);
}

TEST_F(ClientTest, HugeRetryAfterFailsAtOnce)
{
    answer({{503, ""}}, "9223372036854776"); // * 1000 overflows a long
    settings_.retry.max_delay = Millis(1000);
    auto start_time = Steady::now();
    register_error(ErrorKind::Upstream);
    EXPECT_LT(elapsed_ms(start_time), 500);
    EXPECT_EQ(server_.request_count(), 1u);
}

TEST_F(ClientTest, DeadlineStopsRetriesEarly)
{
    answer({{503, ""}});
    settings_.retry.max_retries = 5;
    settings_.retry.base_delay = Millis(200); // first backoff is at least 100 ms
    CallControl control;
    control.deadline = Clock::now() + milliseconds(50);
    auto start_time = Steady::now();
    Error e = register_error(ErrorKind::Upstream, request(), control);
    EXPECT_LT(elapsed_ms(start_time), 200);
    EXPECT_EQ(server_.request_count(), 1u);
    EXPECT_NE(e.detail().find("deadline"), std::string::npos) << e.detail();
}

TEST_F(ClientTest, DeadlineAllowsRetriesThatFit)
{
    answer({{503, ""}, {503, ""}, {201, R"({"id":"idn_6"})"}});
    CallControl control;
    control.deadline = Clock::now() + milliseconds(5000);
    EXPECT_EQ(client_.register_identity(request(), settings_, control).id, "idn_6");
    EXPECT_EQ(server_.request_count(), 3u);
}

TEST_F(ClientTest, OversizedResponse)
{
    answer({{200, "{\"id\":\"a\",\"pad\":\"" + std::string(kMaxResponseBytes, 'p') + "\"}"}});
    Error e = register_error(ErrorKind::BadResponse);
    EXPECT_EQ(server_.request_count(), 1u);
}

TEST_F(ClientTest, TimeoutIsReportedAndRetried)
{
    server_.on_identity([this](const httplib::Request &, httplib::Response &res) {
        server_.wait_released(milliseconds(3000));
        res.set_content(R"({"id":"late"})", "application/json");
    });
    start();
    settings_.request_timeout_ms = 200;
    settings_.retry.max_retries = 0;
    auto start_time = Steady::now();
    register_error(ErrorKind::Timeout);
    long took = elapsed_ms(start_time);
    EXPECT_GE(took, 180);
    EXPECT_LT(took, 1000);
    EXPECT_EQ(server_.request_count(), 1u);

    settings_.retry.max_retries = 1;
    register_error(ErrorKind::Timeout);
    EXPECT_EQ(server_.request_count(), 3u);
}

TEST_F(ClientTest, ConnectionRefused)
{
    settings_.api_url = "http://127.0.0.1:" + std::to_string(dfend_test::closed_port());
    settings_.retry.max_retries = 2;
    Error e = register_error(ErrorKind::ConnectFailed);
    EXPECT_NE(e.detail().find("Gave up after 3 attempts."), std::string::npos) << e.detail();
}

TEST_F(ClientTest, AbortBeforeTheRequestIsCancelled)
{
    answer({{201, R"({"id":"idn"})"}});
    g_abort = true;
    CallControl control;
    control.should_abort = &abort_requested;
    auto start_time = Steady::now();
    Error e = register_error(ErrorKind::Cancelled, request(), control);
    EXPECT_LT(elapsed_ms(start_time), 300);
    EXPECT_EQ(e.detail().find("Gave up"), std::string::npos); // never retried
}

TEST_F(ClientTest, AbortDuringBackoffIsCancelledPromptly)
{
    answer({{503, ""}});
    settings_.retry.base_delay = Millis(4000);
    settings_.retry.max_delay = Millis(4000);
    CallControl control;
    control.should_abort = &abort_requested;
    std::thread canceller([] {
        std::this_thread::sleep_for(milliseconds(100));
        g_abort = true;
    });
    auto start_time = Steady::now();
    Error e = register_error(ErrorKind::Cancelled, request(), control);
    long took = elapsed_ms(start_time);
    canceller.join();
    EXPECT_LT(took, 500);
    EXPECT_EQ(server_.request_count(), 1u);
    EXPECT_EQ(e.message(), "request to DFend was cancelled");
}

TEST_F(ClientTest, AbortDuringTheTransferIsCancelled)
{
    server_.on_identity([this](const httplib::Request &, httplib::Response &res) {
        server_.wait_released(milliseconds(3000));
        res.set_content(R"({"id":"late"})", "application/json");
    });
    start();
    CallControl control;
    control.should_abort = &abort_requested;
    std::thread canceller([] {
        std::this_thread::sleep_for(milliseconds(100));
        g_abort = true;
    });
    auto start_time = Steady::now();
    register_error(ErrorKind::Cancelled, request(), control);
    long took = elapsed_ms(start_time);
    canceller.join();
    EXPECT_LT(took, 1300);
    EXPECT_EQ(server_.request_count(), 1u);
}

TEST_F(ClientTest, EchoedKeyIsRedacted)
{
    const std::string key = kKey;
    const std::vector<std::pair<int, ErrorKind>> cases = {
        {400, ErrorKind::InvalidArgument},
        {401, ErrorKind::Unauthorized},
        {403, ErrorKind::Unauthorized},
        {429, ErrorKind::RateLimited},
        {503, ErrorKind::Upstream},
        {404, ErrorKind::BadResponse},
        {302, ErrorKind::BadResponse},
    };
    settings_.retry.max_retries = 1;
    std::atomic<int> status{0};
    server_.on_identity([&](const httplib::Request &req, httplib::Response &res) {
        res.status = status;
        res.set_content(R"({"error":"key )" + req.get_header_value("x-api-key") +
                            R"( is not valid for )" + req.get_header_value("x-api-key") +
                            R"("})",
                        "application/json");
    });
    start();
    for (auto [code, kind] : cases) {
        status = code;
        Error e = register_error(kind);
        EXPECT_NE(e.detail().find("[redacted]"), std::string::npos) << code << ": " << e.detail();
        expect_no_secret(e, key);
    }
}

TEST_F(ClientTest, KeyEchoedInAMalformedSuccessIsRedacted)
{
    server_.on_identity([](const httplib::Request &req, httplib::Response &res) {
        // A broken proxy that reflects the request headers into invalid JSON.
        res.set_content("{\"id\":\"" + req.get_header_value("x-api-key") + "\x01\"}",
                        "application/json");
    });
    start();
    Error e = register_error(ErrorKind::BadResponse);
    expect_no_secret(e, kKey);
    try {
        client_.get_identity(LookupKey::UserId, "u", settings_, {});
        ADD_FAILURE() << "accepted";
    } catch (const Error &error) {
        EXPECT_EQ(error.kind(), ErrorKind::BadResponse);
        expect_no_secret(error, kKey);
    }
}

TEST_F(ClientTest, MissingKeyFailsBeforeAnyRequest)
{
    answer({{201, R"({"id":"idn"})"}});
    settings_.api_key.clear();
    Error e = register_error(ErrorKind::Configuration);
    EXPECT_EQ(e.message(), "DFend API key is not configured");
    try {
        client_.get_identity(LookupKey::UserId, "u", settings_, {});
        ADD_FAILURE() << "accepted";
    } catch (const Error &error) {
        EXPECT_EQ(error.kind(), ErrorKind::Configuration);
    }
    settings_.api_key = "sk bad key";
    register_error(ErrorKind::Configuration);
    settings_.api_key = kKey;
    settings_.api_url = "http://example.com";
    register_error(ErrorKind::Configuration);
    EXPECT_EQ(server_.request_count(), 0u);
}

TEST_F(ClientTest, InvalidInputFailsBeforeAnyRequest)
{
    answer({{201, R"({"id":"idn"})"}});
    RegisterRequest r = request();
    r.email = "not an email";
    register_error(ErrorKind::InvalidArgument, r);
    r = request();
    r.phone = "555-0123";
    register_error(ErrorKind::InvalidArgument, r);
    r = request();
    r.metadata_json = "[1]";
    register_error(ErrorKind::InvalidArgument, r);
    r = request();
    r.user_id.clear();
    register_error(ErrorKind::InvalidArgument, r);
    try {
        client_.get_identity(LookupKey::Id, "", settings_, {});
        ADD_FAILURE() << "accepted";
    } catch (const Error &error) {
        EXPECT_EQ(error.kind(), ErrorKind::InvalidArgument);
    }
    EXPECT_EQ(server_.request_count(), 0u);
}

TEST_F(ClientTest, KeyStraddlingTheMessageCutIsRedacted)
{
    // DFend's message is cut at 300 bytes; a key echoed across the cut must
    // not leave its first bytes in the detail.
    server_.on_identity([](const httplib::Request &req, httplib::Response &res) {
        res.status = 400;
        res.set_content(R"({"error":")" + std::string(290, 'x') + req.get_header_value("x-api-key") +
                            R"("})",
                        "application/json");
    });
    start();
    Error e = register_error(ErrorKind::InvalidArgument);
    const std::string key = kKey;
    EXPECT_EQ(e.detail().find(key.substr(0, 6)), std::string::npos) << e.detail();
    EXPECT_NE(e.detail().find("[redact"), std::string::npos) << e.detail();
}

TEST_F(ClientTest, JsonEscapedKeyIsRedacted)
{
    // The raw-body redaction cannot see "\u0073k_test_..."; the decoded
    // message is redacted again before it is cut.
    server_.on_identity([](const httplib::Request &req, httplib::Response &res) {
        std::string key = req.get_header_value("x-api-key");
        res.status = 400;
        res.set_content(R"({"error":")" + std::string(280, 'x') + R"( key \u00)" +
                            std::to_string(73) + key.substr(1) + R"("})",
                        "application/json");
    });
    start();
    Error e = register_error(ErrorKind::InvalidArgument);
    const std::string key = kKey;
    expect_no_secret(e, key);
    EXPECT_EQ(e.detail().find(key.substr(0, 6)), std::string::npos) << e.detail();
}

TEST_F(ClientTest, GetIdentityRedactsAnEscapedKey)
{
    // A 200 reply whose fields hold the key JSON-escaped: the raw-body
    // redaction cannot see it, the decoded walk does.
    server_.on_identity([](const httplib::Request &req, httplib::Response &res) {
        std::string key = req.get_header_value("x-api-key");
        res.set_content(R"({"id":"idn_1","metadata":{"note":"\u0073)" + key.substr(1) +
                            R"(","\u0073)" + key.substr(1) + R"(":1.50}})",
                        "application/json");
    });
    start();
    std::optional<std::string> body = client_.get_identity(LookupKey::UserId, "u", settings_, {});
    ASSERT_TRUE(body);
    EXPECT_EQ(body->find(kKey), std::string::npos) << *body;
    EXPECT_EQ(*body, R"({"id":"idn_1","metadata":{"note":"[redacted]","[redacted]":1.50}})");
}

TEST_F(ClientTest, SplitKeyAndInvalidUtf8InAnErrorReply)
{
    std::atomic<int> variant{0};
    server_.on_identity([&](const httplib::Request &req, httplib::Response &res) {
        std::string key = req.get_header_value("x-api-key");
        res.status = 400;
        if (variant == 0)
            res.set_content(R"({"error":"bad key )" + key.substr(0, 5) + R"(\u0001)" +
                                key.substr(5) + R"("})",
                            "application/json");
        else // not JSON at all, so not even nlohmann's UTF-8 check ran
            res.set_content("bad \xFF\xFE key " + key.substr(0, 5) + "\x01" + key.substr(5),
                            "text/plain");
    });
    start();
    Error split = register_error(ErrorKind::InvalidArgument);
    EXPECT_EQ(split.detail(), "DFend answered HTTP 400. DFend said: bad key [redacted].");
    variant = 1;
    Error invalid = register_error(ErrorKind::InvalidArgument);
    EXPECT_EQ(invalid.detail(), "DFend answered HTTP 400.");
    for (const Error &e : {split, invalid}) {
        expect_no_secret(e, kKey);
        EXPECT_TRUE(dfend_test::is_valid_utf8(e.detail())) << e.detail();
    }
}

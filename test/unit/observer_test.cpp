// RequestObserver: what the blocking client and the engine report about each
// request (status, latency, body sizes), each transport failure, each retry,
// and each call that failed for good, against an in-process server.
#include "core/engine.hpp"
#include "core/identity_client.hpp"
#include "test_server.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

using namespace dfend;
using dfend_test::TestServer;
using nlohmann::json;

namespace {

bool never_abort() noexcept { return false; }

// Records every call, as "response 201", "transport timeout", "retry",
// "failure invalid argument 400" (kind_name, status).
class Recorder final : public RequestObserver {
  public:
    void on_response(long status, std::chrono::microseconds latency, std::size_t sent,
                     std::size_t received) noexcept override
    {
        std::lock_guard<std::mutex> lock(mutex_);
        events.push_back("response " + std::to_string(status));
        latencies.push_back(latency);
        bytes_sent += sent;
        bytes_received += received;
    }
    void on_transport_error(ErrorKind kind) noexcept override
    {
        std::lock_guard<std::mutex> lock(mutex_);
        events.push_back(std::string("transport ") + kind_name(kind));
    }
    void on_retry() noexcept override
    {
        std::lock_guard<std::mutex> lock(mutex_);
        events.push_back("retry");
    }
    void on_failure(const Error &error) noexcept override
    {
        std::lock_guard<std::mutex> lock(mutex_);
        events.push_back(std::string("failure ") + kind_name(error.kind()) + " " +
                         std::to_string(error.http_status()));
        failures.push_back(error.message() + " / " + error.detail());
    }

    std::size_t count(const std::string &event) const
    {
        return static_cast<std::size_t>(std::count(events.begin(), events.end(), event));
    }

    std::vector<std::string> events;
    std::vector<std::string> failures;
    std::vector<std::chrono::microseconds> latencies;
    std::size_t bytes_sent = 0;
    std::size_t bytes_received = 0;

  private:
    std::mutex mutex_;
};

std::string user_of(const httplib::Request &req)
{
    json body = json::parse(req.body, nullptr, false);
    return body.is_object() ? body.value("userId", "") : "";
}

constexpr const char *kKey = "sk_test_SeCrEt0123456789";

class ObserverTest : public ::testing::Test {
  protected:
    void SetUp() override
    {
        settings_.api_key = kKey;
        settings_.retry.max_retries = 2;
        settings_.retry.base_delay = Millis(1);
        settings_.retry.max_delay = Millis(5);
    }
    void TearDown() override { server_.stop(); }

    // Answers each user id with the statuses in turn (the last one repeats).
    // A 2xx carries an id; others DFend's words, with the key in them.
    void answer(std::map<std::string, std::vector<int>> script)
    {
        server_.on_identity([this, script](const httplib::Request &req, httplib::Response &res) {
            std::string user = user_of(req);
            auto it = script.find(user);
            std::vector<int> statuses = it == script.end() ? std::vector<int>{201} : it->second;
            std::size_t i;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                i = std::min(calls_[user]++, statuses.size() - 1);
            }
            res.status = statuses[i];
            if (statuses[i] / 100 == 2)
                res.set_content(json({{"id", "idn_" + user}, {"created", true},
                                      {"merged", false}})
                                    .dump(),
                                "application/json");
            else
                res.set_content(std::string(R"({"error":"no for key )") + kKey + "\"}",
                                "application/json");
        });
        server_.start();
        settings_.api_url = server_.base_url();
    }

    RegisterRequest request(const std::string &user)
    {
        RegisterRequest r;
        r.user_id = user;
        return r;
    }

    CallControl control()
    {
        CallControl c;
        c.observer = &recorder_;
        return c;
    }

    TestServer server_;
    IdentityClient client_;
    ClientSettings settings_;
    Recorder recorder_;
    std::mutex mutex_;
    std::map<std::string, std::size_t> calls_;
};

} // namespace

TEST_F(ObserverTest, ClientReportsASuccessWithItsSizes)
{
    answer({});
    RegisterResult result = client_.register_identity(request("u-1"), settings_, control());
    EXPECT_EQ(result.id, "idn_u-1");
    ASSERT_EQ(recorder_.events, (std::vector<std::string>{"response 201"}));
    const dfend_test::Recorded sent = server_.requests().at(0);
    EXPECT_EQ(recorder_.bytes_sent, sent.body.size());
    EXPECT_EQ(recorder_.bytes_received,
              json({{"id", "idn_u-1"}, {"created", true}, {"merged", false}}).dump().size());
    ASSERT_EQ(recorder_.latencies.size(), 1u);
    EXPECT_GT(recorder_.latencies[0].count(), 0);
}

TEST_F(ObserverTest, ClientReportsEachAttemptAndEachRetry)
{
    answer({{"u-2", {503, 503, 201}}});
    client_.register_identity(request("u-2"), settings_, control());
    EXPECT_EQ(recorder_.events,
              (std::vector<std::string>{"response 503", "retry", "response 503", "retry",
                                        "response 201"}));
}

TEST_F(ObserverTest, ClientReportsAFailureOnceWithTheKeyRedacted)
{
    answer({{"u-3", {503}}, {"u-4", {400}}});
    EXPECT_THROW(client_.register_identity(request("u-3"), settings_, control()), Error);
    EXPECT_EQ(recorder_.events,
              (std::vector<std::string>{"response 503", "retry", "response 503", "retry",
                                        "response 503", "failure upstream failure 503"}));
    recorder_.events.clear();
    EXPECT_THROW(client_.register_identity(request("u-4"), settings_, control()), Error);
    EXPECT_EQ(recorder_.events,
              (std::vector<std::string>{"response 400", "failure invalid argument 400"}));
    ASSERT_EQ(recorder_.failures.size(), 2u);
    for (const std::string &text : recorder_.failures) {
        EXPECT_EQ(text.find(kKey), std::string::npos) << text;
        EXPECT_NE(text.find("[redacted]"), std::string::npos) << text;
    }
}

TEST_F(ObserverTest, ClientReportsANotFoundLookupAsAResponseOnly)
{
    answer({{"u-5", {404}}});
    EXPECT_FALSE(client_.get_identity(LookupKey::UserId, "u-5", settings_, control()));
    EXPECT_EQ(recorder_.events, (std::vector<std::string>{"response 404"}));
}

TEST_F(ObserverTest, ClientReportsTransportErrors)
{
    settings_.api_url = "http://127.0.0.1:" + std::to_string(dfend_test::closed_port());
    settings_.retry.max_retries = 1;
    EXPECT_THROW(client_.register_identity(request("u-6"), settings_, control()), Error);
    EXPECT_EQ(recorder_.events,
              (std::vector<std::string>{"transport could not connect", "retry",
                                        "transport could not connect", "failure could not connect 0"}));
}

TEST_F(ObserverTest, ClientWithoutObserverStillWorks)
{
    answer({{"u-7", {503, 201}}});
    EXPECT_EQ(client_.register_identity(request("u-7"), settings_, CallControl{}).id, "idn_u-7");
    EXPECT_TRUE(recorder_.events.empty());
}

TEST_F(ObserverTest, EngineReportsEveryRequestRetryAndFailure)
{
    answer({{"ok", {201}}, {"flaky", {503, 200}}, {"bad", {422}}, {"down", {503}}});
    RequestEngine engine(settings_, EngineSettings{});
    std::uint64_t tag = 0;
    for (const char *user : {"ok", "flaky", "bad", "down"}) {
        Job job;
        job.tag = tag++;
        job.request = request(user);
        engine.submit(std::move(job));
    }
    // Refused before sending: no request, nothing to observe.
    Job invalid;
    invalid.tag = tag++;
    invalid.request = request("");
    engine.submit(std::move(invalid));
    std::vector<JobOutcome> outcomes = engine.run(&never_abort, std::nullopt, &recorder_);
    EXPECT_EQ(outcomes.size(), 5u);
    // ok 1, flaky 2, bad 1, down 3 (two retries).
    EXPECT_EQ(recorder_.count("response 201"), 1u);
    EXPECT_EQ(recorder_.count("response 200"), 1u);
    EXPECT_EQ(recorder_.count("response 422"), 1u);
    EXPECT_EQ(recorder_.count("response 503"), 4u);
    EXPECT_EQ(recorder_.count("retry"), 3u);
    EXPECT_EQ(recorder_.count("failure invalid argument 422"), 1u);
    EXPECT_EQ(recorder_.count("failure upstream failure 503"), 1u);
    EXPECT_EQ(recorder_.events.size(), 7u + 3u + 2u);
    EXPECT_EQ(recorder_.latencies.size(), 7u);
    for (const std::string &text : recorder_.failures)
        EXPECT_EQ(text.find(kKey), std::string::npos) << text;

    // The observer was for that run only.
    recorder_.events.clear();
    Job again;
    again.tag = 0;
    again.request = request("ok");
    engine.submit(std::move(again));
    engine.run(&never_abort);
    EXPECT_TRUE(recorder_.events.empty());
}

TEST_F(ObserverTest, EngineReportsTransfersCutOffByTheDeadlineAsCancelled)
{
    server_.on_identity([this](const httplib::Request &, httplib::Response &res) {
        server_.wait_released(std::chrono::seconds(5));
        res.status = 201;
    });
    server_.start();
    settings_.api_url = server_.base_url();
    RequestEngine engine(settings_, EngineSettings{});
    for (std::uint64_t tag = 0; tag < 2; ++tag) {
        Job job;
        job.tag = tag;
        job.request = request("slow-" + std::to_string(tag));
        engine.submit(std::move(job));
    }
    std::vector<JobOutcome> outcomes = engine.run(
        &never_abort, Clock::now() + std::chrono::milliseconds(200), &recorder_);
    server_.release();
    ASSERT_EQ(outcomes.size(), 2u);
    EXPECT_TRUE(outcomes[0].unfinished);
    // Sent, never answered: cancelled by the budget, and no failure of the row.
    EXPECT_EQ(recorder_.events,
              (std::vector<std::string>{"transport cancelled", "transport cancelled"}));
}

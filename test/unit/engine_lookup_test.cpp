// RequestEngine lookups (GET jobs): request shape, 404 as an answer, per-job failures, retries, redaction.
// method and body sent, 404 as an answer, per-job failures, retries, the key
// redacted from what comes back, and lookups mixed with registrations.
#include "core/engine.hpp"
#include "test_server.hpp"
#include "utf8_check.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <string>
#include <vector>

using namespace dfend;
using dfend_test::TestServer;
using nlohmann::json;

namespace {

constexpr const char *kKey = "sk_test_EnGiNe0123456789";

class EngineLookupTest : public ::testing::Test {
  protected:
    void SetUp() override
    {
        client_.api_key = kKey;
        client_.connect_timeout_ms = 1000;
        client_.request_timeout_ms = 2000;
        client_.retry.max_retries = 2;
        client_.retry.base_delay = Millis(5);
        client_.retry.max_delay = Millis(50);
    }
    void TearDown() override { server_.stop(); }

    // Identities by user id; "fail-<n>" answers 503 n times, then 200;
    // "bad" answers 400; everything else 404.
    void serve(std::map<std::string, std::string> identities)
    {
        server_.on_identity([this, identities](const httplib::Request &req,
                                               httplib::Response &res) {
            json body = json::parse(req.body, nullptr, false);
            if (req.method == "POST") {
                res.set_content(R"({"id":"idn_new","created":true,"merged":false})",
                                "application/json");
                return;
            }
            std::string key = body.contains("userId") ? body.value("userId", "")
                                                      : "id:" + body.value("id", "");
            if (key == "bad") {
                res.status = 400;
                res.set_content(R"({"error":"bad user id"})", "application/json");
            } else if (key.rfind("fail-", 0) == 0 && failures_++ < std::stoi(key.substr(5))) {
                res.status = 503;
                res.set_content(R"({"error":"down"})", "application/json");
            } else if (auto found = identities.find(key); found != identities.end()) {
                res.set_content(found->second, "application/json");
            } else {
                res.status = 404;
                res.set_content(R"({"error":"identity not found"})", "application/json");
            }
        });
        server_.start();
        client_.api_url = server_.base_url();
    }

    static Job lookup(std::uint64_t tag, LookupKey key, std::string value)
    {
        Job job;
        job.tag = tag;
        job.lookup = Lookup{key, std::move(value)};
        return job;
    }

    // Outcomes indexed by tag.
    std::map<std::uint64_t, JobOutcome> run(RequestEngine &engine)
    {
        std::map<std::uint64_t, JobOutcome> by_tag;
        for (JobOutcome &outcome : engine.run(nullptr))
            by_tag[outcome.tag] = std::move(outcome);
        return by_tag;
    }

    TestServer server_;
    ClientSettings client_;
    std::atomic<int> failures_{0};
};

} // namespace

TEST_F(EngineLookupTest, SendsGetsWithTheLookupBody)
{
    const std::string identity = R"({"id":"idn_1","identifiers":{"userIds":["u1"]},"time":1})";
    serve({{"u1", identity}, {"id:idn_1", identity}});
    RequestEngine engine(client_, EngineSettings{});
    engine.submit(lookup(0, LookupKey::UserId, "u1"));
    engine.submit(lookup(1, LookupKey::Id, "idn_1"));
    engine.submit(lookup(2, LookupKey::UserId, "nobody"));
    auto outcomes = run(engine);
    ASSERT_EQ(outcomes.size(), 3u);
    EXPECT_EQ(outcomes[0].identity, identity);
    EXPECT_EQ(outcomes[1].identity, identity);
    EXPECT_FALSE(outcomes[0].error);
    EXPECT_FALSE(outcomes[0].not_found);
    // 404 is an answer, not a failure.
    EXPECT_TRUE(outcomes[2].not_found);
    EXPECT_FALSE(outcomes[2].identity);
    EXPECT_FALSE(outcomes[2].error);

    auto requests = server_.requests();
    ASSERT_EQ(requests.size(), 3u);
    std::vector<std::string> bodies;
    for (const auto &r : requests) {
        EXPECT_EQ(r.method, "GET");
        EXPECT_EQ(r.path, "/identity");
        EXPECT_EQ(r.header("x-api-key"), kKey);
        bodies.push_back(r.body);
    }
    std::sort(bodies.begin(), bodies.end());
    EXPECT_EQ(bodies, (std::vector<std::string>{R"({"id":"idn_1"})", R"({"userId":"nobody"})",
                                                R"({"userId":"u1"})"}));
}

TEST_F(EngineLookupTest, FailuresBelongToTheirJob)
{
    serve({{"u1", R"({"id":"idn_1"})"}});
    RequestEngine engine(client_, EngineSettings{});
    engine.submit(lookup(0, LookupKey::UserId, "u1"));
    engine.submit(lookup(1, LookupKey::UserId, "bad"));
    engine.submit(lookup(2, LookupKey::UserId, "")); // refused locally
    auto outcomes = run(engine);
    ASSERT_EQ(outcomes.size(), 3u);
    EXPECT_EQ(outcomes[0].identity, R"({"id":"idn_1"})");
    ASSERT_TRUE(outcomes[1].error);
    EXPECT_EQ(outcomes[1].error->kind(), ErrorKind::InvalidArgument);
    EXPECT_NE(outcomes[1].error->detail().find("bad user id"), std::string::npos);
    EXPECT_TRUE(outcomes[1].permanent);
    ASSERT_TRUE(outcomes[2].error);
    EXPECT_EQ(outcomes[2].error->kind(), ErrorKind::InvalidArgument);
    EXPECT_EQ(outcomes[2].attempts, 0);
    EXPECT_EQ(server_.request_count(), 2u); // nothing sent for ""
}

TEST_F(EngineLookupTest, TransientFailuresAreRetried)
{
    serve({{"fail-2", R"({"id":"idn_2"})"}});
    RequestEngine engine(client_, EngineSettings{});
    engine.submit(lookup(0, LookupKey::UserId, "fail-2"));
    auto outcomes = run(engine);
    EXPECT_EQ(outcomes[0].identity, R"({"id":"idn_2"})");
    EXPECT_EQ(outcomes[0].attempts, 3);
}

TEST_F(EngineLookupTest, TheKeyIsRedactedFromTheIdentity)
{
    // The key JSON-escaped, as a value and as a field name.
    serve({{"u1", R"({"id":"idn_1","note":"\u0073k_test_EnGiNe0123456789",)"
                  R"("\u0073k_test_EnGiNe0123456789":1})"}});
    RequestEngine engine(client_, EngineSettings{});
    engine.submit(lookup(0, LookupKey::UserId, "u1"));
    auto outcomes = run(engine);
    ASSERT_TRUE(outcomes[0].identity);
    EXPECT_EQ(outcomes[0].identity->find("sk_"), std::string::npos) << *outcomes[0].identity;
    EXPECT_NE(outcomes[0].identity->find("[redacted]"), std::string::npos);
}

TEST_F(EngineLookupTest, LookupsAndRegistrationsInOneRun)
{
    serve({{"u1", R"({"id":"idn_1"})"}});
    RequestEngine engine(client_, EngineSettings{});
    engine.submit(lookup(0, LookupKey::UserId, "u1"));
    Job registration;
    registration.tag = 1;
    registration.request.user_id = "u2";
    engine.submit(registration);
    auto outcomes = run(engine);
    EXPECT_EQ(outcomes[0].identity, R"({"id":"idn_1"})");
    EXPECT_FALSE(outcomes[0].result);
    ASSERT_TRUE(outcomes[1].result);
    EXPECT_EQ(outcomes[1].result->id, "idn_new");
    EXPECT_FALSE(outcomes[1].identity);
}

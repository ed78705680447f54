// RequestEngine against an in-process server: one outcome per job, the
// concurrency cap, the rate cap, retries and what is never retried, a 429
// that delays only its own request, deferred retries, validation before any
// request, run()'s deadline and abort, and reuse of the engine after a run
// that was cut short.
#include "core/engine.hpp"
#include "test_server.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
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

std::string user_of(const httplib::Request &req)
{
    json body = json::parse(req.body, nullptr, false);
    return body.is_object() ? body.value("userId", "") : "";
}

void reply_id(httplib::Response &res, const std::string &user, bool created = true,
              bool merged = false)
{
    res.status = created ? 201 : 200;
    res.set_content(json({{"id", "idn_" + user}, {"created", created}, {"merged", merged}}).dump(),
                    "application/json");
}

// A 429 asking to come back after `retry_after` seconds.
void reply_limited(httplib::Response &res, const char *retry_after)
{
    res.status = 429;
    res.set_header("Retry-After", retry_after);
    res.set_content(R"({"error":"slow down"})", "application/json");
}

Job job(std::uint64_t tag, std::string user, std::optional<std::string> email = std::nullopt)
{
    Job j;
    j.tag = tag;
    j.request.user_id = std::move(user);
    j.request.email = std::move(email);
    return j;
}

// Outcomes by tag; fails the test when a tag comes back twice.
std::map<std::uint64_t, JobOutcome> by_tag(const std::vector<JobOutcome> &outcomes)
{
    std::map<std::uint64_t, JobOutcome> map;
    for (const JobOutcome &o : outcomes) {
        EXPECT_TRUE(map.emplace(o.tag, o).second) << "tag " << o.tag << " answered twice";
        EXPECT_NE(o.result.has_value(), o.error.has_value()) << "tag " << o.tag;
    }
    return map;
}

class EngineTest : public ::testing::Test {
  protected:
    void SetUp() override
    {
        g_abort = false;
        // More handler threads than any test keeps busy (kept-alive
        // connections hold a thread each), so the server never queues.
        server_.server().new_task_queue = [] { return new httplib::ThreadPool(32); };
        // Without it a reply's head and body, written separately, meet the
        // client's delayed ACK: 40 ms per request would hide the rate cap.
        server_.server().set_tcp_nodelay(true);
        client_.api_key = kKey;
        client_.connect_timeout_ms = 2000;
        client_.request_timeout_ms = 5000;
        client_.retry.max_retries = 3;
        client_.retry.base_delay = Millis(5);
        client_.retry.max_delay = Millis(5000);
        engine_.concurrency = 4;
    }
    void TearDown() override
    {
        g_abort = false;
        server_.stop();
    }

    void start(TestServer::Handler handler)
    {
        server_.on_identity(std::move(handler));
        server_.start();
        client_.api_url = server_.base_url();
    }

    // Answers each user with the statuses in turn (the last one repeats);
    // 2xx answers carry an id.
    void answer_in_turn(std::vector<int> statuses, std::string retry_after = {})
    {
        start([this, statuses, retry_after](const httplib::Request &req, httplib::Response &res) {
            std::string user = user_of(req);
            std::size_t i;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                i = std::min(calls_[user]++, statuses.size() - 1);
            }
            if (statuses[i] / 100 == 2) {
                reply_id(res, user);
                return;
            }
            res.status = statuses[i];
            if (!retry_after.empty())
                res.set_header("Retry-After", retry_after);
            res.set_content(R"({"error":"status )" + std::to_string(statuses[i]) + "\"}",
                            "application/json");
        });
    }

    std::size_t requests_for(const std::string &user)
    {
        std::size_t n = 0;
        for (const auto &r : server_.requests())
            n += user_of_body(r.body) == user;
        return n;
    }
    static std::string user_of_body(const std::string &body)
    {
        json parsed = json::parse(body, nullptr, false);
        return parsed.is_object() ? parsed.value("userId", "") : "";
    }

    static constexpr const char *kKey = "sk_test_EnGiNe0123456789";
    TestServer server_;
    ClientSettings client_;
    EngineSettings engine_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::map<std::string, std::size_t> calls_;
};

} // namespace

TEST_F(EngineTest, EveryJobGetsOneOutcomeWithItsTag)
{
    start([](const httplib::Request &req, httplib::Response &res) {
        std::string user = user_of(req);
        int n = std::stoi(user.substr(2));
        reply_id(res, user, n % 2 == 0, n % 3 == 0);
    });
    RequestEngine engine(client_, engine_);
    constexpr int kJobs = 20;
    for (int i = 0; i < kJobs; ++i)
        engine.submit(job(1000 + i, "u-" + std::to_string(i), "u" + std::to_string(i) + "@example.com"));
    auto outcomes = engine.run(&never_abort);
    ASSERT_EQ(outcomes.size(), static_cast<std::size_t>(kJobs));
    auto map = by_tag(outcomes);
    ASSERT_EQ(map.size(), static_cast<std::size_t>(kJobs));
    for (int i = 0; i < kJobs; ++i) {
        ASSERT_EQ(map.count(1000 + i), 1u) << i;
        const JobOutcome &o = map.at(1000 + i);
        ASSERT_TRUE(o.result) << i << ": " << (o.error ? o.error->message() : "");
        EXPECT_EQ(o.result->id, "idn_u-" + std::to_string(i));
        EXPECT_EQ(o.result->created, i % 2 == 0) << i;
        EXPECT_EQ(o.result->merged, i % 3 == 0) << i;
        EXPECT_FALSE(o.permanent);
        EXPECT_FALSE(o.unfinished);
        EXPECT_EQ(o.attempts, 1);
    }
    auto requests = server_.requests();
    ASSERT_EQ(requests.size(), static_cast<std::size_t>(kJobs));
    std::set<std::string> users;
    for (const auto &r : requests) {
        EXPECT_EQ(r.method, "POST");
        EXPECT_EQ(r.path, "/identity");
        EXPECT_EQ(r.header("x-api-key"), kKey);
        json body = json::parse(r.body);
        users.insert(body.at("userId").get<std::string>());
        EXPECT_EQ(body.at("email"), body.at("userId").get<std::string>().substr(0, 1) +
                                         body.at("userId").get<std::string>().substr(2) +
                                         "@example.com");
    }
    EXPECT_EQ(users.size(), static_cast<std::size_t>(kJobs));
    EXPECT_EQ(engine.stats().requests, static_cast<std::uint64_t>(kJobs));
    EXPECT_EQ(engine.stats().retries, 0u);

    // A second run on the same engine returns only its own jobs.
    engine.submit(job(7, "u-100"));
    outcomes = engine.run(nullptr);
    ASSERT_EQ(outcomes.size(), 1u);
    EXPECT_EQ(outcomes[0].tag, 7u);
    ASSERT_TRUE(outcomes[0].result);
    EXPECT_EQ(outcomes[0].result->id, "idn_u-100");
}

TEST_F(EngineTest, ConcurrencyCapIsReachedAndNeverExceeded)
{
    // Each handler holds its request until `concurrency` requests are inside
    // handlers at once (or every job has arrived), so the engine must fill
    // every slot to make progress, and any request beyond the cap would be
    // seen here while the others are held.
    constexpr int kJobs = 14;
    engine_.concurrency = 4;
    int current = 0, peak = 0, arrived = 0;
    start([&](const httplib::Request &req, httplib::Response &res) {
        {
            std::unique_lock<std::mutex> lock(mutex_);
            ++arrived;
            peak = std::max(peak, ++current);
            cv_.notify_all();
            // The bound only keeps a broken engine from hanging the test.
            cv_.wait_for(lock, std::chrono::seconds(5), [&] {
                return current >= engine_.concurrency || arrived == kJobs;
            });
            --current;
        }
        reply_id(res, user_of(req));
    });
    RequestEngine engine(client_, engine_);
    for (int i = 0; i < kJobs; ++i)
        engine.submit(job(i, "c-" + std::to_string(i)));
    auto begin = Steady::now();
    auto outcomes = engine.run(&never_abort);
    long took = elapsed_ms(begin);
    auto map = by_tag(outcomes);
    ASSERT_EQ(map.size(), static_cast<std::size_t>(kJobs));
    for (const auto &[tag, o] : map)
        EXPECT_TRUE(o.result) << tag;
    std::lock_guard<std::mutex> lock(mutex_);
    EXPECT_EQ(peak, engine_.concurrency);
    EXPECT_EQ(engine.stats().max_in_flight, engine_.concurrency);
    EXPECT_EQ(arrived, kJobs);
    // No handler waited out its 5 s bound.
    EXPECT_LT(took, 4000);
}

TEST_F(EngineTest, ConcurrencyOneSendsOneAtATime)
{
    int current = 0, peak = 0;
    start([&](const httplib::Request &req, httplib::Response &res) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            peak = std::max(peak, ++current);
        }
        reply_id(res, user_of(req));
        std::lock_guard<std::mutex> lock(mutex_);
        --current;
    });
    engine_.concurrency = 1;
    RequestEngine engine(client_, engine_);
    for (int i = 0; i < 6; ++i)
        engine.submit(job(i, "s-" + std::to_string(i)));
    EXPECT_EQ(by_tag(engine.run(nullptr)).size(), 6u);
    EXPECT_EQ(peak, 1);
    EXPECT_EQ(engine.stats().max_in_flight, 1);
}

TEST_F(EngineTest, MaxRateSpreadsRequestsOut)
{
    start([](const httplib::Request &req, httplib::Response &res) { reply_id(res, user_of(req)); });
    engine_.max_rate = 100;
    RequestEngine engine(client_, engine_);
    for (int i = 0; i < 40; ++i)
        engine.submit(job(i, "r-" + std::to_string(i)));
    auto begin = Steady::now();
    auto outcomes = engine.run(&never_abort);
    long took = elapsed_ms(begin);
    EXPECT_EQ(by_tag(outcomes).size(), 40u);
    // 40 requests at 100/s with a burst of at most 10: 30 wait for tokens.
    EXPECT_GE(took, 280);
    EXPECT_LT(took, 3000);
    EXPECT_EQ(server_.request_count(), 40u);
}

TEST_F(EngineTest, WithoutMaxRateRequestsAreNotSpreadOut)
{
    start([](const httplib::Request &req, httplib::Response &res) { reply_id(res, user_of(req)); });
    RequestEngine engine(client_, engine_);
    for (int i = 0; i < 40; ++i)
        engine.submit(job(i, "f-" + std::to_string(i)));
    auto begin = Steady::now();
    EXPECT_EQ(by_tag(engine.run(nullptr)).size(), 40u);
    // The contrast to MaxRateSpreadsRequestsOut: its lower bound comes from
    // max_rate, not from the server (about 10 ms here unloaded).
    EXPECT_LT(elapsed_ms(begin), 280);
}

TEST_F(EngineTest, UpstreamFailureIsRetried)
{
    answer_in_turn({503, 201});
    RequestEngine engine(client_, engine_);
    engine.submit(job(1, "retry-me"));
    engine.submit(job(2, "retry-too"));
    auto map = by_tag(engine.run(&never_abort));
    ASSERT_EQ(map.size(), 2u);
    for (std::uint64_t tag : {1u, 2u}) {
        const JobOutcome &o = map.at(tag);
        ASSERT_TRUE(o.result) << tag;
        EXPECT_EQ(o.attempts, 2) << tag;
        EXPECT_FALSE(o.permanent);
    }
    EXPECT_EQ(map.at(1).result->id, "idn_retry-me");
    EXPECT_EQ(requests_for("retry-me"), 2u);
    EXPECT_EQ(engine.stats().requests, 4u);
    EXPECT_EQ(engine.stats().retries, 2u);
}

TEST_F(EngineTest, UpstreamFailureGivesUpAfterMaxRetries)
{
    answer_in_turn({500});
    client_.retry.max_retries = 2;
    RequestEngine engine(client_, engine_);
    engine.submit(job(1, "down"));
    auto outcomes = engine.run(nullptr);
    ASSERT_EQ(outcomes.size(), 1u);
    const JobOutcome &o = outcomes[0];
    ASSERT_TRUE(o.error);
    EXPECT_EQ(o.error->kind(), ErrorKind::Upstream);
    EXPECT_EQ(o.attempts, 3);
    EXPECT_FALSE(o.permanent); // DFend's fault, not the row's
    EXPECT_FALSE(o.unfinished);
    EXPECT_NE(o.error->detail().find("Gave up after 3 attempts."), std::string::npos)
        << o.error->detail();
    EXPECT_EQ(server_.request_count(), 3u);
}

TEST_F(EngineTest, ClientErrorsArePermanentAndNotRetried)
{
    start([](const httplib::Request &req, httplib::Response &res) {
        std::string user = user_of(req);
        res.status = user == "bad-400" ? 400 : 422;
        res.set_content(R"({"error":"email is not valid"})", "application/json");
    });
    RequestEngine engine(client_, engine_);
    engine.submit(job(400, "bad-400"));
    engine.submit(job(422, "bad-422"));
    auto begin = Steady::now();
    auto map = by_tag(engine.run(&never_abort));
    ASSERT_EQ(map.size(), 2u);
    for (std::uint64_t tag : {400u, 422u}) {
        const JobOutcome &o = map.at(tag);
        ASSERT_TRUE(o.error) << tag;
        EXPECT_EQ(o.error->kind(), ErrorKind::InvalidArgument) << tag;
        EXPECT_EQ(o.error->http_status(), static_cast<long>(tag));
        EXPECT_NE(o.error->detail().find("email is not valid"), std::string::npos);
        EXPECT_EQ(o.error->detail().find("Gave up"), std::string::npos);
        EXPECT_TRUE(o.permanent) << tag;
        EXPECT_EQ(o.attempts, 1) << tag;
    }
    EXPECT_EQ(server_.request_count(), 2u);
    EXPECT_EQ(engine.stats().retries, 0u);
    EXPECT_LT(elapsed_ms(begin), 1000);
}

TEST_F(EngineTest, RejectedKeyIsNotPermanent)
{
    answer_in_turn({401});
    RequestEngine engine(client_, engine_);
    engine.submit(job(1, "u"));
    auto outcomes = engine.run(nullptr);
    ASSERT_EQ(outcomes.size(), 1u);
    const JobOutcome &o = outcomes[0];
    ASSERT_TRUE(o.error);
    EXPECT_EQ(o.error->kind(), ErrorKind::Unauthorized);
    EXPECT_FALSE(o.permanent); // the same for every row: fix the key, try again
    EXPECT_EQ(o.attempts, 1);
    EXPECT_EQ(server_.request_count(), 1u);
    // The key is never echoed in what the engine reports.
    EXPECT_EQ(o.error->message().find(kKey), std::string::npos);
    EXPECT_EQ(o.error->detail().find(kKey), std::string::npos);
}

TEST_F(EngineTest, RateLimitDelaysOnlyThatRequest)
{
    // The first request gets 429 with Retry-After: 1. That request waits at
    // least a second; the others are not held back (no pause of the whole
    // engine): the limiter hears the 429 and adjusts the rate instead.
    std::vector<std::pair<std::string, Steady::time_point>> arrivals;
    start([&](const httplib::Request &req, httplib::Response &res) {
        std::string user = user_of(req);
        bool first;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            first = arrivals.empty();
            arrivals.emplace_back(user, Steady::now());
        }
        if (first) {
            res.status = 429;
            res.set_header("Retry-After", "1");
            res.set_content(R"({"error":"slow down"})", "application/json");
            return;
        }
        reply_id(res, user);
    });
    engine_.concurrency = 1;
    client_.retry.base_delay = Millis(1);
    RequestEngine engine(client_, engine_);
    engine.submit(job(1, "limited"));
    for (int i = 2; i <= 6; ++i)
        engine.submit(job(static_cast<std::uint64_t>(i), "other" + std::to_string(i)));
    auto map = by_tag(engine.run(&never_abort));
    ASSERT_EQ(map.size(), 6u);
    for (auto &[tag, outcome] : map)
        ASSERT_TRUE(outcome.result) << tag;
    EXPECT_EQ(map.at(1).attempts, 2);
    EXPECT_EQ(engine.stats().rate_limited, 1u);
    EXPECT_EQ(engine.stats().retries, 1u);
    std::lock_guard<std::mutex> lock(mutex_);
    ASSERT_EQ(arrivals.size(), 7u);
    EXPECT_EQ(arrivals[0].first, "limited");
    // Every other job went before the retried one, each well within its wait.
    for (std::size_t i = 1; i < 6; ++i) {
        EXPECT_NE(arrivals[i].first, "limited");
        EXPECT_LT(arrivals[i].second - arrivals[0].second, milliseconds(1000))
            << arrivals[i].first << " was held back by another request's 429";
    }
    EXPECT_EQ(arrivals[6].first, "limited");
    EXPECT_GE(arrivals[6].second - arrivals[0].second, milliseconds(1000))
        << "the retry came back before its Retry-After";
}

TEST_F(EngineTest, DeferredRetriesLeaveTheRunWithTheirWait)
{
    // With defer_waits_over, run() does not wait a Retry-After out: once
    // nothing is in flight, the waiting job comes back deferred, with its
    // last error and its wait, and the others are done.
    start([&](const httplib::Request &req, httplib::Response &res) {
        std::string user = user_of(req);
        if (user == "limited") {
            reply_limited(res, "5");
            return;
        }
        reply_id(res, user);
    });
    RequestEngine engine(client_, engine_);
    engine.submit(job(1, "limited"));
    engine.submit(job(2, "fine"));
    RunOptions options;
    options.defer_waits_over = Millis(100);
    auto begin = Steady::now();
    auto map = by_tag(engine.run(&never_abort, options));
    EXPECT_LT(elapsed_ms(begin), 4000); // the 5 s were not waited
    ASSERT_EQ(map.size(), 2u);
    ASSERT_TRUE(map.at(2).result);
    const JobOutcome &deferred = map.at(1);
    EXPECT_TRUE(deferred.deferred);
    ASSERT_TRUE(deferred.error);
    EXPECT_EQ(deferred.error->kind(), ErrorKind::RateLimited);
    EXPECT_EQ(deferred.attempts, 1);
    EXPECT_GT(deferred.retry_in, Millis(4000));
    EXPECT_LE(deferred.retry_in, Millis(5000));
    // The engine is empty and works again.
    engine.submit(job(3, "again"));
    auto again = by_tag(engine.run(&never_abort, options));
    ASSERT_EQ(again.size(), 1u);
    EXPECT_TRUE(again.at(3).result);
}

TEST_F(EngineTest, RetriesComingDueDoNotHoldTheBatch)
{
    // A 429 (Retry-After: 1) early in a batch, then 31 requests of 25 ms one
    // after another: when they are done the retry is due in about 0.2 s,
    // less than defer_waits_over. Its wait was a second when it was given,
    // so the run still returns at once with it deferred: waiting for each
    // 429 of a batch as it comes due held a batch for up to a second while
    // it sent next to nothing (the engines sharing the account took its
    // share meanwhile).
    start([&](const httplib::Request &req, httplib::Response &res) {
        std::string user = user_of(req);
        std::this_thread::sleep_for(milliseconds(25));
        if (user == "limited") {
            reply_limited(res, "1");
            return;
        }
        reply_id(res, user);
    });
    engine_.concurrency = 1;
    RequestEngine engine(client_, engine_);
    engine.submit(job(0, "limited"));
    for (int i = 1; i < 32; ++i)
        engine.submit(job(static_cast<std::uint64_t>(i), "other" + std::to_string(i)));
    RunOptions options;
    options.defer_waits_over = kLongestWaitInBatch;
    const auto begin = Steady::now();
    auto map = by_tag(engine.run(&never_abort, options));
    const long took = elapsed_ms(begin);
    ASSERT_EQ(map.size(), 32u);
    for (int i = 1; i < 32; ++i)
        EXPECT_TRUE(map.at(static_cast<std::uint64_t>(i)).result) << i;
    const JobOutcome &limited = map.at(0);
    EXPECT_TRUE(limited.deferred);
    EXPECT_EQ(limited.attempts, 1);
    EXPECT_EQ(requests_for("limited"), 1u);
    EXPECT_GE(took, 32 * 25);                   // every other request was waited for
    EXPECT_LE(limited.retry_in, Millis(1000) - milliseconds(32 * 25 - 25));
    EXPECT_LT(took, 1000);                      // and the retry was not
}

TEST_F(EngineTest, ShortRetriesAreWaitedEvenWhenDeferring)
{
    // A 503 whose backoff is a few ms is retried within the run: deferral is
    // for waits longer than defer_waits_over only.
    answer_in_turn({503, 200});
    RequestEngine engine(client_, engine_);
    engine.submit(job(1, "flaky"));
    RunOptions options;
    options.defer_waits_over = Millis(500);
    auto map = by_tag(engine.run(&never_abort, options));
    ASSERT_EQ(map.size(), 1u);
    EXPECT_TRUE(map.at(1).result);
    EXPECT_FALSE(map.at(1).deferred);
    EXPECT_EQ(map.at(1).attempts, 2);
}

// A server whose "slow" users are answered only once release() is called.
class Gate {
  public:
    void wait()
    {
        std::unique_lock<std::mutex> lock(mutex_);
        ++waiting_;
        changed_.notify_all();
        changed_.wait(lock, [&] { return open_; });
    }
    void wait_for_waiters(int count)
    {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [&] { return waiting_ >= count; });
    }
    void release()
    {
        std::lock_guard<std::mutex> lock(mutex_);
        open_ = true;
        changed_.notify_all();
    }

  private:
    std::mutex mutex_;
    std::condition_variable changed_;
    int waiting_ = 0;
    bool open_ = false;
};

TEST_F(EngineTest, CarriedJobsAnswerInALaterRun)
{
    // With carry_at_most, run() returns once every job was sent and only a
    // few are unanswered; they stay in the engine (still in flight) and
    // come back from the next run, next to that run's own jobs.
    Gate gate;
    start([&](const httplib::Request &req, httplib::Response &res) {
        std::string user = user_of(req);
        if (user.rfind("slow", 0) == 0)
            gate.wait();
        reply_id(res, user);
    });
    RequestEngine engine(client_, engine_);
    engine.submit(job(1, "slow-1"));
    for (std::uint64_t tag = 2; tag <= 6; ++tag)
        engine.submit(job(tag, "fast-" + std::to_string(tag)));
    RunOptions carry;
    carry.carry_at_most = 2;
    auto first = by_tag(engine.run(&never_abort, carry));
    EXPECT_EQ(first.count(1), 0u) << "the unanswered job came back without an answer";
    // The slow one, and perhaps a fast one whose answer was still on its way.
    EXPECT_GE(engine.unfinished(), 1u);
    EXPECT_LE(engine.unfinished(), 2u);
    EXPECT_EQ(first.size() + engine.unfinished(), 6u);
    gate.wait_for_waiters(1);
    // The next batch, while the first one's slow request is still out.
    engine.submit(job(7, "fast-7"));
    engine.submit(job(8, "slow-8"));
    gate.release();
    auto second = by_tag(engine.run(&never_abort)); // the last batch: waits for all
    EXPECT_EQ(first.size() + second.size(), 8u);
    for (std::uint64_t tag = 1; tag <= 8; ++tag) {
        EXPECT_NE(first.count(tag), second.count(tag)) << "tag " << tag << ": not exactly once";
        const JobOutcome &o = first.count(tag) ? first.at(tag) : second.at(tag);
        ASSERT_TRUE(o.result) << tag;
        EXPECT_EQ(o.attempts, 1) << tag;
    }
    EXPECT_EQ(second.at(1).result->id, "idn_slow-1");
    EXPECT_EQ(engine.unfinished(), 0u);
    EXPECT_EQ(engine.stats().requests, 8u) << "a carried job was sent again";
}

TEST_F(EngineTest, CarryingIsBoundedAndRetriesWaitInTheEngine)
{
    // A job waiting for its Retry-After is carried like one in flight; but
    // never more than carry_at_most: beyond it, run() waits as before.
    answer_in_turn({429, 201}, "1");
    RequestEngine engine(client_, engine_);
    engine.submit(job(1, "a"));
    engine.submit(job(2, "b"));
    RunOptions carry;
    carry.carry_at_most = 1;
    auto begin = Steady::now();
    auto first = by_tag(engine.run(&never_abort, carry));
    // Two waited for their retry: one more than may be carried, so the run
    // went on (past the Retry-After) until at most one was left.
    EXPECT_GE(elapsed_ms(begin), 900);
    EXPECT_LE(engine.unfinished(), 1u);
    EXPECT_EQ(first.size() + engine.unfinished(), 2u);
    auto rest = by_tag(engine.run(&never_abort));
    EXPECT_EQ(first.size() + rest.size(), 2u);
    for (auto *outcomes : {&first, &rest})
        for (const auto &[tag, outcome] : *outcomes) {
            EXPECT_TRUE(outcome.result) << tag;
            EXPECT_EQ(outcome.attempts, 2) << tag;
        }
    EXPECT_EQ(engine.unfinished(), 0u);
}

TEST_F(EngineTest, NewJobsGoAheadOfCarriedRetries)
{
    // A carried job waiting for its Retry-After must not hold back the
    // jobs of the next run: they are sent at once.
    start([&](const httplib::Request &req, httplib::Response &res) {
        std::string user = user_of(req);
        if (user == "limited") {
            reply_limited(res, "3");
            return;
        }
        reply_id(res, user);
    });
    RequestEngine engine(client_, engine_);
    engine.submit(job(1, "limited"));
    RunOptions carry;
    carry.carry_at_most = 10;
    // Returns once the job was sent; run again until its 429 came back.
    while (engine.run(&never_abort, carry).empty() && engine.stats().rate_limited == 0) {
    }
    ASSERT_EQ(engine.stats().rate_limited, 1u);
    ASSERT_EQ(engine.unfinished(), 1u);
    auto begin = Steady::now();
    engine.submit(job(2, "next"));
    engine.submit(job(3, "after"));
    auto map = by_tag(engine.run(&never_abort, carry));
    EXPECT_LT(elapsed_ms(begin), 1500) << "the new jobs waited for the carried retry";
    EXPECT_EQ(map.size() + engine.unfinished(), 3u);
    EXPECT_EQ(map.count(1), 0u);
    engine.drop_unfinished();
}

TEST_F(EngineTest, DroppedCarriedJobsNeverComeBack)
{
    Gate gate;
    start([&](const httplib::Request &req, httplib::Response &res) {
        std::string user = user_of(req);
        if (user == "slow")
            gate.wait();
        reply_id(res, user);
    });
    RequestEngine engine(client_, engine_);
    engine.submit(job(1, "slow"));
    RunOptions carry;
    carry.carry_at_most = 4;
    EXPECT_TRUE(engine.run(&never_abort, carry).empty());
    EXPECT_EQ(engine.unfinished(), 1u);
    engine.drop_unfinished();
    EXPECT_EQ(engine.unfinished(), 0u);
    gate.release();
    engine.submit(job(2, "next"));
    auto map = by_tag(engine.run(&never_abort));
    ASSERT_EQ(map.size(), 1u);
    EXPECT_TRUE(map.at(2).result);
}

TEST_F(EngineTest, ValidationFailureIsPermanentAndSendsNothing)
{
    start([](const httplib::Request &req, httplib::Response &res) { reply_id(res, user_of(req)); });
    RequestEngine engine(client_, engine_);
    engine.submit(job(1, ""));                            // empty user id
    engine.submit(job(2, "fine", std::string("not an email")));
    engine.submit(job(3, "good", std::string("good@example.com")));
    auto map = by_tag(engine.run(&never_abort));
    ASSERT_EQ(map.size(), 3u);
    for (std::uint64_t tag : {1u, 2u}) {
        const JobOutcome &o = map.at(tag);
        ASSERT_TRUE(o.error) << tag;
        EXPECT_EQ(o.error->kind(), ErrorKind::InvalidArgument) << tag;
        EXPECT_TRUE(o.permanent) << tag;
        EXPECT_EQ(o.attempts, 0) << tag;
        EXPECT_FALSE(o.unfinished) << tag;
    }
    ASSERT_TRUE(map.at(3).result);
    EXPECT_EQ(map.at(3).result->id, "idn_good");
    // Only the valid job reached the server.
    auto requests = server_.requests();
    ASSERT_EQ(requests.size(), 1u);
    EXPECT_EQ(user_of_body(requests[0].body), "good");
    EXPECT_EQ(engine.stats().requests, 1u);
}

TEST_F(EngineTest, DropInvalidFieldsRegistersWithoutThem)
{
    start([](const httplib::Request &req, httplib::Response &res) { reply_id(res, user_of(req)); });
    RequestEngine engine(client_, engine_);
    Job dropping = job(1, "jose", std::string("jos\xC3\xA9@example.com"));
    dropping.request.phone = "+1 415 555 0100";
    dropping.request.metadata_json = "{\"plan\": \"pro\"}";
    dropping.drop_invalid_fields = true;
    engine.submit(dropping);
    Job rejecting = job(2, "strict", std::string("jos\xC3\xA9@example.com"));
    engine.submit(rejecting);
    Job bad_user = job(3, "", std::string("bad"));
    bad_user.drop_invalid_fields = true;
    engine.submit(bad_user);
    Job clean = job(4, "clean", std::string("clean@example.com"));
    clean.drop_invalid_fields = true;
    engine.submit(clean);
    auto map = by_tag(engine.run(&never_abort));
    ASSERT_EQ(map.size(), 4u);

    // Registered, without the email and the phone, and says so.
    const JobOutcome &dropped = map.at(1);
    ASSERT_TRUE(dropped.result);
    EXPECT_EQ(dropped.result->id, "idn_jose");
    ASSERT_EQ(dropped.dropped.size(), 2u);
    EXPECT_EQ(dropped.dropped[0].field, "email");
    EXPECT_EQ(dropped.dropped[0].reason.rfind("invalid email address: ", 0), 0u);
    EXPECT_EQ(dropped.dropped[1].field, "phone");
    EXPECT_EQ(dropped.dropped[1].reason.rfind("invalid phone number: ", 0), 0u);
    // Without the flag: refused as before, nothing sent.
    ASSERT_TRUE(map.at(2).error);
    EXPECT_TRUE(map.at(2).permanent);
    EXPECT_EQ(map.at(2).attempts, 0);
    EXPECT_TRUE(map.at(2).dropped.empty());
    // A bad user id is never dropped: still refused.
    ASSERT_TRUE(map.at(3).error);
    EXPECT_TRUE(map.at(3).permanent);
    EXPECT_EQ(map.at(3).error->message(), "user_id must not be empty");
    EXPECT_EQ(map.at(3).attempts, 0);
    // Nothing wrong, nothing dropped.
    ASSERT_TRUE(map.at(4).result);
    EXPECT_TRUE(map.at(4).dropped.empty());

    std::map<std::string, json> bodies;
    for (const auto &request : server_.requests())
        bodies[user_of_body(request.body)] = json::parse(request.body);
    ASSERT_EQ(bodies.size(), 2u);
    EXPECT_EQ(bodies.at("jose"),
              json::parse(R"({"userId": "jose", "merge": false, "metadata": {"plan": "pro"}})"));
    EXPECT_EQ(bodies.at("clean"),
              json::parse(R"({"userId": "clean", "email": "clean@example.com", "merge": false})"));
}

TEST_F(EngineTest, DeadlineCutsOffUnansweredJobs)
{
    // "slow-*" requests are never answered (until the test ends); the others
    // are answered at once, one of them with a 400.
    start([this](const httplib::Request &req, httplib::Response &res) {
        std::string user = user_of(req);
        if (user.rfind("slow-", 0) == 0) {
            server_.wait_released(milliseconds(30000));
            reply_id(res, user);
            return;
        }
        if (user == "bad") {
            res.status = 400;
            res.set_content(R"({"error":"no"})", "application/json");
            return;
        }
        reply_id(res, user);
    });
    engine_.concurrency = 3;
    client_.request_timeout_ms = 20000; // only the deadline may end the wait
    RequestEngine engine(client_, engine_);
    engine.submit(job(100, "fast"));
    engine.submit(job(101, "bad"));
    constexpr int kSlow = 8;
    for (int i = 0; i < kSlow; ++i)
        engine.submit(job(i, "slow-" + std::to_string(i)));

    auto begin = Steady::now();
    auto outcomes = engine.run(&never_abort, Clock::now() + milliseconds(300));
    long took = elapsed_ms(begin);
    EXPECT_GE(took, 290);
    EXPECT_LT(took, 800);

    auto map = by_tag(outcomes);
    ASSERT_EQ(map.size(), static_cast<std::size_t>(kSlow + 2));
    // Answered before the deadline: the real outcome stays.
    ASSERT_TRUE(map.at(100).result);
    EXPECT_EQ(map.at(100).result->id, "idn_fast");
    EXPECT_FALSE(map.at(100).unfinished);
    ASSERT_TRUE(map.at(101).error);
    EXPECT_EQ(map.at(101).error->kind(), ErrorKind::InvalidArgument);
    EXPECT_TRUE(map.at(101).permanent);
    EXPECT_FALSE(map.at(101).unfinished);

    int sent = 0, not_sent = 0;
    for (int i = 0; i < kSlow; ++i) {
        const JobOutcome &o = map.at(i);
        ASSERT_TRUE(o.error) << i;
        EXPECT_FALSE(o.result) << i;
        EXPECT_EQ(o.error->kind(), ErrorKind::Timeout) << i;
        EXPECT_TRUE(o.unfinished) << i;
        EXPECT_FALSE(o.permanent) << i; // a time budget, not the row's fault
        if (o.attempts == 1) {
            ++sent;
            EXPECT_EQ(requests_for("slow-" + std::to_string(i)), 1u) << i;
            EXPECT_NE(o.error->detail().find("was sent"), std::string::npos);
        } else {
            EXPECT_EQ(o.attempts, 0) << i;
            ++not_sent;
            EXPECT_EQ(requests_for("slow-" + std::to_string(i)), 0u) << i;
            EXPECT_NE(o.error->detail().find("not sent"), std::string::npos);
        }
    }
    // Three slots, all held by slow requests once the fast ones were done.
    EXPECT_EQ(sent, engine_.concurrency);
    EXPECT_EQ(not_sent, kSlow - engine_.concurrency);

    // The engine is clean and usable: a new job succeeds, alone.
    engine.submit(job(200, "after"));
    begin = Steady::now();
    outcomes = engine.run(&never_abort, Clock::now() + milliseconds(5000));
    EXPECT_LT(elapsed_ms(begin), 2000);
    ASSERT_EQ(outcomes.size(), 1u);
    EXPECT_EQ(outcomes[0].tag, 200u);
    ASSERT_TRUE(outcomes[0].result);
    EXPECT_EQ(outcomes[0].result->id, "idn_after");
    EXPECT_FALSE(outcomes[0].unfinished);
    EXPECT_EQ(outcomes[0].attempts, 1);
}

TEST_F(EngineTest, DeadlineAlreadyPassedSendsNothing)
{
    start([](const httplib::Request &req, httplib::Response &res) { reply_id(res, user_of(req)); });
    RequestEngine engine(client_, engine_);
    engine.submit(job(1, ""));  // decided at submit: keeps its outcome
    engine.submit(job(2, "late"));
    auto map = by_tag(engine.run(nullptr, Clock::now() - milliseconds(1)));
    ASSERT_EQ(map.size(), 2u);
    EXPECT_TRUE(map.at(1).permanent);
    EXPECT_FALSE(map.at(1).unfinished);
    ASSERT_TRUE(map.at(2).error);
    EXPECT_EQ(map.at(2).error->kind(), ErrorKind::Timeout);
    EXPECT_TRUE(map.at(2).unfinished);
    EXPECT_EQ(map.at(2).attempts, 0);
    EXPECT_EQ(server_.request_count(), 0u);
}

TEST_F(EngineTest, DeadlineDuringABackoffCutsOffTheRetry)
{
    answer_in_turn({503, 201});
    client_.retry.base_delay = Millis(4000);
    RequestEngine engine(client_, engine_);
    engine.submit(job(1, "backing-off"));
    auto begin = Steady::now();
    auto outcomes = engine.run(&never_abort, Clock::now() + milliseconds(300));
    long took = elapsed_ms(begin);
    EXPECT_GE(took, 290);
    EXPECT_LT(took, 800);
    ASSERT_EQ(outcomes.size(), 1u);
    ASSERT_TRUE(outcomes[0].error);
    EXPECT_EQ(outcomes[0].error->kind(), ErrorKind::Timeout);
    EXPECT_TRUE(outcomes[0].unfinished);
    EXPECT_EQ(outcomes[0].attempts, 1);
    EXPECT_EQ(server_.request_count(), 1u);
}

TEST_F(EngineTest, AbortThrowsCancelledAndTheEngineStaysUsable)
{
    // The first request to arrive asks for the abort; no request is answered
    // until the test ends, so only the abort can end the run.
    start([this](const httplib::Request &req, httplib::Response &res) {
        std::string user = user_of(req);
        if (user == "after") {
            reply_id(res, user);
            return;
        }
        g_abort = true;
        server_.wait_released(milliseconds(30000));
        reply_id(res, user);
    });
    engine_.concurrency = 2;
    RequestEngine engine(client_, engine_);
    engine.submit(job(0, "")); // an early outcome must not leak into the next run
    for (int i = 1; i <= 5; ++i)
        engine.submit(job(i, "held-" + std::to_string(i)));
    auto begin = Steady::now();
    try {
        engine.run(&abort_requested, Clock::now() + milliseconds(20000));
        ADD_FAILURE() << "run() returned instead of throwing";
    } catch (const Error &e) {
        EXPECT_EQ(e.kind(), ErrorKind::Cancelled) << e.message();
    }
    EXPECT_LT(elapsed_ms(begin), 1000);
    EXPECT_LE(server_.request_count(), 2u);

    g_abort = false;
    engine.submit(job(42, "after"));
    begin = Steady::now();
    auto outcomes = engine.run(&abort_requested);
    EXPECT_LT(elapsed_ms(begin), 2000);
    ASSERT_EQ(outcomes.size(), 1u);
    EXPECT_EQ(outcomes[0].tag, 42u);
    ASSERT_TRUE(outcomes[0].result);
    EXPECT_EQ(outcomes[0].result->id, "idn_after");
}

namespace {

// A RateLimiter several threads share, as engines of several backends share
// one in PostgreSQL shared memory (there under a spinlock).
class SharedLimiter final : public RateLimiter {
  public:
    RateClock::time_point reserve(RateClock::time_point now) noexcept override
    {
        std::lock_guard<std::mutex> lock(mutex_);
        return inner_.reserve(now);
    }
    void on_answer(RateClock::time_point sent_at, RateClock::time_point now,
                   RateSignal signal) noexcept override
    {
        std::lock_guard<std::mutex> lock(mutex_);
        inner_.on_answer(sent_at, now, signal);
    }

  private:
    std::mutex mutex_;
    LocalRateLimiter inner_;
};

} // namespace

TEST_F(EngineTest, TwoEnginesShareOneAccountLimit)
{
    // An account limit of 100/s (a token bucket, burst 5) and two engines,
    // each with 150 jobs, sharing one limiter: every job succeeds (429s are
    // retried after their Retry-After, never failed), few requests are
    // answered 429 once the shared rate has converged, and both engines get
    // about half of the account: they finish close together.
    std::mutex bucket_mutex;
    double tokens = 5;
    auto last = Steady::now();
    std::atomic<int> accepted{0}, limited{0};
    // After the first 1.5 s (the shared rate comes down from its unpaced
    // start within the first few 100 ms epochs; the 429s of that start
    // come back after their Retry-After of 1 s).
    std::atomic<int> late_accepted{0}, late_limited{0};
    const auto begin = Steady::now();
    start([&](const httplib::Request &req, httplib::Response &res) {
        bool ok;
        const bool late = Steady::now() - begin > milliseconds(1500);
        {
            std::lock_guard<std::mutex> lock(bucket_mutex);
            auto now = Steady::now();
            tokens = std::min(5.0, tokens + std::chrono::duration<double>(now - last).count() * 100);
            last = now;
            ok = tokens >= 1;
            if (ok)
                tokens -= 1;
        }
        if (!ok) {
            ++limited;
            late_limited += late;
            res.status = 429;
            res.set_header("Retry-After", "1");
            res.set_content(R"({"error":"rate limited"})", "application/json");
            return;
        }
        ++accepted;
        late_accepted += late;
        reply_id(res, user_of(req));
    });
    engine_.concurrency = 8;
    engine_.rate_limits_never_fail = true;
    SharedLimiter limiter;
    long finished_ms[2] = {0, 0};
    int succeeded[2] = {0, 0};
    auto drive = [&](int which) {
        RequestEngine engine(client_, engine_, &limiter);
        for (int i = 0; i < 150; ++i)
            engine.submit(job(static_cast<std::uint64_t>(i),
                              "e" + std::to_string(which) + "-" + std::to_string(i)));
        for (const JobOutcome &o : engine.run(&never_abort))
            succeeded[which] += o.result ? 1 : 0;
        finished_ms[which] = elapsed_ms(begin);
    };
    std::thread first(drive, 0), second(drive, 1);
    first.join();
    second.join();
    EXPECT_EQ(succeeded[0], 150);
    EXPECT_EQ(succeeded[1], 150);
    EXPECT_EQ(accepted.load(), 300);
    const double share_429 =
        static_cast<double>(late_limited) / std::max(1, late_accepted + late_limited);
    const long slower = std::max(finished_ms[0], finished_ms[1]);
    const long faster = std::min(finished_ms[0], finished_ms[1]);
    std::printf("[ two engines ] %ld and %ld ms for 150 jobs each at 100/s, %d answered "
                "429 in all, %.1f%% after 1.5 s\n",
                finished_ms[0], finished_ms[1], limited.load(), 100 * share_429);
    // 300 at 100/s take about 3 s whatever the engines do; sharing fairly
    // means neither finishes long before the other.
    EXPECT_GE(faster, slower * 0.7);
    EXPECT_GT(late_accepted.load(), 50);
    EXPECT_LT(share_429, 0.15);
}

namespace {

// An account limit of 100/s (a token bucket, burst 5; 429 with Retry-After:
// 1 beyond it) that records when it accepted each user's request, and two
// engines sharing one limiter that drain their jobs as the outbox worker
// does: batches of 64, a 429 not waited for (defer_waits_over), its job due
// again after its wait, a short pause between batches (the commit).
class SharedAccount {
  public:
    explicit SharedAccount(TestServer &server) : begin_(Steady::now())
    {
        server.on_identity([this](const httplib::Request &req, httplib::Response &res) {
            const std::string user = user_of(req);
            const auto now = Steady::now();
            bool ok;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                tokens_ = std::min(5.0, tokens_ + std::chrono::duration<double>(now - last_).count() * 100);
                last_ = now;
                ok = tokens_ >= 1;
                if (ok) {
                    tokens_ -= 1;
                    accepted_[user.rfind("e1-", 0) == 0].push_back(seconds(now));
                } else {
                    ++limited_;
                    limited_at_.push_back(seconds(now));
                }
            }
            if (!ok) {
                res.status = 429;
                res.set_header("Retry-After", "1");
                res.set_content(R"({"error":"rate limited"})", "application/json");
                return;
            }
            reply_id(res, user);
        });
    }

    static constexpr int kBatch = 64;

    // Engine `which` drains `jobs` jobs; returns how many got an id.
    int drain(const ClientSettings &client, EngineSettings settings, RateLimiter &limiter,
              int which, int jobs)
    {
        settings.concurrency = 8;
        RequestEngine engine(client, settings, &limiter);
        std::vector<std::pair<int, Steady::time_point>> pending; // job, due
        for (int i = 0; i < jobs; ++i)
            pending.emplace_back(i, Steady::time_point{});
        int stored = 0;
        while (!pending.empty()) {
            const auto now = Steady::now();
            std::vector<std::pair<int, Steady::time_point>> later;
            int batch = 0;
            for (const auto &[i, due] : pending) {
                if (due > now || batch == kBatch) {
                    later.emplace_back(i, due);
                    continue;
                }
                engine.submit(job(static_cast<std::uint64_t>(i),
                                  "e" + std::to_string(which) + "-" + std::to_string(i)));
                ++batch;
            }
            if (batch == 0) {
                std::this_thread::sleep_for(milliseconds(5));
                continue;
            }
            RunOptions options;
            options.defer_waits_over = kLongestWaitInBatch;
            for (const JobOutcome &o : engine.run(&never_abort, options)) {
                if (o.result)
                    ++stored;
                else // due again when its wait is over, as the worker does
                    later.emplace_back(static_cast<int>(o.tag), Steady::now() + o.retry_in);
            }
            pending = std::move(later);
            std::this_thread::sleep_for(milliseconds(10)); // the batch's commit
        }
        return stored;
    }

    // Accepted requests of engine `which` in [from, to) seconds.
    int accepted(int which, double from, double to)
    {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto &times = accepted_[which];
        return static_cast<int>(std::count_if(times.begin(), times.end(),
                                              [&](double t) { return t >= from && t < to; }));
    }
    double last_accepted(int which)
    {
        std::lock_guard<std::mutex> lock(mutex_);
        return accepted_[which].empty() ? 0 : accepted_[which].back();
    }
    int limited()
    {
        std::lock_guard<std::mutex> lock(mutex_);
        return limited_;
    }
    int limited(double from, double to)
    {
        std::lock_guard<std::mutex> lock(mutex_);
        return static_cast<int>(std::count_if(limited_at_.begin(), limited_at_.end(),
                                              [&](double t) { return t >= from && t < to; }));
    }

  private:
    double seconds(Steady::time_point t) const
    {
        return std::chrono::duration<double>(t - begin_).count();
    }
    const Steady::time_point begin_;
    std::mutex mutex_;
    double tokens_ = 5;
    Steady::time_point last_ = Steady::now();
    std::vector<double> accepted_[2];
    std::vector<double> limited_at_;
    int limited_ = 0;
};

} // namespace

TEST_F(EngineTest, TwoEnginesShareEveryWindowFairly)
{
    // Two engines draining 250 jobs each in batches through one limiter, at
    // an account limit of 100/s: from 1.5 s on (the shared rate starts high
    // and the 429s of that start wait a second) until the first is done,
    // (less the last second, when both wait for their last 429s), each gets
    // 40-60% of what the account accepted in every 1 s window, and together
    // they use at least 85% of it.
    SharedAccount account(server_);
    server_.start();
    client_.api_url = server_.base_url();
    SharedLimiter limiter;
    int stored[2] = {0, 0};
    auto drive = [&](int which) {
        stored[which] = account.drain(client_, engine_, limiter, which, 250);
    };
    std::thread first(drive, 0), second(drive, 1);
    first.join();
    second.join();
    EXPECT_EQ(stored[0], 250);
    EXPECT_EQ(stored[1], 250);
    // The last second is the Retry-After of the last 429s, which both wait.
    const double both_until = std::min(account.last_accepted(0), account.last_accepted(1)) - 1;
    int windows = 0;
    for (double from = 1.5; from + 1 <= both_until; from += 0.25, ++windows) {
        const int a = account.accepted(0, from, from + 1);
        const int b = account.accepted(1, from, from + 1);
        std::printf("[ fair ] %.2f-%.2f s: %d + %d accepted, first %.0f%%, %d answered 429\n",
                    from, from + 1, a, b, 100.0 * a / std::max(1, a + b),
                    account.limited(from, from + 1));
        EXPECT_GE(a, 0.4 * (a + b)) << from;
        EXPECT_LE(a, 0.6 * (a + b)) << from;
        EXPECT_GE(a + b, 85) << from;
    }
    EXPECT_GE(windows, 6); // both busy for 2.5 s and more after the first 1.5 s
    std::printf("[ fair ] %d answered 429 in all\n", account.limited());
}

TEST_F(EngineTest, AnEngineAloneGetsTheWholeSharedRate)
{
    // The same account, one engine with 60 jobs and one with 400: once the
    // small one is done, the other alone gets the whole account (the shared
    // rate is not split among engines that no longer ask for slots).
    SharedAccount account(server_);
    server_.start();
    client_.api_url = server_.base_url();
    SharedLimiter limiter;
    int stored[2] = {0, 0};
    auto drive = [&](int which, int jobs) {
        stored[which] = account.drain(client_, engine_, limiter, which, jobs);
    };
    std::thread big(drive, 0, 400), small(drive, 1, 60);
    big.join();
    small.join();
    EXPECT_EQ(stored[0], 400);
    EXPECT_EQ(stored[1], 60);
    // From just after the small one's last request until the big one's
    // last second (the Retry-After of its last 429s).
    const double alone_from = account.last_accepted(1) + 0.25;
    const double alone_until = account.last_accepted(0) - 1;
    ASSERT_GE(alone_until - alone_from, 1.0) << "the big one had no second alone";
    const double alone =
        account.accepted(0, alone_from, alone_until) / (alone_until - alone_from);
    std::printf("[ alone ] %.2f-%.2f s: %.0f/s accepted, %d answered 429\n", alone_from,
                alone_until, alone, account.limited(alone_from, alone_until));
    EXPECT_GE(alone, 85); // the limit, less what probing it costs
    EXPECT_EQ(account.accepted(1, alone_from, alone_until), 0);
}

namespace {

// A limiter whose next slot is always far off: an account learnt to be
// nearly closed.
class FarOffLimiter final : public RateLimiter {
  public:
    RateClock::time_point reserve(RateClock::time_point now) noexcept override
    {
        ++reserved;
        return now + std::chrono::seconds(10);
    }
    void on_answer(RateClock::time_point, RateClock::time_point, RateSignal signal) noexcept override
    {
        answers += signal == RateSignal::Accepted;
    }
    int reserved = 0;
    int answers = 0;
};

} // namespace

TEST_F(EngineTest, UnpacedRunsIgnoreTheRateButTeachIt)
{
    start([](const httplib::Request &req, httplib::Response &res) { reply_id(res, user_of(req)); });
    FarOffLimiter limiter;
    RequestEngine engine(client_, engine_, &limiter);
    // Paced: nothing may go before the deadline.
    engine.submit(job(1, "paced"));
    auto paced = by_tag(engine.run(&never_abort, Steady::now() + milliseconds(200)));
    ASSERT_EQ(paced.size(), 1u);
    EXPECT_TRUE(paced.at(1).unfinished);
    EXPECT_EQ(paced.at(1).attempts, 0);
    EXPECT_EQ(limiter.reserved, 1);
    // Unpaced (a COMMIT's rows, lookups): sent at once, answers reported.
    for (int i = 2; i <= 4; ++i)
        engine.submit(job(static_cast<std::uint64_t>(i), "unpaced" + std::to_string(i)));
    RunOptions options;
    options.paced = false;
    options.deadline = Steady::now() + milliseconds(3000);
    auto unpaced = by_tag(engine.run(&never_abort, options));
    ASSERT_EQ(unpaced.size(), 3u);
    for (auto &[tag, outcome] : unpaced)
        EXPECT_TRUE(outcome.result) << tag;
    EXPECT_EQ(limiter.reserved, 1); // no slot was asked for
    EXPECT_EQ(limiter.answers, 3);
}

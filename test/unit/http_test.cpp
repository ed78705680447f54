// HttpClient against an in-process server: what goes on the wire, connection
// reuse, redirects, size limits, timeouts and transport failures.
#include "core/codec.hpp"
#include "core/error.hpp"
#include "core/http.hpp"
#include "test_server.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace dfend;
using dfend_test::TestServer;
using Steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

std::atomic<bool> g_abort{false};
bool abort_requested() noexcept { return g_abort.load(); }

long elapsed_ms(Steady::time_point since)
{
    return static_cast<long>(
        std::chrono::duration_cast<milliseconds>(Steady::now() - since).count());
}

class HttpTest : public ::testing::Test {
  protected:
    void SetUp() override
    {
        g_abort = false;
        options_.api_key = "sk_test_http_KEY";
        options_.connect_timeout_ms = 1000;
        options_.timeout_ms = 2000;
    }
    void TearDown() override
    {
        g_abort = false;
        server_.stop();
    }

    HttpRequest post(const std::string &body)
    {
        HttpRequest r;
        r.method = HttpRequest::Method::Post;
        r.url = server_.base_url() + "/identity";
        r.body = body;
        return r;
    }
    HttpRequest get(const std::string &body)
    {
        HttpRequest r = post(body);
        r.method = HttpRequest::Method::Get;
        return r;
    }

    // Performs and expects Error of `kind`.
    Error perform_error(const HttpRequest &request, ErrorKind kind,
                        AbortCheck abort = nullptr)
    {
        try {
            HttpResponse r = client_.perform(request, options_, abort);
            ADD_FAILURE() << "no error; status " << r.status;
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), kind) << kind_name(e.kind()) << ": " << e.message() << " / "
                                      << e.detail();
            return e;
        }
        return Error(ErrorKind::Internal, "no error");
    }

    TestServer server_;
    HttpClient client_;
    TransferOptions options_;
};

} // namespace

TEST_F(HttpTest, UserAgentNamesTheExtension)
{
    EXPECT_EQ(user_agent().rfind("dfend/", 0), 0u) << user_agent();
    EXPECT_NE(user_agent().find("libcurl"), std::string::npos) << user_agent();
}

TEST_F(HttpTest, PostSendsBodyAndHeaders)
{
    server_.on_identity([](const httplib::Request &, httplib::Response &res) {
        res.status = 201;
        res.set_content(R"({"id":"idn_1","created":true})", "application/json");
    });
    server_.start();
    const std::string body = R"({"userId":"u-1","merge":false})";
    HttpResponse response = client_.perform(post(body), options_, nullptr);
    EXPECT_EQ(response.status, 201);
    EXPECT_EQ(response.body, R"({"id":"idn_1","created":true})");
    EXPECT_EQ(response.retry_after_seconds, -1);

    auto requests = server_.requests();
    ASSERT_EQ(requests.size(), 1u);
    const auto &r = requests[0];
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.path, "/identity");
    EXPECT_EQ(r.body, body);
    EXPECT_EQ(r.header("x-api-key"), "sk_test_http_KEY");
    EXPECT_EQ(r.header("Content-Type"), "application/json");
    EXPECT_EQ(r.header("Accept"), "application/json");
    EXPECT_EQ(r.header("Content-Length"), std::to_string(body.size()));
    EXPECT_EQ(r.header("User-Agent").rfind("dfend/", 0), 0u) << r.header("User-Agent");
    EXPECT_FALSE(r.has_header("Expect"));
    EXPECT_FALSE(r.has_header("Authorization"));
    EXPECT_EQ(r.headers.count("x-api-key"), 1u);
}

TEST_F(HttpTest, LargeRequestBodyIsSentWhole)
{
    server_.on_identity([](const httplib::Request &req, httplib::Response &res) {
        res.set_content(std::to_string(req.body.size()), "text/plain");
    });
    server_.start();
    std::string body = "{\"userId\":\"u\",\"metadata\":{\"pad\":\"" + std::string(300000, 'p') + "\"}}";
    HttpResponse response = client_.perform(post(body), options_, nullptr);
    EXPECT_EQ(response.status, 200);
    EXPECT_EQ(response.body, std::to_string(body.size()));
    ASSERT_EQ(server_.request_count(), 1u);
    EXPECT_TRUE(server_.requests()[0].body == body); // no 300 kB dump on failure
}

TEST_F(HttpTest, GetCarriesAJsonBody)
{
    server_.on_identity([](const httplib::Request &req, httplib::Response &res) {
        res.set_content(R"({"id":"idn_9","echo":)" + req.body + "}", "application/json");
    });
    server_.start();
    const std::string body = R"({"userId":"user-9"})";
    HttpResponse response = client_.perform(get(body), options_, nullptr);
    EXPECT_EQ(response.status, 200);
    EXPECT_EQ(response.body, R"({"id":"idn_9","echo":{"userId":"user-9"}})");
    auto requests = server_.requests();
    ASSERT_EQ(requests.size(), 1u);
    EXPECT_EQ(requests[0].method, "GET");
    EXPECT_EQ(requests[0].body, body);
    EXPECT_EQ(requests[0].header("Content-Type"), "application/json");
    EXPECT_EQ(requests[0].header("Content-Length"), std::to_string(body.size()));
    EXPECT_EQ(requests[0].header("x-api-key"), "sk_test_http_KEY");
}

TEST_F(HttpTest, ConsecutiveRequestsReuseTheConnection)
{
    server_.on_identity([](const httplib::Request &req, httplib::Response &res) {
        res.set_content(req.method == "GET" ? R"({"id":"g"})" : R"({"id":"p"})",
                        "application/json");
    });
    server_.start();
    EXPECT_EQ(client_.perform(post(R"({"userId":"a"})"), options_, nullptr).body, R"({"id":"p"})");
    EXPECT_EQ(client_.perform(get(R"({"userId":"a"})"), options_, nullptr).body, R"({"id":"g"})");
    EXPECT_EQ(client_.perform(post(R"({"userId":"b"})"), options_, nullptr).body, R"({"id":"p"})");
    EXPECT_EQ(client_.perform(get(R"({"id":"x"})"), options_, nullptr).body, R"({"id":"g"})");

    auto requests = server_.requests();
    ASSERT_EQ(requests.size(), 4u);
    std::set<int> ports;
    for (const auto &r : requests)
        ports.insert(r.remote_port);
    EXPECT_EQ(ports.size(), 1u) << "each request opened a new connection";
    // A GET body did not desynchronise the connection: the next request parsed.
    EXPECT_EQ(requests[2].method, "POST");
    EXPECT_EQ(requests[2].body, R"({"userId":"b"})");
    EXPECT_EQ(requests[3].body, R"({"id":"x"})");
}

TEST_F(HttpTest, ReuseSurvivesAnErrorStatus)
{
    int n = 0;
    server_.on_identity([&n](const httplib::Request &, httplib::Response &res) {
        res.status = (n++ == 0) ? 503 : 200;
        res.set_content("{}", "application/json");
    });
    server_.start();
    EXPECT_EQ(client_.perform(post("{}"), options_, nullptr).status, 503);
    EXPECT_EQ(client_.perform(post("{}"), options_, nullptr).status, 200);
    auto requests = server_.requests();
    ASSERT_EQ(requests.size(), 2u);
    EXPECT_EQ(requests[0].remote_port, requests[1].remote_port);
}

TEST_F(HttpTest, RedirectsAreNotFollowed)
{
    TestServer target;
    target.on_identity([](const httplib::Request &, httplib::Response &res) {
        res.set_content(R"({"id":"stolen"})", "application/json");
    });
    target.start();
    const std::vector<int> statuses = {301, 302, 303, 307, 308};
    std::size_t n = 0;
    server_.on_identity([&](const httplib::Request &, httplib::Response &res) {
        res.status = statuses[n++ % statuses.size()];
        res.set_header("Location", target.base_url() + "/identity");
        res.set_content(R"({"id":"redirect"})", "application/json");
    });
    server_.start();
    for (std::size_t i = 0; i < statuses.size(); ++i) {
        HttpRequest request = i % 2 ? get("{}") : post("{}");
        HttpResponse response = client_.perform(request, options_, nullptr);
        EXPECT_EQ(response.status, statuses[i]);
        EXPECT_EQ(response.body, R"({"id":"redirect"})");
    }
    EXPECT_EQ(target.request_count(), 0u);
    EXPECT_EQ(server_.request_count(), statuses.size());
    target.stop();
}

TEST_F(HttpTest, RetryAfterHeaderIsRead)
{
    int n = 0;
    server_.on_identity([&n](const httplib::Request &, httplib::Response &res) {
        res.status = 429;
        const char *values[] = {"7", "0", "soon"};
        res.set_header("Retry-After", values[n++ % 3]);
    });
    server_.start();
    EXPECT_EQ(client_.perform(post("{}"), options_, nullptr).retry_after_seconds, 7);
    EXPECT_EQ(client_.perform(post("{}"), options_, nullptr).retry_after_seconds, -1);
    EXPECT_EQ(client_.perform(post("{}"), options_, nullptr).retry_after_seconds, -1);
}

TEST_F(HttpTest, ResponseSizeLimit)
{
    const std::string head = R"({"id":"a","pad":")";
    const std::string tail = "\"}";
    const std::string exact =
        head + std::string(kMaxResponseBytes - head.size() - tail.size(), 'p') + tail;
    int n = 0;
    server_.on_identity([&](const httplib::Request &, httplib::Response &res) {
        res.set_content(n++ == 0 ? exact : exact + " ", "application/json");
    });
    server_.start();
    HttpResponse response = client_.perform(post("{}"), options_, nullptr);
    EXPECT_EQ(response.body.size(), kMaxResponseBytes);
    Error e = perform_error(post("{}"), ErrorKind::BadResponse);
    EXPECT_NE(e.detail().find("larger"), std::string::npos) << e.detail();
}

TEST_F(HttpTest, HugeChunkedResponseStopsAtTheLimit)
{
    server_.on_identity([](const httplib::Request &, httplib::Response &res) {
        res.set_chunked_content_provider("application/json",
                                         [](size_t offset, httplib::DataSink &sink) {
                                             if (offset > 64 * kMaxResponseBytes)
                                                 return false;
                                             std::string chunk(65536, 'x');
                                             sink.write(chunk.data(), chunk.size());
                                             return true;
                                         });
    });
    server_.start();
    auto start = Steady::now();
    perform_error(post("{}"), ErrorKind::BadResponse);
    EXPECT_LT(elapsed_ms(start), 1500);
}

TEST_F(HttpTest, TimeoutWhenTheServerIsSlow)
{
    server_.on_identity([this](const httplib::Request &, httplib::Response &res) {
        server_.wait_released(milliseconds(3000));
        res.set_content("{}", "application/json");
    });
    server_.start();
    options_.timeout_ms = 200;
    auto start = Steady::now();
    Error e = perform_error(post("{}"), ErrorKind::Timeout);
    long took = elapsed_ms(start);
    EXPECT_GE(took, 180);
    EXPECT_LT(took, 1500);
    EXPECT_EQ(e.message(), "request to DFend timed out");
}

TEST_F(HttpTest, ConnectionRefused)
{
    HttpRequest r = post("{}");
    r.url = "http://127.0.0.1:" + std::to_string(dfend_test::closed_port()) + "/identity";
    auto start = Steady::now();
    Error e = perform_error(r, ErrorKind::ConnectFailed);
    EXPECT_LT(elapsed_ms(start), 1000);
    EXPECT_EQ(e.message(), "could not connect to DFend");
    EXPECT_FALSE(e.detail().empty());
}

TEST_F(HttpTest, ConnectionDroppedMidBody)
{
    server_.on_identity([](const httplib::Request &, httplib::Response &res) {
        res.set_content_provider(1000, "application/json",
                                 [](size_t offset, size_t, httplib::DataSink &sink) {
                                     if (offset > 0)
                                         return false; // hang up after 10 of 1000 bytes
                                     sink.write("{\"id\":\"ab", 9);
                                     return true;
                                 });
    });
    server_.start();
    perform_error(post("{}"), ErrorKind::ConnectionLost);
}

TEST_F(HttpTest, UnusableUrls)
{
    HttpRequest r = post("{}");
    r.url = "ftp://127.0.0.1/identity";
    perform_error(r, ErrorKind::Configuration);
    r.url = "http://[::1/identity";
    perform_error(r, ErrorKind::Configuration);
}

TEST_F(HttpTest, AbortBeforeStartIsCancelledPromptly)
{
    server_.on_identity([this](const httplib::Request &, httplib::Response &res) {
        server_.wait_released(milliseconds(3000));
        res.set_content("{}", "application/json");
    });
    server_.start();
    g_abort = true;
    auto start = Steady::now();
    Error e = perform_error(post("{}"), ErrorKind::Cancelled, &abort_requested);
    EXPECT_LT(elapsed_ms(start), 500);
    EXPECT_EQ(e.message(), "request to DFend was cancelled");
}

TEST_F(HttpTest, AbortDuringTransferIsCancelledPromptly)
{
    server_.on_identity([this](const httplib::Request &, httplib::Response &res) {
        server_.wait_released(milliseconds(3000));
        res.set_content("{}", "application/json");
    });
    server_.start();
    std::thread canceller([] {
        std::this_thread::sleep_for(milliseconds(100));
        g_abort = true;
    });
    auto start = Steady::now();
    perform_error(post("{}"), ErrorKind::Cancelled, &abort_requested);
    long took = elapsed_ms(start);
    canceller.join();
    EXPECT_GE(took, 90);
    // libcurl polls the progress callback at least once a second while idle.
    EXPECT_LT(took, 1300);
}

TEST_F(HttpTest, ClientWorksAgainAfterAnError)
{
    int n = 0;
    server_.on_identity([&](const httplib::Request &, httplib::Response &res) {
        if (n++ == 0)
            res.set_content(std::string(kMaxResponseBytes + 10, 'x'), "text/plain");
        else
            res.set_content(R"({"id":"ok"})", "application/json");
    });
    server_.start();
    perform_error(post("{}"), ErrorKind::BadResponse);
    HttpResponse response = client_.perform(get("{}"), options_, nullptr);
    EXPECT_EQ(response.status, 200);
    EXPECT_EQ(response.body, R"({"id":"ok"})");
    EXPECT_EQ(server_.requests().back().method, "GET");
}

// HTTP over libcurl. A Transfer holds everything one request needs and can be
// driven by a blocking easy handle (HttpClient, here) or by a multi handle
// (the concurrent engine), so both share one set of options and one error
// classification.
#pragma once
#include "pure.hpp"

#include "observer.hpp"

#include <curl/curl.h>

#include <chrono>
#include <string>

namespace dfend {

// Polled during transfers and sleeps; returns true to abort. Must only read
// flags: it runs inside libcurl callbacks.
using AbortCheck = bool (*)() noexcept;

struct HttpRequest {
    enum class Method { Get, Post } method = Method::Post;
    std::string url;
    std::string body; // JSON; sent with GET too, as DFend's API requires
};

struct HttpResponse {
    long status = 0;
    std::string body;
    long retry_after_seconds = -1;
};

struct TransferOptions {
    std::string api_key;
    std::string ca_file;          // empty: the system trust store
    long connect_timeout_ms = 5000;
    long timeout_ms = 10000;      // whole transfer
    RequestObserver *observer = nullptr; // told how each transfer ended
};

std::string user_agent();

class Transfer {
  public:
    Transfer(HttpRequest request, const TransferOptions &options, AbortCheck abort_check);
    ~Transfer();
    Transfer(const Transfer &) = delete;
    Transfer &operator=(const Transfer &) = delete;

    // Resets `easy` (keeping its connection cache) and sets every option.
    void attach(CURL *easy);
    // The response, or Error for transport failures. Call once curl is done.
    // Tells the observer either way.
    HttpResponse finish(CURL *easy, CURLcode code);
    // Tells the observer that the transfer was stopped before it finished.
    void abandoned() noexcept;

    const HttpRequest &request() const noexcept { return request_; }

  private:
    static size_t on_write(char *data, size_t size, size_t count, void *self);
    static int on_progress(void *self, curl_off_t, curl_off_t, curl_off_t, curl_off_t);

    HttpRequest request_;
    TransferOptions options_;
    AbortCheck abort_check_;
    curl_slist *headers_ = nullptr;
    std::string body_;
    bool overflow_ = false;
    bool observed_ = true; // no transfer under way, or the observer heard of its end
    std::chrono::steady_clock::time_point started_{};
    char error_buffer_[CURL_ERROR_SIZE];
};

// Blocking client with one easy handle reused for every request, so
// consecutive calls share the connection (keep-alive, TLS session).
class HttpClient {
  public:
    HttpClient();
    ~HttpClient();
    HttpClient(const HttpClient &) = delete;
    HttpClient &operator=(const HttpClient &) = delete;

    HttpResponse perform(const HttpRequest &request, const TransferOptions &options,
                         AbortCheck abort_check);

  private:
    CURL *easy_;
};

// Process-wide libcurl set-up; idempotent. Throws Error(Internal).
void ensure_curl_initialized();

} // namespace dfend

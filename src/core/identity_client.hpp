// The Identity API as blocking calls with retries: what the SQL functions
// use. Status handling (classify_response) is shared with the concurrent
// engine so both report the same errors for the same replies.
#pragma once
#include "pure.hpp"

#include "codec.hpp"
#include "error.hpp"
#include "http.hpp"
#include "retry.hpp"

#include <chrono>
#include <optional>
#include <random>
#include <string>

namespace dfend {

using Clock = std::chrono::steady_clock;

struct ClientSettings {
    std::string api_url;   // base, e.g. https://api.dfend.app
    std::string api_key;
    std::string ca_file;
    long connect_timeout_ms = 5000;
    long request_timeout_ms = 10000;
    RetryPolicy retry;

    // Every field: an engine made for other settings is made anew
    // (src/pg/backend.cpp), so a new field must be compared here.
    bool operator==(const ClientSettings &o) const
    {
        return api_url == o.api_url && api_key == o.api_key && ca_file == o.ca_file &&
               connect_timeout_ms == o.connect_timeout_ms &&
               request_timeout_ms == o.request_timeout_ms && retry == o.retry;
    }
    bool operator!=(const ClientSettings &o) const { return !(*this == o); }
};

struct CallControl {
    AbortCheck should_abort = nullptr;
    std::optional<Clock::time_point> deadline; // e.g. from statement_timeout
    RequestObserver *observer = nullptr;       // told of each request's outcome
};

// Turns a reply into nothing (2xx, or 404 when `not_found_ok`) or the Error
// it stands for. Transient kinds (429, 5xx, 408) carry Retry-After.
// `secret` is redacted from DFend's words before they are cut to length.
std::optional<Error> classify_response(const HttpResponse &response, bool not_found_ok,
                                       std::string_view secret = {});

std::string identity_url(const std::string &api_url);

// Sleeps up to `delay`, waking every few milliseconds to poll `should_abort`;
// returns false when aborted.
bool sleep_unless_aborted(Millis delay, AbortCheck should_abort);

class IdentityClient {
  public:
    IdentityClient();

    RegisterResult register_identity(const RegisterRequest &request,
                                     const ClientSettings &settings,
                                     const CallControl &control);
    // The Identity object as DFend sent it, or nothing for 404.
    std::optional<std::string> get_identity(LookupKey key, const std::string &value,
                                            const ClientSettings &settings,
                                            const CallControl &control);

  private:
    // Sends with retries; nothing when a 404 was allowed and received.
    std::optional<HttpResponse> send(HttpRequest request, const ClientSettings &settings,
                                     const CallControl &control, bool not_found_ok);

    HttpClient http_;
    std::mt19937_64 rng_;
    std::string checked_url_; // parsing a URL costs more than a request's JSON
};

// Throws Error(Configuration) unless the settings can be used at all.
void check_settings(const ClientSettings &settings);

} // namespace dfend

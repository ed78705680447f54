#include "identity_client.hpp"

#include "validation.hpp"

#include <algorithm>
#include <thread>

namespace dfend {

std::optional<Error> classify_response(const HttpResponse &response, bool not_found_ok,
                                       std::string_view secret)
{
    const long status = response.status;
    if (status >= 200 && status < 300)
        return std::nullopt;
    if (status == 404 && not_found_ok)
        return std::nullopt;

    std::string said = extract_error_message(response.body, secret);
    std::string detail = "DFend answered HTTP " + std::to_string(status) + ".";
    if (!said.empty()) {
        detail += " DFend said: " + said;
        if (detail.back() != '.')
            detail += '.';
    }

    if (status == 401 || status == 403)
        return Error(ErrorKind::Unauthorized, "DFend rejected the API key", detail,
                     "Check dfend.api_key or dfend.api_key_file: the Identity endpoint "
                     "accepts only a secret key.",
                     status);
    if (status == 429 || status == 408 || (status >= 500 && status < 600)) {
        ErrorKind kind = status == 429   ? ErrorKind::RateLimited
                         : status == 408 ? ErrorKind::Timeout
                                         : ErrorKind::Upstream;
        const char *message = status == 429   ? "DFend rate limit exceeded"
                              : status == 408 ? "request to DFend timed out"
                                              : "DFend is unavailable";
        Error error(kind, message, detail, {}, status);
        error.set_retry_after_seconds(response.retry_after_seconds);
        return error;
    }
    // Only these blame the request's data. Other 4xx (405, 407 from a proxy,
    // 410, 415, 426, ...) mean the setup is wrong and are the same for every
    // row, so they must never dead-letter a row.
    if (status == 400 || status == 409 || status == 413 || status == 422)
        return Error(ErrorKind::InvalidArgument, "DFend rejected the request", detail, {},
                     status);
    if (status >= 300 && status < 400)
        return Error(ErrorKind::BadResponse, "unexpected redirect from DFend",
                     detail + " Redirects are never followed, so that the key is sent "
                              "only to dfend.api_url.",
                     "Check that dfend.api_url is the API's exact base URL.", status);
    return Error(ErrorKind::BadResponse, "unexpected response from DFend", detail, {},
                 status);
}

std::string identity_url(const std::string &api_url)
{
    std::string url = api_url;
    while (!url.empty() && url.back() == '/')
        url.pop_back();
    return url + "/identity";
}

bool sleep_unless_aborted(Millis delay, AbortCheck should_abort)
{
    // Signals (cancel, statement_timeout) interrupt the sleep early, so the
    // slice bounds only the rare race between a check and the sleep.
    constexpr Millis kSlice{10};
    const Clock::time_point until = Clock::now() + delay;
    while (true) {
        if (should_abort && should_abort())
            return false;
        Clock::time_point now = Clock::now();
        if (now >= until)
            return true;
        std::this_thread::sleep_for(std::min<Clock::duration>(kSlice, until - now));
    }
}

void check_settings(const ClientSettings &settings)
{
    if (auto problem = api_url_problem(settings.api_url))
        throw Error(ErrorKind::Configuration, "invalid value for dfend.api_url", *problem);
    if (settings.api_key.empty())
        throw Error(ErrorKind::Configuration, "DFend API key is not configured",
                    "Neither dfend.api_key nor dfend.api_key_file is set.",
                    "Put the secret key in a file readable only by the server's operating "
                    "system user, set dfend.api_key_file to its path in postgresql.conf, "
                    "and reload the configuration.");
    if (auto problem = api_key_problem(settings.api_key))
        throw Error(ErrorKind::Configuration, "invalid DFend API key", *problem);
}

IdentityClient::IdentityClient() : rng_(std::random_device{}()) {}

std::optional<HttpResponse> IdentityClient::send(HttpRequest request,
                                                 const ClientSettings &settings,
                                                 const CallControl &control,
                                                 bool not_found_ok)
{
    if (settings.api_url != checked_url_ || settings.api_key.empty()) {
        check_settings(settings);
        checked_url_ = settings.api_url;
    } else if (auto problem = api_key_problem(settings.api_key)) {
        throw Error(ErrorKind::Configuration, "invalid DFend API key", *problem);
    }
    TransferOptions options;
    options.api_key = settings.api_key;
    options.ca_file = settings.ca_file;
    options.connect_timeout_ms = settings.connect_timeout_ms;
    options.timeout_ms = settings.request_timeout_ms;
    options.observer = control.observer;

    for (int attempt = 1;; ++attempt) {
        std::optional<Error> failure;
        try {
            HttpResponse response = http_.perform(request, options, control.should_abort);
            failure = classify_response(response, not_found_ok, settings.api_key);
            if (!failure) {
                if (response.status == 404)
                    return std::nullopt;
                return response;
            }
        } catch (Error &error) {
            failure = std::move(error);
        }
        failure->redact(settings.api_key);

        const int retries_used = attempt - 1;
        bool retry = is_transient(failure->kind()) && retries_used < settings.retry.max_retries;
        if (retry && retry_after_exceeds_policy(settings.retry, failure->retry_after_seconds())) {
            failure->append_detail("DFend asked to retry after " +
                                   std::to_string(failure->retry_after_seconds()) +
                                   " s, longer than dfend.retry_max_delay allows.");
            retry = false;
        }
        Millis delay{0};
        if (retry) {
            delay = backoff_delay(settings.retry, retries_used, failure->retry_after_seconds(),
                                  rng_);
            if (control.deadline && Clock::now() + delay >= *control.deadline) {
                failure->append_detail("The next retry would pass the statement's deadline.");
                retry = false;
            }
        }
        if (!retry) {
            if (attempt > 1)
                failure->append_detail("Gave up after " + std::to_string(attempt) +
                                       " attempts.");
            if (is_transient(failure->kind()))
                failure->set_retry_wait_ms(
                    suggested_wait(settings.retry, retries_used, failure->retry_after_seconds())
                        .count());
            if (control.observer)
                control.observer->on_failure(*failure);
            throw std::move(*failure);
        }
        if (!sleep_unless_aborted(delay, control.should_abort))
            throw Error(ErrorKind::Cancelled, "request to DFend was cancelled");
        if (control.observer)
            control.observer->on_retry();
    }
}

RegisterResult IdentityClient::register_identity(const RegisterRequest &request,
                                                 const ClientSettings &settings,
                                                 const CallControl &control)
{
    HttpRequest http;
    http.method = HttpRequest::Method::Post;
    http.url = identity_url(settings.api_url);
    http.body = encode_register(request); // validates before any network call
    std::optional<HttpResponse> response = send(std::move(http), settings, control, false);
    try {
        return decode_register_response(response->body, settings.api_key);
    } catch (Error &error) {
        error.redact(settings.api_key); // a last line of defence: errors never quote the body
        throw;
    }
}

std::optional<std::string> IdentityClient::get_identity(LookupKey key,
                                                        const std::string &value,
                                                        const ClientSettings &settings,
                                                        const CallControl &control)
{
    HttpRequest http;
    http.method = HttpRequest::Method::Get;
    http.url = identity_url(settings.api_url);
    http.body = encode_lookup(key, value);
    std::optional<HttpResponse> response = send(std::move(http), settings, control, true);
    if (!response)
        return std::nullopt;
    try {
        return decode_identity_response(response->body, settings.api_key);
    } catch (Error &error) {
        error.redact(settings.api_key); // a last line of defence: errors never quote the body
        throw;
    }
}

} // namespace dfend

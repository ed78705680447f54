#include "http.hpp"

#include "codec.hpp"
#include "error.hpp"
#include "version.hpp"

#include <cstring>
#include <mutex>

namespace dfend {

namespace {

ErrorKind classify_curl_code(CURLcode code)
{
    switch (code) {
    case CURLE_ABORTED_BY_CALLBACK:
        return ErrorKind::Cancelled;
    case CURLE_OPERATION_TIMEDOUT:
        return ErrorKind::Timeout;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
        return ErrorKind::ConnectFailed;
    case CURLE_PEER_FAILED_VERIFICATION:
        return ErrorKind::TlsVerification;
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return ErrorKind::Configuration;
    case CURLE_OUT_OF_MEMORY:
        return ErrorKind::Internal;
    default:
        return ErrorKind::ConnectionLost;
    }
}

const char *message_for(ErrorKind kind)
{
    switch (kind) {
    case ErrorKind::Cancelled: return "request to DFend was cancelled";
    case ErrorKind::Timeout: return "request to DFend timed out";
    case ErrorKind::ConnectFailed: return "could not connect to DFend";
    case ErrorKind::TlsVerification: return "could not verify the TLS certificate of DFend";
    case ErrorKind::Configuration: return "invalid DFend connection settings";
    case ErrorKind::Internal: return "out of memory in libcurl";
    default: return "connection to DFend was lost";
    }
}

} // namespace

std::string user_agent()
{
    // Short on purpose: libcurl formats this header for every request, and
    // curl_version()'s full list of libraries made that cost more than all
    // of the JSON work of a call.
    return std::string("dfend/") + kVersion + " (PostgreSQL extension) libcurl/" +
           curl_version_info(CURLVERSION_NOW)->version;
}

void ensure_curl_initialized()
{
    static std::once_flag once;
    static CURLcode result = CURLE_OK;
    std::call_once(once, [] { result = curl_global_init(CURL_GLOBAL_DEFAULT); });
    if (result != CURLE_OK)
        throw Error(ErrorKind::Internal, "could not initialize libcurl",
                    curl_easy_strerror(result));
}

Transfer::Transfer(HttpRequest request, const TransferOptions &options,
                   AbortCheck abort_check)
    : request_(std::move(request)), options_(options), abort_check_(abort_check)
{
    error_buffer_[0] = '\0';
    const std::string key_header = "x-api-key: " + options_.api_key;
    for (const char *line : {key_header.c_str(), "Accept: application/json",
                             "Content-Type: application/json",
                             // No 100-continue round trip before the body.
                             "Expect:"}) {
        curl_slist *grown = curl_slist_append(headers_, line);
        if (!grown)
            throw Error(ErrorKind::Internal, "out of memory building request headers");
        headers_ = grown;
    }
}

Transfer::~Transfer() { curl_slist_free_all(headers_); }

void Transfer::attach(CURL *easy)
{
    curl_easy_reset(easy);
    body_.clear();
    overflow_ = false;
    observed_ = false;
    started_ = std::chrono::steady_clock::now();
    error_buffer_[0] = '\0';
    static const std::string agent = user_agent();

    bool ok = true;
    auto set = [&](CURLoption option, auto value) {
        ok = ok && curl_easy_setopt(easy, option, value) == CURLE_OK;
    };
    set(CURLOPT_URL, request_.url.c_str());
    set(CURLOPT_PROTOCOLS_STR, "http,https");
    set(CURLOPT_FOLLOWLOCATION, 0L);  // the key must never follow a redirect
    set(CURLOPT_PROXY, "");           // nor go through a proxy from the environment
    set(CURLOPT_SSL_VERIFYPEER, 1L);
    set(CURLOPT_SSL_VERIFYHOST, 2L);
    if (!options_.ca_file.empty())
        set(CURLOPT_CAINFO, options_.ca_file.c_str());
    set(CURLOPT_NOSIGNAL, 1L);
    set(CURLOPT_TCP_KEEPALIVE, 1L);
    set(CURLOPT_TCP_NODELAY, 1L);
    set(CURLOPT_USERAGENT, agent.c_str());
    set(CURLOPT_HTTPHEADER, headers_);
    set(CURLOPT_CONNECTTIMEOUT_MS, options_.connect_timeout_ms);
    set(CURLOPT_TIMEOUT_MS, options_.timeout_ms);
    set(CURLOPT_ERRORBUFFER, error_buffer_);
    set(CURLOPT_WRITEFUNCTION, &Transfer::on_write);
    set(CURLOPT_WRITEDATA, this);
    set(CURLOPT_NOPROGRESS, 0L);
    set(CURLOPT_XFERINFOFUNCTION, &Transfer::on_progress);
    set(CURLOPT_XFERINFODATA, this);
    set(CURLOPT_PRIVATE, this);
    if (request_.method == HttpRequest::Method::Get)
        set(CURLOPT_CUSTOMREQUEST, "GET");
    set(CURLOPT_POSTFIELDS, request_.body.c_str());
    set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request_.body.size()));
    if (!ok)
        throw Error(ErrorKind::Internal, "could not configure the HTTP request",
                    "libcurl refused an option; it may be older than 7.85.");
}

void Transfer::abandoned() noexcept
{
    if (options_.observer && !observed_)
        options_.observer->on_transport_error(ErrorKind::Cancelled);
    observed_ = true;
}

HttpResponse Transfer::finish(CURL *easy, CURLcode code)
{
    if (options_.observer && (overflow_ || code != CURLE_OK))
        options_.observer->on_transport_error(overflow_ ? ErrorKind::BadResponse
                                                        : classify_curl_code(code));
    observed_ = true;
    if (overflow_)
        throw Error(ErrorKind::BadResponse, "invalid response from DFend",
                    "The body is larger than " + std::to_string(kMaxResponseBytes) +
                        " bytes.");
    if (code != CURLE_OK) {
        ErrorKind kind = classify_curl_code(code);
        // libcurl's words may quote the peer (a certificate's names, a
        // status line): made safe like any other text from a reply.
        std::string detail = safe_reply_text(
            error_buffer_[0] ? error_buffer_ : curl_easy_strerror(code), options_.api_key);
        if (!detail.empty() && detail.back() != '.')
            detail += '.';
        const char *message = code == CURLE_SSL_CACERT_BADFILE
                                  ? "could not load the CA certificates in dfend.ca_file"
                                  : message_for(kind);
        Error error(kind, message, detail);
        if (kind == ErrorKind::TlsVerification)
            error = Error(kind, message_for(kind), detail,
                          "Set dfend.ca_file to the certificate of the CA that signed the "
                          "server's certificate, and check that dfend.api_url names a host "
                          "the certificate is issued for.");
        throw error;
    }
    HttpResponse response;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &response.status);
    curl_off_t retry_after = -1;
    if (curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
        retry_after > 0)
        response.retry_after_seconds = static_cast<long>(retry_after);
    if (options_.observer)
        options_.observer->on_response(
            response.status,
            std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::steady_clock::now() - started_),
            request_.body.size(), body_.size());
    response.body = std::move(body_);
    body_.clear();
    // Before any of it is cut into a message: a cut key would escape the
    // redaction of whole keys.
    redact_secret(response.body, options_.api_key);
    return response;
}

size_t Transfer::on_write(char *data, size_t size, size_t count, void *self)
{
    auto *transfer = static_cast<Transfer *>(self);
    size_t bytes = size * count;
    if (transfer->body_.size() + bytes > kMaxResponseBytes) {
        transfer->overflow_ = true;
        return 0; // makes libcurl stop with CURLE_WRITE_ERROR
    }
    try {
        transfer->body_.append(data, bytes);
    } catch (...) {
        return 0;
    }
    return bytes;
}

int Transfer::on_progress(void *self, curl_off_t, curl_off_t, curl_off_t, curl_off_t)
{
    auto *transfer = static_cast<Transfer *>(self);
    return transfer->abort_check_ && transfer->abort_check_() ? 1 : 0;
}

HttpClient::HttpClient()
{
    ensure_curl_initialized();
    easy_ = curl_easy_init();
    if (!easy_)
        throw Error(ErrorKind::Internal, "could not create a libcurl handle");
}

HttpClient::~HttpClient() { curl_easy_cleanup(easy_); }

HttpResponse HttpClient::perform(const HttpRequest &request, const TransferOptions &options,
                                 AbortCheck abort_check)
{
    Transfer transfer(request, options, abort_check);
    transfer.attach(easy_);
    CURLcode code = curl_easy_perform(easy_);
    return transfer.finish(easy_, code);
}

} // namespace dfend

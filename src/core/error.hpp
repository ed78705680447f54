// The one error type of the core. The PostgreSQL layer maps `kind` to a
// SQLSTATE in a single table (src/pg/border.cpp).
#pragma once
#include "pure.hpp"

#include <exception>
#include <string>
#include <string_view>

namespace dfend {

enum class ErrorKind {
    InvalidArgument,   // bad input caught locally, or a 4xx that blames the request
    Configuration,     // missing key, unreadable key file, bad URL or CA file
    Unauthorized,      // DFend rejected the key (401/403)
    RateLimited,       // 429 after retries
    Upstream,          // 5xx after retries
    BadResponse,       // not what the API documents: bad JSON, redirects, odd statuses
    ConnectFailed,     // DNS, refused, TLS handshake
    TlsVerification,   // the server's certificate or host name did not verify
    ConnectionLost,    // the connection broke after it was made
    Timeout,           // dfend.request_timeout or dfend.connect_timeout passed
    Cancelled,         // the caller asked us to stop (query cancel, shutdown)
    Internal,          // a bug or resource exhaustion inside the extension
};

const char *kind_name(ErrorKind kind) noexcept;

// Replaces every occurrence of `secret` in `text` with "[redacted]".
void redact_secret(std::string &text, std::string_view secret);

// Worth another attempt: the same request may succeed a moment later.
bool is_transient(ErrorKind kind) noexcept;

class Error : public std::exception {
  public:
    Error(ErrorKind kind, std::string message, std::string detail = {},
          std::string hint = {}, long http_status = 0)
        : kind_(kind), message_(std::move(message)), detail_(std::move(detail)),
          hint_(std::move(hint)), http_status_(http_status)
    {
    }

    const char *what() const noexcept override { return message_.c_str(); }
    ErrorKind kind() const noexcept { return kind_; }
    const std::string &message() const noexcept { return message_; }
    const std::string &detail() const noexcept { return detail_; }
    const std::string &hint() const noexcept { return hint_; }
    long http_status() const noexcept { return http_status_; }
    // Seconds the server asked us to wait (Retry-After), or -1.
    long retry_after_seconds() const noexcept { return retry_after_s_; }
    void set_retry_after_seconds(long s) noexcept { retry_after_s_ = s; }

    void append_detail(std::string_view sentence);
    // Replaces every occurrence of `secret` in the texts: a last line of
    // defence so that no server reply can echo the key into a message.
    void redact(std::string_view secret);

  private:
    ErrorKind kind_;
    std::string message_;
    std::string detail_;
    std::string hint_;
    long http_status_;
    long retry_after_s_ = -1;
};

} // namespace dfend

// The one error type of the core. The PostgreSQL layer maps `kind` (and, for
// InvalidArgument, whether DFend or dfend itself refused the data) to a
// SQLSTATE in a single table (sqlstate_for in src/pg/border.cpp).
#pragma once
#include "pure.hpp"

#include <cstddef>
#include <exception>
#include <string>
#include <string_view>

namespace dfend {

enum class ErrorKind {
    InvalidArgument,   // bad input caught locally, or a 4xx that blames the request
                       // (then http_status() is DFend's status)
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

// Replaces every occurrence of `secret` in `text` with "[redacted]", also
// when characters that show as nothing or as blank separate the secret's
// characters (white space, control and invisible format characters, U+FFFD,
// bytes that are not UTF-8): "sk_te\x01st" is as readable as "sk_test".
void redact_secret(std::string &text, std::string_view secret);

constexpr std::size_t kNoCut = static_cast<std::size_t>(-1);

// The one way text from a reply (DFend's words, a body, libcurl's message
// about the peer) becomes safe to show, store or return. In this order:
//  1. every byte sequence that is not well-formed UTF-8 becomes U+FFFD;
//  2. control characters (C0, DEL, C1) become a space, invisible format
//     characters (bidi overrides, zero-width joiners, ...) are dropped;
//  3. `secret` is redacted (redact_secret) in the text as it now reads;
//  4. text longer than `cut` bytes is cut after the character that crosses
//     `cut` bytes, and "..." is appended.
// Everything that can join characters happens before the redaction, and the
// cut after it, so neither a split nor a cut key survives. The result is
// valid UTF-8 without control characters.
std::string safe_reply_text(std::string_view text, std::string_view secret,
                            std::size_t cut = kNoCut);

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
    // "message: detail", as last_error and reports show a failure.
    std::string text() const { return detail_.empty() ? message_ : message_ + ": " + detail_; }
    const std::string &hint() const noexcept { return hint_; }
    long http_status() const noexcept { return http_status_; }
    // Seconds the server asked us to wait (Retry-After), or -1.
    long retry_after_seconds() const noexcept { return retry_after_s_; }
    void set_retry_after_seconds(long s) noexcept { retry_after_s_ = s; }
    // Milliseconds the caller should wait before trying the same request
    // again, or -1 when retrying is pointless or nobody computed a wait. Set
    // on a transient failure when dfend gives up on it (suggested_wait).
    long long retry_wait_ms() const noexcept { return retry_wait_ms_; }
    void set_retry_wait_ms(long long ms) noexcept { retry_wait_ms_ = ms; }

    void append_detail(std::string_view sentence);
    // Passes message, detail and hint through safe_reply_text: done on every
    // Error that may carry a reply's words before it leaves the core, so no
    // server reply can echo the key, a control character or invalid UTF-8
    // into a message.
    void redact(std::string_view secret);

  private:
    ErrorKind kind_;
    std::string message_;
    std::string detail_;
    std::string hint_;
    long http_status_;
    long retry_after_s_ = -1;
    long long retry_wait_ms_ = -1;
};

} // namespace dfend

#include "error.hpp"

namespace dfend {

const char *kind_name(ErrorKind kind) noexcept
{
    switch (kind) {
    case ErrorKind::InvalidArgument: return "invalid argument";
    case ErrorKind::Configuration: return "configuration";
    case ErrorKind::Unauthorized: return "unauthorized";
    case ErrorKind::RateLimited: return "rate limited";
    case ErrorKind::Upstream: return "upstream failure";
    case ErrorKind::BadResponse: return "bad response";
    case ErrorKind::ConnectFailed: return "could not connect";
    case ErrorKind::TlsVerification: return "TLS verification";
    case ErrorKind::ConnectionLost: return "connection lost";
    case ErrorKind::Timeout: return "timeout";
    case ErrorKind::Cancelled: return "cancelled";
    case ErrorKind::Internal: return "internal";
    }
    return "unknown";
}

bool is_transient(ErrorKind kind) noexcept
{
    switch (kind) {
    case ErrorKind::RateLimited:
    case ErrorKind::Upstream:
    case ErrorKind::ConnectFailed:
    case ErrorKind::ConnectionLost:
    case ErrorKind::Timeout:
        return true;
    default:
        return false;
    }
}

} // namespace dfend

namespace dfend {

void Error::append_detail(std::string_view sentence)
{
    if (!detail_.empty())
        detail_ += ' ';
    detail_ += sentence;
}

void redact_secret(std::string &text, std::string_view secret)
{
    if (secret.empty())
        return;
    std::size_t at = 0;
    while ((at = text.find(secret, at)) != std::string::npos) {
        text.replace(at, secret.size(), "[redacted]");
        at += 10;
    }
}

void Error::redact(std::string_view secret)
{
    for (std::string *text : {&message_, &detail_, &hint_})
        redact_secret(*text, secret);
}

} // namespace dfend
